"""Uncertainty: percentile bootstrap over patients, and the paired bootstrap of a difference between runs.

Images of one patient (four views of one exam, two breasts) are correlated, so the resampling unit
is the patient, never the image (docs/evaluation.md, "Uncertainty"). A resample draws P patients with
replacement from the P patients of the split; each image then counts as many times as its patient
was drawn (a weight), and every metric is recomputed from the per-image statistics with those
weights (:func:`wsseg.evaluation.summary.reduce_class`). Thresholds stay frozen (calibrated on
validation); oracle metrics get no interval. The 95% interval is the 2.5th-97.5th percentile of the
resampled values (resamples where a metric is undefined, e.g. AUROC of a resample with one image
class, are left out of its percentiles). Resamples are drawn from ``numpy.random.default_rng(seed)``.

The paired bootstrap applies the *same* patient weights to two runs scored on the same test images,
and reports the percentile interval of the difference A - B and a two-sided bootstrap p-value,
``min(1, 2 (min(#{diff <= 0}, #{diff >= 0}) + 1) / (B + 1))`` over the B resamples (the +1 keeps a finite
bootstrap from claiming p = 0; the smallest reportable p with 1,000 resamples is about 0.002).

Several seeds per side (the leaderboards' rank groups, :func:`paired_seed_bootstrap`): a side's statistic is the
mean over its seeds of the image-averaged metric, and one resample applies the same patient weights to every seed
of both sides. For an image-averaged metric such as the headline Dice this is the same as averaging each image's
value over the side's seeds first and then taking the weighted mean over the lesion images; the seeds of A and B are
not paired with each other (seed 0 of one method has nothing to do with seed 0 of another).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from wsseg.evaluation.stats import SplitStats
from wsseg.evaluation.summary import (
    ClassTable,
    class_table,
    concat_tables,
    interval_keys,
    reduce_batch,
    reduce_class,
    weighted_mean,
)

BOOTSTRAP_RULE = "percentile bootstrap, patients resampled with replacement, thresholds frozen"


def patient_weights(patient_ids: Sequence[str], n_resamples: int, seed: int) -> np.ndarray:
    """Per resample and image, how many times the image's patient was drawn: (B, N) float64.

    Args:
        patient_ids: (N,) the patient of each image.
        n_resamples: B.
        seed: the generator's seed.
    """
    patients, index = np.unique(np.asarray(patient_ids, dtype=str), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(patients), size=(n_resamples, len(patients)))  # (B, P) patient indices
    counts = np.zeros((n_resamples, len(patients)))
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)  # (B, P) times each patient was drawn
    return counts[:, index]  # (B, N)


def _tables(stats: SplitStats, thresholds: dict[str, float], fixed: float) -> dict[str, ClassTable]:
    return {
        name: class_table(a, stats.spacing_mm, stats.n_bins, thresholds[name], fixed)
        for name, a in stats.classes.items()
    }


CHUNK = 100  # resamples reduced at once: bounds the (resamples x detections) FROC arrays to a few MB


def _reduce_chunked(table: ClassTable, fixed: float, weights: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`reduce_batch` over the rows of ``weights`` (B, N) in chunks, so memory does not grow with B."""
    parts = [reduce_batch(table, fixed, weights[i : i + CHUNK]) for i in range(0, len(weights), CHUNK)]
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _percentiles(values: np.ndarray, level: float) -> list[float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return [math.nan, math.nan]
    lo, hi = np.percentile(finite, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


def bootstrap_intervals(
    stats: SplitStats,
    thresholds: dict[str, float],
    fixed: float = 0.5,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile intervals of every non-oracle metric, resampling patients.

    Returns:
        The record's ``intervals`` block: the rule, level, resample count, seed, number of patients and,
        per class, ``{metric: [low, high]}``.
    """
    out: dict[str, Any] = {
        "rule": BOOTSTRAP_RULE,
        "level": level,
        "n_resamples": n_resamples,
        "seed": seed,
        "n_patients": len(set(stats.patient_ids)),
    }
    keys = interval_keys(fixed)
    weights = patient_weights(stats.patient_ids, n_resamples, seed) if n_resamples > 0 and len(stats) else None
    for name, table in _tables(stats, thresholds, fixed).items():
        if weights is None:
            out[name] = {k: [math.nan, math.nan] for k in keys}
            continue
        samples = _reduce_chunked(table, fixed, weights)  # {metric: (B,)}
        out[name] = {k: _percentiles(samples[k], level) for k in keys}
    return out


def pooled_patients(folds: Sequence[Sequence[str]]) -> list[str]:
    """The patient of every image of several test folds, in fold order: the resampling units of a pooled bootstrap.

    Both the pooled intervals (:func:`pooled_intervals`) and the leaderboards' rank groups over a cross-validation
    (:func:`wsseg.report.significance.pool_folds`) resample the union of the test folds with :func:`patient_weights`;
    that is one draw per patient of the dataset only when every patient is tested in exactly one fold.

    Raises:
        ValueError: a patient is in the test images of two folds (the runs do not share one fold assignment).
    """
    owner: dict[str, int] = {}
    for i, patients in enumerate(folds):
        for p in set(patients):
            if owner.setdefault(p, i) != i:
                raise ValueError(
                    f"patient {p} is tested in two folds ({owner[p]} and {i}); the folds of one cross-validation "
                    "must not share patients: pool only the runs of one fold assignment"
                )
    return [p for patients in folds for p in patients]


def pooled_intervals(
    parts: Sequence[tuple[SplitStats, dict[str, float]]],
    fixed: float = 0.5,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile intervals over the pooled test folds of a cross-validation (one patient bootstrap).

    Each fold's images keep the thresholds that fold calibrated on its own validation patients; the per-image
    values of all folds are pooled and the union of their test patients (each tested in exactly one fold) is
    resampled at once, so the interval reflects every patient of the dataset rather than one fold's few.

    Args:
        parts: per fold, its test split's statistics and its frozen per-class thresholds.
        fixed: the fixed threshold (names the ``*_at_<fixed>`` keys).
        n_resamples: bootstrap resamples (0: NaN intervals).
        seed: the resampling generator's seed.
        level: the interval's coverage.

    Returns:
        The same block as :func:`bootstrap_intervals`, plus ``n_folds``.
    """
    patients = pooled_patients([stats.patient_ids for stats, _ in parts])
    out: dict[str, Any] = {
        "rule": BOOTSTRAP_RULE + "; test folds pooled, each at its own thresholds",
        "level": level,
        "n_resamples": n_resamples,
        "seed": seed,
        "n_patients": len(set(patients)),
        "n_folds": len(parts),
    }
    keys = interval_keys(fixed)
    weights = patient_weights(patients, n_resamples, seed) if n_resamples > 0 and patients else None
    tables = [_tables(stats, thresholds, fixed) for stats, thresholds in parts]
    for name in tables[0] if tables else {}:
        if weights is None:
            out[name] = {k: [math.nan, math.nan] for k in keys}
            continue
        table = concat_tables([t[name] for t in tables])
        samples = _reduce_chunked(table, fixed, weights)  # {metric: (B,)}
        out[name] = {k: _percentiles(samples[k], level) for k in keys}
    return out


def paired_bootstrap(
    stats_a: SplitStats,
    thresholds_a: dict[str, float],
    stats_b: SplitStats,
    thresholds_b: dict[str, float],
    fixed: float = 0.5,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, dict[str, dict[str, float]]]:
    """The difference A - B of every non-oracle metric with a paired patient bootstrap.

    Both statistics must cover the same images with the same patients (:func:`check_same_images`);
    ``stats_b`` is reordered to ``stats_a``'s image order.

    Returns:
        Per class and metric: ``{"a", "b", "diff", "low", "high", "p"}``.
    """
    check_same_images(stats_a, stats_b)
    stats_b = stats_b.reorder(stats_a.image_ids)
    weights = patient_weights(stats_a.patient_ids, n_resamples, seed)
    keys = interval_keys(fixed)
    ta, tb = _tables(stats_a, thresholds_a, fixed), _tables(stats_b, thresholds_b, fixed)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name in ta:
        if name not in tb:
            continue
        point_a, point_b = reduce_class(ta[name], fixed), reduce_class(tb[name], fixed)
        sa = _reduce_chunked(ta[name], fixed, weights)  # {metric: (B,)}
        sb = _reduce_chunked(tb[name], fixed, weights)
        out[name] = {k: paired_difference(sa[k], sb[k], point_a[k], point_b[k], level) for k in keys}
    return out


def paired_difference(
    samples_a: np.ndarray, samples_b: np.ndarray, point_a: float, point_b: float, level: float = 0.95
) -> dict[str, float]:
    """The difference A - B, its percentile interval and two-sided p from paired resamples.

    Args:
        samples_a: (B,) side A's statistic under B patient resamples.
        samples_b: (B,) side B's statistic under the same resamples.
        point_a: side A's statistic on the whole test set (every image weighs 1).
        point_b: side B's.
        level: the interval's coverage.

    Returns:
        ``{"a", "b", "diff", "low", "high", "p"}``.
    """
    d = samples_a - samples_b
    finite = d[np.isfinite(d)]
    lo, hi = _percentiles(d, level)
    # Two-sided, with the +1 correction so that no finite number of resamples claims p = 0.
    tail = min(int(np.sum(finite <= 0)), int(np.sum(finite >= 0)))
    p = min(1.0, 2 * (tail + 1) / (len(finite) + 1)) if len(finite) else math.nan
    return {"a": point_a, "b": point_b, "diff": point_a - point_b, "low": lo, "high": hi, "p": p}


def paired_seed_bootstrap(
    values_a: Sequence[np.ndarray],
    values_b: Sequence[np.ndarray],
    mask: np.ndarray,
    patient_ids: Sequence[str],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """A - B of an image-averaged metric with several seeds per side (see the module docstring).

    Each side's statistic is the mean over its seeds of the weighted mean over the ``mask`` images, the weights being
    the patient resamples of :func:`patient_weights` (the same for every seed of both sides), exactly the reduction
    the record's ``dice`` gets (:func:`wsseg.evaluation.summary.reduce_batch`). With one seed per side and the
    per-image headline Dice it gives the numbers of ``wsseg compare`` (:func:`paired_bootstrap`).

    Args:
        values_a: side A's seeds: per seed, (N,) the per-image values in one image order (NaN outside ``mask``).
        values_b: side B's seeds, in the same image order.
        mask: (N,) bool, the images the metric averages over (the lesion images of the class).
        patient_ids: (N,) the patient of each image.
        n_resamples: B.
        seed: the resampling seed.
        level: the interval's coverage.

    Returns:
        ``{"a", "b", "diff", "low", "high", "p"}``.
    """
    weights = patient_weights(patient_ids, n_resamples, seed)  # (B, N)
    ones = np.ones((1, len(mask)))

    def side(values: Sequence[np.ndarray]) -> tuple[np.ndarray, float]:
        samples = np.mean([weighted_mean(np.asarray(v, dtype=np.float64), weights, mask) for v in values], axis=0)
        point = float(np.mean([weighted_mean(np.asarray(v, dtype=np.float64), ones, mask)[0] for v in values]))
        return samples, point

    (sa, pa), (sb, pb) = side(values_a), side(values_b)
    return paired_difference(sa, sb, pa, pb, level)


def check_same_images(a: SplitStats, b: SplitStats) -> None:
    """Raise ValueError unless two statistics cover the same images with the same patients."""
    if set(a.image_ids) != set(b.image_ids):
        only_a = sorted(set(a.image_ids) - set(b.image_ids))
        only_b = sorted(set(b.image_ids) - set(a.image_ids))
        raise ValueError(
            f"the test sets differ: {len(a)} vs {len(b)} images, {len(only_a)} only in A (e.g. {only_a[:3]}), "
            f"{len(only_b)} only in B (e.g. {only_b[:3]}); compare runs scored on the same test images"
        )
    pa = dict(zip(a.image_ids, a.patient_ids, strict=True))
    pb = dict(zip(b.image_ids, b.patient_ids, strict=True))
    differ = [i for i in a.image_ids if pa[i] != pb[i]]
    if differ:
        raise ValueError(
            f"the runs assign different patients to {len(differ)} images (e.g. {differ[0]}: {pa[differ[0]]!r} vs "
            f"{pb[differ[0]]!r}); give both the same patient ids (the patient_id column of --labels)"
        )
