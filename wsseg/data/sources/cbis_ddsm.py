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
