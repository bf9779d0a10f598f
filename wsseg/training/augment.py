"""Training-time window noise, applied to a whole batch on the device that trains (GPU or CPU).

The NYU classifier that GMIC and GLAM descend from trains on a window that is moved by up to 100 pixels per
axis and whose four borders are perturbed by up to 100 pixels (vertical) and ``round(100 * 1920 / 2944)`` = 65
pixels (horizontal), then resized back to 2944x1920 with bicubic interpolation (docs/methods/gmic.md,
``max_crop_noise=(100, 100)``, ``max_crop_size_noise=100``). Our images are already that window, so the noisy
window is taken inside the model frame itself: whatever it reaches beyond the image is background (the image's
minimum, i.e. raw intensity 0 before standardisation, as the official zero padding).

It runs on the training device after the copy, as one batched ``grid_sample``, so the loader workers only decode:
on one CPU core the bicubic resampling costs about 245 ms per 2944x1920 image (15 ms at 736x480, measured with
torch 2.14), more than the decoding itself, while a GPU does the whole batch in one kernel.

The draws are a function of ``(seed, epoch, micro-batch)`` and of each image's place in the global batch, so a
resumed run and an N-process run (each rank takes its share of the global batch) transform every image exactly
as one uninterrupted process does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

PAPER_HEIGHT, PAPER_WIDTH = 2944, 1920


def window_noise_params(
    n: int, seed: int, epoch: int, micro: int, shift_px: float, size_px: float, hw: tuple[int, int]
) -> Tensor:
    """(n, 4) float64 window borders ``(top, bottom, left, right)`` in pixel-edge coordinates of an ``hw`` image.

    ``shift_px`` and ``size_px`` are in pixels of the 2944-row paper frame and scale with the image height. The
    shift moves both borders of an axis alike (rounded to whole pixels, as the official code rounds); the size
    noise moves each border on its own, horizontal borders by ``size * W / H`` at most.
    """
    h, w = hw
    scale = h / PAPER_HEIGHT
    entropy = np.random.SeedSequence([seed, epoch, micro, 0xA06]).generate_state(1, np.uint64)[0]
    gen = torch.Generator().manual_seed(int(entropy) & 0x7FFF_FFFF_FFFF_FFFF)
    u = torch.rand(n, 6, generator=gen, dtype=torch.float64) * 2 - 1  # U(-1, 1): 2 shifts, 4 borders
    shift = torch.round(u[:, :2] * shift_px * scale)  # (n, 2) rows, cols
    size_v = size_px * scale
    size_h = round(size_px * PAPER_WIDTH / PAPER_HEIGHT) * scale
    top = shift[:, 0] + u[:, 2] * size_v
    bottom = h + shift[:, 0] + u[:, 3] * size_v
    left = shift[:, 1] + u[:, 4] * size_h
    right = w + shift[:, 1] + u[:, 5] * size_h
    return torch.stack([top, bottom, left, right], dim=1)


def resample_windows(batch: dict[str, Tensor], windows: Tensor) -> dict[str, Tensor]:
    """Crop every image of ``batch`` to its window and resize it back to the image size, in one pass.

    Args:
        batch: ``image`` (B, 1, H, W) float, resampled bicubic; ``masks`` (B, K, H, W) and ``breast_mask``
            (B, H, W) bool when present, resampled nearest so they stay masks. Other keys pass through.
        windows: (B, 4) ``(top, bottom, left, right)`` in pixels, as :func:`window_noise_params` returns.

    Returns:
        a new batch dict with the same keys and shapes.
    """
    image = batch["image"]
    b, _, h, w = image.shape
    win = windows.to(device=image.device, dtype=torch.float32)
    # Output pixel centres map linearly onto the window: with align_corners=False, normalised -1 and 1 are the
    # outer pixel edges, so the window's edges (in pixels) are 2 * edge / size - 1.
    top, bottom = 2 * win[:, 0] / h - 1, 2 * win[:, 1] / h - 1
    left, right = 2 * win[:, 2] / w - 1, 2 * win[:, 3] / w - 1
    theta = torch.zeros(b, 2, 3, device=image.device)
    theta[:, 0, 0], theta[:, 0, 2] = (right - left) / 2, (right + left) / 2  # x
    theta[:, 1, 1], theta[:, 1, 2] = (bottom - top) / 2, (bottom + top) / 2  # y
    grid = F.affine_grid(theta, [b, 1, h, w], align_corners=False)  # (B, H, W, 2)

    # Outside the image is background: sample (image - min) with zero padding and add the minimum back.
    floor = image.amin(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    out = dict(batch)
    out["image"] = F.grid_sample(image - floor, grid, mode="bicubic", align_corners=False) + floor
    for key in ("masks", "breast_mask"):
        if key in batch:
            m = batch[key]
            m4 = m if m.dim() == 4 else m[:, None]  # (B, K, H, W)
            res = F.grid_sample(m4.float(), grid, mode="nearest", align_corners=False) > 0.5
            out[key] = res if m.dim() == 4 else res[:, 0]
    return out


def augment_batch(
    batch: dict[str, Tensor],
    positions: Sequence[int],
    global_size: int,
    *,
    seed: int,
    epoch: int,
    micro: int,
    shift_px: float,
    size_px: float,
) -> dict[str, Tensor]:
    """Window noise for this process's images of one global batch.

    Args:
        batch: this process's images (see :func:`resample_windows`).
        positions: the place of each of them in the global batch (all of it in one process; every ``world``-th
            one with several), so every image gets the draw it gets in a single process.
        global_size: images in the global batch.
        seed: the training seed; the draws are a function of it, ``epoch`` and ``micro``.
        epoch: the 0-based epoch.
        micro: the micro-batch's index in the epoch.
        shift_px: window shift amplitude in paper-frame pixels.
        size_px: border noise amplitude in paper-frame pixels (with ``shift_px`` 0 too: the batch unchanged).
    """
    h, w = batch["image"].shape[-2:]
    windows = window_noise_params(global_size, seed, epoch, micro, shift_px, size_px, (h, w))  # (G, 4)
    return resample_windows(batch, windows[list(positions)])


def image_seeds(seed: int, epoch: int, micro: int, positions: Sequence[int]) -> list[int]:
    """One 63-bit seed per image of a micro-batch (what :meth:`wsseg.method.WSSegMethod.training_batch` draws from).

    A function of the run's seed, the epoch, the micro-batch and each image's place in the global batch only.
    """
    return [
        int(np.random.SeedSequence([seed, epoch, micro, p, 0xC809]).generate_state(1, np.uint64)[0]) & (2**63 - 1)
        for p in positions
    ]
