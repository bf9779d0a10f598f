"""Prepare any dataset for a run (:func:`prepare_dataset`); decode, preprocess and cache a download.

:func:`prepare_dataset` is the one entry point of the pipelines and the CLI: it looks the source up in the registry
and lets it prepare itself at the profile's grid (the phantom generates, a download is read by the functions below).

The cache has the phantom's format (per-image ``.npz`` with a uint16 image, bit-packed masks, labels and a
JSON meta; ``manifest.csv`` written last), so :class:`~wsseg.data.dataset.MammogramDataset` reads both.
One bad file never stops a long prepare: each image is processed on its own and a failure becomes a line of
the report (lenient, the default) or an error listing every problem (``strict``).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import re
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw
from tabulate import tabulate
from tqdm.auto import tqdm

from wsseg._io import atomic_save, atomic_write_json, atomic_write_text, remove_stale_temporaries
from wsseg._lock import folder_lock
from wsseg._threads import available_cpus
from wsseg.core import CLASSES, PROFILE_GEOMETRY, Geometry
from wsseg.data.dataset import (
    MANIFEST_COLUMNS,
    SPLITS,
    CacheFileError,
    damaged_cache_files,
    default_cache_dir,
    read_cache_file,
)
from wsseg.data.imageio import DICOM_SUFFIXES, dicom_pixel_spacing, read_image
from wsseg.data.preprocess import Transform, breast_region, plan_transform
from wsseg.data.preview import PreviewItem
from wsseg.data.sources import (
    DataError,
    DataSource,
    Lesion,
    Prepared,
    PrepareOptions,
    Problem,
    SourceRecord,
    get_source,
)
from wsseg.data.sources.nyu import GMIC_INPUT_SIZE

if TYPE_CHECKING:  # the data settings live in wsseg.config, a floor above; only their fields are read here
    from wsseg.config import DataConfig


def prepare_dataset(data: DataConfig, profile: str, options: PrepareOptions | None = None) -> Prepared:
    """Prepare the dataset of ``data`` at ``profile``'s grid (reused when already cached): its folder and record info.

    This is what ``wsseg run``, ``evaluate``, ``gallery``, ``benchmark`` and ``data prepare`` call, whatever the
    source: the phantom is generated, a download is read from ``data.root`` and preprocessed.

    Raises:
        KeyError: an unknown profile or dataset (the message lists the valid names).
        ValueError: settings the source refuses (a missing ``data.root``, phantom split sizes).
        FileNotFoundError, DataError: an unusable download (see :func:`prepare_source`).
    """
    if profile not in PROFILE_GEOMETRY:
        raise KeyError(f"unknown profile {profile!r}; choose {', '.join(PROFILE_GEOMETRY)}")
    source = get_source(data.dataset)  # KeyError lists the registered datasets
    source.validate(data)
    return source.prepare(data, PROFILE_GEOMETRY[profile], options or PrepareOptions())


def prepare_download(source: DataSource, data: DataConfig, geometry: Geometry, options: PrepareOptions) -> Prepared:
    """:meth:`DataSource.prepare` of a source read from a download: :func:`prepare_source` and the record info."""
    if data.root is None:
        raise ValueError(f"--dataset {source.name} needs --data-root PATH (the downloaded dataset)")
    hw = (geometry.height, geometry.width)
    root, report = prepare_source(
        source.name,
        data.root,
        hw,
        data.seed,
        data.cache_dir,
        options.workers,
        options.strict,
        options.progress,
        options.split_file,
        data.voi_lut,
        data.allow_outside_root,
        options.verify,
    )
    if report.problems:
        options.log(f"data: {len(report.problems)} images skipped; see {root / 'report.json'}")
    info = {
        # Spelled out ("mini-mias-1, preprocessing 2", not "mini-mias-1-pre2", which reads like a pre-release).
        # VOI-windowed inputs are other data: the version keeps such runs out of the plain runs' tables.
        "version": source.data_version(data),
        "cache_key": root.name,
        "annotation": source.annotation,
        "label_source": source.label_source,
        "skipped": len(report.problems),
    }
    summary = f"{report.summary()}\ncache: {root} ({hw[0]}x{hw[1]}); patient split in {root / 'split.csv'}"
    return Prepared(root, info, summary)


def dataset_version(name: str, version: int | str, voi_lut: bool) -> str:
    """A prepared real dataset's version for records and tables: the source's release and wsseg's preprocessing."""
    return f"{name}-{version}, preprocessing {PREPROCESS_VERSION}" + (", VOI LUT" if voi_lut else "")


# 2: label-only flags in the meta, the evaluated region grown by lesions outside the breast, no vanishing lesion.
PREPROCESS_VERSION = 2
# The files a prepared cache holds beside its <split>/<image>.npz files.
CACHE_INDEX_FILES = ("report.json", "split.csv", "manifest.csv")
# Seeded patient-level split where a dataset has no official one; validation is carved from an official
# training split with the same fraction.
SPLIT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


# A lesion with more than this fraction of its pixels outside the detected breast is reported: its annotation or the
# breast detection is suspect (mini-MIAS's mdb212 circle lies in the air beside the breast).
OUTSIDE_WARN_FRACTION = 0.5


