"""How a CPU-sized network reads an image smaller than the input: average pooling or space-to-depth.

At the quick profile the networks read the 736x480 image (0.4 mm pixels) reduced 4x to 184x120 (1.6 mm). Average
pooling divides the contrast of anything much smaller than a cell by the cell's area: a 0.3 mm calcification keeps
about 4 % of its contrast at 1.6 mm and vanishes in the texture, so a classifier cannot see calcification clusters.
Space-to-depth (``F.pixel_unshuffle``) reshapes each f x f cell into f*f channels at the same reduced grid: nothing is
lost, the network's first convolution learns how to combine the sub-pixels (a calcification detector among them),
and only that first convolution pays for the extra channels.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

InputPool = Literal["avg", "unshuffle"]
INPUT_POOLS: tuple[str, ...] = ("avg", "unshuffle")


def pooled_channels(in_chans: int, factor: int, mode: InputPool) -> int:
    """Channels the network's first layer receives: ``in_chans`` (average) or ``in_chans * factor**2`` (unshuffle)."""
    if mode not in INPUT_POOLS:
        raise ValueError(f"input pooling must be one of {list(INPUT_POOLS)}, got {mode!r}")
    return in_chans * factor * factor if mode == "unshuffle" and factor > 1 else in_chans


def pool_input(images: Tensor, factor: int, mode: InputPool) -> Tensor:
    """Reduce (B, C, H, W) images by ``factor``: (B, C, H//f, W//f) averaged or (B, C*f*f, H//f, W//f) unshuffled.

    Rows and columns beyond a multiple of ``factor`` are dropped in both modes (as ``avg_pool2d`` does).
    """
    if factor <= 1:
        return images
    if mode == "avg":
        return F.avg_pool2d(images, factor)
    h, w = images.shape[-2] // factor * factor, images.shape[-1] // factor * factor
    return F.pixel_unshuffle(images[..., :h, :w], factor)  # (B, C*f*f, H//f, W//f)
