"""Eigen-Grad-CAM: Eigen-CAM's first principal component of the gradient-weighted activations, per class.

pytorch-grad-cam's variant of Eigen-CAM (``eigen_grad_cam.py``, https://github.com/jacobgil/pytorch-grad-cam; after
Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components", IJCNN 2020): the elementwise
product of each class's gradients and the activations is projected on its first principal component
(:func:`wsseg.nn.projection.principal_projection`), so unlike Eigen-CAM the map depends on the class.

What wsseg changed: as in ``eigencam``, the sign of the principal component follows Seg-Eigen-CAM's correction
(largest absolute value positive) instead of numpy's arbitrary SVD sign; CAM's classifier (or another trained
method's global network with ``--from-run``), the backbone output as target layer, one map per class from the
class logit, ``to_input_resolution`` instead of cv2.
"""

from __future__ import annotations

from torch import Tensor

from wsseg.method import PostHocCAMMethod
from wsseg.nn.projection import principal_projection
from wsseg.registry import register_method


@register_method("eigengradcam")
class EigenGradCAM(PostHocCAMMethod):
    """Eigen-Grad-CAM: the first principal component of gradients times activations, per class."""

    def class_maps(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Maps (B, K, h, w): the projection of gradients (B, K, C, h, w) times activations (B, C, h, w)."""
        b, k = grads.shape[:2]
        weighted = (grads * activations[:, None]).flatten(0, 1)  # (B K, C, h, w)
        return principal_projection(weighted).view(b, k, *weighted.shape[-2:])  # (B, K, h, w)
