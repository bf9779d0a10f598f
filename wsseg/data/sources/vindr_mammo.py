"""``vindr-mammo``: VinDr-Mammo from PhysioNet (DICOMs + breast- and finding-level CSVs; boxes).

Layout: ``breast-level_annotations.csv``, ``finding_annotations.csv`` and ``images/<study_id>/<image_id>.dicom``
(extension ``.dicom``). Pitfalls handled (docs/datasets.md): ``finding_categories`` is a Python list literal
(parsed with :func:`ast.literal_eval`, never split on commas); boxes are floats in the original, unmirrored
pixel frame and may fall outside the image (clipped to the CSV's width and height, which must match the
decoded image); one image has as many
finding rows as findings; MONOCHROME1 images are inverted on decoding; multi-valued window centre/width (with
``--voi-lut``) use the first; images whose Presentation Intent Type is ``FOR PROCESSING`` are skipped and
reported, as the authors' visualiser skips them.

Labels are **BI-RADS, not pathology** (``label_source = birads``): malignant when the breast or a finding is
BI-RADS 4-5, benign when BI-RADS 2-3, normal for BI-RADS 1 / ``No Finding``. A box takes its finding's
BI-RADS class; findings without a BI-RADS (e.g. skin thickening) give no box. A finding with a BI-RADS but no
box, or a breast BI-RADS with no boxed finding of its class, labels the image without locating the lesion: the
image is label-only for that class (it trains and counts for AUROC, and enters no localisation metric of it).
"""

from __future__ import annotations

import ast
import csv
import math
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
)

SPLITS = {"training": "train", "test": "test"}


def birads_class(value: str, where: str) -> str | None:
    """``BI-RADS n`` -> ``benign`` (2-3), ``malignant`` (4-5), None (1 or empty).

    Raises:
        DataError: any other value.
    """
    v = value.strip().upper().replace("BI-RADS", "").strip()
    if v in ("", "1"):
        return None
    if v in ("2", "3"):
        return "benign"
    if v in ("4", "5"):
        return "malignant"
    raise DataError(where, f"unknown label {value!r}", "BI-RADS must be 'BI-RADS 1' ... 'BI-RADS 5'")


BREAST_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "height", "width", "breast_birads", "split")
FINDING_COLUMNS = ("image_id", "finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax")


def _short_rows(path: Path, problems: list[Problem]) -> list[tuple[str, dict[str, str]]]:
    """The image ids of the rows of ``path`` that :func:`read_csv_table` reported as broken, as far as readable."""
    lines = {p.file for p in problems if p.file.startswith(f"{path}:")}
    if not lines:
        return []
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [(f"{path}:{i}", r) for i, r in enumerate(csv.DictReader(f), start=2)]
    return [(w, {"image_id": (r.get("image_id") or "").strip()}) for w, r in rows if w in lines]


def _number(row: dict[str, str], key: str, where: str) -> float:
    """A numeric cell; DataError naming the line and column otherwise."""
    try:
        value = float(row[key])
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value):
        raise DataError(where, f"{key} is {row[key]!r}, not a number", "restore the CSV from the download")
    return value


@register_source("vindr-mammo")
class VinDrMammo(DataSource):
    """VinDr-Mammo: FFDM DICOMs with finding boxes; BI-RADS-derived labels; official 4,000/1,000-exam split."""

    annotation = "box"
    label_source = "birads"
    licence = "PhysioNet credentialed access + data use agreement; do not redistribute"
    skip_for_processing = True
    version = 2  # 2: BI-RADS-only findings (no box) label the image instead of being dropped

    def scan(self, root: Path) -> ScanResult:
        """Read both CSVs and pair each image row with its findings."""
        breast_csv, finding_csv = root / "breast-level_annotations.csv", root / "finding_annotations.csv"
        for p in (breast_csv, finding_csv):
            if not (p.exists() or p.is_symlink()):
                raise DataError(p, "missing", "download the annotation CSVs with the images")
        finding_rows, problems = read_csv_table(finding_csv, FINDING_COLUMNS)
        # An image with a broken finding row is skipped whole: read without it, a lesion would silently vanish.
        broken = {row.get("image_id", "") for where, row in _short_rows(finding_csv, problems)}
        findings: dict[str, list[tuple[dict[str, str], str]]] = {}
        for where, row in finding_rows:
            findings.setdefault(row["image_id"], []).append((row, where))
        breast_rows, bad_rows = read_csv_table(breast_csv, BREAST_COLUMNS)
        problems += bad_rows
        records = []
        for where, row in breast_rows:
            try:
                if row["image_id"] in broken:
                    raise DataError(where, "a finding row of this image is broken (listed above)", "restore the CSV")
                records.append(self._record(row, where, findings.get(row["image_id"], []), root))
            except DataError as e:
                problems.append(Problem(e.file, e.reason + (f"; {e.fix}" if e.fix else "")))
        return ScanResult(records, problems)

    @staticmethod
    def _record(
        row: dict[str, str], where: str, findings: list[tuple[dict[str, str], str]], root: Path
    ) -> SourceRecord:
        labels = [0, 0]
        breast_cls = birads_class(row["breast_birads"], where)
        if breast_cls is not None:
            labels[("benign", "malignant").index(breast_cls)] = 1
        width, height = _number(row, "width", where), _number(row, "height", where)
        lesions = []
        for frow, fwhere in findings:
            try:
                categories = ast.literal_eval(frow["finding_categories"].strip())
            except (ValueError, SyntaxError):
                raise DataError(
                    fwhere,
                    f"bad finding_categories {frow['finding_categories']!r}",
                    "expected a list literal such as ['Mass']",
                ) from None
            if categories == ["No Finding"]:
                continue
            cls = birads_class(frow.get("finding_birads", ""), fwhere)
            if cls is None:
                continue  # e.g. skin thickening: no BI-RADS, not a lesion of either class
            labels[("benign", "malignant").index(cls)] = 1
            if not any(frow.get(k, "").strip() for k in ("xmin", "ymin", "xmax", "ymax")):
                # A BI-RADS-only finding: it labels the image but locates nothing (label-only for its class).
                lesions.append(Lesion(cls, "none", name="|".join(map(str, categories))))
                continue
            x0, y0, x1, y1 = (_number(frow, k, fwhere) for k in ("xmin", "ymin", "xmax", "ymax"))
            box = (
                min(max(x0, 0.0), width),
                min(max(y0, 0.0), height),
                min(max(x1, 0.0), width),
                min(max(y1, 0.0), height),
            )  # boxes can overhang the image (an xmin of -6.25 exists)
            lesions.append(Lesion(cls, "box", box=box, name="|".join(map(str, categories))))
        split = SPLITS.get(row["split"].strip())
        if split is None:
            raise DataError(where, f"unknown split {row['split']!r}", "expected training or test")
        study, image_id, lat = row["study_id"].strip(), row["image_id"].strip(), row["laterality"].strip().upper()
        return SourceRecord(
            image_id=image_id,
            patient_id=study,  # VinDr has no patient ids; a study is one patient's exam
            exam_id=study,
            laterality=lat,
            view=row["view_position"].strip().upper(),
            labels=(labels[0], labels[1]),
            image_file=root / "images" / study / f"{image_id}.dicom",
            lesions=lesions,
            split=split,
            chest_wall="right" if lat == "R" else "left",  # not mirrored: right breasts face left
            expected_hw=(int(height), int(width)),
            extra={"breast_birads": row["breast_birads"].strip(), "density": row.get("breast_density", "").strip()},
        )