@dataclass
class DataReport:
    """What ``check`` or ``prepare`` found.

    Attributes:
        dataset: source name.
        root: the download folder.
        counts: usable images per split.
        problems: skipped items with their reason.
        orientation_disagreements: images whose content-decided flip contradicts the dataset's tags.
        cache: the prepared folder (``prepare`` only).
        repaired: cache files found damaged by a verifying ``prepare`` and prepared again.
        labels: per split, images labelled ``benign``, ``malignant`` (an image may be both) and ``normal``.
        n_located: images with at least one located lesion.
        label_only: images labelled with a class none of whose lesions is located, as ``id (class)``: they train and
            count for AUROC but enter no localisation metric of that class.
        outside_breast: lesions lying mostly outside the detected breast (kept whole; the evaluated region is grown
            by them), as ``id (class kind, NN% outside)``.
        region_grown: images whose evaluated region was grown by such a lesion.
    """

    dataset: str
    root: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    orientation_disagreements: list[str] = field(default_factory=list)
    cache: str | None = None
    repaired: list[str] = field(default_factory=list)
    labels: dict[str, dict[str, int]] = field(default_factory=dict)
    n_located: int = 0
    label_only: list[str] = field(default_factory=list)
    outside_breast: list[str] = field(default_factory=list)
    region_grown: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``report.json`` in the cache folder)."""
        return {
            "dataset": self.dataset,
            "root": self.root,
            "counts": self.counts,
            "skipped": [{"file": p.file, "reason": p.reason} for p in self.problems],
            "orientation_disagreements": self.orientation_disagreements,
            "cache": self.cache,
            "labels": self.labels,
            "n_located": self.n_located,
            "label_only": self.label_only,
            "outside_breast": self.outside_breast,
            "region_grown": self.region_grown,
        }

    @classmethod
    def from_dict(cls, saved: dict[str, Any], cache: str | None = None) -> DataReport:
        """Inverse of :meth:`to_dict` (``report.json`` of caches made before the label counts have none)."""
        return cls(
            saved["dataset"],
            saved["root"],
            saved["counts"],
            [Problem(**p) for p in saved["skipped"]],
            saved["orientation_disagreements"],
            cache,
            labels=saved.get("labels", {}),
            n_located=int(saved.get("n_located", 0)),
            label_only=list(saved.get("label_only", [])),
            outside_breast=list(saved.get("outside_breast", [])),
            region_grown=int(saved.get("region_grown", 0)),
        )

    def summary(self) -> str:
        """A few human lines: counts, labels per split, label-only images, suspect annotations, then every problem."""
        n = sum(self.counts.values())
        lines = [f"{self.dataset}: {n} usable images ({_fmt_counts(self.counts)})"]
        n_label_only = len({entry.split(" (")[0] for entry in self.label_only})
        lines.append(f"{n} images, {self.n_located} with located lesions, {n_label_only} labelled without location")
        if self.labels:
            rows = [[s, *(self.labels[s].get(c, 0) for c in (*CLASSES, "normal"))] for s in self.labels]
            table = tabulate(rows, headers=["split", *CLASSES, "normal"], disable_numparse=True)
            lines += [
                "labels per split (images; one image may carry both classes):",
                *("  " + t for t in table.split("\n")),
            ]
        if self.label_only:
            lines.append(
                "label-only (labelled, lesion not located: they train and count for AUROC, never for localisation): "
                + ", ".join(self.label_only)
            )
        if self.outside_breast:
            lines.append(
                f"warning: {len(self.outside_breast)} annotation(s) lie mostly outside the detected breast region; "
                "kept, and the evaluated region grown to include them: " + "; ".join(self.outside_breast)
            )
        if self.problems:
            lines.append(f"{len(self.problems)} skipped:")
            lines += [f"  {p}" for p in self.problems]
        if self.orientation_disagreements:
            lines.append(
                f"{len(self.orientation_disagreements)} images flipped against their laterality tag (decided by "
                f"content): {', '.join(self.orientation_disagreements[:10])}"
            )
        if self.repaired:
            lines.append(f"{len(self.repaired)} damaged cache file(s) prepared again:")
            lines += [f"  {p}" for p in self.repaired]
        return "\n".join(lines)


def _fmt_counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in counts.items())


def assign_splits(records: list[SourceRecord], seed: int, fixed: dict[str, str] | None = None) -> dict[str, str]:
    """image_id -> split, by patient: a published split, then the official one, else a seeded 70/15/15 split.

    ``fixed`` maps patient ids to splits (a file under ``benchmarks/splits/``); patients it does not name
    are assigned as below.

    A patient whose images carry different official splits (CBIS-DDSM's mass and calc lists disagree for some)
    goes to ``test`` whole, so no test image's patient is trained on. Validation is carved from the official
    training patients. Patients are ordered by a hash of ``(seed, patient_id)``, so the split is stable under
    patients added or removed elsewhere.
    """
    by_patient: dict[str, set[str | None]] = {}
    for r in records:
        by_patient.setdefault(r.patient_id, set()).add(r.split)
    key = lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest()  # noqa: E731
    out: dict[str, str] = {}
    fixed = fixed or {}
    free = sorted((p for p, s in by_patient.items() if s == {None} and p not in fixed), key=key)
    for p, s in by_patient.items():
        if p in fixed:
            out[p] = fixed[p]
        elif s != {None}:
            out[p] = "test" if "test" in s else "val" if "val" in s else "train"
    if free:
        n = len(free)
        n_test = max(1, round(n * SPLIT_FRACTIONS["test"])) if n >= 3 else 0
        n_val = max(1, round(n * SPLIT_FRACTIONS["val"])) if n >= 3 else 0
        for i, p in enumerate(free):
            out[p] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    official_train = sorted(
        (p for p, s in by_patient.items() if s != {None} and p not in fixed and out[p] == "train"), key=key
    )
    if len(official_train) >= 2 and "val" not in out.values():
        for p in official_train[: max(1, round(len(official_train) * SPLIT_FRACTIONS["val"]))]:
            out[p] = "val"
    return {r.image_id: out[r.patient_id] for r in records}


# Published patient-level splits, one ``<dataset>.csv`` (patient_id,split) per dataset, committed with wsseg.
SPLITS_DIR = Path(__file__).resolve().parents[2] / "benchmarks" / "splits"


def read_split_file(path: Path) -> dict[str, str]:
    """patient_id -> split from a ``patient_id,split`` CSV.

    Raises:
        DataError: missing columns or an unknown split value.
    """
    if not path.is_file():  # a FIFO would block the read forever
        raise DataError(path, "the split file is missing or not a regular file", "pass a patient_id,split CSV")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = set(reader.fieldnames or [])
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(path, f"not a readable CSV ({e})", "save it as UTF-8 text") from None
    if not {"patient_id", "split"} <= header:
        raise DataError(path, "needs the columns patient_id,split", "rewrite it as written by wsseg data prepare")
    out = {}
    for i, r in enumerate(rows, start=2):
        if r["split"] not in SPLITS:
            raise DataError(f"{path}:{i}", f"unknown split {r['split']!r}", f"use one of {', '.join(SPLITS)}")
        out[r["patient_id"]] = r["split"]
    return out


def split_csv_text(patient_splits: dict[str, str]) -> str:
    """A ``patient_id,split`` CSV, sorted by patient id (the format of ``benchmarks/splits/``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["patient_id", "split"])
    writer.writerows(sorted(patient_splits.items()))
    return buf.getvalue()


def make_split_file(dataset: str, root: str | Path, seed: int, out: str | Path) -> dict[str, int]:
    """Write the patient-level split of a download to ``out`` without decoding any image; patients per split.

    The split is the one :func:`assign_splits` gives with no published file: the official split where the dataset
    has one (with validation carved from its training patients), else the seeded 70/15/15 split by a hash of
    ``(seed, patient_id)``. Run on a complete download, it is the file to commit as
    ``benchmarks/splits/<dataset>.csv``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DataError: the index is unusable.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"--root {root} does not exist; point it at the downloaded {dataset} folder")
    records = get_source(dataset).scan(root).records
    image_splits = assign_splits(records, seed)
    patients = {r.patient_id: image_splits[r.image_id] for r in records}
    atomic_write_text(Path(out), split_csv_text(patients))
    return {s: sum(v == s for v in patients.values()) for s in SPLITS}


def default_split_file(dataset: str) -> Path | None:
    """The committed split file of ``dataset`` (``benchmarks/splits/<dataset>.csv``) when it exists."""
    path = SPLITS_DIR / f"{dataset}.csv"
    return path if path.is_file() else None


@dataclass
class Rasterised:
    """The annotations of one image drawn in its original frame.

    Attributes:
        masks: (K, H, W) bool class masks, the union of each class's lesions.
        boxes: per lesion, its own bounding box ``(xmin, ymin, xmax, ymax)`` (None when it covers no pixel), so
            per-lesion information survives the union.
        outside: per lesion, the fraction of its pixels outside the detected breast (None without pixels).
        stray: (H, W) bool, the pixels of the lesions lying mostly outside the breast (more than
            :data:`OUTSIDE_WARN_FRACTION` of them): the evaluated region is grown by these.
    """

    masks: np.ndarray
    boxes: list[tuple[float, float, float, float] | None]
    outside: list[float | None]
    stray: np.ndarray


def rasterise(lesions: list[Lesion], shape: tuple[int, int], image_file: Path, breast: np.ndarray) -> Rasterised:
    """Draw an image's lesions in its original frame and measure how far each lies outside ``breast`` ((H, W) bool).

    Boxes fill the pixels whose centres lie in the half-open box; circles fill pixels within the radius of
    the centre pixel (both rules recorded in docs/datasets.md). A mask file drawn in a model-input
    frame (:class:`~wsseg.data.sources.ModelFrame`) is mapped back to the image first.

    Raises:
        DataError: a mask file is missing, unreadable, not binary, or of another size than the image.
    """
    masks = np.zeros((len(CLASSES), *shape), dtype=bool)
    stray = np.zeros(shape, dtype=bool)
    boxes: list[tuple[float, float, float, float] | None] = []
    outside: list[float | None] = []
    rows, cols = np.arange(shape[0])[:, None], np.arange(shape[1])[None, :]
    for les in lesions:
        k = CLASSES.index(les.cls)
        m: np.ndarray | None = None
        if les.kind == "mask" and les.mask_file is not None:
            m = read_binary_mask(les, shape, image_file)
        elif les.kind == "box" and les.box is not None:
            xmin, ymin, xmax, ymax = les.box
            m = (cols + 0.5 >= xmin) & (cols + 0.5 < xmax) & (rows + 0.5 >= ymin) & (rows + 0.5 < ymax)
        elif les.kind == "polygon" and les.polygon:
            # PIL fills the polygon's interior and outline at integer coordinates (pixel indices, x = column).
            canvas = Image.new("L", (shape[1], shape[0]), 0)
            ImageDraw.Draw(canvas).polygon([(float(x), float(y)) for x, y in les.polygon], fill=1, outline=1)
            m = np.asarray(canvas, dtype=bool)
        elif les.kind == "circle" and les.circle is not None:
            cx, cy, rad = les.circle
            m = (cols - cx) ** 2 + (rows - cy) ** 2 <= rad**2
        if m is None or not m.any():
            boxes.append(None)
            outside.append(None)
            continue
        masks[k] |= m
        r, c = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        boxes.append((float(c[0]), float(r[0]), float(c[-1] + 1), float(r[-1] + 1)))
        fraction = float(np.count_nonzero(m & ~breast)) / float(np.count_nonzero(m))
        outside.append(fraction)
        if fraction > OUTSIDE_WARN_FRACTION:
            stray |= m
    return Rasterised(masks, boxes, outside, stray)


# A mask file is binary: background 0 and one lesion value. More than this fraction of pixels at other values
# means a greyscale image (CBIS-DDSM's cropped patch listed as the mask); JPEG-like edges stay far below it.
MAX_GREY_FRACTION = 0.01


def read_binary_mask(les: Lesion, shape: tuple[int, int], image_file: Path) -> np.ndarray:
    """The lesion's mask file as a bool mask of the image's ``shape`` (mapped from its model frame when it has one).

    Raises:
        DataError: missing, unreadable, greyscale rather than binary, or of another size than the image.
    """
    assert les.mask_file is not None
    if not les.mask_file.is_file():
        raise DataError(les.mask_file, f"the mask of {image_file.name} is missing", "restore the file")
    raw = read_image(les.mask_file, binary_ok=True)  # 1-bit PNG masks are fine
    peak = float(raw.max())
    grey = np.count_nonzero((raw != 0) & (raw != peak)) if peak > 0 else 0
    if grey > MAX_GREY_FRACTION * raw.size:
        raise DataError(
            les.mask_file,
            f"not a binary mask ({grey} of {raw.size} pixels are neither 0 nor the lesion value): it looks like an "
            "image, e.g. a cropped lesion patch listed as the ROI mask",
            "point the annotation at the binary ROI mask file",
        )
    m = raw > 0
    if m.shape == shape:
        return m
    frame = les.model_frame
    if frame is not None and m.shape == tuple(frame.size):
        return frame.to_original(m, shape)
    hint = "a resized mask would deform the lesion; fix or remove the mask"
    if m.shape == GMIC_INPUT_SIZE:
        hint = (
            f"{m.shape[0]}x{m.shape[1]} is GMIC's model-input frame: read the exam list that has window_location "
            "and best_center (GMIC's data.pkl, --root FILE.pkl) so the mask can be mapped back"
        )
    raise DataError(
        les.mask_file,
        f"mask is {m.shape[0]}x{m.shape[1]} but the image {image_file} is {shape[0]}x{shape[1]}",
        hint,
    )


@dataclass
class Processed:
    """One image after the pipeline, in the window frame."""

    image: np.ndarray  # (H, W) uint16
    masks: np.ndarray  # (K, H, W) bool
    breast: np.ndarray  # (H, W) bool: the evaluated region (the breast, grown by any lesion lying outside it)
    meta: dict[str, Any]
    disagrees: bool


def process_record(rec: SourceRecord, out_hw: tuple[int, int], dataset: str, voi_lut: bool = False) -> Processed:
    """Decode one image and its annotations and run the pipeline of :mod:`wsseg.data.preprocess`.

    ``voi_lut`` applies the DICOM header's VOI LUT or window (docs/datasets.md, "DICOM"; raw linear values otherwise).

    Raises:
        DataError: unreadable image, missing or wrong-size mask.
    """
    src = get_source(dataset)
    raw = read_image(rec.image_file, voi_lut=voi_lut, skip_for_processing=src.skip_for_processing)
    if rec.expected_hw is not None and raw.shape != tuple(rec.expected_hw):
        # Annotations are in the table's pixel frame; another image size means they would land elsewhere.
        raise DataError(
            rec.image_file,
            f"image is {raw.shape[0]}x{raw.shape[1]} but the annotation table says "
            f"{rec.expected_hw[0]}x{rec.expected_hw[1]}",
            "the file does not match its annotations; download it again",
        )
    breast = breast_region(raw)
    if not breast.any():
        raise DataError(rec.image_file, "the image is blank (no breast found)", "check the file is a mammogram")
    drawn = rasterise(rec.lesions, (raw.shape[0], raw.shape[1]), rec.image_file, breast)
    # A lesion lying mostly outside the detected breast (mini-MIAS's mdb212 circle) is kept whole: the crop keeps it
    # and the evaluated region is the breast grown by it, so it is scored and its image is never taken for
    # lesion-free. The part of a lesion that only spills over the skin line into air stays outside the region (it
    # is not lesion). The breast alone decides the flip.
    tf = plan_transform(raw, breast, out_hw, include=drawn.stray)
    peak = float(raw.max())
    image = tf.apply(raw / peak, is_mask=False)
    out_image = np.round(np.clip(image, 0.0, 1.0) * 65535).astype(np.uint16)
    out_masks = np.stack([window_mask(tf, m, out_hw) for m in drawn.masks])  # (K, H, W)
    out_region = tf.apply(breast | drawn.stray, is_mask=True)
    # Each class keeps at least one pixel in the region (a lesion never vanishes, see window_mask).
    for k in range(len(CLASSES)):
        if out_masks[k].any() and not (out_masks[k] & out_region).any():
            out_region |= out_masks[k]
    unlocated = {les.cls for les in rec.lesions if les.kind == "none"}
    # Labelled with a class but without a located lesion of it (no location given, or only part of them).
    localized = [not rec.labels[k] or (bool(out_masks[k].any()) and c not in unlocated) for k, c in enumerate(CLASSES)]
    lesions = []
    for les, box, out in zip(rec.lesions, drawn.boxes, drawn.outside, strict=True):
        # Each lesion's own window-frame box: the class masks are unions, so overlapping lesions merge there.
        entry: dict[str, Any] = {"class": les.cls, "kind": les.kind, "type": les.name}
        if les.box is not None:
            entry["box"] = list(tf.box_to_window(les.box))
        elif box is not None:
            entry["box"] = list(tf.box_to_window(box))
        if les.circle is not None:
            cx, cy, rad = les.circle
            x0, y0, x1, y1 = tf.box_to_window((cx - rad, cy - rad, cx + rad + 1, cy + rad + 1))
            entry["circle"] = [(x0 + x1) / 2, (y0 + y1) / 2, rad * tf.scale]
        if out is not None:
            entry["outside_breast"] = round(out, 4)  # fraction of its pixels outside the detected breast
        lesions.append(entry)
    kinds = {les.kind for les in rec.lesions if les.kind != "none"}
    disagrees = rec.chest_wall is not None and (rec.chest_wall == "right") != tf.flipped
    native, spacing_source = rec.pixel_spacing_mm, "dataset"
    if native is None and rec.image_file.suffix.lower() in DICOM_SUFFIXES:
        native, spacing_source = dicom_pixel_spacing(rec.image_file), "dicom"
    if native is None:
        native, spacing_source = src.default_pixel_spacing_mm, "assumed"
    meta = {
        "image_id": rec.image_id,
        "patient_id": rec.patient_id,
        "exam_id": rec.exam_id,
        "laterality": rec.laterality,
        "view": rec.view,
        "pixel_spacing_mm": native / tf.scale,  # of the window; always set, the evaluator measures in mm
        "pixel_spacing_source": spacing_source,
        # The record's own kind where it has located lesions (a manifest may mix masks and boxes), else the dataset's.
        "annotation": kinds.pop() if len(kinds) == 1 else src.annotation,
        "label_source": src.label_source,
        "source_file": str(rec.image_file),
        "voi_lut": voi_lut,
        "transform": tf.to_dict(),
        "lesions": lesions,
        # Per class (benign, malignant): False when the image is labelled with the class but no lesion of it is
        # located (a label-only image); the evaluator then leaves it out of that class's localisation metrics.
        "localized": localized,
        # The breast_mask entry is the evaluated region: the detected breast grown by the lesions lying mostly
        # outside it (region_grown tells whether there was one).
        "region": "breast+stray lesions",
        "region_grown": bool((drawn.stray & ~breast).any()),
        "orientation_disagrees_with_tags": disagrees,
        **rec.extra,
    }
    return Processed(out_image, out_masks, out_region, meta, disagrees)


def window_mask(tf: Transform, mask: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """An original-frame (H, W) class mask in the window; a lesion never vanishes in the resize.

    Masks are resampled as area fractions cut at 0.5, so a lesion smaller than half a window pixel (a single
    calcification at the quick profile) would leave a labelled image with an empty mask; it keeps instead the
    window pixel it covers most.
    """
    if not mask.any():
        return np.zeros(out_hw, dtype=bool)
    out = tf.apply(mask, is_mask=True)
    if not out.any():
        fraction = tf.apply(mask.astype(np.float32), is_mask=False)  # (H, W) area covered by the lesion
        out = fraction >= fraction.max() if fraction.max() > 0 else out
    return out


def read_cached_meta(path: Path, row: dict[str, Any], image_hw: tuple[int, int] | None = None) -> dict[str, Any] | None:
    """The meta of a complete cache file of manifest ``row``, or None when the file is damaged or incomplete.

    The file is verified whole (:func:`~wsseg.data.dataset.read_cache_file`: every checksum, shapes, labels, id):
    a file damaged after it was written is never trusted (writes themselves are atomic, so a killed prepare
    leaves no partial file under this name).
    """
    try:
        *_, meta = read_cache_file(path, {k: str(v) for k, v in row.items()}, True, True, image_hw)
    except CacheFileError:
        return None
    return meta


def _prepare_one(args: tuple[SourceRecord, tuple[int, int], str, str, str | None, bool]) -> dict[str, Any]:
    """Process one record (and write it when ``root`` is given).

    A bad input file comes back as a problem, not a raise; a failed write (disk full, no permission) comes back
    as ``fatal``, since it is not the input's fault and skipping the image would silently shrink the dataset.
    """
    rec, out_hw, dataset, split, root, voi_lut = args
    rel = f"{split}/{cache_file_name(rec.image_id)}"
    if root is not None and (Path(root) / rel).is_file():  # written by an interrupted prepare: resume
        meta = read_cached_meta(Path(root) / rel, _manifest_row(rec, split, rel), out_hw)
        if meta is not None:
            disagrees = bool(meta.get("orientation_disagrees_with_tags"))
            return {
                "row": _manifest_row(rec, split, rel),
                "disagrees": rec.image_id if disagrees else None,
                "info": image_info(meta),
            }
    try:
        p = process_record(rec, out_hw, dataset, voi_lut)
        if root is not None:
            labels = np.asarray(rec.labels, dtype=np.float32)

            def write(f: IO[bytes]) -> None:
                np.savez(
                    f,
                    image=p.image,
                    masks=np.packbits(p.masks, axis=-1),
                    breast_mask=np.packbits(p.breast, axis=-1),
                    labels=labels,
                    meta=np.array(json.dumps(p.meta)),
                )

            try:
                atomic_save(Path(root) / rel, write)
            except OSError as e:
                return {"fatal": str(e)}
    except DataError as e:
        return {"problem": (e.file, e.reason + (f"; {e.fix}" if e.fix else ""))}
    except Exception as e:  # an unforeseen failure on one file must be reported, not abort a long prepare
        return {"problem": (str(rec.image_file), f"{type(e).__name__}: {e}")}
    return {
        "row": _manifest_row(rec, split, rel),
        "disagrees": rec.image_id if p.disagrees else None,
        "info": image_info(p.meta),
    }


def image_info(meta: dict[str, Any]) -> dict[str, Any]:
    """What the report counts about one prepared image, from its meta: located classes and suspect annotations."""
    lesions = meta.get("lesions", [])
    return {
        "localized": list(meta.get("localized", [True] * len(CLASSES))),
        "outside": [
            f"{meta['image_id']} ({les['class']} {les['kind']}, {les['outside_breast']:.0%} outside)"
            for les in lesions
            if les.get("outside_breast", 0.0) > OUTSIDE_WARN_FRACTION
        ],
        "region_grown": bool(meta.get("region_grown")),
    }


def _manifest_row(rec: SourceRecord, split: str, rel: str) -> dict[str, Any]:
    return {
        "image_id": rec.image_id,
        "patient_id": rec.patient_id,
        "exam_id": rec.exam_id,
        "split": split,
        "laterality": rec.laterality,
        "view": rec.view,
        "benign": rec.labels[0],
        "malignant": rec.labels[1],
        "file": rel,
    }


def cache_file_name(image_id: str) -> str:
    """A file name for ``image_id``: the id itself when filesystem-safe, else a cleaned id plus a hash.

    Manifest ids may hold ``/`` or spaces; the hash keeps two ids that clean to the same text apart.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", image_id)
    if safe == image_id and not image_id.startswith("."):
        return f"{image_id}.npz"
    return f"{safe.lstrip('.')}-{hashlib.sha256(image_id.encode()).hexdigest()[:8]}.npz"


def source_cache_dir(
    dataset: str,
    root: str | Path,
    out_hw: tuple[int, int],
    seed: int,
    cache_dir: str | Path | None = None,
    split_hash: str | None = None,
    voi_lut: bool = False,
) -> Path:
    """The cache folder of a source prepared at ``out_hw``.

    It is keyed by the source and pipeline versions, the download's absolute path, the window size, the seed,
    the split file and (when on) VOI windowing.
    """
    src = get_source(dataset)
    key: dict[str, Any] = {
        "src": [dataset, src.version],
        "pre": PREPROCESS_VERSION,
        "root": str(Path(root).resolve()),
        "hw": list(out_hw),
        "seed": seed,
        "split_file": split_hash,
    }
    if voi_lut:  # only when on, so caches prepared before the option existed keep their key
        key["voi_lut"] = True
    blob = json.dumps(key, sort_keys=True)
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return base / dataset / hashlib.sha256(blob.encode()).hexdigest()[:12]


def _run(
    dataset: str,
    root: str | Path,
    out_hw: tuple[int, int],
    seed: int,
    target: Path | None,
    workers: int | None,
    strict: bool,
    progress: bool,
    split_file: Path | None = None,
    voi_lut: bool = False,
    allow_outside_root: bool = False,
) -> tuple[DataReport, list[dict[str, Any]]]:
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"--root {root} does not exist; point it at the downloaded {dataset} folder")
    src = get_source(dataset)
    if not allow_outside_root:
        check_links_under_root(root)  # before the scan reads the download's index files
    scan = src.scan(root)
    if not allow_outside_root:
        check_under_root(scan.records, root)
    records, duplicates = unique_records(scan.records)
    scan = dataclasses.replace(scan, records=records)
    report = DataReport(dataset, str(root), problems=[*scan.problems, *duplicates])
    splits = assign_splits(scan.records, seed, read_split_file(split_file) if split_file else None)
    tasks = [(r, out_hw, dataset, splits[r.image_id], str(target) if target else None, voi_lut) for r in scan.records]
    workers = max(1, min(workers or available_cpus(), len(tasks) or 1))
    bar = tqdm(total=len(tasks), desc=f"{dataset} {out_hw[0]}x{out_hw[1]}", unit="img", disable=not progress)
    results: list[dict[str, Any]] = []
    mapper: Callable[..., Any]
    if workers == 1:
        mapper = map
        pool = None
    else:
        pool = ProcessPoolExecutor(workers)
        mapper = lambda f, it: pool.map(f, it, chunksize=2)  # noqa: E731
    try:
        for res in mapper(_prepare_one, tasks):
            results.append(res)
            bar.update()
    finally:
        if pool is not None:
            pool.shutdown()
        bar.close()
    fatal = [r["fatal"] for r in results if "fatal" in r]
    if fatal:
        raise OSError(fatal[0])
    rows = [r["row"] for r in results if "row" in r]
    report.problems += [Problem(*r["problem"]) for r in results if "problem" in r]
    report.orientation_disagreements = [r["disagrees"] for r in results if r.get("disagrees")]
    report.counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
    count_labels(report, [(r["row"], r["info"]) for r in results if "row" in r])
    if strict and report.problems:
        raise DataError(
            root,
            f"{len(report.problems)} problem(s) in strict mode:\n" + "\n".join(f"  {p}" for p in report.problems),
            "fix the files or run without --strict to skip them",
        )
    return report, rows


