"""Scoring maps made elsewhere (``wsseg score``), re-scoring saved maps (``wsseg evaluate``), comparing runs.

File conventions (``wsseg score``; README "Scoring maps made elsewhere"):

- maps: ``<image_id>_<class>.npy`` (float32, float16 or float64, (H, W), values in [0, 1]) or
  ``<image_id>_<class>.png`` (16-bit single-channel, value / 65535); ``<class>`` is ``benign`` or
  ``malignant`` and the image id may itself contain underscores. Every scored image needs a map of
  both classes. A map may be smaller than the image if it has the image's aspect ratio (within 2%): the
  harness upsamples it (bilinear by default).
- masks: ``<image_id>_<class>.png`` as in the NYU segmentation files: non-zero = lesion; no file = no
  lesion of that class. All masks of an image have one size: the evaluated resolution.
- region (optional): ``<image_id>.png``, non-zero = evaluated pixels (e.g. the breast); the whole image
  without it.
- labels (optional CSV): columns ``image_id``, ``benign``, ``malignant`` (0/1) and optionally
  ``patient_id`` (the bootstrap unit; each image is its own patient without it),
  ``benign_score``, ``malignant_score`` (image-level predictions for AUROC/AUPRC; without them the
  map's maximum inside the region is the image's score) and ``benign_located``, ``malignant_located`` (0/1,
  default 1: 0 marks a label-only image of that class, labelled but with no lesion location, which then enters
  no localisation metric of the class). With labels, the scored images are the
  labels' rows (masks of other images are ignored); without, the images that have maps.

Hidden files (names starting with a dot) and folders are ignored. Anything else that breaks the
conventions is an error that names the file and the fix, raised before any image is scored where it
can be found from names and headers alone. With ``skip_invalid`` the per-image problems (a missing or
unreadable map, wrong shape, NaN/inf, values outside [0, 1], masks of different sizes, a mask or
labels row without maps) skip the image instead; every skip is listed in the record under
``skipped`` with the file and the reason, and counted in ``n_skipped``. Misnamed files stay errors.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from wsseg._io import atomic_save, atomic_write_text
from wsseg.config import EvalConfig, RunConfig, phantom_config
from wsseg.data.phantom import CLASSES
from wsseg.evaluation.bootstrap import bootstrap_intervals
from wsseg.evaluation.curves import CURVES_JSON, write_curves
from wsseg.evaluation.evaluator import SegmentationEvaluator
from wsseg.evaluation.localization import FPPI_POINTS
from wsseg.evaluation.stats import FrocSettings, SplitStats
from wsseg.evaluation.summary import POINTING_TOLERANCES_MM, per_image_rows, summarize
from wsseg.nn.upsample import UPSAMPLE_RULE
from wsseg.report.records import SCHEMA_VERSION, read_record, record_thresholds, utc_now, versions, write_record

MAP_SUFFIXES = (".npy", ".png")
PER_IMAGE_CSV = "per_image.csv"
PER_IMAGE_STATS = "per_image_stats.npz"
MAPS_DIR = "maps"
TEST_LABELS = "test_labels.csv"
ASPECT_TOLERANCE = 0.02
POLICY = (
    "Per-class Dice/IoU/soft Dice/pointing game average over the images with a lesion of that class (an empty "
    "prediction scores 0); lesion-free images enter pooled Dice/IoU, PxAP, FROC and the false-positive burden; "
    "undefined values are NaN, never 0 (wsseg.evaluation.metrics)."
)
ORACLE_NOTE = "keys ending in _oracle use the best threshold of the scored split itself: upper bounds, never headlines"


class InputError(ValueError):
    """Bad input for ``wsseg score`` or ``wsseg evaluate``; the message names the file and the fix."""


@dataclass(frozen=True)
class Skipped:
    """An image left out (``--skip-invalid``): which, the file at fault and why."""

    image_id: str
    file: str
    reason: str


def froc_settings(cfg: EvalConfig) -> FrocSettings:
    """The FROC settings of an eval config."""
    return FrocSettings(cfg.froc_nms_mm, cfg.froc_tolerance_mm, cfg.froc_max_candidates)


def make_evaluator(cfg: EvalConfig, normalization: str = "none") -> SegmentationEvaluator:
    """An evaluator with an eval config's settings."""
    return SegmentationEvaluator(CLASSES, cfg.n_bins, cfg.upsample, normalization, froc_settings(cfg))  # type: ignore[arg-type]


