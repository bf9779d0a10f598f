"""Preview grids: a quick visual check of images and their annotations, as one PNG.

A tile shows what the evaluator will see: the image after the pipeline (crop, flip, resize), the evaluated
region (thin blue outline: the breast, grown by any lesion lying outside it), each class's mask as scored
(benign green, malignant red), the lesions' own boxes and circles in the same colours, and a frame in the class's
colour with ``label only`` when the image is labelled with a class whose lesion has no location.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage as ndi

# Outline colours per class: benign green, malignant red; the evaluated region in blue.
_COLOURS = ((40, 220, 60), (235, 40, 40))
_REGION = (70, 140, 255)


@dataclass
class PreviewItem:
    """One tile of a preview grid, everything in the image's (window) frame.

    Attributes:
        image: (H, W) image.
        masks: (K, H, W) bool class masks as scored (K <= 2: benign, malignant).
        caption: text drawn on the tile.
        region: (H, W) bool evaluated region, outlined when given.
        boxes: ``(class index, (xmin, ymin, xmax, ymax))`` per lesion, continuous pixel edges.
        circles: ``(class index, (x, y, radius))`` per circle annotation: continuous centre, radius in pixels.
        label_only: class indices the image is labelled with but whose lesion has no location.
    """

    image: np.ndarray
    masks: np.ndarray
    caption: str
    region: np.ndarray | None = None
    boxes: list[tuple[int, tuple[float, float, float, float]]] = field(default_factory=list)
    circles: list[tuple[int, tuple[float, float, float]]] = field(default_factory=list)
    label_only: list[int] = field(default_factory=list)


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


def _draw_outline(rgb: np.ndarray, mask: np.ndarray, scale: float, colour: tuple[int, int, int]) -> None:
    """Paint the outline of a full-resolution ``mask`` onto the tile-sized ``rgb`` (in place)."""
    tile_h, tile_w = rgb.shape[:2]
    line = Image.fromarray(_outline(mask.astype(bool), scale).astype(np.uint8) * 255)
    # BOX resampling averages, so any outline pixel in a block survives the threshold.
    small = np.asarray(line.resize((tile_w, tile_h), Image.Resampling.BOX)) > 0
    rgb[small] = colour


def _tile(item: PreviewItem, tile_height: int) -> Image.Image:
    """One RGB tile: window-levelled image, region and mask outlines, boxes, circles, label-only frame, caption."""
    image, masks = item.image, item.masks
    h, w = image.shape
    scale = h / tile_height
    tile_w = max(1, int(round(w / scale)))
    gray = Image.fromarray(_window_level(image)).resize((tile_w, tile_height), Image.Resampling.BILINEAR)
    rgb = np.repeat(np.asarray(gray)[:, :, None], 3, axis=2).copy()
    if item.region is not None and item.region.any():
        _draw_outline(rgb, item.region, scale, _REGION)
    for k in range(min(len(masks), len(_COLOURS))):
        if masks[k].any():
            _draw_outline(rgb, masks[k], scale, _COLOURS[k])
    tile = Image.fromarray(rgb)
    draw = ImageDraw.Draw(tile)
    for k, (x0, y0, x1, y1) in item.boxes:
        draw.rectangle((x0 / scale, y0 / scale, x1 / scale - 1, y1 / scale - 1), outline=_COLOURS[k % 2])
    for k, (cx, cy, r) in item.circles:
        cx, cy, r = cx / scale, cy / scale, max(r / scale, 1.5)  # continuous centre (pixel centres at +0.5)
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=_COLOURS[k % 2])
    for i, k in enumerate(item.label_only):
        inset = 3 * i
        draw.rectangle(
            (inset, inset, tile.width - 1 - inset, tile.height - 1 - inset), outline=_COLOURS[k % 2], width=3
        )
    lines = [item.caption] + [f"{('benign', 'malignant')[k]}: label only" for k in item.label_only]
    y: float = 2  # top of the next caption line (PIL's text boxes are typed as floats)
    for text in lines:
        x0, y0, x1, y1 = draw.textbbox((3, y), text)
        draw.rectangle((x0 - 2, y0 - 1, x1 + 2, y1 + 1), fill=(0, 0, 0))
        draw.text((3, y), text, fill=(255, 255, 0))
        y = y1 + 3
    return tile


def save_preview(
    items: Sequence[PreviewItem | tuple[np.ndarray, np.ndarray, str]],
    path: str | Path,
    ncols: int = 4,
    tile_height: int = 368,
) -> Path:
    """Write a grid of images with lesion outlines and captions as a PNG.

    Each tile is ``tile_height`` tall, keeps its image's aspect ratio and sits in a cell as wide as the widest tile;
    the grid is ``min(ncols, len(items))`` cells across. The file is written atomically.

    Args:
        items: a :class:`PreviewItem` per tile, or ``(image (H, W), masks (K, H, W) bool with K <= 2 [benign,
            malignant], caption)``.
        path: Output PNG path.
        ncols: Maximum tiles per row.
        tile_height: Height of every tile in pixels.

    Returns:
        The path written.
    """
    if not items:
        raise ValueError("save_preview needs at least one item")
    tiles = []
    for item in items:
        if not isinstance(item, PreviewItem):
            img, m, cap = item
            item = PreviewItem(np.asarray(img), np.asarray(m).reshape(-1, *np.shape(img)), cap)
        tiles.append(_tile(item, tile_height))
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
