"""Scoring a split and writing what a scored folder holds: shared by ``wsseg run``, ``score`` and ``evaluate``."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from wsseg._io import atomic_save, atomic_write_text
from wsseg.config import EvalConfig
from wsseg.core import CLASSES, PER_IMAGE_CSV, PER_IMAGE_STATS
from wsseg.evaluation.bootstrap import bootstrap_intervals
from wsseg.evaluation.curves import CURVES_JSON, write_curves
from wsseg.evaluation.evaluator import Normalization, SegmentationEvaluator
from wsseg.evaluation.localization import FPPI_POINTS
from wsseg.evaluation.stats import FrocSettings, SplitStats
from wsseg.evaluation.summary import POINTING_TOLERANCES_MM, per_image_rows, summarize
from wsseg.nn.upsample import UPSAMPLE_RULE

MAP_SUFFIXES = (".npy", ".png")
MAPS_DIR = "maps"
TEST_LABELS = "test_labels.csv"
ASPECT_TOLERANCE = 0.02
# A sane pixel spacing: 1 um to 10 cm. FROC windows are a number of mm over the spacing; 1e-300 would overflow.
MIN_SPACING_MM, MAX_SPACING_MM = 0.001, 100.0
# --image-size: a full-field mammogram is about 30 Mpx; maps are upsampled to this size, two classes at a time.
MAX_IMAGE_PIXELS = 100_000_000
POLICY = (
    "Per-class Dice/IoU/soft Dice/pointing game average over the images with a lesion of that class (an empty "
    "prediction scores 0); lesion-free images enter pooled Dice/IoU, PxAP, FROC and the false-positive burden; "
    "undefined values are NaN, never 0 (wsseg.evaluation.metrics)."
)
ORACLE_NOTE = "keys ending in _oracle use the best threshold of the scored split itself: upper bounds, never headlines"


# What PIL raises on a truncated, empty or hostile image file (DecompressionBombError: a header above its limit).
PIL_ERRORS = (OSError, ValueError, EOFError, SyntaxError, Image.DecompressionBombError)


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


def make_evaluator(cfg: EvalConfig, normalization: Normalization = "none") -> SegmentationEvaluator:
    """An evaluator with an eval config's settings."""
    return SegmentationEvaluator(CLASSES, cfg.n_bins, cfg.upsample, normalization, froc_settings(cfg))


def evaluation_settings(
    cfg: EvalConfig, region: str, normalization: str = "none", *, precision: str | None
) -> dict[str, Any]:
    """The record's ``evaluation`` block: how maps were turned into numbers.

    ``precision`` is the one the maps were computed in (``fp32`` or ``bf16``), None when another program made them.
    """
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
        "precision": precision,
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


def ids_hash(image_ids: list[str]) -> str:
    """The hash of a scored split's image ids (the record's ``image_ids_hash``)."""
    from wsseg.data.dataset import split_hash

    return split_hash(image_ids)


# wsseg run --save-maps writes these; wsseg evaluate reads them back.


def map_file_stem(image_id: str) -> str:
    """The ``<image_id>`` part of a saved map's file name: the id itself, unless it could leave the maps folder.

    Ids come from the dataset's files (a manifest CSV may hold ``../../x`` or ``a/b``): an id with a slash, a
    backslash or NUL, a leading ``.`` (hidden files, ``..``), or over 200 characters becomes a cleaned id and a hash.
    """
    if not re.search(r"[/\\\0]", image_id) and not image_id.startswith(".") and 0 < len(image_id) <= 200:
        return image_id
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", image_id).lstrip(".")[:100]
    return f"{safe}-{hashlib.sha256(image_id.encode()).hexdigest()[:8]}"


def save_map(folder: Path, image_id: str, name: str, saliency: torch.Tensor) -> None:
    """Store one (H, W) map as ``<image_id>_<class>.npy`` in float16 (2 bytes per pixel), atomically.

    ``<image_id>`` is :func:`map_file_stem` of the id, so every map lands inside ``folder``.
    """
    arr = saliency.detach().float().cpu().numpy().astype(np.float16)
    atomic_save(folder / f"{map_file_stem(image_id)}_{name}.npy", lambda f: np.save(f, arr))


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
