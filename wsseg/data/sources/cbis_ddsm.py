"""``cbis-ddsm``: CBIS-DDSM as downloaded from TCIA (description CSVs + DICOM tree, classic or descriptive).

Reads the four ``*_case_description_*_set.csv`` files (one row per abnormality) and the DICOM tree, in
either layout (docs/datasets.md, "CBIS-DDSM"). Pitfalls handled:

1. CSV paths do not exist on disk: files are found by the **subject folder** (the path's first component,
   shared by both layouts), never by joining the CSV path onto the root.
2. Cells end with a newline inside the quotes: every cell is stripped.
3. Crop and ROI mask are swapped between the mass and calc CSVs, and ``1-1.dcm``/``1-2.dcm`` come in either
   order (or sit in separate series): the mask is decided by content, never by the CSV column or file name.
   It is the ROI subject's file whose header size is closest to the full image (the crop is a small patch);
   a subject holding only a patch far smaller than the image is reported as having no mask; and on decoding
   the mask must be binary (a greyscale file is reported as a crop, not used as a mask).
4. A mask whose size differs from the full image is reported with both sizes and its image skipped (fatal
   with ``--strict``) rather than resized, which would deform the lesion.
5. Several abnormalities per image: the class masks are their union (each lesion keeps its own box in the
   sample's meta). An image with one unusable abnormality row is dropped whole: its labels and masks would
   be incomplete.
6. Mass and calc lists are separate; a patient found in both the training and the test lists goes to test
   whole (:func:`~wsseg.data.prepare.assign_splits`).
7. Orientation is mixed on films: decided by content.

Labels: ``MALIGNANT`` malignant; ``BENIGN`` and ``BENIGN_WITHOUT_CALLBACK`` benign (biopsy pathology).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from wsseg.data.fixture_kit import Phantom, save_dicom, scaled_phantom, write_csv
from wsseg.data.sources import (
    DataError,
    DataSource,
    Lesion,
    Problem,
    ScanResult,
    SourceRecord,
    read_csv_table,
    register_source,
    regular_files,
)

PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
SUBJECT = re.compile(r"^(Mass|Calc)-(Training|Test)_(P_\d+)_(LEFT|RIGHT)_(CC|MLO)(?:_(\d+))?$")
CSV_GLOB = "*case_description*.csv"


def dicom_size(path: Path) -> tuple[int, int] | None:
    """(Rows, Columns) from the header only; None when unreadable (the decode reports the file)."""
    from wsseg.data.imageio import open_dicom

    try:
        ds = open_dicom(path, stop_before_pixels=True)  # bounded memory, also for a deflated bomb
        return int(ds.Rows), int(ds.Columns)
    except Exception:  # any unreadable header: the image read later names the file and the reason
        return None


def subject_of(cell: str) -> str:
    """The subject folder name: the first component of a CSV path (shared by both layouts)."""
    return cell.strip().replace("\\", "/").split("/")[0]


@register_source("cbis-ddsm")
class CBISDDSM(DataSource):
    """CBIS-DDSM: scanned-film DICOMs with per-abnormality ROI masks, biopsy labels, official train/test split."""

    annotation = "mask"
    label_source = "pathology"
    licence = "CC BY 3.0 (TCIA); cite Lee et al. 2017"
    default_pixel_spacing_mm = 0.05  # films digitised at 42-50 um; the headers do not say

    def write_fixture(self, root: Path) -> dict[str, Any]:
        """A tiny CBIS-DDSM download with its traps (:func:`write_fixture`)."""
        return write_fixture(root)

    def scan(self, root: Path) -> ScanResult:
        """Read the description CSVs and locate each image and mask by subject folder."""
        problems: list[Problem] = []
        csvs = regular_files(root, CSV_GLOB, problems)
        if not csvs:
            raise DataError(root, "no *_case_description_*_set.csv found", "download the four description CSVs")
        subjects: dict[str, list[Path]] = {}
        for dcm in regular_files(root, "*.dcm", problems):
            for part in dcm.relative_to(root).parts[:-1]:
                if SUBJECT.match(part):
                    subjects.setdefault(part, []).append(dcm)
                    break
        images: dict[str, SourceRecord] = {}
        broken: set[str] = set()  # images with an unusable abnormality row: dropped whole
        for path in csvs:
            # A description CSV that is empty or lacks these columns stops the scan: a quarter of the dataset would
            # otherwise vanish without a word.
            rows, bad_rows = read_csv_table(path, ("patient_id", "pathology", "image file path", "ROI mask file path"))
            problems += bad_rows
            for where, row in rows:
                try:
                    self._add(row, where, subjects, images)
                except DataError as e:
                    broken.add(subject_of(row.get("image file path", "")))
                    problems.append(Problem(e.file, e.reason + (f"; {e.fix}" if e.fix else "")))
        kept = [r for r in images.values() if r.image_id not in broken]
        return ScanResult(sorted(kept, key=lambda r: r.image_id), problems)

    @staticmethod
    def _add(row: dict[str, str], where: str, subjects: dict[str, list[Path]], images: dict[str, SourceRecord]) -> None:
        for col in ("patient_id", "pathology", "image file path", "ROI mask file path"):
            if col not in row:
                raise DataError(where, f"no column {col!r}", "use the description CSVs as downloaded")
        cls = PATHOLOGY.get(row["pathology"].upper())
        if cls is None:
            raise DataError(where, f"unknown label {row['pathology']!r}", f"pathology must be one of {list(PATHOLOGY)}")
        image_subject = subject_of(row["image file path"])
        m = SUBJECT.match(image_subject)
        if m is None:
            raise DataError(where, f"unexpected subject folder {image_subject!r}", "use the CSV as downloaded")
        full = sorted(subjects.get(image_subject, []))
        if not full:
            raise DataError(f"{image_subject}/", "full mammogram folder is missing", "download the image series")
        # Both ROI cells name the same subject folder; which file is the mask is decided by size below.
        roi_subject = subject_of(row["ROI mask file path"]) or subject_of(row["cropped image file path"])
        roi_files = subjects.get(roi_subject, [])
        if not roi_files:
            raise DataError(f"{roi_subject}/", "ROI folder is missing", "download the ROI mask series")
        full_size = dicom_size(full[0])
        sizes = {p: dicom_size(p) for p in roi_files}
        if full_size is not None:

            def distance(p: Path) -> float:
                s = sizes[p]
                return float("inf") if s is None else abs(s[0] - full_size[0]) + abs(s[1] - full_size[1])

            mask = min(roi_files, key=distance)
            found = sizes[mask]
            if found is not None and found[0] * 2 < full_size[0] and found[1] * 2 < full_size[1]:
                raise DataError(
                    f"{roi_subject}/",
                    f"no ROI mask: the only image is {found[0]}x{found[1]}, a cropped patch of the "
                    f"{full_size[0]}x{full_size[1]} mammogram",
                    "download the ROI mask series of this subject",
                )
        else:
            mask = max(roi_files, key=lambda p: (sizes[p] or (0, 0))[0] * (sizes[p] or (0, 0))[1])
        rec = images.get(image_subject)
        if rec is None:
            lat = m.group(4)[0]
            rec = images[image_subject] = SourceRecord(
                image_id=image_subject,
                patient_id=m.group(3),
                exam_id=f"{m.group(3)}_{m.group(4)}",
                laterality=lat,
                view=m.group(5),
                labels=(0, 0),
                image_file=full[0],
                split="train" if m.group(2) == "Training" else "test",
                extra={"lesion_set": m.group(1).lower()},
            )
        labels = list(rec.labels)
        labels[("benign", "malignant").index(cls)] = 1
        rec.labels = (labels[0], labels[1])
        rec.lesions.append(Lesion(cls, "mask", mask_file=mask, name=row.get("abnormality type", "")))


# The fixture: a tiny synthetic download in the native layout, for tests and `wsseg data fixture`.

CBIS_HEADER_MASS = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,"
    "mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
).split(",")
CBIS_HEADER_CALC = (
    "patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,"
    "calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
).split(",")


def write_fixture(root: Path, crop_without_mask: bool = False, scale: int = 1) -> dict[str, Phantom]:
    """A CBIS-DDSM download with its traps.

    Both layouts, the four CSVs with classic paths and embedded newlines, swapped calc crop/mask columns,
    ``1-1.dcm``/``1-2.dcm`` in either order, two abnormalities on one image, a patient in mass-train and
    calc-test, one wrong-size ROI mask, and the retriever's ``metadata.csv``. With ``crop_without_mask`` the ROI
    series of ``Mass-Training_P_00005_LEFT_CC_1`` holds only the cropped patch. ``scale`` multiplies the image
    size (16-bit DICOMs; 70 gives 4480 x 3360, the size of CBIS-DDSM's scanned films) for throughput measurements.

    Returns subject folder (= image id) -> phantom; ``Mass-Training_P_00003_LEFT_CC`` has the bad mask.
    """
    meta_rows: list[dict[str, object]] = []
    truth: dict[str, Phantom] = {}
    rows: dict[str, list[dict[str, object]]] = {"mass_train": [], "mass_test": [], "calc_train": [], "calc_test": []}
    entries = [  # (csv, patient, side, abnormalities as pathologies)
        ("mass_train", 1, "LEFT", ["MALIGNANT", "BENIGN"]),
        ("calc_train", 1, "LEFT", ["BENIGN_WITHOUT_CALLBACK"]),
        ("mass_train", 2, "RIGHT", ["MALIGNANT"]),
        ("mass_train", 3, "LEFT", ["BENIGN"]),
        ("mass_train", 4, "RIGHT", ["MALIGNANT"]),
        ("mass_train", 5, "LEFT", ["BENIGN"]),
        ("mass_train", 8, "RIGHT", ["BENIGN"]),
        ("mass_test", 6, "LEFT", ["MALIGNANT"]),
        ("mass_test", 7, "RIGHT", ["BENIGN"]),
        ("calc_test", 2, "RIGHT", ["MALIGNANT"]),
    ]
    for csv_name, p, side, pathologies in entries:
        kind = "Mass" if csv_name.startswith("mass") else "Calc"
        phase = "Training" if csv_name.endswith("train") else "Test"
        subject = f"{kind}-{phase}_P_{p:05d}_{side}_CC"
        ph = scaled_phantom(side == "RIGHT", scale)
        truth[subject] = ph
        descriptive = p % 2 == 1
        uid = f"1.3.6.1.4.1.9590.100.1.2.{p}{len(rows[csv_name])}"
        if descriptive:
            save_dicom(
                root
                / "CBIS-DDSM"
                / subject
                / "07-20-2016-DDSM-NA-12345"
                / "1.000000-full mammogram images-24515"
                / "1-1.dcm",
                ph.image,
                bits=16,
            )
        else:
            save_dicom(root / subject / uid / f"{uid}.1" / "000000.dcm", ph.image, bits=16)
        for a, pathology in enumerate(pathologies, start=1):
            roi = f"{subject}_{a}"
            mask = ph.lesion if not (p == 3) else np.pad(ph.lesion, ((0, 2), (0, 0)))  # 2 rows more: wrong size
            crop = ph.image[20 * scale : 32 * scale, 8 * scale : 18 * scale]
            if descriptive:
                series = root / "CBIS-DDSM" / roi / "08-29-2017-DDSM-NA-96009" / "1.000000-ROI mask images-18515"
                first, second = ("1-1.dcm", "1-2.dcm") if a % 2 else ("1-2.dcm", "1-1.dcm")
                save_dicom(series / first, crop)
                if not (crop_without_mask and p == 5):
                    save_dicom(series / second, mask.astype(float), bits=8)
                meta_rows.append(
                    {
                        "Series UID": f"{uid}.{a}",
                        "Subject ID": roi,
                        "Series Description": "ROI mask images",
                        "Number of Images": 2,
                        "File Location": "./" + series.relative_to(root).as_posix(),
                    }
                )
            else:
                series = root / roi / f"{uid}.{a}" / f"{uid}.{a}.2"
                crop_file, mask_file = ("000000.dcm", "000001.dcm") if kind == "Mass" else ("000001.dcm", "000000.dcm")
                save_dicom(series / crop_file, crop)
                save_dicom(series / mask_file, mask.astype(float), bits=8)
            rows[csv_name].append(_csv_row(kind, p, side, a, pathology, subject, uid))
    for csv_name, rs in rows.items():
        kind, phase = csv_name.split("_")
        header = CBIS_HEADER_MASS if kind == "mass" else CBIS_HEADER_CALC
        write_csv(root / f"{kind}_case_description_{phase}_set.csv", header, rs)
    # The NBIA retriever's index (columns vary by version); wsseg resolves files by subject folder instead.
    write_csv(
        root / "metadata.csv",
        ["Series UID", "Subject ID", "Series Description", "Number of Images", "File Location"],
        meta_rows,
    )
    return truth


def _csv_row(kind: str, p: int, side: str, a: int, pathology: str, subject: str, uid: str) -> dict[str, object]:
    """The case-description row of abnormality ``a`` of a fixture image, paths in the classic layout.

    The crop and mask columns are swapped for calcifications, and the paths end with the real CSVs' embedded newline.
    """
    roi = f"{subject}_{a}"
    classic = f"{roi}/{uid}.{a}/{uid}.{a}.2/"
    crop_col, mask_col = ("000000.dcm", "000001.dcm") if kind == "Mass" else ("000001.dcm", "000000.dcm")
    row = {
        "patient_id": f"P_{p:05d}",
        "left or right breast": side,
        "image view": "CC",
        "abnormality id": a,
        "abnormality type": kind.lower() if kind == "Mass" else "calcification",
        "assessment": 4,
        "pathology": pathology,
        "subtlety": 3,
        "image file path": f"{subject}/{uid}/{uid}.1/000000.dcm",
        "cropped image file path": classic + crop_col + "\n",  # the embedded newline of the real CSVs
        "ROI mask file path": classic + mask_col + "\n",
    }
    if kind == "Mass":
        row.update(
            {
                "breast_density": 2,
                "mass shape": "IRREGULAR-ARCHITECTURAL_DISTORTION",
                "mass margins": "SPICULATED",
            }
        )
    else:
        row.update({"breast density": 2, "calc type": "NA", "calc distribution": "CLUSTERED"})
    return row
