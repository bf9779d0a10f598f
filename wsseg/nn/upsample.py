"""The single rule by which every method's maps reach the input resolution.

All methods go through this function so that no method gains or loses Dice from its resizing
(the wsolevaluation rule): bilinear, ``align_corners=False``, then clamped to [0, 1].
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def to_input_resolution(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Upsample (B, K, h, w) maps with values in [0, 1] to (B, K, H, W).

    Args:
        maps: (B, K, h, w) low-resolution maps in [0, 1].
        size: (H, W) target size.

    Returns:
        (B, K, H, W) float32 maps in [0, 1].
    """
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = F.interpolate(maps.float(), size=size, mode="bilinear", align_corners=False)  # (B, K, H, W)
    # Bilinear interpolation of values in [0, 1] stays in [0, 1] up to rounding; clamp makes it exact.
    return maps.float().clamp(0.0, 1.0)