OUTSIDE_ROOT_FIX = (
    "move them under the root, or pass --allow-outside-root if you trust this download (in a benchmark file: "
    'set = ["data.allow_outside_root=true"])'
)


def _inside(path: str, base: str) -> bool:
    return os.path.commonpath([base, path]) == base


def _refuse_outside(root: Path, base: str, outside: list[str], what: str) -> None:
    if outside:
        shown = "; ".join(outside[:3]) + (f"; and {len(outside) - 3} more" if len(outside) > 3 else "")
        raise DataError(root, f"{len(outside)} {what} outside the data root {base} ({shown})", OUTSIDE_ROOT_FIX)


def check_links_under_root(root: Path) -> None:
    """Refuse a download folder holding symbolic links (to files or folders) that lead outside it, before any read.

    Index files (CSVs, XML contours, pickles) are found inside the folder and read by the source's scan; a link
    among them, or a linked folder, would make wsseg open files elsewhere (``/etc/passwd``, another user's data).
    Links inside the folder that stay inside it are fine. An index-file root (a manifest CSV) is not walked: its
    folder may be large and unrelated, and the files it lists are checked by :func:`check_under_root`.

    Raises:
        DataError: naming the links and where they lead, and the opt-in flag.
    """
    if not root.is_dir():
        return
    base = os.path.realpath(root)
    outside = []
    for folder, dirs, files in os.walk(root):  # links to folders are listed in dirs, never entered
        for name in (*dirs, *files):
            path = os.path.join(folder, name)
            if os.path.islink(path) and not _inside(os.path.realpath(path), base):
                outside.append(f"{path} -> {os.path.realpath(path)}")
    _refuse_outside(root, base, sorted(outside), "symbolic link(s) lead")


