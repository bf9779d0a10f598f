"""Preview grids: a quick visual check of images and their lesion masks, as one PNG."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

# Outline colours per class: benign green, malignant red.
_COLOURS = ((40, 220, 60), (235, 40, 40))


def _window_level(image: np.ndarray) -> np.ndarray:
    """Map an image to uint8 using robust percentiles of its non-zero (breast) pixels."""
    img = image.astype(np.float32)
    fg = img[img > 0]
    if fg.size == 0:
        return np.zeros(img.shape, dtype=np.uint8)
    lo, hi = np.percentile(fg, [0.5, 99.8])
    out = np.clip((img - lo) / max(float(hi - lo), 1e-6), 0.0, 1.0) * 255.0
    # Keep the background black even when the breast minimum sits above the low percentile.
    return np.where(img > 0, out, 0.0).astype(np.uint8)


def _outline(mask: np.ndarray, scale: float) -> np.ndarray:
    """Outline of a full-resolution mask, thickened so it is still about 2 px wide after downscaling by ``scale``."""
    edge = mask & ~ndi.binary_erosion(mask)
    width = max(1, int(math.ceil(scale)))
    thick: np.ndarray = ndi.binary_dilation(edge, iterations=width) if width > 1 else edge
    return thick


def _tile(image: np.ndarray, masks: np.ndarray, caption: str, tile_height: int) -> Image.Image:
    """One RGB tile: window-levelled image, mask outlines, caption."""
    h, w = image.shape
    scale = h / tile_height
    tile_w = max(1, int(round(w / scale)))
    gray = Image.fromarray(_window_level(image)).resize((tile_w, tile_height), Image.Resampling.BILINEAR)
    rgb = np.repeat(np.asarray(gray)[:, :, None], 3, axis=2).copy()
    for k in range(min(len(masks), len(_COLOURS))):
        if not masks[k].any():
            continue
        line = Image.fromarray(_outline(masks[k].astype(bool), scale).astype(np.uint8) * 255)
        # BOX resampling averages, so any outline pixel in a block survives the threshold.
        small = np.asarray(line.resize((tile_w, tile_height), Image.Resampling.BOX)) > 0
        rgb[small] = _COLOURS[k]
    tile = Image.fromarray(rgb)
    draw = ImageDraw.Draw(tile)
    x0, y0, x1, y1 = draw.textbbox((3, 2), caption)
    draw.rectangle((x0 - 2, y0 - 1, x1 + 2, y1 + 1), fill=(0, 0, 0))
    draw.text((3, 2), caption, fill=(255, 255, 0))
    return tile


def save_preview(
    items: Sequence[tuple[np.ndarray, np.ndarray, str]], path: str | Path, ncols: int = 4, tile_height: int = 368
) -> Path:
    """Write a grid of images with lesion outlines and captions as a PNG.

    Each tile is ``tile_height`` tall, keeps its image's aspect ratio and sits in a cell as wide as the widest tile;
    the grid is ``min(ncols, len(items))`` cells across. The file is written atomically.

    Args:
        items: ``(image (H, W), masks (K, H, W) bool with K <= 2 [benign, malignant], caption)`` per tile.
        path: Output PNG path.
        ncols: Maximum tiles per row.
        tile_height: Height of every tile in pixels.

    Returns:
        The path written.
    """
    if not items:
        raise ValueError("save_preview needs at least one item")
    tiles = [
        _tile(np.asarray(img), np.asarray(m).reshape(-1, *np.shape(img)), cap, tile_height) for img, m, cap in items
    ]
    cols = min(ncols, len(tiles))
    rows = -(-len(tiles) // cols)
    cell_w = max(t.width for t in tiles)
    canvas = Image.new("RGB", (cols * cell_w, rows * tile_height), (0, 0, 0))
    for i, t in enumerate(tiles):
        canvas.paste(t, ((i % cols) * cell_w, (i // cols) * tile_height))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            canvas.save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
