"""Grad-CAM++: channels weighted by positive gradients with second- and third-order pixel weights.

Paper: Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for Deep Convolutional
Networks", WACV 2018. Original code: https://github.com/adityac94/Grad_CAM_plus_plus (TensorFlow). wsseg uses
the formula of pytorch-grad-cam's ``grad_cam_plusplus.py`` (https://github.com/jacobgil/pytorch-grad-cam): the
closed-form pixel weights of the paper's eq. 19, alpha = g^2 / (2 g^2 + sum_ij(A) g^3 + 1e-6), zeroed where
g = 0, and channel weights sum_ij(relu(g) * alpha). The exponential of the class score that the paper
differentiates only scales each (image, class) map, which the per-image normalisation removes.

What wsseg changed: CAM's classifier, the backbone output as target layer, one map per class from the class
logit, and ``to_input_resolution`` instead of cv2.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wsseg.method import PostHocCAMMethod
from wsseg.registry import register_method


@register_method("gradcampp")
class GradCAMPlusPlus(PostHocCAMMethod):
    """Grad-CAM++: channels weighted by positive gradients with second- and third-order pixel weights."""

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Weights (B, K, C) from activations (B, C, h, w) and gradients (B, K, C, h, w)."""
        grads_2 = grads.pow(2)
        activation_sums = activations.sum(dim=(2, 3))[:, None, :, None, None]  # (B, 1, C, 1, 1)
        alpha = grads_2 / (2 * grads_2 + activation_sums * grads_2 * grads + 1e-6)  # (B, K, C, h, w)
        alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
        return (grads.clamp_min(0) * alpha).sum(dim=(3, 4))
