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
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from wsseg.config import EvalConfig
from wsseg.core import CLASSES, short_list
from wsseg.evaluation.evaluator import Normalization, SegmentationEvaluator
from wsseg.pipelines.scored import (
    ASPECT_TOLERANCE,
    MAP_SUFFIXES,
    MAX_IMAGE_PIXELS,
    MAX_SPACING_MM,
    MIN_SPACING_MM,
    PIL_ERRORS,
    InputError,
    Skipped,
    evaluation_settings,
    ids_hash,
    make_evaluator,
    score_stats,
)
from wsseg.report.records import ScoreRecord, write_record

# Reading files


def parse_map_name(name: str) -> tuple[str, str] | None:
    """``'<image_id>_<class>.ext'`` -> (image_id, class), or None when the name breaks the convention."""
    stem = name.rsplit(".", 1)[0]
    image_id, sep, cls = stem.rpartition("_")
    return (image_id, cls) if sep and image_id and cls in CLASSES else None


def _listing(folder: Path, flag: str, suffixes: tuple[str, ...]) -> list[Path]:
    """The files of ``folder``, hidden ones left out; sub-folders are ignored unless named like a file.

    Raises:
        InputError: an entry named like a map or mask that is a folder, or any dangling link, FIFO, socket or
            device: read as "no file", it would silently count as "no lesion" (and opening a FIFO blocks forever).
    """
    if not folder.is_dir():
        raise InputError(f"{flag} {folder} is not a folder; pass the folder that holds the files")
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file():
            out.append(p)
            continue
        if p.is_dir() and not p.name.lower().endswith(suffixes):
            continue
        kind = "a folder" if p.is_dir() else "a link to nothing" if p.is_symlink() and not p.exists() else "not a file"
        raise InputError(f"{p}: {kind}, in {flag}; replace it with the file it should be or move it out of {folder}")
    return out


def index_class_files(folder: Path, suffixes: tuple[str, ...], flag: str) -> dict[str, dict[str, Path]]:
    """``{image_id: {class: path}}`` of the ``<image_id>_<class>.<suffix>`` files of a folder.

    Raises:
        InputError: a file breaks the naming convention, or an image and class has two files.
    """
    out: dict[str, dict[str, Path]] = {}
    bad, twice = [], []
    for p in _listing(folder, flag, suffixes):
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
            f"{' or '.join(CLASSES)}: {short_list(bad)}; rename them or move them out of the folder"
        )
    if twice:
        raise InputError(f"{flag} {folder}: two files for {short_list(twice)}; keep one file per image and class")
    return out


def index_region_files(folder: Path) -> dict[str, Path]:
    """``{image_id: path}`` of the ``<image_id>.png`` files of a region folder."""
    out = {}
    bad = []
    for p in _listing(folder, "--region", (".png",)):
        if p.suffix.lower() == ".png":
            out[p.stem] = p
        else:
            bad.append(p.name)
    if bad:
        raise InputError(
            f"--region {folder}: {len(bad)} file(s) are not <image_id>.png: {short_list(bad)}; move them out"
        )
    return out


def read_map(path: Path, check_range: bool = True) -> np.ndarray:
    """Read and check one map file: (h, w) float32.

    Raises:
        InputError: unreadable, not 2-D, an integer .npy, a PNG that is not 16-bit, NaN/inf, or (with
            ``check_range``) values outside [0, 1].
    """
    if not path.is_file():  # a FIFO would block the read forever
        raise InputError(f"{path}: not a regular file; save the map there with numpy.save")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # EOFError: an empty file
            raise InputError(
                f"{path}: cannot read it as .npy ({e or 'empty file'}); save maps with numpy.save"
            ) from None
        if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name
            raise InputError(f"{path}: an .npz archive, not one array; save each map with numpy.save")
        if arr.dtype.kind != "f" or arr.dtype.itemsize not in (2, 4, 8):  # any byte order
            raise InputError(
                f"{path}: dtype {arr.dtype}; save maps as float32 or float16 arrays with values in [0, 1] "
                "(or as 16-bit PNGs)"
            )
    else:
        try:
            with Image.open(path) as im:
                mode = im.mode
                arr = np.array(im)
        except PIL_ERRORS as e:
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
    except PIL_ERRORS as e:
        raise InputError(f"{path}: cannot read it as PNG ({e}); save masks as single-channel PNGs") from e
    if arr.ndim != 2:
        raise InputError(f"{path}: shape {arr.shape}; masks must be single-channel (grayscale) PNGs, non-zero = lesion")
    return np.asarray(arr != 0)