def evaluation_settings(cfg: EvalConfig, region: str, normalization: str = "none") -> dict[str, Any]:
    """The record's ``evaluation`` block: how maps were turned into numbers."""
    return {
        "n_bins": cfg.n_bins,
        "fixed_threshold": cfg.fixed_threshold,
        "upsampling": UPSAMPLE_RULE.format(mode=cfg.upsample),
        "normalization": normalization,
        "region": region,
        "pointing_tolerances_mm": list(POINTING_TOLERANCES_MM),
        "froc": {
            "nms_mm": cfg.froc_nms_mm,
            "tolerance_mm": cfg.froc_tolerance_mm,
            "max_candidates": cfg.froc_max_candidates,
            "fppi": list(FPPI_POINTS),
        },
        "policy": POLICY,
        "oracle": ORACLE_NOTE,
    }


def write_per_image(out_dir: Path, stats: SplitStats, thresholds: dict[str, float], fixed: float) -> dict[str, str]:
    """Write ``per_image.csv`` (people) and ``per_image_stats.npz`` (``wsseg compare``) atomically."""
    rows = per_image_rows(stats, thresholds, fixed)
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_text(out_dir / PER_IMAGE_CSV, buf.getvalue())
    stats.save(out_dir / PER_IMAGE_STATS)
    return {"csv": PER_IMAGE_CSV, "stats": PER_IMAGE_STATS}


def score_stats(
    stats: SplitStats, thresholds: dict[str, float], cfg: EvalConfig, out_dir: Path
) -> tuple[dict[str, dict[str, float]], dict[str, Any], dict[str, str], float]:
    """Metrics, bootstrap intervals and per-image files of a scored split.

    Returns:
        metrics, intervals, the per-image file names, and the seconds the bootstrap took.
    """
    metrics = summarize(stats, thresholds, cfg.fixed_threshold)
    t0 = time.perf_counter()
    intervals = bootstrap_intervals(stats, thresholds, cfg.fixed_threshold, cfg.bootstrap_resamples, cfg.bootstrap_seed)
    seconds = time.perf_counter() - t0
    files = write_per_image(out_dir, stats, thresholds, cfg.fixed_threshold)
    # The curves behind PxAP, FROC and Dice-by-size, a few kB, for the HTML report.
    write_curves(out_dir / CURVES_JSON, stats, thresholds)
    return metrics, intervals, {**files, "curves": CURVES_JSON}, seconds


# ---------------------------------------------------------------------------------------------------------------
# Reading files


def parse_map_name(name: str) -> tuple[str, str] | None:
    """``'<image_id>_<class>.ext'`` -> (image_id, class), or None when the name breaks the convention."""
    stem = name.rsplit(".", 1)[0]
    image_id, sep, cls = stem.rpartition("_")
    return (image_id, cls) if sep and image_id and cls in CLASSES else None


def _listing(folder: Path, flag: str) -> list[Path]:
    if not folder.is_dir():
        raise InputError(f"{flag} {folder} is not a folder; pass the folder that holds the files")
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.is_file())


def _names(paths: Iterable[str], limit: int = 5) -> str:
    items = list(paths)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def index_class_files(folder: Path, suffixes: tuple[str, ...], flag: str) -> dict[str, dict[str, Path]]:
    """``{image_id: {class: path}}`` of the ``<image_id>_<class>.<suffix>`` files of a folder.

    Raises:
        InputError: a file breaks the naming convention, or an image and class has two files.
    """
    out: dict[str, dict[str, Path]] = {}
    bad, twice = [], []
    for p in _listing(folder, flag):
        parsed = parse_map_name(p.name) if p.suffix.lower() in suffixes else None
        if parsed is None:
            bad.append(p.name)
            continue
        image_id, cls = parsed
        if cls in out.setdefault(image_id, {}):
            twice.append(f"{image_id}_{cls}")
        out[image_id][cls] = p
    ext = " or ".join(suffixes)
    if bad:
        raise InputError(
            f"{flag} {folder}: {len(bad)} file(s) not named <image_id>_<class>{ext} with class "
            f"{' or '.join(CLASSES)}: {_names(bad)}; rename them or move them out of the folder"
        )
    if twice:
        raise InputError(f"{flag} {folder}: two files for {_names(twice)}; keep one file per image and class")
    return out


def index_region_files(folder: Path) -> dict[str, Path]:
    """``{image_id: path}`` of the ``<image_id>.png`` files of a region folder."""
    out = {}
    bad = []
    for p in _listing(folder, "--region"):
        if p.suffix.lower() == ".png":
            out[p.stem] = p
        else:
            bad.append(p.name)
    if bad:
        raise InputError(f"--region {folder}: {len(bad)} file(s) are not <image_id>.png: {_names(bad)}; move them out")
    return out