def _clear_cache_file(path: Path) -> None:
    """Remove a damaged cache file (or what stands at its path) so that it is prepared again."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()
    else:
        path.unlink(missing_ok=True)


def unique_records(records: list[SourceRecord]) -> tuple[list[SourceRecord], list[Problem]]:
    """The records without repeated image ids (the first is kept) and a problem for each repeat.

    Two records with one id would become two cache rows of one file, or one image under two patients (which could
    put it in two splits); every source's own check names the line, this one guards the cache whatever the source.
    """
    seen: dict[str, SourceRecord] = {}
    problems = []
    for rec in records:
        first = seen.setdefault(rec.image_id, rec)
        if first is not rec:
            problems.append(
                Problem(
                    str(rec.image_file),
                    f"duplicate image id {rec.image_id!r} (also {first.image_file}, patient {first.patient_id}); "
                    "give each image one id",
                )
            )
    return list(seen.values()), problems


def count_labels(report: DataReport, images: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Fill the report's label counts per split, located and label-only images and suspect annotations."""
    report.labels = {s: {c: 0 for c in (*CLASSES, "normal")} for s in SPLITS}
    for row, info in sorted(images, key=lambda x: str(x[0]["image_id"])):
        counts = report.labels[row["split"]]
        flags = [int(row[c]) for c in CLASSES]
        for c, flag in zip(CLASSES, flags, strict=True):
            counts[c] += flag
        counts["normal"] += not any(flags)
        # Located: a labelled class whose lesions all have a place in the window (so its mask is not empty).
        report.n_located += any(flag and ok for flag, ok in zip(flags, info["localized"], strict=True))
        report.label_only += [
            f"{row['image_id']} ({c})" for c, ok in zip(CLASSES, info["localized"], strict=True) if not ok
        ]
        report.outside_breast += info["outside"]
        report.region_grown += bool(info["region_grown"])


