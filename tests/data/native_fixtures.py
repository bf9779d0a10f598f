"""Writers of tiny native-layout fixtures (manifest CSV, mini-MIAS, NYU exam list, DICOM) from a simple phantom.

The phantom is a half-ellipse breast against the chest wall with one bright disc lesion at a known place,
plus a small bright "film label" in the far corner (a second component the breast crop must drop). Right
breasts are mirrored so the native files face the way the real datasets do.
"""

from __future__ import annotations

import csv
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

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


def save_dicom(path: Path, img: np.ndarray, monochrome1: bool = False, bits: int = 12) -> None:
    """An uncompressed single-frame DICOM mammogram (MONOCHROME1 stores inverted values)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    peak = 2**bits - 1
    values = np.round(img * peak).astype(np.uint16)
    if monochrome1:
        values = (peak - values).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
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
    ds.PixelData = values.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


MANIFEST_HEADER = [
    "image",
    "image_id",
    "patient_id",
    "laterality",
    "view",
    "benign",
    "malignant",
    "split",
    "benign_mask",
    "malignant_mask",
    "boxes",
]


def write_manifest(root: Path, n_patients: int = 6, dicom_monochrome1: bool = True) -> dict[str, Phantom]:
    """``manifest.csv`` + PNG images and masks; patient 0's right view is a MONOCHROME1 DICOM with a box.

    Each patient has an L-CC (benign mask) and an R-CC (malignant mask) view; returns image_id -> phantom.
    """
    rows, truth = [], {}
    for p in range(n_patients):
        for lat in ("L", "R"):
            ph = phantom(chest_wall_right=lat == "R")
            image_id = f"p{p}-{lat}"
            truth[image_id] = ph
            cls = "benign" if lat == "L" else "malignant"
            row = {
                "image_id": image_id,
                "patient_id": f"P{p}",
                "laterality": lat,
                "view": "CC",
                "benign": int(cls == "benign"),
                "malignant": int(cls == "malignant"),
                "split": "",
                "benign_mask": "",
                "malignant_mask": "",
                "boxes": "",
            }
            if p == 0 and lat == "R" and dicom_monochrome1:
                save_dicom(root / "dicom" / f"{image_id}.dcm", ph.image, monochrome1=True)
                row["image"] = f"dicom/{image_id}.dcm"
                (r, c), rad = ph.center, ph.radius
                row["boxes"] = json.dumps([{"class": cls, "box": [c - rad, r - rad, c + rad + 1, r + rad + 1]}])
            else:
                save_png16(root / "images" / f"{image_id}.png", ph.image)
                save_mask(root / "masks" / f"{image_id}_{cls}.png", ph.lesion)
                row["image"] = f"images/{image_id}.png"
                row[f"{cls}_mask"] = f"masks/{image_id}_{cls}.png"
            rows.append(row)
    write_csv(root / "manifest.csv", MANIFEST_HEADER, rows)
    return truth


def write_csv(path: Path, header: list[str], rows: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


MIAS = 96  # mini-MIAS fixture side (the real one is 1024)


def write_mias(root: Path, n_pairs: int = 6, kaggle_header: bool = True) -> dict[str, Phantom]:
    """``mdbNNN.pgm`` + ``Info.txt`` with the traps: NORM lines, a 4-token line, a doubled image, bottom-left y."""
    lines, truth = [], {}
    if kaggle_header:
        lines.append("REFNUM BG CLASS SEVERITY X Y RADIUS ")
    for n in range(1, 2 * n_pairs + 1):
        ref = f"mdb{n:03d}"
        right = n % 2 == 1  # odd numbers are right breasts
        ph = phantom(right, lesion_rc=(40, 20), radius=6, h=MIAS, w=MIAS)
        truth[ref] = ph
        img = np.round(ph.image * 200 + 8).astype(np.uint8)  # film: a non-zero background
        (root / "pgm").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "pgm" / f"{ref}.pgm")
        if n % 3 == 0:
            lines.append(f"{ref} F NORM ")
            continue
        sev = "M" if n % 2 else "B"
        r, c = ph.center
        lines.append(f"{ref} G CIRC {sev} {c} {MIAS - r} {ph.radius} ")  # y from the bottom
        if n == 1:
            lines.append(f"{ref} G CALC B")  # a finding without a location on the same image
    (root / "Info.txt").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return truth


def write_nyu(root: Path, n_exams: int = 4, horizontal_flip: str = "NO") -> dict[str, Phantom]:
    """``exam_list_before_cropping.pkl`` (protocol 3) + ``images/*.png`` + ``segmentation/*.png``."""
    exams, truth = [], {}
    for i in range(n_exams):
        exam: dict[str, object] = {"horizontal_flip": horizontal_flip}
        for view in ("L-CC", "R-CC", "L-MLO", "R-MLO"):
            name = f"{i}_{view}"
            right_native = (view[0] == "R") == (horizontal_flip == "NO")
            ph = phantom(chest_wall_right=right_native)
            truth[name] = ph
            save_png16(root / "images" / f"{name}.png", ph.image)
            exam[view] = [name]
            exam[f"{view}_benign_seg"] = [f"{name}_benign"]  # listed even when the file does not exist
            exam[f"{view}_malignant_seg"] = [f"{name}_malignant"]
            if view[0] == "L":
                save_mask(root / "segmentation" / f"{name}_malignant.png", ph.lesion)
        exam["cancer_label"] = {
            "benign": 0,
            "malignant": 1,
            "unknown": 0,
            "left_benign": 0,
            "right_benign": 0,
            "left_malignant": 1,
            "right_malignant": 0,
        }
        exams.append(exam)
    (root / "exam_list_before_cropping.pkl").write_bytes(pickle.dumps(exams, protocol=3))
    return truth