def read_map(path: Path, check_range: bool = True) -> np.ndarray:
    """Read and check one map file: (h, w) float32.

    Raises:
        InputError: unreadable, not 2-D, an integer .npy, a PNG that is not 16-bit, NaN/inf, or (with
            ``check_range``) values outside [0, 1].
    """
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as e:
            raise InputError(f"{path}: cannot read it as .npy ({e}); save maps with numpy.save") from e
        if arr.dtype not in (np.float16, np.float32, np.float64):
            raise InputError(
                f"{path}: dtype {arr.dtype}; save maps as float32 or float16 arrays with values in [0, 1] "
                "(or as 16-bit PNGs)"
            )
    else:
        try:
            with Image.open(path) as im:
                mode = im.mode
                arr = np.array(im)
        except (OSError, Image.DecompressionBombError) as e:
            raise InputError(f"{path}: cannot read it as PNG ({e}); save maps as 16-bit PNG or .npy") from e
        if mode not in ("I;16", "I;16B", "I;16L", "I") or arr.ndim != 2 or arr.min() < 0 or arr.max() > 65535:
            raise InputError(
                f"{path}: PNG mode {mode}; map PNGs must be 16-bit single-channel with value = round(s * 65535) "
                "(an 8-bit PNG would be read as values below 0.004)"
            )
        arr = arr.astype(np.float32) / 65535.0
    if arr.ndim != 2:
        raise InputError(f"{path}: shape {arr.shape}; a map must be 2-D (H, W): one file per image and class")
    if not np.isfinite(arr).all():
        raise InputError(f"{path}: contains NaN or inf; fix the program that wrote it (check its normalisation)")
    if check_range:
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise InputError(
                f"{path}: values in [{lo:.4g}, {hi:.4g}], outside [0, 1]; apply a sigmoid or min-max before saving, "
                "or declare it with --normalize minmax"
            )
    return np.asarray(arr, dtype=np.float32)


