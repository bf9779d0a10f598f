"""Writers of tiny native-layout fixtures of every data source, from a simple phantom (``wsseg data fixture``).

They let the loaders be tested, and ``wsseg data check``/``prepare``/``run`` be tried, without a download.
Each known trap of docs/datasets.md is built in (CBIS-DDSM's swapped crop/mask columns and wrong-size mask,
VinDr's list-valued categories, overhanging boxes and BI-RADS-only findings, INbreast's ``ML`` views and off-by-one
ROI counts, mini-MIAS's bottom-left origin, lines without a location and a circle outside the breast, the NYU
``horizontal_flip``), some as switches.

The phantom is a half-ellipse breast against the chest wall with one bright disc lesion at a known place,
plus a small bright "film label" in the far corner (a second component the breast crop must drop). Right
breasts are mirrored so the native files face the way the real datasets do.
"""

from __future__ import annotations

import csv
import json
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from wsseg.data.dataset import SPLITS

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


def write_csv(path: Path, header: list[str], rows: Sequence[Mapping[str, object]]) -> None:
    """A comma-separated file with ``header``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


MIAS = 96  # mini-MIAS fixture side (the real one is 1024)


MIAS_PAIRS = 161  # mdb001 ... mdb322
# Lines of the real Info table that the fixture reproduces for the same ids: findings without a location, written
# with 4 tokens or with a reference to the README's note on calcifications spread over the breast instead of
# ``x y radius`` (both label-only: labelled, not located).
MIAS_UNLOCATED_LINES = {
    59: "mdb059 F CIRC B ",
    216: "mdb216 D CALC M *NOTE 3* ",
    233: "mdb233 G CALC M *NOTE 3* ",
    245: "mdb245 F CALC M *NOTE 3* ",
}
# mdb212: a small benign calcification circle that lies outside the detected breast, as in the real table.
MIAS_OUTSIDE_BREAST = 212
MIAS_OUTSIDE_RC = (8, 84)  # (row, col) of its centre in the fixture: air beside a left breast
# Pairs every fixture holds, whatever its size: mdb059 (4-token line), mdb212 (outside the breast), mdb233 (*NOTE 3*).
MIAS_SPECIAL_PAIRS = (30, 106, 117)


def mias_pairs(n_pairs: int) -> list[int]:
    """Pair numbers (patient ``mias-pNNN`` = images ``mdb{2N-1}``, ``mdb{2N}``) for a fixture of ``n_pairs``.

    Pair 1 (with the doubled Info line) always; then, when the committed ``benchmarks/splits/mini-mias.csv``
    exists, the first pairs of its test and validation splits, the pairs of :data:`MIAS_SPECIAL_PAIRS` (the real
    table's label-only and outside-breast lines) and the first pairs of its training split, so a small fixture
    read with the published split still has every split and every trap.
    """
    from wsseg.data.prepare import default_split_file, read_split_file

    path = default_split_file("mini-mias")
    if path is None or n_pairs >= MIAS_PAIRS:
        return list(range(1, min(n_pairs, MIAS_PAIRS) + 1))
    split = read_split_file(path)
    order = {s: sorted(int(p.removeprefix("mias-p")) for p, v in split.items() if v == s) for s in SPLITS}
    pairs = [1]
    for s in ("test", "val"):
        pairs.append(next(p for p in order[s] if p not in pairs))
    pairs += [p for p in MIAS_SPECIAL_PAIRS if p not in pairs]
    rest = [p for s in ("train", "test", "val") for p in order[s] if p not in pairs]
    return sorted((pairs + rest)[: max(n_pairs, 1)])


def mias_line(n: int, ph: Phantom) -> list[str]:
    """The Info lines of image ``mdb{n}`` in the fixture (y counted from the bottom, as in the real table)."""
    ref = f"mdb{n:03d}"
    if n in MIAS_UNLOCATED_LINES:
        return [MIAS_UNLOCATED_LINES[n]]
    if n == MIAS_OUTSIDE_BREAST:
        r, c = MIAS_OUTSIDE_RC
        return [f"{ref} G CALC B {c} {MIAS - r} 3 "]
    if n % 3 == 0:
        return [f"{ref} F NORM "]
    sev = "M" if n % 2 else "B"
    r, c = ph.center
    lines = [f"{ref} G CIRC {sev} {c} {MIAS - r} {ph.radius} "]
    if n == 1:
        lines.append(f"{ref} G CALC B")  # a finding without a location on an image with a located one
    return lines


def write_mias(root: Path, n_pairs: int = 9, kaggle_header: bool = True) -> dict[str, Phantom]:
    """``mdbNNN.pgm`` + ``Info.txt`` with the traps of the real table.

    NORM lines, a doubled image (mdb001, whose second line has no location), bottom-left y, the real ids' findings
    without a location (:data:`MIAS_UNLOCATED_LINES`: 4 tokens, ``*NOTE 3*``) and mdb212's circle outside the
    breast. The pairs are the real ids' (:func:`mias_pairs`), so the committed split applies to the fixture as to
    the data; with ``n_pairs=161`` the fixture has the release's 322 images.
    """
    lines, truth = [], {}
    if kaggle_header:
        lines.append("REFNUM BG CLASS SEVERITY X Y RADIUS ")
    for n in (n for pair in mias_pairs(n_pairs) for n in (2 * pair - 1, 2 * pair)):
        ref = f"mdb{n:03d}"
        right = n % 2 == 1  # odd numbers are right breasts
        ph = phantom(right, lesion_rc=(40, 20), radius=6, h=MIAS, w=MIAS)
        truth[ref] = ph
        img = np.round(ph.image * 200 + 8).astype(np.uint8)  # film: a non-zero background
        (root / "pgm").mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / "pgm" / f"{ref}.pgm")
        lines += mias_line(n, ph)
    (root / "Info.txt").write_text("\n".join(lines) + "\n", encoding="latin-1")
    return truth


GMIC_SIZE = (2944, 1920)  # GMIC's model-input frame (rows, cols)
NYU_WINDOW = (2, H, 1, W)  # the fixture's GMIC crop (top, bottom, left, right) of every view


def write_nyu(
    root: Path, n_exams: int = 4, horizontal_flip: str = "NO", model_frame_masks: bool = False
) -> dict[str, Phantom]:
    """``exam_list_before_cropping.pkl`` (protocol 3) + ``images/*.png`` + ``segmentation/*.png``.

    With ``model_frame_masks`` the segmentations are drawn, as GMIC's sample ones are, in its 2944x1920 model-input
    frame (cropped to ``NYU_WINDOW``, flipped, zero-padded as GMIC pads at inference: CC above and below, MLO
    below, every view on the right), and ``sample_output/data.pkl`` is written: the exam list with the crop's
    ``window_location`` and ``best_center``, as GMIC's crop and optimal-centre steps leave it.
    """
    exams, truth = [], {}
    for i in range(n_exams):
        exam: dict[str, Any] = {"horizontal_flip": horizontal_flip}
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
                mask = _gmic_frame(ph.lesion, view, right_native) if model_frame_masks else ph.lesion
                save_mask(root / "segmentation" / f"{name}_malignant.png", mask)
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
    if model_frame_masks:
        top, bottom, left, right = NYU_WINDOW
        for exam in exams:
            views = ("L-CC", "R-CC", "L-MLO", "R-MLO")
            exam["window_location"] = {v: [NYU_WINDOW] for v in views}
            exam["best_center"] = {v: [((bottom - top) // 2, (right - left) - 961)] for v in views}
        (root / "sample_output").mkdir(parents=True, exist_ok=True)
        (root / "sample_output" / "data.pkl").write_bytes(pickle.dumps(exams, protocol=3))
    return truth


def _gmic_frame(lesion: np.ndarray, view: str, flipped: bool) -> np.ndarray:
    """A native mask as GMIC's model input sees it: cropped, flipped, zero-padded to 2944x1920."""
    top, bottom, left, right = NYU_WINDOW
    crop = lesion[top:bottom, left:right]
    crop = crop[:, ::-1] if flipped else crop
    out = np.zeros(GMIC_SIZE, dtype=bool)
    front = (GMIC_SIZE[0] - crop.shape[0]) // 2 if view.endswith("CC") else 0
    out[front : front + crop.shape[0], : crop.shape[1]] = crop
    return out


CBIS_HEADER_MASS = (
    "patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,mass shape,"
    "mass margins,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
).split(",")
CBIS_HEADER_CALC = (
    "patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,calc type,"
    "calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,ROI mask file path"
).split(",")


def scaled_phantom(chest_wall_right: bool, scale: int) -> Phantom:
    """The fixture phantom ``scale`` times larger on each side (``scale`` 55-70 gives full-field sizes)."""
    if scale == 1:
        return phantom(chest_wall_right)
    return phantom(chest_wall_right, (30 * scale, 14 * scale), 4 * scale, H * scale, W * scale)


def write_cbis(root: Path, crop_without_mask: bool = False, scale: int = 1) -> dict[str, Phantom]:
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
            rows[csv_name].append(row)
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


VINDR_BREAST = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
VINDR_FINDING = (
    "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,"
    "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split"
)


VINDR_WINDOW = {"WindowCenter": [2000, 1500], "WindowWidth": [3000, 2000]}  # multi-valued: the first is used


def write_vindr(
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
                (r, c), rad = ph.center, ph.radius
                box = {"xmin": c - rad, "ymin": r - rad, "xmax": c + rad + 1, "ymax": r + rad + 1}
                if lat == "L" and s % 2 == 0:
                    breast = "BI-RADS 4"
                    finding_rows.append(
                        {
                            **base,
                            "breast_birads": breast,
                            "finding_birads": "BI-RADS 4",
                            "finding_categories": "['Mass', 'Suspicious Calcification']",
                            **box,
                        }
                    )
                    finding_rows.append(
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
                    finding_rows.append(
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
                    finding_rows.append(
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
                    finding_rows.append(
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
                    finding_rows.append(
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
                breast_rows.append({**base, "breast_birads": breast})
    write_csv(root / "breast-level_annotations.csv", VINDR_BREAST.split(","), breast_rows)
    write_csv(root / "finding_annotations.csv", VINDR_FINDING.split(","), finding_rows)
    return truth


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


def write_inbreast(root: Path, n_patients: int = 6, espiculated: bool = False) -> dict[str, Phantom]:
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


# Each writer takes the folder to write into and returns image id -> the phantom drawn there.
WRITERS: dict[str, Callable[[Path], dict[str, Phantom]]] = {
    "manifest": write_manifest,
    "mini-mias": write_mias,
    "nyu": write_nyu,
    "cbis-ddsm": write_cbis,
    "vindr-mammo": write_vindr,
    "inbreast": write_inbreast,
}


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
    header = [
        "image",
        "image_id",
        "patient_id",
        "laterality",
        "view",
        "benign",
        "malignant",
        "benign_mask",
        "malignant_mask",
    ]
    write_csv(root / "manifest.csv", header, rows)
    return truth
