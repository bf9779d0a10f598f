"""The single rule by which every method's maps reach the input resolution.

All methods go through this function so that no method gains or loses Dice from its resizing
(the wsolevaluation rule): bilinear, ``align_corners=False``, then clamped to [0, 1]. ``nearest`` and
``bicubic`` exist for sensitivity analyses and are recorded in the run record when used.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

UpsampleMode = Literal["bilinear", "nearest", "bicubic"]
UPSAMPLE_RULE = "{mode} interpolation to the mask resolution (align_corners=False), then clamped to [0, 1]"


def to_input_resolution(maps: Tensor, size: tuple[int, int], mode: UpsampleMode = "bilinear") -> Tensor:
    """Upsample (B, K, h, w) maps with values in [0, 1] to (B, K, H, W).

    Args:
        maps: (B, K, h, w) low-resolution maps in [0, 1].
        size: (H, W) target size.
        mode: ``bilinear`` (the default and the benchmark's rule), ``nearest`` or ``bicubic``.

    Returns:
        (B, K, H, W) float32 maps in [0, 1].
    """
    if tuple(maps.shape[-2:]) != tuple(size):
        kwargs = {} if mode == "nearest" else {"align_corners": False}
        maps = F.interpolate(maps.float(), size=size, mode=mode, **kwargs)  # (B, K, H, W)
    # Bilinear interpolation of values in [0, 1] stays in [0, 1] up to rounding (bicubic overshoots); clamp.
    return maps.float().clamp(0.0, 1.0)