def read_binary_png(path: Path) -> np.ndarray:
    """A mask or region PNG as (H, W) bool (non-zero = True).

    Raises:
        InputError: unreadable or not single-channel.
    """
    try:
        with Image.open(path) as im:
            arr = np.array(im)
    except (OSError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot read it as PNG ({e}); save masks as single-channel PNGs") from e
    if arr.ndim != 2:
        raise InputError(f"{path}: shape {arr.shape}; masks must be single-channel (grayscale) PNGs, non-zero = lesion")
    return np.asarray(arr != 0)


def map_size(path: Path) -> tuple[int, int]:
    """(H, W) of a map file from its header only."""
    try:
        if path.suffix.lower() == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return (int(shape[0]), int(shape[1])) if len(shape) == 2 else (-1, -1)
        with Image.open(path) as im:
            return (im.height, im.width)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot read its header ({e}); re-save the map") from e


def png_size(path: Path) -> tuple[int, int]:
    """(H, W) of a PNG from its header only."""
    try:
        with Image.open(path) as im:
            return (im.height, im.width)
    except (OSError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot read it as PNG ({e}); re-save it as a single-channel PNG") from e


def check_map_size(path: Path, size: tuple[int, int], image: tuple[int, int]) -> None:
    """Raise :class:`InputError` unless a map of ``size`` can be brought to the image's size by upsampling."""
    (h, w), (big_h, big_w) = size, image
    if (h, w) == (big_h, big_w):
        return
    if h <= 0:
        raise InputError(f"{path}: not a 2-D array; save one (H, W) map per image and class")
    if (h, w) == (big_w, big_h):
        raise InputError(f"{path}: is {h}x{w} but the image is {big_h}x{big_w}; it looks transposed, save it as (H, W)")
    if h > big_h or w > big_w:
        raise InputError(
            f"{path}: is {h}x{w}, larger than the image ({big_h}x{big_w}, the mask size); save it at the image "
            "resolution or downscaled"
        )
    if abs(h / w - big_h / big_w) > ASPECT_TOLERANCE * big_h / big_w:
        raise InputError(
            f"{path}: is {h}x{w}, another aspect ratio than the image ({big_h}x{big_w}); save it at {big_h}x{big_w} "
            "or downscaled by the same factor in both directions"
        )


@dataclass
class LabelRow:
    """One row of a labels CSV."""

    labels: tuple[float, ...]
    scores: tuple[float, ...] | None
    patient_id: str | None
    located: tuple[bool, ...] | None = None


def read_labels(path: Path) -> dict[str, LabelRow]:
    """Read a labels CSV (see the module docstring).

    Raises:
        InputError: missing columns, duplicate ids, labels other than 0/1, or unparsable scores (naming the line).
    """
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            columns = set(rows[0]) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"--labels {path}: cannot read it ({e}); save it as UTF-8 comma-separated text") from e
    missing = {"image_id", *CLASSES} - columns
    if missing:
        raise InputError(f"--labels {path}: no column(s) {sorted(missing)}; the header needs image_id,benign,malignant")
    score_cols = [f"{c}_score" for c in CLASSES]
    has_scores = all(c in columns for c in score_cols)
    located_cols = [f"{c}_located" for c in CLASSES]
    has_located = all(c in columns for c in located_cols)
    out: dict[str, LabelRow] = {}
    for line, row in enumerate(rows, start=2):
        image_id = (row["image_id"] or "").strip()
        if not image_id or image_id in out:
            raise InputError(f"--labels {path} line {line}: empty or repeated image_id {image_id!r}; one row per image")
        try:
            labels = tuple(float(row[c]) for c in CLASSES)
            scores = tuple(float(row[c]) for c in score_cols) if has_scores else None
        except (TypeError, ValueError):
            raise InputError(f"--labels {path} line {line}: labels and scores must be numbers") from None
        if any(v not in (0.0, 1.0) for v in labels):
            raise InputError(f"--labels {path} line {line}: labels must be 0 or 1, got {labels}")
        if scores is not None and not all(math.isfinite(s) for s in scores):
            raise InputError(f"--labels {path} line {line}: scores must be finite numbers")
        located = None
        if has_located:
            flags = [(row[c] or "").strip() for c in located_cols]
            if any(f not in ("0", "1") for f in flags):
                raise InputError(f"--labels {path} line {line}: <class>_located must be 0 or 1, got {flags}")
            located = tuple(f == "1" for f in flags)
        patient = (row.get("patient_id") or "").strip() or None
        out[image_id] = LabelRow(labels, scores, patient, located)
    return out


def parse_thresholds(values: list[str] | None) -> dict[str, float] | None:
    """``["0.3"]`` or ``["benign=0.3", "malignant=0.4"]`` -> per-class thresholds (None when not given).

    Raises:
        ValueError: a malformed item, an unknown class, a class left out, or a value outside [0, 1].
    """
    if not values:
        return None
    out: dict[str, float] = {}
    for item in values:
        name, sep, raw = item.rpartition("=")
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"--threshold {item!r}: write a number in [0, 1] or class=number") from None
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"--threshold {item!r}: thresholds lie in [0, 1]")
        if not sep:
            out.update({c: value for c in CLASSES})
        elif name in CLASSES:
            out[name] = value
        else:
            raise ValueError(f"--threshold {item!r}: unknown class {name!r}; use {' or '.join(CLASSES)}")
    if set(out) != set(CLASSES):
        raise ValueError(f"--threshold gives no value for {sorted(set(CLASSES) - set(out))}; give one per class")
    return out


def parse_size(text: str | None) -> tuple[int, int] | None:
    """``"2944x1920"`` -> (2944, 1920)."""
    if text is None:
        return None
    h, sep, w = text.lower().partition("x")
    if not sep or not h.isdigit() or not w.isdigit() or int(h) == 0 or int(w) == 0:
        raise ValueError(f"--image-size {text!r}: write HEIGHTxWIDTH in pixels, e.g. 2944x1920")
    return int(h), int(w)


# ---------------------------------------------------------------------------------------------------------------
# wsseg score


@dataclass
class _Plan:
    """What will be scored for one image, found from names and headers."""

    image_id: str
    maps: dict[str, Path]
    masks: dict[str, Path]
    region: Path | None
    size: tuple[int, int]


