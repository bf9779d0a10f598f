"""Uniform: a constant map over the breast, the floor every method must beat.

The map is ``value`` (1 by default) at every pixel of the breast and 0 outside it, for both classes, and the image
logits are a constant 0 (AUROC 0.5). Thresholded at any level below ``value`` it predicts the whole breast, so its
Dice is what a method scores by knowing where the breast is and nothing about lesions: a method that does not beat
it has learnt nothing about lesions.

The breast is estimated from the image alone, never from the dataset's breast mask: after per-image
standardisation the background outside the breast is exactly the image's minimum, so the breast is every pixel
above ``image.amin()``. An optional morphological opening (``open_px``) then removes isolated background specks
narrower than ``2 * open_px + 1`` pixels (detector noise or burnt-in labels on real images). On the phantom the
estimate equals the generator's breast mask, so the method's row reproduces the harness's ``uniform Dice`` column.
The method has no parameters and is not trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from wsseg.method import Limit, MethodConfig, MethodOutput, ParameterFreeMethod, between
from wsseg.registry import register_method


def estimate_breast(images: Tensor, open_px: int = 0) -> Tensor:
    """The breast estimated from the images alone: pixels above each image's background (minimum) value.

    Args:
        images: (B, C, H, W) images whose background outside the breast is the per-image minimum.
        open_px: radius of a square morphological opening that removes specks narrower than ``2 * open_px + 1``
            pixels; 0 keeps the raw estimate.

    Returns:
        (B, 1, H, W) bool breast masks.
    """
    x = images.float().amax(dim=1, keepdim=True)  # (B, 1, H, W): any channel above the background
    breast = x > x.amin(dim=(-2, -1), keepdim=True)  # (B, 1, H, W)
    if open_px > 0:
        k = 2 * open_px + 1
        m = breast.float()
        eroded = -F.max_pool2d(-m, k, stride=1, padding=open_px)  # (B, 1, H, W)
        breast = F.max_pool2d(eroded, k, stride=1, padding=open_px) > 0.5  # (B, 1, H, W)
    return breast


@dataclass
class UniformConfig(MethodConfig):
    """Uniform hyperparameters (identical in every profile).

    Attributes:
        value: the map's value inside the breast, in (0, 1].
        open_px: radius of the morphological opening that cleans the breast estimate (0 = none).
    """

    value: float = 1.0
    open_px: int = 1

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """A map value in (0, 1], an opening of at most 64 pixels."""
        return {
            "value": (lambda v: 0 < v <= 1, "in (0, 1]"),
            "open_px": (between(0, 64), "an integer in [0, 64]"),
        }


@register_method("uniform")
class Uniform(ParameterFreeMethod):
    """Reference floor: a constant map over the breast estimated from the image, constant logits."""

    Config = UniformConfig
    supervision = "reference"  # learns nothing: a floor or prior row, never ranked among the weak methods

    cfg: UniformConfig

    def __init__(self, cfg: UniformConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__(cfg, num_classes, in_chans)
        if not 0.0 < cfg.value <= 1.0:
            raise ValueError(f"uniform value must lie in (0, 1], got {cfg.value}")
        if cfg.open_px < 0:
            raise ValueError(f"uniform open_px must be >= 0, got {cfg.open_px}")

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, C, H, W) -> zero logits (B, K) and ``value`` inside the breast (B, K, H, W)."""
        b, _, h, w = images.shape
        breast = estimate_breast(images, self.cfg.open_px)  # (B, 1, H, W)
        saliency = (breast.float() * self.cfg.value).expand(b, self.num_classes, h, w).contiguous()  # (B, K, H, W)
        logits = torch.zeros(b, self.num_classes, device=images.device)  # (B, K)
        return MethodOutput(logits=logits, saliency=saliency, extras={"breast": breast})
