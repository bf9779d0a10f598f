"""The curves behind a run's metrics, small enough to commit: precision-recall (PxAP), FROC, Dice against lesion size.

A run writes them to ``curves.json`` beside its record; the HTML report plots them. They are a pure function of
the per-image statistics (``per_image_stats.npz``), so :func:`wsseg.report.records.curves_for_run` can rebuild
them for older runs.

Per class::

    {"pr": {"threshold": [...], "recall": [...], "precision": [...]},   # pooled over all pixels of the split
     "froc": {"fppi": [...], "sensitivity": [...]},                     # lesion-level, [] when no spacing
     "lesion_size": {"area_mm2": [...], "dice": [...],                  # one point per lesion-positive image,
                     "diameter_mm": [...], "n_components": [...],       #   sorted by area
                     "type": [...], "hit_0mm": [...], "hit_5mm": [...], "hit_10mm": [...],
                     "chance_dice": [...], "chance_hit_0mm": [...], "chance_hit_5mm": [...],
                     "chance_hit_10mm": [...]}}

``lesion_size`` holds, per lesion image of the class: the lesion area (pixels x spacing^2, all components), the
Dice at the calibrated threshold, the equivalent diameter of the largest lesion component and the number of
components (:mod:`wsseg.evaluation.lesions`), the lesion type group, the pointing-game hit at each tolerance (1/0),
and the chance levels of that image (the whole-breast Dice ``2|G| / (|R| + |G|)`` and the probability that a peak
drawn uniformly in the breast hits; :func:`wsseg.evaluation.summary.chance_levels`). Files written before the
diameter, type, hits and chance existed have ``area_mm2`` and ``dice`` only; readers must accept both.

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
from wsseg.core import CLASSES
from wsseg.evaluation.lesions import equivalent_diameter_mm
from wsseg.evaluation.localization import froc_curves
from wsseg.evaluation.metrics import reverse_cumsum, threshold_grid
from wsseg.evaluation.stats import POINTING_TOLERANCES_MM, ClassArrays, SplitStats
from wsseg.evaluation.summary import class_table, pointing_hits

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


def lesion_size_points(a: ClassArrays, spacing_mm: np.ndarray, n_bins: int, threshold: float) -> dict[str, list[Any]]:
    """Per lesion-positive image, sorted by lesion area: the size, type, Dice, hits and chance levels (module doc)."""
    table = class_table(a, spacing_mm, n_bins, threshold, threshold)
    pos = np.flatnonzero(table.positive)
    spacing = np.where(np.isfinite(spacing_mm[pos]), spacing_mm[pos], np.nan)
    area = table.gt[pos] * spacing**2
    idx = pos[np.argsort(area, kind="stable")]  # image indices in area order
    out: dict[str, list[Any]] = {
        "area_mm2": _round(table.gt[idx] * spacing_mm[idx] ** 2),
        "dice": _round(table.dice[idx]),
        "diameter_mm": _round(equivalent_diameter_mm(a.lesion_px[idx], spacing_mm[idx])),
        "n_components": _round(a.n_components[idx]),
        "type": [str(t) for t in a.lesion_type[idx]],
        "chance_dice": _round(2 * table.gt[idx] / (table.area[idx] + table.gt[idx])),
    }
    for j, r in enumerate(POINTING_TOLERANCES_MM):
        out[f"hit_{r:g}mm"] = _round(pointing_hits(table, r)[idx])
        out[f"chance_hit_{r:g}mm"] = _round(a.chance_hit[idx, j])
    return out


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


# Each curve's paired lists, as curves_from_stats writes them.
CURVE_KEYS = {
    "pr": ("threshold", "recall", "precision"),
    "froc": ("fppi", "sensitivity"),
    "lesion_size": ("area_mm2", "dice"),
}


def curves_problem(curves: Any) -> str | None:
    """What is wrong with the content of a ``curves.json`` (see the module docstring), or None."""
    if not isinstance(curves, dict):
        return f"expected an object of classes, got {type(curves).__name__}"
    for name in CLASSES:
        per_class = curves.get(name)
        if not isinstance(per_class, dict):
            return f"no curves of class {name!r}"
        for kind, keys in CURVE_KEYS.items():
            curve = per_class.get(kind)
            if not isinstance(curve, dict) or any(not isinstance(curve.get(k), list) for k in keys):
                return f"{name}.{kind} must be an object of the lists {list(keys)}"
            if len({len(curve[k]) for k in keys}) > 1:
                return f"{name}.{kind}: the lists {list(keys)} differ in length"
            for k in keys:
                if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in curve[k]):
                    return f"{name}.{kind}.{k} holds values that are not numbers"
    return None