def _plan(
    maps_dir: Path,
    maps: dict[str, dict[str, Path]],
    masks: dict[str, dict[str, Path]],
    regions: dict[str, Path] | None,
    labels: dict[str, LabelRow] | None,
    image_size: tuple[int, int] | None,
    skip: Callable[[str, str, str], None],
) -> list[_Plan]:
    """Check names and headers of every file and decide each image's evaluated size (before any scoring)."""
    scored = sorted(labels) if labels is not None else sorted(maps)
    if labels is not None:
        extra = sorted(set(maps) - set(labels))
        if extra:
            raise InputError(
                f"--maps holds maps of {len(extra)} image(s) that --labels does not list: {_names(extra)}; "
                "add them to the labels or move their maps out"
            )
    else:
        orphan = sorted(set(masks) - set(maps))
        for image_id in orphan:
            skip(
                image_id,
                str(next(iter(masks[image_id].values()))),
                "a mask but no map; write its maps, move the mask out, or pass --labels listing the images to score",
            )
    mask_sizes = {i: {c: png_size(p) for c, p in m.items()} for i, m in masks.items() if i in set(scored)}
    folder_sizes = {s for sizes in mask_sizes.values() for s in sizes.values()}
    plans = []
    for image_id in scored:
        have = maps.get(image_id, {})
        lacking = [c for c in CLASSES if c not in have]
        if lacking:
            expected = ", ".join(str(maps_dir / f"{image_id}_{c}.npy") for c in lacking)
            skip(image_id, expected, f"no map for class {', '.join(lacking)} (expected {expected} or .png)")
            continue
        sizes = mask_sizes.get(image_id, {})
        region = regions.get(image_id) if regions is not None else None
        if regions is not None and region is None:
            skip(image_id, f"{image_id}.png", "no region file in --region; add <image_id>.png there or drop --region")
            continue
        if region is not None:
            sizes = {**sizes, "region": png_size(region)}
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{k} {h}x{w}" for k, (h, w) in sizes.items())
            first = next(iter(masks.get(image_id, {}).values()), region)
            skip(image_id, str(first), f"masks of different sizes ({detail})")
            continue
        if sizes:
            size = next(iter(sizes.values()))
        elif image_size is not None:
            size = image_size
        elif len(folder_sizes) == 1:
            size = next(iter(folder_sizes))
        elif not folder_sizes:
            map_sizes = {map_size(p) for p in have.values()}
            if len(map_sizes) != 1:
                raise InputError(
                    f"{image_id}: no mask to tell the image size and its maps differ in size; pass --image-size HxW"
                )
            size = next(iter(map_sizes))
        else:
            raise InputError(
                f"{image_id}: has no mask, and the masks in --masks have several sizes, so its size is unknown; "
                "pass --image-size HxW or add an all-zero mask for it"
            )
        try:
            for p in have.values():
                check_map_size(p, map_size(p), size)
        except InputError as e:
            skip(image_id, str(e).split(":")[0], str(e))
            continue
        plans.append(_Plan(image_id, have, masks.get(image_id, {}), region, size))
    return plans


