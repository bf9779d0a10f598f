"""``inbreast``: INbreast (DICOMs, OsiriX plist XML contours, ``INbreast.csv``).

Layout: ``AllDICOMs/<FileName>_<patientHash>_MG_<L|R>_<CC|ML>_ANON.dcm``, ``AllXML/<FileName>.xml`` and the label
sheet: the semicolon-separated ``INbreast.csv`` (verified), else ``INbreast.xls`` read with pandas and ``xlrd`` (the
``xls`` extra, ``pip install 'wsseg[xls]'``; assumed to carry the same ``File Name``/``Bi-Rads`` columns; not
verified on a real copy). Pectoral-muscle contours (``PectoralMuscle/``, ``ROIPoints`` plists, or a ROI named like
the pectoral muscle) are never lesions. ROI names are normalised as docs/datasets.md says (``Espiculated Region`` ->
mass...). Pitfalls handled: ``Point_px`` is ``(x, y)`` = (column, row), 0-based; ROIs of one or two points are
single calcifications, drawn as discs of 0.25 mm (about 4 px at 70 um); ``NumberOfROIs`` / ``NumberOfPoints`` that
disagree with the lists are ignored (the lists are used); the plist is read with :mod:`plistlib`, not by element
position; MLO is written ``ML`` in file names; a blank ACR cell is allowed.

Labels are **BI-RADS** (``label_source = birads``): 4a/4b/4c/5/6 malignant, 2/3 benign, 1 normal. All of an
image's contours take the image's class; contours on a BI-RADS 1 image are ignored.
"""

from __future__ import annotations

import csv
import math
import plistlib
import re
from pathlib import Path
from typing import Any
from xml.parsers.expat import ExpatError

import numpy as np

from wsseg.data.fixture_kit import Phantom, W, phantom, save_dicom
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
        # pandas reads .xls with xlrd, an optional reader declared as wsseg's `xls` extra.
        raise DataError(
            xls, "reading .xls needs the xlrd package", "pip install 'wsseg[xls]' (or xlrd), or use INbreast.csv"
        ) from None
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

    def write_fixture(self, root: Path) -> dict[str, Any]:
        """A tiny INbreast download with its traps (:func:`write_fixture`)."""
        return write_fixture(root)

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


# The fixture: a tiny synthetic download in the native layout, for tests and `wsseg data fixture`.


def _plist_rois(rois: list[tuple[str, list[tuple[float, float]]]], declared: int) -> bytes:
    import plistlib

    doc = {
        "Images": [
            {
                "ImageIndex": 0,
                "NumberOfROIs": declared,
                "ROIs": [
                    {
                        "Name": name,
                        "NumberOfPoints": len(pts),
                        "IndexInImage": i,
                        "Type": 15 if len(pts) > 2 else 19,
                        "Point_px": [f"({x:.3f}, {y:.3f})" for x, y in pts],
                        "Point_mm": [f"({x * 0.07}, {y * 0.07}, 0)" for x, y in pts],
                    }
                    for i, (name, pts) in enumerate(rois)
                ],
            }
        ]
    }
    return plistlib.dumps(doc, fmt=plistlib.FMT_XML)


PECTORAL_IMAGE = "20586903"  # the INbreast fixture image (patient 1, R ML, BI-RADS 2) with a pectoral XML only


def write_fixture(root: Path, n_patients: int = 6, espiculated: bool = False) -> dict[str, Phantom]:
    """An INbreast download with its traps.

    ``INbreast.csv`` (``4a``, ``FB`` view, blank ACR), DICOMs named with ``ML``, XMLs with a 12-vertex Mass, a
    1-point Calcification, ``NumberOfROIs`` off by one, and a PectoralMuscle XML using ``ROIPoints``, named by the
    image id of a BI-RADS 2 image without lesion XML (``PECTORAL_IMAGE``), as a lesion XML would be. With
    ``espiculated`` every XML also holds an ``Espiculated Region`` (a mass) inside the lesion.
    """
    header = "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads".split(";")
    rows, truth = [], {}
    birads = ["4a", "2", "1", "5", "3", "4c"]
    for p in range(n_patients):
        phash = f"{p:016x}"
        for lat, view in (("L", "CC"), ("R", "ML")):
            name = f"{20586900 + 2 * p + (lat == 'R')}"
            ph = phantom(chest_wall_right=lat == "R")
            truth[name] = ph
            save_dicom(root / "AllDICOMs" / f"{name}_{phash}_MG_{lat}_{view}_ANON.dcm", ph.image)
            (r, c), rad = ph.center, ph.radius
            poly = [
                (c + (rad + 0.3) * np.cos(t), r + (rad + 0.3) * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 13)[:-1]
            ]
            rois = [("Mass", poly), ("Calcification", [(float(c), float(r))])]
            if espiculated:
                rois.append(("Espiculated Region", [(c - 2.0, r - 2.0), (c + 2.0, r - 2.0), (c, r + 2.0)]))
            xml = _plist_rois(rois, declared=len(rois) + 1)
            (root / "AllXML").mkdir(parents=True, exist_ok=True)
            if name != PECTORAL_IMAGE:  # an image without contours: its pectoral XML is the trap
                (root / "AllXML" / f"{name}.xml").write_bytes(xml)
            rows.append(
                {
                    "Patient ID": "removed",
                    "Patient age": "removed",
                    "Laterality": lat,
                    "View": "FB" if p == 0 and lat == "R" else ("MLO" if view == "ML" else view),
                    "Acquisition date": "201001",
                    "File Name": name,
                    "ACR": "          " if p == 1 else "2",
                    "Bi-Rads": birads[p % len(birads)],
                }
            )
    (root / "PectoralMuscle" / "Pectoral Muscle XML").mkdir(parents=True, exist_ok=True)
    # A right MLO: chest wall on the right, so the muscle is a top-right triangle.
    muscle = "".join(f"<string>{{{x}, {y}}}</string>" for x, y in ((W - 1, 0), (W - 20, 0), (W - 1, 30)))
    (root / "PectoralMuscle" / "Pectoral Muscle XML" / f"{PECTORAL_IMAGE}.xml").write_text(
        '<?xml version="1.0"?><plist version="1.0"><dict><key>ROIPoints</key><array>'
        + muscle
        + "</array></dict></plist>"
    )
    path = root / "INbreast.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=header, delimiter=";")
        w.writeheader()
        w.writerows(rows)
    return truth
