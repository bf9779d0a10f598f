"""The NYU/GMIC input pipeline for real mammograms (docs/datasets.md), as one recorded transform.

1. Breast region: pixels above a small fraction of the image maximum, eroded, the largest connected
   component kept, dilated back (``crop_img_from_largest_connected``); the morphology runs on a subsampled
   grid so a 5000 x 3000 film costs milliseconds, with the iteration count scaled from NYU's 100 at full size.
2. Orientation: flip left-right so the chest wall is at column 0. The side is decided by image content
   (the heavier half of the breast region, docs/datasets.md); the dataset's tags are only compared.
3. Crop to the breast's bounding box, resize (aspect kept, bilinear with antialiasing) to fit the profile's
   window, chest wall against column 0, centred vertically, zero padding on the nipple side.
4. Standardisation is left to :class:`~wsseg.data.dataset.MammogramDataset` (per image, as in the spec);
   the cache stores the windowed image as uint16 scaled to the image maximum.

The :class:`Transform` records crop, flip, scale and offset so a map can be taken back to the original frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

# Fraction of the image maximum above which a pixel may be breast (NYU uses > 0 on cropped 12-bit data;
# scanned films and 8-bit PGMs have a non-zero background, hence a small margin).
BACKGROUND_FRACTION = 0.05
# NYU erodes and dilates 100 times on images about 3000 pixels tall; we scale that to the working grid.
NYU_ITERATIONS, NYU_HEIGHT = 100, 3000
WORK_SIDE = 512  # the breast-region morphology runs on a grid at most this many pixels on its long side


@dataclass(frozen=True)
class Transform:
    """Original frame -> model frame: crop, optional left-right flip, scale, then placement in the window.

    Attributes:
        original_hw: the decoded image's (rows, cols).
        crop: ``(top, bottom, left, right)`` of the breast box in the original frame, half-open.
        flipped: whether the crop was mirrored left-right (chest wall was on the right).
        scale: model pixels per original pixel.
        resized_hw: the crop's size after scaling.
        offset: ``(row, col)`` of the resized crop's top-left corner in the window.
        out_hw: the window's (rows, cols).
    """

    original_hw: tuple[int, int]
    crop: tuple[int, int, int, int]
    flipped: bool
    scale: float
    resized_hw: tuple[int, int]
    offset: tuple[int, int]
    out_hw: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in each cached image's meta)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Transform:
        """Inverse of :meth:`to_dict`."""
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}  # JSON lists
        return cls(**fields)

    def apply(self, arr: np.ndarray, is_mask: bool) -> np.ndarray:
        """Map an original-frame (H, W) image or mask into the window."""
        top, bottom, left, right = self.crop
        crop = arr[top:bottom, left:right]
        if self.flipped:
            crop = crop[:, ::-1]
        resized = _resize(crop, self.resized_hw, is_mask)
        out = np.zeros(self.out_hw, dtype=bool if is_mask else np.float32)
        r0, c0 = self.offset
        out[r0 : r0 + self.resized_hw[0], c0 : c0 + self.resized_hw[1]] = resized
        return out

    def to_original(self, arr: np.ndarray, is_mask: bool = False) -> np.ndarray:
        """Map a window-frame (H, W) map (a saliency map, a mask) back to the original image frame."""
        r0, c0 = self.offset
        crop = arr[r0 : r0 + self.resized_hw[0], c0 : c0 + self.resized_hw[1]]
        top, bottom, left, right = self.crop
        back = _resize(np.asarray(crop, dtype=np.float32), (bottom - top, right - left), is_mask)
        if self.flipped:
            back = back[:, ::-1]
        out = np.zeros(self.original_hw, dtype=bool if is_mask else np.float32)
        out[top:bottom, left:right] = back
        return out

    def box_to_window(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """Map a continuous ``(xmin, ymin, xmax, ymax)`` box from the original frame into the window."""
        top, _, left, right = self.crop
        xmin, ymin, xmax, ymax = box[0] - left, box[1] - top, box[2] - left, box[3] - top
        if self.flipped:  # continuous edges mirror as x' = w - x (docs/datasets.md, "Conventions")
            w = right - left
            xmin, xmax = w - xmax, w - xmin
        s, (r0, c0) = self.scale, self.offset
        return (xmin * s + c0, ymin * s + r0, xmax * s + c0, ymax * s + r0)


def _resize(arr: np.ndarray, hw: tuple[int, int], is_mask: bool) -> np.ndarray:
    """Bilinear resize (PIL antialiases when shrinking); masks are resampled as area fractions and cut at 0.5."""
    if arr.shape == tuple(hw):
        return arr.astype(bool) if is_mask else arr.astype(np.float32)
    src = Image.fromarray(np.ascontiguousarray(arr, dtype=np.float32))
    out = np.asarray(src.resize((hw[1], hw[0]), Image.Resampling.BILINEAR))
    return out >= 0.5 if is_mask else out.astype(np.float32)


def breast_region(image: np.ndarray) -> np.ndarray:
    """The breast as a bool (H, W) mask: the largest connected bright component, cleaned of thin lines.

    Film labels and scanner borders are separate components (or thin lines cut by the erosion), so they drop
    out; the result is the thresholded image inside the dilated largest component.
    """
    peak = float(image.max())
    fg = image > BACKGROUND_FRACTION * peak if peak > 0 else np.zeros(image.shape, bool)
    if not fg.any():
        return fg
    step = max(1, int(np.ceil(max(image.shape) / WORK_SIDE)))
    small = fg[::step, ::step]
    iterations = max(1, round(NYU_ITERATIONS * small.shape[0] / NYU_HEIGHT))
    eroded = ndimage.binary_erosion(small, iterations=iterations)
    if not eroded.any():  # a tiny or thin breast: keep the raw threshold rather than nothing
        eroded = small
    labels, n = ndimage.label(eroded)  # 4-connectivity, as NYU
    if n > 1:
        sizes = ndimage.sum_labels(eroded, labels, index=np.arange(1, n + 1))
        eroded = labels == int(np.argmax(sizes)) + 1
    component = ndimage.binary_dilation(eroded, iterations=iterations + 1)
    full = np.repeat(np.repeat(component, step, axis=0), step, axis=1)[: image.shape[0], : image.shape[1]]
    return np.asarray(fg & full, dtype=bool)


def chest_wall_on_right(breast: np.ndarray) -> bool:
    """Whether the breast region is heavier in the right half of the image (docs/datasets.md)."""
    w = breast.shape[1]
    return int(breast[:, w - w // 2 :].sum()) > int(breast[:, : w // 2].sum())


def plan_transform(
    image: np.ndarray, breast: np.ndarray, out_hw: tuple[int, int], include: np.ndarray | None = None
) -> Transform:
    """The crop/flip/resize that fits the breast into an ``out_hw`` window, chest wall at column 0.

    ``include`` ((H, W) bool, e.g. the annotated lesions) is kept inside the crop as well, so an annotation that
    lies outside the detected breast is not cut away; the flip is decided by the breast alone.
    """
    h0, w0 = image.shape
    keep = breast if include is None else breast | include
    if keep.any():
        rows, cols = np.flatnonzero(keep.any(axis=1)), np.flatnonzero(keep.any(axis=0))
        crop = (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1)
    else:
        crop = (0, h0, 0, w0)
    h, w = crop[1] - crop[0], crop[3] - crop[2]
    scale = min(out_hw[0] / h, out_hw[1] / w)
    resized = (min(out_hw[0], max(1, round(h * scale))), min(out_hw[1], max(1, round(w * scale))))
    offset = ((out_hw[0] - resized[0]) // 2, 0)
    return Transform((h0, w0), crop, chest_wall_on_right(breast), scale, resized, offset, (out_hw[0], out_hw[1]))
