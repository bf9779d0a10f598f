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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wsseg.data.fixture_kit import H, Phantom, W, save_dicom, scaled_phantom, write_csv
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

    def write_fixture(self, root: Path) -> dict[str, Any]:
        """A tiny VinDr-Mammo download with its traps (:func:`write_fixture`)."""
        return write_fixture(root)

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


# The fixture: a tiny synthetic download in the native layout, for tests and `wsseg data fixture`.

VINDR_BREAST = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
VINDR_FINDING = (
    "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,"
    "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split"
)


VINDR_WINDOW = {"WindowCenter": [2000, 1500], "WindowWidth": [3000, 2000]}  # multi-valued: the first is used


def write_fixture(
    root: Path, n_studies: int = 5, for_processing: bool = False, scale: int = 1, syntax: str = ""
) -> dict[str, Phantom]:
    """A VinDr-Mammo download with its traps.

    Four views per study, ``.dicom`` files (one MONOCHROME1 with a multi-valued window), both CSVs with a
    multi-category row, ``No Finding`` rows, an empty ``finding_birads``, boxes in the unmirrored frame on right
    breasts (one exactly around the lesion, one overhanging the image with a negative ``xmin``), and a BI-RADS-only
    finding without a box (study 1's L-MLO, BI-RADS 4: label-only). With
    ``for_processing`` study 1's L-CC is a ``FOR PROCESSING`` image (to be skipped). ``scale`` multiplies the
    image size (55 gives 3520 x 2640, about VinDr's typical 3518 x 2800) for throughput measurements; ``syntax``
    compresses every DICOM with that transfer syntax (e.g. JPEG 2000 lossless, reported for VinDr).
    """
    breast_rows: list[dict[str, object]] = []
    finding_rows: list[dict[str, object]] = []  # box coordinates are numbers, or "" when there is no finding
    truth: dict[str, Phantom] = {}
    for s in range(n_studies):
        study = f"{s:032x}"
        for lat in ("L", "R"):
            for view in ("CC", "MLO"):
                image_id = f"{s:08x}{lat}{view:>3}".replace(" ", "0").ljust(32, "a")
                ph = scaled_phantom(lat == "R", scale)
                truth[image_id] = ph
                first = s == 0 and lat == "L" and view == "CC"
                tags: dict[str, Any] = {"ImageLaterality": lat, "ViewPosition": view, **(VINDR_WINDOW if first else {})}
                tags["PresentationIntentType"] = (
                    "FOR PROCESSING"
                    if for_processing and s == 1 and lat == "L" and view == "CC"
                    else "FOR PRESENTATION"
                )
                save_dicom(
                    root / "images" / study / f"{image_id}.dicom", ph.image, monochrome1=first, syntax=syntax, tags=tags
                )
                base = {
                    "study_id": study,
                    "series_id": f"{s:032x}",
                    "image_id": image_id,
                    "laterality": lat,
                    "view_position": view,
                    "height": H * scale,
                    "width": W * scale,
                    "breast_density": "DENSITY B",
                    "split": "test" if s == n_studies - 1 else "training",
                }
                breast, findings = _vindr_findings(base, ph, s, lat, view)
                finding_rows += findings
                breast_rows.append({**base, "breast_birads": breast})
    write_csv(root / "breast-level_annotations.csv", VINDR_BREAST.split(","), breast_rows)
    write_csv(root / "finding_annotations.csv", VINDR_FINDING.split(","), finding_rows)
    return truth


def _vindr_findings(
    base: Mapping[str, object], ph: Phantom, s: int, lat: str, view: str
) -> tuple[str, list[dict[str, object]]]:
    """The breast BI-RADS and the finding rows of one fixture image (study ``s``, view ``lat``-``view``).

    Study-dependent traps: multi-category and ungraded findings (even studies, left), an overhanging box on a right
    MLO (odd studies), a BI-RADS-only finding without a box (study 1's L-MLO), a box on an unmirrored right CC.
    """
    rows: list[dict[str, object]] = []
    (r, c), rad = ph.center, ph.radius
    box = {"xmin": c - rad, "ymin": r - rad, "xmax": c + rad + 1, "ymax": r + rad + 1}
    if lat == "L" and s % 2 == 0:
        breast = "BI-RADS 4"
        rows.append(
            {
                **base,
                "breast_birads": breast,
                "finding_birads": "BI-RADS 4",
                "finding_categories": "['Mass', 'Suspicious Calcification']",
                **box,
            }
        )
        rows.append(
            {
                **base,
                "breast_birads": breast,
                "finding_birads": "",
                "finding_categories": "['Skin Thickening']",
                "xmin": 1,
                "ymin": 1,
                "xmax": 5,
                "ymax": 5,
            }
        )
    elif lat == "R" and view == "MLO" and s % 2 == 1:
        breast = "BI-RADS 3"
        # A right breast's nipple side is at small x, where boxes overhang (xmin < 0): clipped on reading.
        rows.append(
            {
                **base,
                "breast_birads": breast,
                "finding_birads": "BI-RADS 3",
                "finding_categories": "['Focal Asymmetry']",
                **box,
                "xmin": -6.25,
            }
        )
    elif lat == "L" and view == "MLO" and s == 1:
        breast = "BI-RADS 4"
        # A BI-RADS-only finding: categorised and graded, but no box (label-only for malignant).
        rows.append(
            {
                **base,
                "breast_birads": breast,
                "finding_birads": "BI-RADS 4",
                "finding_categories": "['Suspicious Calcification']",
                "xmin": "",
                "ymin": "",
                "xmax": "",
                "ymax": "",
            }
        )
    elif lat == "R" and view == "CC" and s % 2 == 0:
        breast = "BI-RADS 5"
        # Unmirrored: the box sits near x = W (chest wall on the right) and must follow the flip.
        rows.append(
            {
                **base,
                "breast_birads": breast,
                "finding_birads": "BI-RADS 5",
                "finding_categories": "['Mass']",
                **box,
            }
        )
    else:
        breast = "BI-RADS 1"
        rows.append(
            {
                **base,
                "breast_birads": breast,
                "finding_birads": "",
                "finding_categories": "['No Finding']",
                "xmin": "",
                "ymin": "",
                "xmax": "",
                "ymax": "",
            }
        )
    return breast, rows
