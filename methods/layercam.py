"""LayerCAM: activations weighted elementwise by their positive gradients.

Paper: Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for Localization", IEEE TIP 2021.
Original code: https://github.com/PengtaoJiang/LayerCAM-jittor (Jittor). wsseg follows pytorch-grad-cam's
``layer_cam.py`` (https://github.com/jacobgil/pytorch-grad-cam). Each activation is weighted by its own
positive gradient, location by location, so the map is not a channel-weighted sum and the method overrides
``class_maps``.

What wsseg changed: one target layer, the backbone's output (the paper fuses the maps of several layers and
rescales the shallow ones), CAM's classifier, one map per class from the class logit, and
``to_input_resolution`` instead of cv2.
"""

from __future__ import annotations

from torch import Tensor

from wsseg.method import PostHocCAMMethod
from wsseg.registry import register_method


@register_method("layercam")
class LayerCAM(PostHocCAMMethod):
    """LayerCAM: activations weighted elementwise by their positive gradients."""

    def class_maps(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Maps (B, K, h, w): sum over channels of relu(gradients) (B, K, C, h, w) times activations (B, C, h, w)."""
        return (grads.clamp_min(0) * activations[:, None]).sum(dim=2)
