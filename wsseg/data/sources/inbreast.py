"""``inbreast``: INbreast (DICOMs, OsiriX plist XML contours, ``INbreast.csv``).

Layout: ``AllDICOMs/<FileName>_<patientHash>_MG_<L|R>_<CC|ML>_ANON.dcm``, ``AllXML/<FileName>.xml`` and the
label sheet: the semicolon-separated ``INbreast.csv`` (verified), else ``INbreast.xls`` read with pandas and
``xlrd`` (assumed to carry the same ``File Name``/``Bi-Rads`` columns; not verified on a real
copy). Pectoral-muscle contours (``PectoralMuscle/``, ``ROIPoints`` plists, or a ROI named like the
pectoral muscle) are never lesions. ROI names are normalised as docs/datasets.md says (``Espiculated Region``
-> mass...). Pitfalls handled: ``Point_px`` is ``(x, y)`` =
(column, row), 0-based; ROIs of one or two points are single calcifications, drawn as discs of 0.25 mm
(about 4 px at 70 um); ``NumberOfROIs`` / ``NumberOfPoints`` that disagree with the lists are ignored (the
lists are used); the plist is read with :mod:`plistlib`, not by element position; MLO is written ``ML`` in
file names; a blank ACR cell is allowed.

Labels are **BI-RADS** (``label_source = birads``): 4a/4b/4c/5/6 malignant, 2/3 benign, 1 normal. All of an
image's contours take the image's class; contours on a BI-RADS 1 image are ignored.
"""

from __future__ import annotations

import math
import plistlib
import re
from pathlib import Path
from xml.parsers.expat import ExpatError

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
    require_file,
)

BIRADS = {
    "1": None,
    "2": "benign",
    "3": "benign",
    "4a": "malignant",
    "4b": "malignant",
    "4c": "malignant",
    "4": "malignant",
    "5": "malignant",
    "6": "malignant",
}
PIXEL_SPACING_MM = 0.07
POINT_RADIUS_PX = 0.25 / PIXEL_SPACING_MM
FILE = re.compile(r"^(\d+)_([0-9a-fA-F]+)_MG_([LR])_(CC|ML|MLO)_ANON$")
_POINT = re.compile(r"[-+0-9.eE]+")
# ROI names seen across loaders, lower-cased, to one vocabulary; others are kept as written.
ROI_NAMES = {
    "mass": "mass",
    "spiculated region": "mass",
    "espiculated region": "mass",
    "calcification": "calcification",
    "calcifications": "calcification",
    "point 3": "calcification",
    "unnamed": "calcification",
    "cluster": "calcification cluster",
    "distortion": "distortion",
    "asymmetry": "asymmetry",
    "assymetry": "asymmetry",
    "point 1": "unknown",
}


def is_pectoral(text: str) -> bool:
    """Whether a path or ROI name refers to the pectoral muscle (not a lesion)."""
    return "pectoral" in text.lower() or "muscle" in text.lower()


SHEET_COLUMNS = ("File Name", "Bi-Rads")


def read_label_sheet(root: Path, problems: list[Problem]) -> tuple[Path, list[tuple[str, dict[str, str]]]]:
    """Rows of ``INbreast.csv`` (semicolon-separated), else of ``INbreast.xls``, as ``(file:line, row)``.

    Values are stripped strings; rows cut short or too long go to ``problems``.

    Raises:
        DataError: no sheet, a sheet without the File Name and Bi-Rads columns, or the ``.xls`` without its reader.
    """
    table = next(iter(sorted(root.rglob("INbreast.csv"))), None)
    if table is not None:
        rows, bad = read_csv_table(table, SHEET_COLUMNS, delimiter=";")
        problems += bad
        return table, rows
    xls = next(iter(sorted(root.rglob("INbreast.xls"))), None)
    if xls is None:
        raise DataError(root, "no INbreast.csv or INbreast.xls", "copy the label sheet from the download")
    import pandas as pd

    try:
        frame = pd.read_excel(xls, dtype=str)
    except ImportError:
        raise DataError(xls, "reading .xls needs the xlrd package", "pip install xlrd, or use INbreast.csv") from None
    except (ValueError, OSError) as e:
        raise DataError(xls, f"unreadable sheet ({type(e).__name__}: {e})", "use INbreast.csv instead") from None
    missing = [c for c in SHEET_COLUMNS if c not in [str(k).strip() for k in frame.columns]]
    if missing:
        raise DataError(xls, f"missing column(s) {missing}", "use the sheet as downloaded, or INbreast.csv")
    rows = []
    for i, rec in enumerate(frame.fillna("").to_dict("records"), start=2):
        row = {str(k).strip(): str(v).strip() for k, v in rec.items()}
        for key in SHEET_COLUMNS:  # Excel keeps numbers: 20586908.0, 2.0
            if row.get(key, "").endswith(".0"):
                row[key] = row[key][:-2]
        rows.append((f"{xls}:{i}", row))
    return xls, rows