def check_under_root(records: list[SourceRecord], root: Path) -> None:
    """Refuse an index that points at files outside the data root (``../../etc/passwd``, ``/home/x/y.png``).

    The root is ``root`` itself, or its folder when ``root`` is an index file (a manifest CSV). Paths are compared
    after symbolic links are resolved (links to files and links to folders anywhere on the path), so a link inside
    the root that leads out of it is refused like a ``..`` path.

    Raises:
        DataError: some listed image or mask lies outside the root; the message names them and the opt-in flag.
    """
    base = os.path.realpath(root if root.is_dir() else root.parent)
    outside = []
    for rec in records:
        files = [rec.image_file, *(les.mask_file for les in rec.lesions if les.mask_file is not None)]
        for f in files:
            real = os.path.realpath(f)
            if not _inside(real, base):
                outside.append(f"{rec.image_id}: {f}" + (f" -> {real}" if real != os.path.abspath(f) else ""))
    _refuse_outside(root, base, outside, "listed file(s) lie")


def check_source(
    dataset: str,
    root: str | Path,
    out_hw: tuple[int, int] = (184, 120),
    seed: int = 0,
    workers: int | None = None,
    strict: bool = False,
    progress: bool = False,
    voi_lut: bool = False,
    allow_outside_root: bool = False,
    split_file: str | Path | None = None,
) -> DataReport:
    """Validate a download without writing anything: every image and mask is decoded and preprocessed.

    The label counts per split use the split ``prepare`` would: ``split_file``, else the committed
    ``benchmarks/splits/<dataset>.csv``, else the official or seeded split.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DataError: the index is unusable or points outside ``root`` (unless ``allow_outside_root``), or
            (``strict``) any file is bad.
    """
    split_path = Path(split_file) if split_file is not None else default_split_file(dataset)
    report, _ = _run(
        dataset,
        root,
        out_hw,
        seed,
        None,
        workers,
        strict,
        progress,
        split_path,
        voi_lut=voi_lut,
        allow_outside_root=allow_outside_root,
    )
    return report


