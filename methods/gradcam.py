"""Grad-CAM: channels weighted by the spatial mean of their gradient.

Paper: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization",
ICCV 2017. Original code: https://github.com/ramprs/grad-cam (Lua Torch); wsseg follows pytorch-grad-cam's
``grad_cam.py`` (https://github.com/jacobgil/pytorch-grad-cam). Each channel of the target layer is weighted
by the spatial mean of the class logit's gradient, and the ReLU of the weighted sum is the map.

What wsseg changed: the classifier is CAM's (trained with BCE, or loaded from a CAM run), the target layer is
the backbone's output, the gradient is that of each class's logit (multi-label, one map per class; the paper
explains a softmax class score), and maps reach the input resolution through ``to_input_resolution`` instead
of cv2. On CAM's GAP-linear head the gradient is the same at every location, so Grad-CAM is the ReLU of CAM's
map without its bias, min-max normalised per image.
"""

from __future__ import annotations

from torch import Tensor

from wsseg.method import PostHocCAMMethod
from wsseg.registry import register_method


@register_method("gradcam")
class GradCAM(PostHocCAMMethod):
    """Grad-CAM: channels weighted by their spatially averaged gradient."""

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Weights (B, K, C): the spatial mean of the gradients (B, K, C, h, w)."""
        return grads.mean(dim=(3, 4))
