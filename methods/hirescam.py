"""HiResCAM: the elementwise product of gradients and activations, summed over channels.

Paper: Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of convolutional neural
networks", arXiv:2011.08891, 2020. Original code: https://github.com/rachellea/explainable-ct-ai. wsseg follows
pytorch-grad-cam's ``hirescam.py`` (https://github.com/jacobgil/pytorch-grad-cam). The gradient multiplies the
activations elementwise before the sum over channels (Grad-CAM averages it over space first), so the map is
not a channel-weighted sum and the method overrides ``class_maps``. On CAM's GAP-linear head the gradient is
the same at every location, so HiResCAM is CAM's map without its bias, up to a positive scale (as the paper
shows for CAM architectures).

What wsseg changed: CAM's classifier, the backbone output as target layer, one map per class from the class
logit, and ``to_input_resolution`` instead of cv2.
"""

from __future__ import annotations

from torch import Tensor

from wsseg.method import PostHocCAMMethod
from wsseg.registry import register_method


@register_method("hirescam")
class HiResCAM(PostHocCAMMethod):
    """HiResCAM: the elementwise product of gradients and activations, summed over channels."""

    def class_maps(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Maps (B, K, h, w): sum over channels of gradients (B, K, C, h, w) times activations (B, C, h, w)."""
        return (grads * activations[:, None]).sum(dim=2)