def prepare_source(
    dataset: str,
    root: str | Path,
    out_hw: tuple[int, int],
    seed: int = 0,
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    strict: bool = False,
    progress: bool = True,
    split_file: str | Path | None = None,
    voi_lut: bool = False,
    allow_outside_root: bool = False,
    verify: bool = False,
) -> tuple[Path, DataReport]:
    """Build (or reuse) the uint16 cache of ``dataset`` read from ``root``; return its folder and the report.

    The patient-level split comes from ``split_file`` (``patient_id,split``), else the committed
    ``benchmarks/splits/<dataset>.csv``, else the official split, else a seeded one. The split used is written
    to ``split.csv`` in the cache folder, ready to be published. ``voi_lut`` applies the DICOM VOI LUT/window.

    An interrupted prepare is resumed: every image already cached (and intact) is reused, the temporary files
    of writes that were cut short are deleted. ``manifest.csv`` is written last and marks a complete cache.
    A complete cache is reused as it is, unless ``verify`` (``wsseg data prepare``): then every cached file is read
    whole and the damaged ones are prepared again from the download (listed in ``report.repaired``).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DataError: the index is unusable or points outside ``root`` (unless ``allow_outside_root``); a split is
            empty; (``strict``) any file is bad.
        OSError: a cache file cannot be written (disk full, no permission); the message names it.
    """
    split_path = Path(split_file) if split_file is not None else default_split_file(dataset)
    if split_path is not None:
        read_split_file(split_path)  # checked before anything else reads it (a FIFO would block forever)
    split_hash = hashlib.sha256(split_path.read_bytes()).hexdigest()[:12] if split_path else None
    target = source_cache_dir(dataset, root, out_hw, seed, cache_dir, split_hash, voi_lut)
    # One prepare per cache folder at a time: a second one (another run starting beside it) waits, then finds the
    # cache complete. The lock also makes the cleanup of temporaries below safe. Its file sits beside the folder,
    # whose files are the cache's content.
    lock = target.with_name(f".{target.name}.lock")
    log = lambda line: tqdm.write(line, file=sys.stderr)  # noqa: E731
    with folder_lock(target, "wsseg data prepare", "", wait=True, log=log, lock_file=lock):
        args = (dataset, root, out_hw, seed, target, workers, strict, progress, split_path, voi_lut, allow_outside_root)
        return _prepare_locked(*args, verify=verify)


