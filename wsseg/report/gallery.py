"""A run's saliency gallery: its maps on a few fixed test images, small enough to commit (``gallery.npz``).

The images are chosen from the test split alone (the first ``n_per_class`` images in dataset order with a
lesion of one class and none of the other), so every method run on the same test split shows the same images and
the HTML report can put them side by side. Images, masks and maps are stored at display size as uint8.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from wsseg._io import atomic_save
from wsseg.core import CLASSES
from wsseg.data.dataset import MammogramDataset
from wsseg.method import WSSegMethod
from wsseg.runtime.inference import predict_batches

GALLERY_NPZ = "gallery.npz"
DISPLAY_HEIGHT = 192


@dataclass
class Gallery:
    """Maps of one run on the gallery images, at display size.

    Attributes:
        image_ids: (N,) test image ids.
        lesion_class: (N,) the class each image was chosen for (its lesion's class).
        images: (N, h, w) uint8 mammograms, min-max scaled per image.
        masks: (N, K, h, w) bool ground truth per class.
        maps: (N, K, h, w) uint8 saliency (0..255 for 0..1).
        thresholds: (K,) the run's calibrated thresholds.
    """

    image_ids: list[str]
    lesion_class: list[str]
    images: np.ndarray
    masks: np.ndarray
    maps: np.ndarray
    thresholds: np.ndarray

    def save(self, path: str | Path) -> Path:
        """Write the gallery to one compressed ``.npz`` file, atomically."""
        arrays = {
            "image_ids": np.array(self.image_ids, dtype=str),
            "lesion_class": np.array(self.lesion_class, dtype=str),
            "classes": np.array(CLASSES, dtype=str),
            "images": self.images,
            "masks": np.packbits(self.masks, axis=-1),
            "width": np.array(self.images.shape[-1]),
            "maps": self.maps,
            "thresholds": self.thresholds,
        }
        # numpy's stubs match **arrays against savez_compressed's allow_pickle (numpy >= 2.1) too.
        return atomic_save(path, lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> Gallery:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: unreadable, or not a wsseg gallery (arrays of other shapes or types); the message names
                the file.
        """
        fix = "re-make it with `wsseg gallery --run RUN`"
        path = Path(path)
        if not path.is_file():  # a FIFO would block the read forever
            raise ValueError(f"the gallery {path} is missing or not a regular file; {fix}")
        try:
            with np.load(path, allow_pickle=False) as z:
                width = int(z["width"])
                gallery = cls(
                    z["image_ids"].tolist(),
                    z["lesion_class"].tolist(),
                    z["images"],
                    np.unpackbits(z["masks"], axis=-1, count=width).astype(bool),
                    z["maps"],
                    z["thresholds"],
                )
        except (OSError, KeyError, ValueError, TypeError, EOFError, zipfile.BadZipFile, zlib.error) as e:
            raise ValueError(f"cannot read gallery {path}: {e or type(e).__name__}; {fix}") from None
        n, k = len(gallery.image_ids), len(CLASSES)
        images, masks, maps = gallery.images, gallery.masks, gallery.maps
        ok = (
            images.ndim == 3
            and images.dtype == np.uint8
            and len(images) == n
            and len(gallery.lesion_class) == n
            and all(c in CLASSES for c in gallery.lesion_class)
            and masks.shape == (n, k, *images.shape[1:])
            and maps.shape == masks.shape
            and maps.dtype == np.uint8
            and gallery.thresholds.shape == (k,)
        )
        if not ok:
            raise ValueError(f"{path} is not a wsseg gallery (its arrays have other shapes or types); {fix}")
        return gallery


def gallery_indices(dataset: MammogramDataset, n_per_class: int = 3) -> list[tuple[int, str]]:
    """(index, class) of the gallery images: per class, the first images with only that class's lesion."""
    labels = dataset.labels  # (N, K)
    chosen: list[tuple[int, str]] = []
    for k, name in enumerate(CLASSES):
        only = np.flatnonzero((labels[:, k] > 0) & (labels.sum(axis=1) == labels[:, k]))
        chosen += [(int(i), name) for i in only[:n_per_class]]
    return chosen


def _display_size(height: int, width: int) -> tuple[int, int]:
    scale = min(1.0, DISPLAY_HEIGHT / height)
    return max(1, round(height * scale)), max(1, round(width * scale))


@torch.no_grad()
def _shrink(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    x = x.float()
    if mode == "area":
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def make_gallery(
    method: WSSegMethod,
    dataset: MammogramDataset,
    thresholds: dict[str, float],
    device: torch.device,
    bf16: bool = False,
    n_per_class: int = 3,
) -> Gallery | None:
    """Run ``method`` on the gallery images of ``dataset`` (a test split with masks); None when none has a lesion."""
    chosen = gallery_indices(dataset, n_per_class)
    if not chosen:
        return None
    subset = Subset(dataset, [i for i, _ in chosen])
    ids, images, masks, maps = [], [], [], []
    for batch, out in predict_batches(method, subset, 4, device, bf16):
        size = _display_size(*batch["image"].shape[-2:])
        img = _shrink(batch["image"].cpu(), size, "area")[:, 0]  # (B, h, w)
        lo = img.flatten(1).amin(1)[:, None, None]
        hi = img.flatten(1).amax(1)[:, None, None]
        images.append(((img - lo) / (hi - lo).clamp_min(1e-6) * 255).round().to(torch.uint8))
        # A quarter of a display pixel covered counts, so that a lesion of a few pixels keeps its outline.
        masks.append(_shrink(batch["masks"].cpu(), size, "area") >= 0.25)  # (B, K, h, w)
        sal = _shrink(out.saliency.cpu(), size, "bilinear").clamp(0, 1)  # (B, K, h, w)
        maps.append((sal * 255).round().to(torch.uint8))
        ids += [m["image_id"] for m in batch["meta"]]
    return Gallery(
        ids,
        [c for _, c in chosen],
        torch.cat(images).numpy(),
        torch.cat(masks).numpy(),
        torch.cat(maps).numpy(),
        np.array([thresholds.get(c, np.nan) for c in CLASSES], dtype=np.float64),
    )