def map_size(path: Path) -> tuple[int, int]:
    """(H, W) of a map file from its header only."""
    if not path.is_file():
        raise InputError(f"{path}: not a regular file; save the map there with numpy.save")
    try:
        if path.suffix.lower() == ".npy":
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
            return (int(shape[0]), int(shape[1])) if len(shape) == 2 else (-1, -1)
        with Image.open(path) as im:
            return (im.height, im.width)
    except (OSError, ValueError, EOFError, AttributeError, Image.DecompressionBombError) as e:
        raise InputError(f"{path}: cannot read its header ({e or 'empty file'}); re-save the map") from None


def png_size(path: Path) -> tuple[int, int]:
    """(H, W) of a PNG from its header only."""
    try:
        with Image.open(path) as im:
            return (im.height, im.width)
    except PIL_ERRORS as e:
        raise InputError(f"{path}: cannot read it as PNG ({e}); re-save it as a single-channel PNG") from e


def check_map_size(path: Path, size: tuple[int, int], image: tuple[int, int], source: str = "the mask size") -> None:
    """Raise :class:`InputError` unless a map of ``size`` can be brought to the image's size by upsampling.

    ``source`` says where the image size comes from (a mask file, ``--image-size``), for the message.
    """
    (h, w), (big_h, big_w) = size, image
    if (h, w) == (big_h, big_w):
        return
    if h <= 0:
        raise InputError(f"{path}: not a 2-D array; save one (H, W) map per image and class")
    if (h, w) == (big_w, big_h):
        raise InputError(f"{path}: is {h}x{w} but the image is {big_h}x{big_w}; it looks transposed, save it as (H, W)")
    if h > big_h or w > big_w:
        raise InputError(
            f"{path}: is {h}x{w}, larger than the image ({big_h}x{big_w}, {source}); save it at the image "
            "resolution or downscaled"
        )
    if abs(h / w - big_h / big_w) > ASPECT_TOLERANCE * big_h / big_w:
        raise InputError(
            f"{path}: is {h}x{w}, another aspect ratio than the image ({big_h}x{big_w}, {source}); save it at "
            f"{big_h}x{big_w} or downscaled by the same factor in both directions"
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
    if (path.exists() or path.is_symlink()) and not path.is_file():  # a FIFO would block the read forever
        raise InputError(f"--labels {path} is not a regular file; pass the labels CSV")
    try:
        # utf-8-sig: a byte-order mark (Excel writes one) is not part of the first column's name.
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            columns = set(reader.fieldnames or [])
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
    if not out:
        raise InputError(f"--labels {path} lists no image; add one row per image to score")
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
    if int(h) * int(w) > MAX_IMAGE_PIXELS:
        raise ValueError(
            f"--image-size {text!r}: more than {MAX_IMAGE_PIXELS:,} pixels; a mammogram is about 30 million"
        )
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
                f"--maps holds maps of {len(extra)} image(s) that --labels does not list: {short_list(extra)}; "
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
        row = labels.get(image_id) if labels is not None else None
        # A label-only class (<class>_located 0) is labelled without a location: no mask is expected.
        unmasked = [
            c
            for k, c in enumerate(CLASSES)
            if row is not None and row.labels[k] and is_located(row, k) and c not in masks.get(image_id, {})
        ]
        if unmasked:
            c = unmasked[0]
            skip(
                image_id,
                f"{image_id}_{c}.png",
                f"{image_id} is labelled {c}=1 in --labels but --masks has no {image_id}_{c}.png: without the mask it "
                "would count as lesion-free; add the mask or fix the label",
            )
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
        source = "the masks' common size"
        if sizes:
            size = next(iter(sizes.values()))
            first_file = next(iter(masks.get(image_id, {}).values()), region)
            source = f"the size of {first_file}"
        elif image_size is not None:
            size, source = image_size, "--image-size"
        elif len(folder_sizes) == 1:
            size = next(iter(folder_sizes))
        elif not folder_sizes:
            source = "the size of its other map"
            map_sizes = {map_size(p) for p in have.values()}
            if len(map_sizes) != 1:
                raise InputError(
                    f"{image_id}: no mask to tell the image size and its maps differ in size; pass --image-size HxW"
                )
            size = next(iter(map_sizes))
        else:
            examples = {s: f"{i}_{c}.png" for i, per in mask_sizes.items() for c, s in per.items()}
            shown = "; ".join(f"{h}x{w}: {name}" for (h, w), name in sorted(examples.items()))
            raise InputError(
                f"{image_id}: has no mask, and the masks in --masks have several sizes ({shown}), so its size is "
                "unknown; pass --image-size HxW, give every mask the image size, or add an all-zero mask for it"
            )
        try:
            for p in have.values():
                check_map_size(p, map_size(p), size, source)
        except InputError as e:
            skip(image_id, str(e).split(":")[0], str(e))
            continue
        plans.append(_Plan(image_id, have, masks.get(image_id, {}), region, size))
    return plans


def is_located(row: LabelRow, k: int) -> bool:
    """Whether class ``k`` of a labels row has a location (False: a label-only image of it)."""
    return row.located is None or row.located[k]


def _label_mask_mismatch(plan: _Plan, row: LabelRow | None, target: np.ndarray) -> tuple[str, str] | None:
    """(file, reason) when an image's labels contradict its masks: a lesion labelled 0, or a 1 with an empty mask."""
    if row is None:
        return None
    for k, c in enumerate(CLASSES):
        lesion = bool(target[k].any())
        if not lesion and row.labels[k] and not is_located(row, k):
            continue  # label-only: labelled, with no location, so its mask is empty
        if lesion != bool(row.labels[k]):
            mask = plan.masks.get(c)
            what = (
                f"its {c} mask {mask} marks {int(target[k].sum())} lesion pixels"
                if lesion
                else f"its {c} mask {mask} is empty"
            )
            label = f"{c}={int(row.labels[k])}"
            return str(mask), f"{plan.image_id} is labelled {label} in --labels but {what}; fix the label or the mask"
    return None


def _check_options(normalization: str, spacing_mm: float | None) -> Normalization:
    """``normalization`` typed, after checking it and ``spacing_mm``.

    Raises:
        InputError: an unknown normalisation, or a pixel spacing outside the plausible range.
    """
    if normalization not in ("none", "minmax"):
        raise InputError(f"--normalize {normalization!r}: choose none or minmax")
    if spacing_mm is not None and not MIN_SPACING_MM <= spacing_mm <= MAX_SPACING_MM:
        raise InputError(
            f"--spacing-mm {spacing_mm}: the pixel spacing must be a number of mm per pixel in "
            f"[{MIN_SPACING_MM}, {MAX_SPACING_MM}] (mammograms: 0.05-0.2 mm, less when downscaled)"
        )
    return "minmax" if normalization == "minmax" else "none"  # the same value, typed


def _read_image(plan: _Plan, check_range: bool) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
    """One planned image's maps brought to its size (K, H, W), its masks (K, H, W) bool and its region (H, W).

    Raises:
        InputError: a file that cannot be read or breaks the conventions (naming it).
    """
    arrays = [read_map(plan.maps[c], check_range=check_range) for c in CLASSES]
    target = np.zeros((len(CLASSES), *plan.size), dtype=bool)  # (K, H, W)
    for k, c in enumerate(CLASSES):
        if c in plan.masks:
            target[k] = read_binary_png(plan.masks[c])
    breast = read_binary_png(plan.region) if plan.region is not None else None
    # Maps of different sizes per class are brought to the image size one by one; same-size maps go together.
    if len({a.shape for a in arrays}) == 1:
        saliency = torch.from_numpy(np.stack(arrays))  # (K, h, w)
    else:
        from wsseg.nn.upsample import to_input_resolution

        saliency = torch.cat([to_input_resolution(torch.from_numpy(a)[None, None], plan.size)[0] for a in arrays])
    return saliency, target, breast


def _score_plans(
    plans: list[_Plan],
    label_rows: dict[str, LabelRow] | None,
    ev: SegmentationEvaluator,
    check_range: bool,
    skip: Callable[[str, str, str], None],
    spacing_mm: float | None,
    progress: bool,
) -> None:
    """Add every planned image to ``ev``; an image whose files are bad or contradict its labels goes to ``skip``."""
    for plan in tqdm(plans, desc="score", unit="img", disable=not progress):
        try:
            saliency, target, breast = _read_image(plan, check_range)
        except InputError as e:
            skip(plan.image_id, str(e).split(":")[0], str(e))
            continue
        row = label_rows.get(plan.image_id) if label_rows is not None else None
        mismatch = _label_mask_mismatch(plan, row, target)
        if mismatch is not None:
            skip(plan.image_id, *mismatch)
            continue
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


def _score_source(label_rows: dict[str, LabelRow] | None) -> str | None:
    """Where the image-level scores came from, for the record (None without a labels CSV)."""
    if label_rows is None:
        return None
    any_scores = next(iter(label_rows.values())).scores is not None
    return "labels CSV columns <class>_score" if any_scores else "maximum of the map inside the region"


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
    """Score maps produced by any program, write ``out/record.json`` and return it (see the module docstring).

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

    Raises:
        InputError: bad input (the message names the file and the fix).
    """
    cfg = cfg or EvalConfig()
    norm = _check_options(normalization, spacing_mm)
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
    ev = make_evaluator(cfg, norm)
    _score_plans(plans, label_rows, ev, normalization == "none", skip, spacing_mm, progress)
    stats = ev.stats()
    if not len(stats):
        raise InputError("every image was skipped; see the reasons above and fix the files")
    given = thresholds is not None
    thresholds = thresholds or {c: cfg.fixed_threshold for c in CLASSES}
    out = Path(out)
    metrics, intervals, files, boot_seconds = score_stats(stats, thresholds, cfg, out)
    record = ScoreRecord(
        record_type="score",
        inputs={
            "maps": str(maps),
            "masks": str(masks),
            "labels": str(labels) if labels is not None else None,
            "region": str(region) if region is not None else None,
            "image_score_source": _score_source(label_rows),
        },
        dataset_info={
            "n_images": len(stats),
            "n_patients": len(set(stats.patient_ids)),
            "image_ids_hash": ids_hash(stats.image_ids),
            "pixel_spacing_mm": spacing_mm,
        },
        # Another program made the maps: the precision it computed them in is not known here.
        evaluation=evaluation_settings(
            cfg, "region files" if region is not None else "whole image", normalization, precision=None
        ),
        thresholds={
            "rule": "given with --threshold (rounded to the grid)" if given else "fixed 0.5: no --threshold given",
            **{c: metrics[c]["threshold"] for c in CLASSES},
        },
        metrics=metrics,
        intervals=intervals,
        per_image=files,
        skipped=[s.__dict__ for s in skipped],
        timings={"total": time.perf_counter() - t_start, "bootstrap": boot_seconds},
    )
    write_record(out / "record.json", record)
    if skipped:
        log(f"skipped {len(skipped)} image(s) (listed in the record): " + short_list([s.image_id for s in skipped]))
    if spacing_mm is None:
        log("no --spacing-mm: the pointing game beyond 0 mm and FROC are n/a")
    return record.to_json()