def _prepare_locked(
    dataset: str,
    root: str | Path,
    out_hw: tuple[int, int],
    seed: int,
    target: Path,
    workers: int | None,
    strict: bool,
    progress: bool,
    split_path: Path | None,
    voi_lut: bool,
    allow_outside_root: bool,
    verify: bool = False,
) -> tuple[Path, DataReport]:
    """:func:`prepare_source` once the cache folder ``target`` is locked."""
    complete = (target / "manifest.csv").exists() and (target / "report.json").exists()
    damaged = (
        [str(target / row["file"]) for row, _ in damaged_cache_files(target, out_hw)] if complete and verify else []
    )
    for path in damaged:
        _clear_cache_file(Path(path))  # re-processed below; the intact files are reused
    if complete and not damaged:
        saved = json.loads((target / "report.json").read_text(encoding="utf-8"))
        return target, DataReport.from_dict(saved, str(target))
    # Left by writes a killed prepare cut short: the temporaries of the cache's own files only.
    remove_stale_temporaries(target, CACHE_INDEX_FILES)
    for split in SPLITS:
        remove_stale_temporaries(target / split, suffixes=[".npz"])
    report, rows = _run(
        dataset, root, out_hw, seed, target, workers, strict, progress, split_path, voi_lut, allow_outside_root
    )
    report.cache = str(target)
    report.repaired = damaged
    empty = [s for s in SPLITS if report.counts.get(s, 0) == 0]
    if empty:
        raise DataError(
            root,
            f"no usable images in split(s) {empty} ({_fmt_counts(report.counts)}); {len(report.problems)} skipped",
            "a run needs train, val and test images; add patients",
        )
    atomic_write_json(target / "report.json", report.to_dict())
    atomic_write_text(target / "split.csv", split_csv_text({r["patient_id"]: r["split"] for r in rows}))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (SPLITS.index(r["split"]), r["image_id"])))
    atomic_write_text(target / "manifest.csv", buf.getvalue())  # last: its presence marks a complete cache
    return target, report


