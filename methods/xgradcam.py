"""XGrad-CAM: channels weighted by their gradients times their activations' share of the channel's sum.

Paper: Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs", BMVC 2020.
Original code: https://github.com/Fu0511/XGrad-CAM. wsseg follows pytorch-grad-cam's ``xgrad_cam.py``
(https://github.com/jacobgil/pytorch-grad-cam): the weight of channel c is sum_ij g_ij A_ij / (sum_ij A_ij + 1e-7),
derived from the paper's sensitivity and conservation axioms; the map is the ReLU of the weighted sum.

What wsseg changed: the classifier is CAM's (or, with ``--from-run``, another trained method's global network), the
target layer is the backbone's output, one map per class from the class logit, and maps reach the input
resolution through ``to_input_resolution`` instead of cv2.
"""

from __future__ import annotations

from torch import Tensor

from wsseg.method import PostHocCAMMethod
from wsseg.registry import register_method

# pytorch-grad-cam's guard against a channel whose activations sum to zero.
EPS = 1e-7


@register_method("xgradcam")
class XGradCAM(PostHocCAMMethod):
    """XGrad-CAM: channels weighted by gradients times normalised activations (the axiom-based Grad-CAM)."""

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """Weights (B, K, C) from activations (B, C, h, w) and gradients (B, K, C, h, w)."""
        shares = activations / (activations.sum(dim=(2, 3), keepdim=True) + EPS)  # (B, C, h, w)
        return (grads * shares[:, None]).sum(dim=(3, 4))
