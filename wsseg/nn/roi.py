"""The steps GMIC and GLAM share between their global and local modules, batched on the device.

Written from the GMIC/GLAM specification (docs/methods/). Apart from the ``*_reference`` functions at
the end (the official code's host loops, for `wsseg bench --mode reference` and tests), nothing here loops over
images or crops in Python and nothing copies to the host: the greedy selection loops over the (at most a handful
of) windows it picks, each step one average-pool and one argmax for the whole batch.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

# How GMIC and GLAM crop and paste back (their ``roi_impl`` config field): ``batched`` (one indexing operation
# for the whole batch, no host synchronisation) or ``reference`` (per-image, per-crop host loops, as the
# official code does; the same numbers, slower).
RoiImpl = Literal["batched", "reference"]
ROI_IMPLS: tuple[RoiImpl, RoiImpl] = ("batched", "reference")


def top_t_count(n: int, percent: float) -> int:
    """How many of ``n`` values the top-t% mean averages: Python's ``round`` (half to even), at least 1."""
    return max(1, int(round(n * percent)))


def top_t_mean(maps: Tensor, percent: float) -> Tensor:
    """Mean of the largest ``round(h*w*percent)`` values of each map: (B, C, h, w) -> (B, C)."""
    flat = maps.flatten(2)  # (B, C, h*w)
    k = top_t_count(flat.shape[-1], percent)
    return flat.topk(k, dim=-1).values.mean(dim=-1)


def tissue_mask(images: Tensor) -> Tensor:
    """(B, 1, H, W) standardised images -> (B, 1, H, W) float mask of tissue: pixels above the image's minimum.

    Air is the darkest value of a cropped, z-scored mammogram (and exactly constant in the phantom).
    """
    return (images > images.amin(dim=(1, 2, 3), keepdim=True)).to(images.dtype)


def tissue_fraction(tissue: Tensor, size: tuple[int, int]) -> Tensor:
    """The fraction of each cell of an (h, w) map covered by a (B, 1, H, W) :func:`tissue_mask`: (B, 1, h, w)."""
    return F.adaptive_avg_pool2d(tissue.float(), size)


def window_cells(crop: tuple[int, int], image: tuple[int, int], cam: tuple[int, int]) -> tuple[int, int]:
    """A crop's size in saliency-map cells, ``round(crop * cam / image)`` per axis, within [1, cam]."""
    rows, cols = (min(c, max(1, round(k * c / i))) for k, i, c in zip(crop, image, cam, strict=True))
    return rows, cols


def greedy_windows(maps: Tensor, num: int, window: tuple[int, int], eps: float = 1e-12) -> Tensor:
    """Greedy selection of ``num`` windows of ``window`` cells with the largest mean saliency.

    Per image: each class map is min-max normalised to [0, 1] (a constant map becomes all zeros instead of
    0/0), the class maps are summed, and ``num`` times the window with the largest average (first maximum in
    row-major order) is chosen and its cells are set to zero, so later windows avoid it but may overlap it.

    Args:
        maps: (B, C, h, w) saliency maps (not differentiated through).
        num: windows per image.
        window: (rows, cols) of a window in cells, at most (h, w).
        eps: guard of the normalisation's denominator.

    Returns:
        (B, num, 2) int64 upper-left corners (row, col) in cells.
    """
    maps = maps.detach().float()
    lo = maps.amin(dim=(2, 3), keepdim=True)
    hi = maps.amax(dim=(2, 3), keepdim=True)
    score = ((maps - lo) / (hi - lo).clamp_min(eps)).sum(dim=1, keepdim=True)  # (B, 1, h, w)
    b, _, h, w = score.shape
    wh, ww = window
    rows = torch.arange(h, device=maps.device)
    cols = torch.arange(w, device=maps.device)
    corners = []
    for _ in range(num):
        pooled = F.avg_pool2d(score, (wh, ww), stride=1)  # (B, 1, h-wh+1, w-ww+1)
        idx = pooled.flatten(1).argmax(dim=1)  # (B,), the first maximum
        r, c = idx.div(pooled.shape[-1], rounding_mode="floor"), idx % pooled.shape[-1]  # integer division
        corners.append(torch.stack((r, c), dim=1))
        in_r = (rows >= r[:, None]) & (rows < r[:, None] + wh)  # (B, h)
        in_c = (cols >= c[:, None]) & (cols < c[:, None] + ww)  # (B, w)
        score = score * ~(in_r[:, None, :, None] & in_c[:, None, None, :])
    return torch.stack(corners, dim=1)  # (B, num, 2)


