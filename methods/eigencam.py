"""Eigen-CAM: the activations projected on their first principal component; class-agnostic, no gradients.

Paper: Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020.
wsseg follows pytorch-grad-cam's ``eigen_cam.py`` and ``get_2d_projection``
(https://github.com/jacobgil/pytorch-grad-cam): each location's C activations, centred over the locations, are
projected on the first right singular vector of that (h w, C) matrix; the ReLU of the projection is the map.
The map does not depend on the class: both classes get the same map.

What wsseg changed: the sign. A singular vector is defined up to its sign, and pytorch-grad-cam keeps whatever
sign numpy's SVD returns, so its map may be the negated projection and the ReLU then keeps the background. wsseg
applies the sign correction of Seg-Eigen-CAM (Chung & Ying, Applied Sciences 2025, eq. 13; pytorch-grad-cam's
``get_2d_projection_with_sign_correction``): the projection is negated when its minimum is larger in magnitude
than its maximum, so the most extreme locations are positive and the map is the same on every device and library.
Also CAM's classifier (or another trained method's global network with ``--from-run``), the backbone output as
target layer, and ``to_input_resolution`` instead of cv2. The SVD runs batched in float32 (float64 for a float64
model), with autocast off.
"""

from __future__ import annotations

import torch
from torch import Tensor

from wsseg.method import PostHocCAMMethod, map_dtype
from wsseg.nn.projection import principal_projection
from wsseg.registry import register_method


@register_method("eigencam")
class EigenCAM(PostHocCAMMethod):
    """Eigen-CAM: the activations' first principal component (class-agnostic, gradient-free)."""

    saliency_requires_grad = False

    def raw_maps(self, images: Tensor, scores: Tensor, activations: Tensor) -> Tensor:
        """Maps (B, K, h, w): the projection of the activations (B, C, h, w), the same for every class."""
        with torch.autocast(device_type=images.device.type, enabled=False):
            projection = principal_projection(activations.detach().to(map_dtype(activations)))  # (B, h, w)
        return projection[:, None].expand(-1, scores.shape[1], -1, -1)
