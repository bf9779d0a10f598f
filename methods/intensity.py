"""Intensity: the brightness prior, "lesions are where the image is bright".

Masses and calcifications attenuate more than fat, so they are brighter than their surroundings; so is dense
glandular tissue. This row measures how much Dice a method gets from brightness alone: a weakly supervised map that
does not beat it may be an intensity detector rather than a lesion detector.

The map, identical for both classes, is the image smoothed by a ``smooth_px`` box filter restricted to the breast
(each pixel is the mean of the breast pixels in its ``smooth_px`` x ``smooth_px`` cell, so the dark background does
not bleed in), min-max normalised per image over the breast, brought to the input resolution by
:func:`wsseg.nn.upsample.to_input_resolution` and set to 0 outside the breast. The breast is estimated from the
image as in :mod:`wsseg_methods.uniform` (pixels above the background minimum). The presets keep the cell at 1.6 mm
on the phantom (1, 4 and 16 pixels at 1.6, 0.4 and 0.1 mm). Both image logits are the ``logit_quantile`` quantile of
the standardised intensity inside the breast, so AUROC is defined. The method has no parameters and is not trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from wsseg_methods.uniform import estimate_breast

from wsseg.method import Limit, MethodConfig, MethodOutput, ParameterFreeMethod, between
from wsseg.nn.upsample import to_input_resolution
from wsseg.registry import register_method


@dataclass
class IntensityConfig(MethodConfig):
    """Intensity hyperparameters.

    Attributes:
        smooth_px: side of the box filter (and of the low-resolution grid) in pixels; 1 = no smoothing.
        logit_quantile: the quantile of the breast's intensity used as both image logits.
        open_px: radius of the opening that cleans the breast estimate (see :func:`estimate_breast`).
    """

    smooth_px: int = 4
    logit_quantile: float = 0.99
    open_px: int = 1

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """A smoothing cell inside the image, a quantile in [0, 1], an opening of at most 64 pixels."""
        side = min(image_hw)
        return {
            "smooth_px": (between(1, side), f"an integer in [1, {side}] at this profile"),
            "logit_quantile": (between(0, 1), "in [0, 1]"),
            "open_px": (between(0, 64), "an integer in [0, 64]"),
        }

    @classmethod
    def tiny(cls) -> IntensityConfig:
        """No smoothing: tiny images already have 1.6 mm pixels."""
        return cls(smooth_px=1)

    @classmethod
    def quick(cls) -> IntensityConfig:
        """1.6 mm cells at the quick profile's 0.4 mm pixels."""
        return cls(smooth_px=4)

    @classmethod
    def paper(cls) -> IntensityConfig:
        """1.6 mm cells at the paper profile's 0.1 mm pixels."""
        return cls(smooth_px=16)


@register_method("intensity")
class Intensity(ParameterFreeMethod):
    """Reference prior: smoothed, per-image min-max normalised brightness inside the breast."""

    Config = IntensityConfig
    supervision = "reference"  # learns nothing: a floor or prior row, never ranked among the weak methods

    cfg: IntensityConfig

    def __init__(self, cfg: IntensityConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__(cfg, num_classes, in_chans)
        if cfg.smooth_px < 1:
            raise ValueError(f"intensity smooth_px must be >= 1, got {cfg.smooth_px}")
        if not 0.0 <= cfg.logit_quantile <= 1.0:
            raise ValueError(f"intensity logit_quantile must lie in [0, 1], got {cfg.logit_quantile}")

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, C, H, W) -> intensity-quantile logits (B, K) and brightness maps (B, K, H, W)."""
        b, _, h, w = images.shape
        x = images.float().mean(dim=1, keepdim=True)  # (B, 1, H, W)
        breast = estimate_breast(images, self.cfg.open_px)  # (B, 1, H, W) bool
        m = breast.float()
        s = self.cfg.smooth_px
        if s > 1:
            # Mean over the breast pixels of each s x s cell. The bottom/right edges are padded to whole cells with
            # non-breast pixels so the cells stay aligned with the pixel grid; the padding is cropped after upsampling.
            pad = (0, -w % s, 0, -h % s)
            area = F.avg_pool2d(F.pad(m, pad), s)  # (B, 1, ceil(H/s), ceil(W/s))
            smooth = F.avg_pool2d(F.pad(x * m, pad), s) / area.clamp_min(1e-6)  # (B, 1, ceil(H/s), ceil(W/s))
            inside = area > 0
        else:
            smooth, inside = x, breast
        lo = torch.where(inside, smooth, torch.inf).amin(dim=(-2, -1), keepdim=True)  # (B, 1, 1, 1)
        hi = torch.where(inside, smooth, -torch.inf).amax(dim=(-2, -1), keepdim=True)  # (B, 1, 1, 1)
        span = (hi - lo).clamp_min(1e-6)
        norm = torch.where(inside, (smooth - lo) / span, torch.zeros_like(smooth)).nan_to_num(0.0)  # (B, 1, h', w')
        size = (norm.shape[-2] * s, norm.shape[-1] * s)
        full = to_input_resolution(norm, size)[..., :h, :w] * m  # (B, 1, H, W), 0 outside the breast
        saliency = full.expand(b, self.num_classes, h, w).contiguous()  # (B, K, H, W)

        stats = []
        for xi, mi in zip(x, breast, strict=True):
            values = xi[mi]  # (N,) breast pixels
            q = torch.quantile(values, self.cfg.logit_quantile) if values.numel() else x.new_zeros(())
            stats.append(q)
        logits = torch.stack(stats)[:, None].expand(b, self.num_classes).contiguous()  # (B, K)
        return MethodOutput(logits=logits, saliency=saliency, extras={"breast": breast})
