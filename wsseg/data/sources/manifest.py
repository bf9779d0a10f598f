"""``manifest``: your own images, listed in a CSV (the documented interchange format).

``--root`` is a CSV file, or a folder holding ``manifest.csv``. Paths in the CSV are relative to the CSV's
folder (or absolute) and must lie under that folder, unless ``--allow-outside-root`` is given (a downloaded
manifest must not make wsseg read other files). One row per image; columns:

=================  ========  ==================================================================================
column             required  meaning
=================  ========  ==================================================================================
image              yes       image file: DICOM (``.dcm``/``.dicom``), PNG (8/16-bit), PGM, TIFF, JPEG
patient_id         yes       split unit: all images of a patient go to one split
benign, malignant  yes       image-level labels, ``0`` or ``1``
image_id           no        unique id (default: the image file's stem)
exam_id            no        default: the patient id
laterality         no        ``L`` or ``R``
view               no        ``CC``, ``MLO``...
split              no        ``train``, ``val`` or ``test`` for every row, or empty for a seeded split by patient
benign_mask        no        binary mask image of the image's size, nonzero = benign lesion (original frame)
malignant_mask     no        same for malignant lesions
boxes              no        JSON list ``[{"class": "malignant", "box": [xmin, ymin, xmax, ymax]}]`` in original
                             pixels (x = column, half-open on the max side)
pixel_spacing_mm   no        native pixel spacing
=================  ========  ==================================================================================

Images are in their native orientation: the chest-wall side is found by content and flipped to column 0.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from wsseg.data.fixture_kit import Phantom, phantom, save_dicom, save_mask, save_png16, write_csv
from wsseg.data.sources import DataError, DataSource, Lesion, Problem, ScanResult, SourceRecord, register_source

REQUIRED = ("image", "patient_id", "benign", "malignant")
SPLIT_VALUES = ("train", "val", "test")


def parse_flag(value: str, column: str, where: str) -> int:
    """A 0/1 label cell.

    Raises:
        DataError: any other value.
    """
    v = value.strip()
    if v in ("0", "1"):
        return int(v)
    raise DataError(where, f"unknown label {value!r} in column {column!r}", "write 0 or 1")


def parse_spacing(value: str, where: str) -> float | None:
    """A pixel_spacing_mm cell: a positive number of mm, or empty (None).

    Raises:
        DataError: anything else (text, zero, negative, NaN).
    """
    v = value.strip()
    if not v:
        return None
    try:
        spacing = float(v)
    except ValueError:
        spacing = math.nan
    if not (math.isfinite(spacing) and spacing > 0):
        raise DataError(
            where, f"bad pixel_spacing_mm {value!r}", "write the spacing in mm (e.g. 0.07) or leave it empty"
        )
    return spacing


@register_source("manifest")
class ManifestSource(DataSource):
    """Your own images listed in a CSV: paths, labels, patient ids, optional masks or boxes and split."""

    annotation = "mask/box"
    label_source = "user"
    licence = "yours"

    def write_fixture(self, root: Path) -> dict[str, Any]:
        """A tiny manifest download of PNGs, masks and one MONOCHROME1 DICOM (:func:`write_fixture`)."""
        return write_fixture(root)

    def scan(self, root: Path) -> ScanResult:
        """Read the CSV; a bad row is a problem naming the row, the others are kept."""
        csv_path = root / "manifest.csv" if root.is_dir() else root
        if not csv_path.is_file():
            raise DataError(csv_path, "no manifest CSV", "pass --root FILE.csv or a folder holding manifest.csv")
        base = csv_path.parent
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
                if missing:
                    raise DataError(csv_path, f"missing column(s) {missing}", f"the header needs {', '.join(REQUIRED)}")
                rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as e:
            raise DataError(csv_path, f"not a readable CSV ({e})", "save it as UTF-8 comma-separated text") from None
        records: list[SourceRecord] = []
        problems: list[Problem] = []
        seen: set[str] = set()
        for i, row in enumerate(rows, start=2):  # line 1 is the header
            where = f"{csv_path}:{i}"
            short = [c for c in REQUIRED if row.get(c) is None]
            if short:
                problems.append(Problem(where, f"the row ends before column(s) {short}; give every row all the fields"))
                continue
            cut = [c for c, v in row.items() if c is not None and v is None]
            if cut:  # a file cut short: the optional columns of the last row are missing
                problems.append(Problem(where, f"the row ends before column(s) {cut}; the file is cut short or broken"))
                continue
            if row.get(None):
                problems.append(Problem(where, "the row has more fields than the header (an unquoted comma?)"))
                continue
            try:
                records.append(self._record(row, base, where, seen))
            except DataError as e:
                problems.append(Problem(e.file, e.reason + (f"; {e.fix}" if e.fix else "")))
        return ScanResult(records, problems)

    @staticmethod
    def _record(row: dict[str, str], base: Path, where: str, seen: set[str]) -> SourceRecord:
        def path(value: str) -> Path:
            p = Path(value.strip())
            return p if p.is_absolute() else base / p

        image = path(row["image"])
        image_id = (row.get("image_id") or "").strip() or image.stem
        if image_id in seen:
            raise DataError(where, f"duplicate image_id {image_id!r}", "give each row a unique image_id")
        seen.add(image_id)
        if not row["patient_id"].strip():
            raise DataError(where, "empty patient_id", "give every row its patient (the unit of the split)")
        labels = (parse_flag(row["benign"], "benign", where), parse_flag(row["malignant"], "malignant", where))
        split = (row.get("split") or "").strip() or None
        if split is not None and split not in SPLIT_VALUES:
            raise DataError(
                where, f"unknown split {split!r}", f"use one of {', '.join(SPLIT_VALUES)} or leave it empty"
            )
        lesions = [
            Lesion(cls, "mask", mask_file=path(row[f"{cls}_mask"]))
            for cls in ("benign", "malignant")
            if (row.get(f"{cls}_mask") or "").strip()
        ]
        if (row.get("boxes") or "").strip():
            try:
                for item in json.loads(row["boxes"]):
                    if item["class"] not in ("benign", "malignant"):
                        raise DataError(where, f"unknown box class {item['class']!r}", "use benign or malignant")
                    xmin, ymin, xmax, ymax = (float(v) for v in item["box"])
                    if not all(math.isfinite(v) for v in (xmin, ymin, xmax, ymax)) or xmax <= xmin or ymax <= ymin:
                        raise ValueError(f"box {item['box']} is empty or not finite")
                    lesions.append(Lesion(item["class"], "box", box=(xmin, ymin, xmax, ymax)))
            except (ValueError, KeyError, TypeError) as e:
                if isinstance(e, DataError):
                    raise
                raise DataError(
                    where, f"bad boxes cell ({e})", 'write [{"class": "benign", "box": [x0, y0, x1, y1]}]'
                ) from None
        for les in lesions:
            if not labels[("benign", "malignant").index(les.cls)]:
                raise DataError(where, f"a {les.cls} annotation on an image labelled {les.cls}=0", "fix the label")
        lat = (row.get("laterality") or "").strip().upper()[:1]
        spacing = parse_spacing(row.get("pixel_spacing_mm") or "", where)
        return SourceRecord(
            image_id=image_id,
            patient_id=row["patient_id"].strip(),
            exam_id=(row.get("exam_id") or "").strip() or row["patient_id"].strip(),
            laterality=lat,
            view=(row.get("view") or "").strip().upper(),
            labels=labels,
            image_file=image,
            lesions=lesions,
            split=split,
            chest_wall={"L": "left", "R": "right"}.get(lat),
            pixel_spacing_mm=spacing,
        )


# The fixture: a tiny synthetic download in the native layout, for tests and `wsseg data fixture`.

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


def write_fixture(root: Path, n_patients: int = 6, dicom_monochrome1: bool = True) -> dict[str, Phantom]:
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


def write_phantom_manifest(root: Path, n_images: int = 16, seed: int = 0) -> dict[str, Any]:
    """A ``manifest`` download made of wsseg's own phantom (tiny profile).

    Textured anatomy, pectoral muscle and real lesion shapes. Right breasts are mirrored to their native
    orientation. Returns image id -> PhantomImage (canonical frame) for comparison.
    """
    from wsseg.data.phantom import PhantomConfig, generate_image

    cfg = PhantomConfig.tiny()
    rows, truth = [], {}
    for i in range(n_images):
        lat, view = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))[i % 4]
        img = generate_image(cfg, seed, "fixture", i, view=view, laterality=lat)
        image_id = f"ph{i:03d}-{lat}-{view}"
        truth[image_id] = img
        mirror: Callable[[np.ndarray], np.ndarray] = (lambda a: a[..., ::-1]) if lat == "R" else (lambda a: a)
        save_png16(root / "images" / f"{image_id}.png", mirror(img.image) / 4095.0)
        row = {
            "image": f"images/{image_id}.png",
            "image_id": image_id,
            "patient_id": f"P{i // 4}",
            "laterality": lat,
            "view": view,
            "benign": int(img.labels[0] > 0),
            "malignant": int(img.labels[1] > 0),
        }
        for k, cls in enumerate(("benign", "malignant")):
            if img.masks[k].any():
                save_mask(root / "masks" / f"{image_id}_{cls}.png", mirror(img.masks[k]))
                row[f"{cls}_mask"] = f"masks/{image_id}_{cls}.png"
        rows.append(row)
    header = [c for c in MANIFEST_HEADER if c not in ("split", "boxes")]  # the optional columns left out
    write_csv(root / "manifest.csv", header, rows)
    return truth