def cells_to_pixels(corners: Tensor, cam: tuple[int, int], image: tuple[int, int], crop: tuple[int, int]) -> Tensor:
    """Map-cell corners (B, K, 2) -> pixel corners, ``round(i / h * H)`` (half to even), clamped inside the image.

    At the released settings (46x30 or 184x120 maps of 2944x1920 images) every window already lies inside the
    image; on other sizes a crop that would cross the bottom or right border is moved back inside, so every crop
    is ``crop`` pixels of real image (images smaller than a crop are padded by :func:`extract_crops`).
    """
    scale = torch.tensor([image[0] / cam[0], image[1] / cam[1]], dtype=torch.float64, device=corners.device)
    pixels = torch.round(corners.double() * scale).long()  # (B, K, 2)
    limit = torch.tensor([image[0] - crop[0], image[1] - crop[1]], device=corners.device).clamp_min(0)
    return torch.minimum(pixels.clamp_min(0), limit)


def propose_windows(maps: Tensor, num: int, crop: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Greedy window proposal on saliency maps, returned as pixel corners of ``crop``-sized crops.

    Composes :func:`window_cells` (the crop's size in cells), :func:`greedy_windows` and :func:`cells_to_pixels`.

    Args:
        maps: (B, C, h, w) saliency maps of images of ``size`` (H, W).
        num: windows per image.
        crop: (rows, cols) of a crop in pixels.
        size: (H, W) of the images.

    Returns:
        (B, num, 2) int64 upper-left pixel corners, every crop inside the image.
    """
    cam = (int(maps.shape[-2]), int(maps.shape[-1]))
    cells = greedy_windows(maps, num, window_cells(crop, size, cam))  # (B, num, 2) in cells
    return cells_to_pixels(cells, cam, size, crop)


def extract_crops(images: Tensor, corners: Tensor, crop: tuple[int, int]) -> Tensor:
    """Gather the crops at pixel ``corners`` from every image in one indexing operation.

    Args:
        images: (B, C, H, W).
        corners: (B, K, 2) int64 upper-left (row, col), crops inside the image (see :func:`cells_to_pixels`).
        crop: (rows, cols) of a crop.

    Returns:
        (B, K, C, rows, cols). An image smaller than the crop is padded at the bottom/right with its minimum.
    """
    ch, cw = crop
    ph, pw = max(0, ch - images.shape[-2]), max(0, cw - images.shape[-1])
    if ph or pw:
        lo = images.amin(dim=(1, 2, 3), keepdim=True)
        images = F.pad(images - lo, (0, pw, 0, ph)) + lo
    b, c, h, w = images.shape
    k = corners.shape[1]
    oy = torch.arange(ch, device=images.device)[:, None]  # (ch, 1) offsets inside a crop
    ox = torch.arange(cw, device=images.device)  # (cw,)
    flat = (corners[..., 0, None, None] + oy) * w + corners[..., 1, None, None] + ox  # (B, K, ch, cw) pixel indices
    index = flat.view(b, 1, k * ch * cw).expand(b, c, k * ch * cw)
    crops = images.reshape(b, c, h * w).gather(2, index)  # (B, C, K*ch*cw)
    return crops.view(b, c, k, ch, cw).transpose(1, 2)  # (B, K, C, ch, cw)


def paste_patches(patch_maps: Tensor, corners: Tensor, crop: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Nearest-resize every patch map to the crop size and write it into a zero canvas; later patches win.

    Args:
        patch_maps: (B, K, C, p, q) maps of the crops (a crop of ``crop`` pixels maps to p x q values).
        corners: (B, K, 2) int64 pixel corners of crops inside the canvas (as :func:`cells_to_pixels` returns
            them; a canvas smaller than the crop gets the crop's upper-left part, at corner (0, 0)).
        crop: (rows, cols) of a crop in pixels.
        size: (H, W) of the canvas.

    Returns:
        (B, C, H, W): each pixel inside a crop holds the value of the last crop covering it (nearest
        resampling, ``floor(offset * p / rows)``); pixels outside every crop are 0. Differentiable w.r.t.
        ``patch_maps`` (an overwritten part of an earlier patch gets no gradient).

    The patch maps are resampled to the crop once (the same source rows and columns for every crop), then each
    crop index k scatters its crop into the flattened canvas at per-image offsets: K passes over crop-sized data
    (K is a handful; the loop is over crops, not images) and nothing read back to the host.
    """
    b, k, c, p, q = patch_maps.shape
    h, w = size
    ch, cw = min(crop[0], h), min(crop[1], w)  # a canvas smaller than the crop keeps the crop's upper-left part
    dev = corners.device
    oy, ox = torch.arange(ch, device=dev), torch.arange(cw, device=dev)  # offsets inside a crop
    src_y = (oy * p).div(crop[0], rounding_mode="floor")  # (ch,) nearest source row
    src_x = (ox * q).div(crop[1], rounding_mode="floor")  # (cw,)
    resized = patch_maps.index_select(3, src_y).index_select(4, src_x)  # (B, K, C, ch, cw)
    canvas = patch_maps.new_zeros(b, c, h * w)
    for j in range(k):
        target = (corners[:, j, 0, None, None] + oy[:, None]) * w + corners[:, j, 1, None, None] + ox  # (B, ch, cw)
        index = target.view(b, 1, ch * cw).expand(b, c, ch * cw)
        # In place: autograd records it, and the backward of each write zeroes the gradient of what it overwrote.
        canvas.scatter_(2, index, resized[:, j].reshape(b, c, ch * cw))  # (B, C, H*W)
    return canvas.view(b, c, h, w)


# ----- Reference implementations: the official code's per-image, per-crop host loops -----
# Selected with ``roi_impl="reference"`` on GMIC and GLAM. They read the corners back to the host (``tolist``, a
# device synchronisation) and slice or paste one crop at a time, as the original GMIC and GLAM code does; kept
# so that `wsseg bench --mode reference` measures the batched helpers' speedup in one run, and as the
# executable specification the batched helpers are tested against.


def extract_crops_reference(images: Tensor, corners: Tensor, crop: tuple[int, int]) -> Tensor:
    """:func:`extract_crops` as a Python loop over images and crops (host synchronisation); same result."""
    ch, cw = crop
    ph, pw = max(0, ch - images.shape[-2]), max(0, cw - images.shape[-1])
    if ph or pw:
        lo = images.amin(dim=(1, 2, 3), keepdim=True)
        images = F.pad(images - lo, (0, pw, 0, ph)) + lo
    out = []
    for b, image_corners in enumerate(corners.tolist()):  # the host synchronisation
        out.append(torch.stack([images[b, :, r : r + ch, c : c + cw] for r, c in image_corners]))  # (K, C, ch, cw)
    return torch.stack(out)  # (B, K, C, ch, cw)


def paste_patches_reference(
    patch_maps: Tensor, corners: Tensor, crop: tuple[int, int], size: tuple[int, int]
) -> Tensor:
    """:func:`paste_patches` as a Python loop: resize each patch map (nearest) and write it into the canvas."""
    b, k, c, p, q = patch_maps.shape
    h, w = size
    canvas = patch_maps.new_zeros(b, c, h, w)
    for i, image_corners in enumerate(corners.tolist()):  # the host synchronisation
        for j, (r, col) in enumerate(image_corners):
            rows, cols = min(crop[0], h - r), min(crop[1], w - col)  # a crop larger than the image is cut
            patch = F.interpolate(patch_maps[i, j][None], size=crop, mode="nearest")[0]  # (C, crop_h, crop_w)
            canvas[i, :, r : r + rows, col : col + cols] = patch[:, :rows, :cols]
    return canvas  # (B, C, H, W)