def read_rois(path: Path) -> list[tuple[str, list[tuple[float, float]]]]:
    """(name, [(x, y), ...]) of every ROI in an OsiriX plist XML.

    Raises:
        DataError: not a readable plist of the expected shape.
    """
    require_file(path, "ROI XML")
    try:
        with open(path, "rb") as f:
            doc = plistlib.load(f)
        out = []
        for roi in doc["Images"][0].get("ROIs", []):
            points = []
            for p in roi.get("Point_px", []):
                nums = [float(v) for v in _POINT.findall(str(p))]
                if len(nums) >= 2:
                    if not all(math.isfinite(v) for v in nums[:2]):
                        raise ValueError(f"a point is {p!r}")
                    points.append((nums[0], nums[1]))
            if points:
                out.append((str(roi.get("Name", "")), points))
    except (
        plistlib.InvalidFileException,
        ExpatError,
        KeyError,
        IndexError,
        TypeError,
        ValueError,
        AttributeError,
    ) as e:
        raise DataError(path, f"not an OsiriX ROI plist ({type(e).__name__}: {e})", "restore the XML") from None
    return out


@register_source("inbreast")
class INbreast(DataSource):
    """INbreast: FFDM DICOMs (70 um) with expert contours; BI-RADS-derived labels; no official split."""

    annotation = "mask"
    label_source = "birads"
    licence = "on request from INESC TEC / Univ. Porto under an agreement; do not redistribute"

    def scan(self, root: Path) -> ScanResult:
        """Read ``INbreast.csv`` and pair each row with its DICOM and XML."""
        problems: list[Problem] = []
        table, rows = read_label_sheet(root, problems)
        dicoms: dict[str, tuple[Path, re.Match[str]]] = {}
        for p in regular_files(root, "*.dcm", problems):
            m = FILE.match(p.stem)
            if m:
                dicoms[m.group(1)] = (p, m)
        # Lesion XMLs are named by the image id; pectoral-muscle contours live apart and are never lesions. An XML
        # that is no regular file is kept here, so that its image is reported rather than read without findings.
        xmls: dict[str, Path] = {}
        for p in sorted(root.rglob("*.xml"), key=lambda p: (p.parent.name != "AllXML", str(p))):
            if p.stem.isdigit() and not is_pectoral(str(p.relative_to(root))):
                xmls.setdefault(p.stem, p)
        records = []
        for where, row in rows:
            try:
                records.append(self._record(row, where, dicoms, xmls))
            except DataError as e:
                problems.append(Problem(e.file, e.reason + (f"; {e.fix}" if e.fix else "")))
        return ScanResult(records, problems)

    @staticmethod
    def _record(
        row: dict[str, str], where: str, dicoms: dict[str, tuple[Path, re.Match[str]]], xmls: dict[str, Path]
    ) -> SourceRecord:
        name = row.get("File Name", "")
        birads = row.get("Bi-Rads", "").lower()
        if birads not in BIRADS:
            raise DataError(where, f"unknown label Bi-Rads={birads!r}", f"expected one of {list(BIRADS)}")
        if name not in dicoms:
            raise DataError(f"AllDICOMs/{name}_*.dcm", "listed in INbreast.csv but missing", "restore the DICOM")
        path, m = dicoms[name]
        cls = BIRADS[birads]
        labels = (int(cls == "benign"), int(cls == "malignant"))
        lesions = []
        if cls is not None and name in xmls:
            for raw_name, points in read_rois(xmls[name]):
                if is_pectoral(raw_name):
                    continue
                roi_name = ROI_NAMES.get(raw_name.strip().lower(), raw_name.strip())
                if len(points) <= 2:  # a single calcification: a small disc of recorded radius
                    x, y = points[0]
                    lesions.append(Lesion(cls, "circle", circle=(x, y, POINT_RADIUS_PX), name=roi_name))
                else:
                    lesions.append(Lesion(cls, "polygon", polygon=points, name=roi_name))
        lat = m.group(3)
        return SourceRecord(
            image_id=name,
            patient_id=m.group(2),
            exam_id=m.group(2),
            laterality=lat,
            view="MLO" if m.group(4).startswith("ML") else "CC",
            labels=labels,
            image_file=path,
            lesions=lesions,
            chest_wall="right" if lat == "R" else "left",
            pixel_spacing_mm=PIXEL_SPACING_MM,
            extra={"birads": birads, "acr": row.get("ACR", "")},
        )
