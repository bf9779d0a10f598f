"""What every source's fixture writer shares: a simple phantom breast and the writers of PNG, DICOM and CSV files.

The fixture writers themselves live beside their sources (``write_fixture`` in each module of
:mod:`wsseg.data.sources`); :mod:`wsseg.data.fixtures` gathers them for ``wsseg data fixture`` and the tests.

The phantom is a half-ellipse breast against the chest wall with one bright disc lesion at a known place,
plus a small bright "film label" in the far corner (a second component the breast crop must drop). Right
breasts are mirrored so the native files face the way the real datasets do.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

H, W = 64, 48  # native fixture size (rows, cols)


@dataclass
class Phantom:
    """A native image, its lesion mask and where the lesion is (native frame, row from the top)."""

    image: np.ndarray  # (H, W) float in [0, 1]
    lesion: np.ndarray  # (H, W) bool
    center: tuple[int, int]  # (row, col)
    radius: int


def phantom(
    chest_wall_right: bool, lesion_rc: tuple[int, int] = (30, 14), radius: int = 4, h: int = H, w: int = W
) -> Phantom:
    """A canonical breast (chest wall at column 0) mirrored when ``chest_wall_right``."""
    rows, cols = np.mgrid[0:h, 0:w]
    r0, a, b = h / 2, h * 0.42, w * 0.6
    breast = ((rows + 0.5 - r0) / a) ** 2 + ((cols + 0.5) / b) ** 2 <= 1.0
    img = np.where(breast, 0.45 + 0.05 * np.cos(rows / 3.0), 0.0)
    lesion = (rows - lesion_rc[0]) ** 2 + (cols - lesion_rc[1]) ** 2 <= radius**2
    img = np.where(lesion, 0.95, img)
    img[h - 4 : h - 1, w - 5 : w - 1] = 1.0  # a film label: small, bright, detached from the breast
    center = lesion_rc
    if chest_wall_right:
        img, lesion = img[:, ::-1], lesion[:, ::-1]
        center = (lesion_rc[0], w - 1 - lesion_rc[1])
    return Phantom(np.ascontiguousarray(img), np.ascontiguousarray(lesion), center, radius)


def save_png16(path: Path, img: np.ndarray, peak: int = 4095) -> None:
    """12-bit values stored in a 16-bit PNG (the GMIC sample convention)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(img * peak).astype(np.uint16)).save(path)


def save_mask(path: Path, mask: np.ndarray) -> None:
    """A {0, 255} 8-bit PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def save_dicom(
    path: Path,
    img: np.ndarray,
    monochrome1: bool = False,
    bits: int = 12,
    syntax: str = "",
    padding: int | None = None,
    tags: dict[str, Any] | None = None,
) -> None:
    """A single-frame DICOM mammogram; MONOCHROME1 stores inverted values.

    Uncompressed unless ``syntax`` is a compressed transfer-syntax UID (RLE, JPEG 2000: encoded by pydicom with
    pylibjpeg). ``padding`` writes that stored value outside the breast and declares it as Pixel Padding Value.
    ``tags`` sets further attributes by keyword (``WindowCenter``, ``PresentationIntentType``...).
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalMammographyXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    peak = 2**bits - 1
    values = np.round(img * peak).astype(np.uint16)
    if monochrome1:
        values = (peak - values).astype(np.uint16)
    if padding is not None:
        values[img == 0] = padding
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalMammographyXRayImageStorageForPresentation  # 1.2.840.10008.5.1.4.1.1.1.2
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.Rows, ds.Columns = values.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.PixelSpacing = [0.07, 0.07]
    if padding is not None:
        ds.PixelPaddingValue = padding
    for keyword, value in (tags or {}).items():
        setattr(ds, keyword, value)
    ds.PixelData = values.tobytes()
    if syntax:
        ds.compress(syntax, values, generate_instance_uid=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def scaled_phantom(chest_wall_right: bool, scale: int) -> Phantom:
    """The fixture phantom ``scale`` times larger on each side (``scale`` 55-70 gives full-field sizes)."""
    if scale == 1:
        return phantom(chest_wall_right)
    return phantom(chest_wall_right, (30 * scale, 14 * scale), 4 * scale, H * scale, W * scale)


def write_csv(path: Path, header: list[str], rows: Sequence[Mapping[str, object]]) -> None:
    """A comma-separated file with ``header``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