def preview_source(
    dataset: str,
    root: str | Path,
    out_hw: tuple[int, int],
    n: int = 8,
    split: str = "test",
    seed: int = 0,
    ids: list[str] | None = None,
    lesions_only: bool = False,
    voi_lut: bool = False,
    allow_outside_root: bool = False,
    split_file: str | Path | None = None,
) -> tuple[list[PreviewItem], list[Problem]]:
    """Preview tiles of a download's images as they will be scored; nothing is written.

    Each image goes through :func:`process_record` (the pipeline of ``prepare``) and becomes a tile with its masks,
    its evaluated region, its lesions' boxes and circles and its label-only classes. The images are ``ids`` when
    given, else the first ``n`` of ``split`` (``train``, ``val``, ``test`` or ``all``) in id order, under the split
    ``prepare`` uses (``split_file``, else the committed one, else the official or seeded split).

    Returns:
        The tiles and the images that could not be read, with their reason.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        DataError: the index is unusable or points outside ``root``; an id of ``ids`` is not in the download.
        ValueError: an unknown split.
    """
    if split not in (*SPLITS, "all"):
        raise ValueError(f"--split {split!r}: choose train, val, test or all")
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"--root {root} does not exist; point it at the downloaded {dataset} folder")
    scan = get_source(dataset).scan(root)
    if not allow_outside_root:
        check_under_root(scan.records, root)
    split_path = Path(split_file) if split_file is not None else default_split_file(dataset)
    splits = assign_splits(scan.records, seed, read_split_file(split_path) if split_path else None)
    by_id = {r.image_id: r for r in scan.records}
    if ids:
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise DataError(
                root, f"no image {', '.join(unknown)} in the {dataset} download", "pass ids the index lists"
            )
        records = [by_id[i] for i in ids]
    else:
        records = sorted((r for r in scan.records if split in ("all", splits[r.image_id])), key=lambda r: r.image_id)
    items: list[PreviewItem] = []
    problems = [p for p in scan.problems if not ids]
    for rec in records:
        if len(items) >= n and not ids:
            break
        if lesions_only and not any(rec.labels):
            continue
        try:
            p = process_record(rec, out_hw, dataset, voi_lut)
        except DataError as e:
            problems.append(Problem(e.file, e.reason))
            continue
        items.append(preview_item(p, splits[rec.image_id], rec.labels))
    return items, problems


def preview_item(p: Processed, split: str, labels: tuple[int, int]) -> PreviewItem:
    """A preview tile of one processed image: its masks, region, lesion boxes and circles, label-only classes."""
    meta = p.meta
    boxes = [(CLASSES.index(les["class"]), tuple(les["box"])) for les in meta["lesions"] if les["kind"] == "box"]
    circles = [(CLASSES.index(les["class"]), tuple(les["circle"])) for les in meta["lesions"] if "circle" in les]
    label_only = [k for k, ok in enumerate(meta.get("localized", [True] * len(CLASSES))) if not ok]
    named = sorted({f"{les['class']} {les['type'] or les['kind']}" for les in meta["lesions"]})
    kinds = named or [c for c, flag in zip(CLASSES, labels, strict=True) if flag] or ["normal"]
    caption = f"{meta['image_id']} {split} {meta['laterality']}-{meta['view']}: {', '.join(kinds)}"
    if meta.get("region_grown"):
        caption += " [lesion outside the breast]"
    return PreviewItem(
        p.image.astype(np.float32),
        p.masks,
        caption,
        region=p.breast,
        boxes=boxes,
        circles=circles,
        label_only=label_only,
    )