def score_folders(
    maps: Path,
    masks: Path,
    out: Path,
    labels: Path | None = None,
    region: Path | None = None,
    spacing_mm: float | None = None,
    thresholds: dict[str, float] | None = None,
    image_size: tuple[int, int] | None = None,
    normalization: str = "none",
    cfg: EvalConfig | None = None,
    skip_invalid: bool = False,
    progress: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Score maps produced by any program and write ``out/record.json`` (see the module docstring).

    Args:
        maps: folder of ``<image_id>_<class>.npy|.png`` maps.
        masks: folder of ``<image_id>_<class>.png`` masks.
        out: output folder (record.json, per_image.csv, per_image_stats.npz).
        labels: optional labels CSV (image labels, patients, image-level scores).
        region: optional folder of ``<image_id>.png`` evaluated regions.
        spacing_mm: pixel spacing at the mask resolution; the pointing game beyond 0 mm and FROC need it.
        thresholds: per class, the operating threshold (e.g. calibrated on a validation split elsewhere);
            0.5 when None. Rounded to the grid.
        image_size: evaluated size of images without any mask or region file.
        normalization: ``none`` or ``minmax`` (per map, after upsampling).
        cfg: evaluation settings (grid, upsampling, FROC, bootstrap); the defaults when None.
        skip_invalid: skip images with bad files instead of stopping (listed in the record).
        progress: show a progress bar.
        log: where one-line messages go.

    Returns:
        The record written.

    Raises:
        InputError: bad input (the message names the file and the fix).
    """
    cfg = cfg or EvalConfig()
    if normalization not in ("none", "minmax"):
        raise InputError(f"--normalize {normalization!r}: choose none or minmax")
    if spacing_mm is not None and not spacing_mm > 0:
        raise InputError(f"--spacing-mm {spacing_mm}: the pixel spacing must be positive (mm per pixel)")
    t_start = time.perf_counter()
    map_index = index_class_files(Path(maps), MAP_SUFFIXES, "--maps")
    if not map_index:
        raise InputError(f"--maps {maps} holds no maps; write <image_id>_<class>.npy (or 16-bit .png) files there")
    mask_index = index_class_files(Path(masks), (".png",), "--masks")
    region_index = index_region_files(Path(region)) if region is not None else None
    label_rows = read_labels(Path(labels)) if labels is not None else None
    skipped: list[Skipped] = []

    def skip(image_id: str, file: str, reason: str) -> None:
        if not skip_invalid:
            raise InputError(f"{file}: {reason}" if not reason.startswith(file) else reason)
        skipped.append(Skipped(image_id, file, reason))

    plans = _plan(Path(maps), map_index, mask_index, region_index, label_rows, image_size, skip)
    if not plans:
        raise InputError("no image left to score; check the file names (see `wsseg score --help`)")
    ev = make_evaluator(cfg, normalization)
    for plan in tqdm(plans, desc="score", unit="img", disable=not progress):
        try:
            arrays = [read_map(plan.maps[c], check_range=normalization == "none") for c in CLASSES]
            target = np.zeros((len(CLASSES), *plan.size), dtype=bool)  # (K, H, W)
            for k, c in enumerate(CLASSES):
                if c in plan.masks:
                    target[k] = read_binary_png(plan.masks[c])
            breast = read_binary_png(plan.region) if plan.region is not None else None
        except InputError as e:
            skip(plan.image_id, str(e).split(":")[0], str(e))
            continue
        # Maps of different sizes per class are brought to the image size one by one; same-size maps go together.
        if len({a.shape for a in arrays}) == 1:
            saliency = torch.from_numpy(np.stack(arrays))  # (K, h, w)
        else:
            from wsseg.nn.upsample import to_input_resolution

            saliency = torch.cat([to_input_resolution(torch.from_numpy(a)[None, None], plan.size)[0] for a in arrays])
        row = label_rows.get(plan.image_id) if label_rows is not None else None
        ev.add(
            plan.image_id,
            saliency,
            torch.from_numpy(target),
            None if breast is None else torch.from_numpy(breast),
            patient_id=row.patient_id if row is not None else None,
            spacing_mm=spacing_mm,
            image_scores=row.scores if row is not None else None,  # None: the map's maximum in the region
            image_labels=row.labels if row is not None else None,
            located=row.located if row is not None else None,
        )
    stats = ev.stats()
    if not len(stats):
        raise InputError("every image was skipped; see the reasons above and fix the files")
    given = thresholds is not None
    thresholds = thresholds or {c: cfg.fixed_threshold for c in CLASSES}
    out = Path(out)
    metrics, intervals, files, boot_seconds = score_stats(stats, thresholds, cfg, out)
    score_source = None
    if label_rows is not None:
        any_scores = next(iter(label_rows.values())).scores is not None
        score_source = "labels CSV columns <class>_score" if any_scores else "maximum of the map inside the region"
    record: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "record_type": "score",
        "created": utc_now(),
        "versions": versions(),
        "inputs": {
            "maps": str(maps),
            "masks": str(masks),
            "labels": str(labels) if labels is not None else None,
            "region": str(region) if region is not None else None,
            "image_score_source": score_source,
        },
        "dataset_info": {
            "n_images": len(stats),
            "n_patients": len(set(stats.patient_ids)),
            "image_ids_hash": _ids_hash(stats.image_ids),
            "pixel_spacing_mm": spacing_mm,
        },
        "evaluation": evaluation_settings(cfg, "region files" if region is not None else "whole image", normalization),
        "thresholds": {
            "rule": "given with --threshold (rounded to the grid)" if given else "fixed 0.5: no --threshold given",
            **{c: metrics[c]["threshold"] for c in CLASSES},
        },
        "metrics": metrics,
        "intervals": intervals,
        "per_image": files,
        "skipped": [s.__dict__ for s in skipped],
        "n_skipped": len(skipped),
        "timings": {"total": time.perf_counter() - t_start, "bootstrap": boot_seconds},
    }
    write_record(out / "record.json", record)
    if skipped:
        log(f"skipped {len(skipped)} image(s) (listed in the record): " + _names([s.image_id for s in skipped]))
    if spacing_mm is None:
        log("no --spacing-mm: the pointing game beyond 0 mm and FROC are n/a")
    return record


def _ids_hash(image_ids: list[str]) -> str:
    from wsseg.data.dataset import split_hash

    return split_hash(image_ids)


# ---------------------------------------------------------------------------------------------------------------
# wsseg run --save-maps, wsseg evaluate


def save_map(folder: Path, image_id: str, name: str, saliency: torch.Tensor) -> None:
    """Store one (H, W) map as ``<image_id>_<class>.npy`` in float16 (2 bytes per pixel), atomically."""
    arr = saliency.detach().float().cpu().numpy().astype(np.float16)
    atomic_save(folder / f"{image_id}_{name}.npy", lambda f: np.save(f, arr))


def write_test_labels(
    path: Path,
    ids: list[str],
    patients: list[str],
    labels: np.ndarray,
    logits: np.ndarray,
    located: np.ndarray | None = None,
) -> None:
    """The test split's labels, patients and image-level logits in the ``--labels`` format of ``wsseg score``.

    ``located`` ((N, K) bool) adds the ``<class>_located`` columns when some image is label-only, so that scoring
    the saved maps leaves those images out of the localisation metrics as the run did.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    flags = located is not None and not bool(np.all(located))
    extra = [f"{c}_located" for c in CLASSES] if flags else []
    writer.writerow(["image_id", "patient_id", *CLASSES, *(f"{c}_score" for c in CLASSES), *extra])
    for i, image_id in enumerate(ids):
        row = [image_id, patients[i], *(int(v) for v in labels[i]), *(repr(float(v)) for v in logits[i])]
        if flags:
            assert located is not None
            row += [int(v) for v in located[i]]
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def evaluate_run(
    run_dir: Path,
    out: Path | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Re-score the test maps a run saved with ``--save-maps``; write ``<out>/record.json`` (default ``DIR/evaluate``).

    The masks and breast regions come from the run's dataset (regenerated from the cache key when the
    cache is gone), the thresholds and image-level scores from the run. The numbers equal the run's up
    to the float16 rounding of the stored maps.

    Raises:
        InputError: the folder is not a finished run with saved maps, or the maps do not match the test split.
    """
    from wsseg.data.dataset import MammogramDataset, prepare_phantom

    run_dir = Path(run_dir)
    maps_dir = run_dir / MAPS_DIR
    for name in ("record.json", "config.json"):
        if not (run_dir / name).is_file():
            raise InputError(f"--run {run_dir} has no {name}; point it at a finished wsseg run folder")
    if not maps_dir.is_dir():
        raise InputError(f"--run {run_dir} has no {MAPS_DIR}/ folder; re-run it with `wsseg run ... --save-maps`")
    record = read_record(run_dir / "record.json")
    cfg = RunConfig.read(run_dir / "config.json")
    counts = {"train": cfg.data.n_train, "val": cfg.data.n_val, "test": cfg.data.n_test}
    cache = cache_dir or cfg.data.cache_dir
    root = prepare_phantom(phantom_config(cfg.profile), cfg.data.seed, counts, cache, progress=progress)
    test_set = MammogramDataset(root, "test", with_masks=True)
    map_index = index_class_files(maps_dir, MAP_SUFFIXES, "--run maps")
    extra = sorted(set(map_index) - set(test_set.image_ids))
    if extra:
        raise InputError(
            f"{maps_dir}: maps of {len(extra)} image(s) outside the test split: {_names(extra)}; move them out"
        )
    if not (run_dir / TEST_LABELS).is_file():
        raise InputError(f"--run {run_dir} has no {TEST_LABELS}; re-run it with `wsseg run ... --save-maps`")
    rows = read_labels(run_dir / TEST_LABELS)
    thresholds = record_thresholds(record)
    ev = make_evaluator(cfg.eval)
    t_start = time.perf_counter()
    for i in tqdm(range(len(test_set)), desc="evaluate", unit="img", disable=not progress):
        sample = test_set[i]
        image_id = sample["meta"]["image_id"]
        have = map_index.get(image_id, {})
        lacking = [c for c in CLASSES if c not in have]
        if lacking:
            raise InputError(f"{maps_dir}: no map {image_id}_{lacking[0]}.npy; the saved maps are incomplete, re-run")
        size = (int(sample["masks"].shape[-2]), int(sample["masks"].shape[-1]))
        arrays = []
        for c in CLASSES:
            check_map_size(have[c], map_size(have[c]), size)
            arrays.append(read_map(have[c]))
        row = rows.get(image_id)
        ev.add(
            image_id,
            torch.from_numpy(np.stack(arrays)),
            sample["masks"],
            sample["breast_mask"],
            patient_id=sample["meta"]["patient_id"],
            spacing_mm=float(sample["meta"]["pixel_spacing_mm"]),
            image_scores=row.scores if row is not None else None,
            image_labels=sample["labels"],
            located=sample["meta"].get("localized"),
        )
    out = Path(out) if out is not None else run_dir / "evaluate"
    metrics, intervals, files, boot_seconds = score_stats(ev.stats(), thresholds, cfg.eval, out)
    new: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "record_type": "evaluate",
        "created": utc_now(),
        "versions": versions(),
        "run_id": record.get("run_id"),
        "method": record.get("method"),
        "inputs": {"run": str(run_dir), "maps": str(maps_dir), "labels": str(run_dir / TEST_LABELS)},
        "dataset_info": record.get("dataset_info"),
        "evaluation": evaluation_settings(cfg.eval, "breast mask"),
        "thresholds": {"rule": "the run's thresholds (calibrated on its validation split)", **thresholds},
        "metrics": metrics,
        "intervals": intervals,
        "per_image": files,
        "skipped": [],
        "n_skipped": 0,
        "timings": {"total": time.perf_counter() - t_start, "bootstrap": boot_seconds},
    }
    write_record(out / "record.json", new)
    return new


# ---------------------------------------------------------------------------------------------------------------
# wsseg compare


def load_scored(folder: Path) -> tuple[dict[str, Any], SplitStats]:
    """The record and per-image statistics of a run, score or evaluate folder.

    Raises:
        InputError: the folder lacks either file.
    """
    folder = Path(folder)
    if not (folder / "record.json").is_file():
        raise InputError(f"{folder} has no record.json; pass a wsseg run folder or a `wsseg score --out` folder")
    record = read_record(folder / "record.json")
    name = (record.get("per_image") or {}).get("stats", PER_IMAGE_STATS)
    if not (folder / name).is_file():
        raise InputError(
            f"{folder} has no {name} (per-image statistics); it was made by an older wsseg: re-run it, or re-score "
            "its maps with `wsseg evaluate` or `wsseg score`"
        )
    return record, SplitStats.load(folder / name)


def check_comparable(a: tuple[dict[str, Any], SplitStats], b: tuple[dict[str, Any], SplitStats]) -> None:
    """Raise InputError unless two scored folders share their test images, patients, ground truth and grid settings."""
    from wsseg.evaluation.bootstrap import check_same_images

    (ra, sa), (rb, sb) = a, b
    try:
        check_same_images(sa, sb)
    except ValueError as e:
        raise InputError(str(e)) from e
    key_a = (ra.get("dataset_info") or {}).get("cache_key")
    key_b = (rb.get("dataset_info") or {}).get("cache_key")
    if key_a and key_b and key_a != key_b:
        raise InputError(
            f"the test sets differ: dataset cache keys {key_a} vs {key_b} (another profile, seed or generator "
            "version); compare runs made on the same data"
        )
    sb = sb.reorder(sa.image_ids)
    for name in sa.classes:
        if name in sb.classes and not (
            np.array_equal(sa.classes[name].gt, sb.classes[name].gt)
            and np.array_equal(sa.classes[name].area, sb.classes[name].area)
        ):
            raise InputError(
                f"the test sets differ: the same image ids but other {name} masks or evaluated regions (or another "
                "resolution); compare runs scored against the same ground truth"
            )
    fa = ra.get("evaluation", {}).get("fixed_threshold")
    fb = rb.get("evaluation", {}).get("fixed_threshold")
    if fa != fb:
        raise InputError(f"the runs used other fixed thresholds ({fa} vs {fb}); re-score one with the other's")


def compare_folders(a: Path, b: Path, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired patient bootstrap of the difference between two scored folders (``wsseg compare``)."""
    from wsseg.evaluation.bootstrap import paired_bootstrap

    ra, sa = load_scored(a)
    rb, sb = load_scored(b)
    check_comparable((ra, sa), (rb, sb))
    fixed = float(ra.get("evaluation", {}).get("fixed_threshold", 0.5))
    ta = {c: float(ra["metrics"][c]["threshold"]) for c in sa.classes}
    tb = {c: float(rb["metrics"][c]["threshold"]) for c in sb.classes}
    result = paired_bootstrap(sa, ta, sb, tb, fixed, n_resamples, seed)
    return {
        "a": str(a),
        "b": str(b),
        "rule": "paired percentile bootstrap over patients (the same resamples for both), thresholds frozen",
        "n_resamples": n_resamples,
        "seed": seed,
        "n_images": len(sa),
        "n_patients": len(set(sa.patient_ids)),
        "classes": result,
    }
