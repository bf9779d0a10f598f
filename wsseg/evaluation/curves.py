"""The curves behind a run's metrics, small enough to commit: precision-recall (PxAP), FROC, Dice against lesion size.

A run writes them to ``curves.json`` beside its record; the HTML report plots them. They are a pure function of
the per-image statistics (``per_image_stats.npz``), so :func:`curves_for_run` can rebuild them for older runs.

Per class::

    {"pr": {"threshold": [...], "recall": [...], "precision": [...]},   # pooled over all pixels of the split
     "froc": {"fppi": [...], "sensitivity": [...]},                     # lesion-level, [] when no spacing
     "lesion_size": {"area_mm2": [...], "dice": [...]}}                 # one point per lesion-positive image

Values are rounded to 5 significant digits and curves thinned to at most ``MAX_POINTS`` points, so the file
stays a few kilobytes and is byte-stable.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from wsseg._io import atomic_write_text
from wsseg.evaluation.localization import froc_curves
from wsseg.evaluation.metrics import reverse_cumsum, threshold_grid
from wsseg.evaluation.stats import ClassArrays, SplitStats
from wsseg.evaluation.summary import class_table
from wsseg.report.records import record_thresholds

CURVES_JSON = "curves.json"
MAX_POINTS = 101


def _round(values: np.ndarray) -> list[float | None]:
    # None (JSON null) for NaN: browsers' JSON.parse rejects NaN.
    return [None if not math.isfinite(v) else float(f"{v:.5g}") for v in np.asarray(values, dtype=np.float64)]


def _thin(n: int, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices of at most ``max_points`` points spread evenly over ``n``, first and last included."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def pr_curve(a: ClassArrays, n_bins: int) -> dict[str, list[float | None]]:
    """Pooled pixel precision and recall at the grid thresholds (the curve whose step area is PxAP)."""
    tp = reverse_cumsum(a.pos_hist.sum(axis=0).astype(np.float64))  # (n_bins + 1,) TP at threshold k / n_bins
    fp = reverse_cumsum(a.neg_hist.sum(axis=0).astype(np.float64))
    if tp[0] <= 0:
        return {"threshold": [], "recall": [], "precision": []}
    predicted = tp + fp
    keep = predicted > 0  # thresholds above the highest score predict nothing: no precision there
    grid = threshold_grid(n_bins)[keep]
    recall, precision = tp[keep] / tp[0], tp[keep] / predicted[keep]
    idx = _thin(len(grid))
    return {"threshold": _round(grid[idx]), "recall": _round(recall[idx]), "precision": _round(precision[idx])}


def froc_curve(a: ClassArrays, n_images: int) -> dict[str, list[float | None]]:
    """Lesion sensitivity against false positives per image, from the highest detection score down."""
    if not a.froc_done or len(a.lesion_scores) == 0:
        return {"fppi": [], "sensitivity": []}
    fppi, sens = froc_curves(
        a.lesion_scores,
        a.fp_scores,
        np.array([float(n_images)]),
        np.ones((1, len(a.lesion_scores))),
        np.ones((1, len(a.fp_scores))),
    )
    idx = _thin(fppi.shape[1])
    return {"fppi": _round(fppi[0, idx]), "sensitivity": _round(sens[0, idx])}


def lesion_size_points(
    a: ClassArrays, spacing_mm: np.ndarray, n_bins: int, threshold: float
) -> dict[str, list[float | None]]:
    """Per lesion-positive image: lesion area in mm^2 (pixels x spacing^2) and Dice at the calibrated threshold."""
    table = class_table(a, spacing_mm, n_bins, threshold, threshold)
    pos = np.flatnonzero(table.positive)
    area = table.gt[pos] * np.where(np.isfinite(spacing_mm[pos]), spacing_mm[pos], np.nan) ** 2
    order = np.argsort(area, kind="stable")
    return {"area_mm2": _round(area[order]), "dice": _round(table.dice[pos][order])}


def curves_from_stats(stats: SplitStats, thresholds: dict[str, float]) -> dict[str, Any]:
    """Every class's curves (see the module docstring) from a split's per-image statistics."""
    return {
        name: {
            "pr": pr_curve(a, stats.n_bins),
            "froc": froc_curve(a, int(a.located.sum())),  # label-only images are no FROC images
            "lesion_size": lesion_size_points(a, stats.spacing_mm, stats.n_bins, thresholds[name]),
        }
        for name, a in stats.classes.items()
    }


def write_curves(path: str | Path, stats: SplitStats, thresholds: dict[str, float]) -> Path:
    """Write :func:`curves_from_stats` as key-sorted JSON, atomically."""
    text = json.dumps(curves_from_stats(stats, thresholds), sort_keys=True, separators=(",", ":"))
    return atomic_write_text(path, text + "\n")


def curves_for_run(run_dir: str | Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """A run's curves: ``curves.json`` when present, else rebuilt from ``per_image_stats.npz``; None when neither.

    Raises:
        ValueError: ``curves.json`` exists but is not valid JSON (names the file).
    """
    run_dir = Path(run_dir)
    path = run_dir / CURVES_JSON
    if path.is_file():
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")))
        except ValueError as e:
            raise ValueError(f"cannot read {path}: {e}; delete it to rebuild it from per_image_stats.npz") from e
    stats_file = run_dir / str(record.get("per_image", {}).get("stats", "per_image_stats.npz"))
    if not stats_file.is_file():
        return None
    return curves_from_stats(SplitStats.load(stats_file), record_thresholds(record))
