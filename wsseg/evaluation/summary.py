"""Reduce per-image statistics to the metrics of a run record, optionally with per-image weights.

Every metric is a function of per-image quantities and a weight per image (1 for the point estimate;
the number of times the image's patient was drawn in a bootstrap resample), so one function serves the
record, the confidence intervals and the paired comparison of two runs.

Keys per class (the record's ``metrics.<class>`` block):

- ``dice``, ``iou``: at the validation-calibrated ``threshold`` (the headline), averaged over the
  images with a lesion of the class; ``dice_pooled``, ``iou_pooled``: the same threshold, pooled over
  all pixels of all images (``2 sum TP / (2 sum TP + sum FP + sum FN)``, lesion-free images included);
- ``dice_at_0.5``, ``iou_at_0.5`` and ``dice_pooled_at_0.5``, ``iou_pooled_at_0.5``: at the fixed threshold;
- ``dice_oracle``, ``iou_oracle`` at ``threshold_oracle`` (the test split's own best image-averaged Dice)
  and ``dice_pooled_oracle``, ``iou_pooled_oracle`` at ``threshold_pooled_oracle``: upper bounds chosen on
  the test split itself, never headlines;
- ``soft_dice``: ``2 sum(s g) / (sum(s) + |G|)`` on the continuous map, image-averaged;
- ``pxap``: pixel average precision pooled over all pixels of all images;
- ``pointing_game_<r>mm``: hit rate at tolerance r;
- ``froc`` and ``sensitivity_at_<f>_fppi``: lesion-level FROC;
- ``fp_area_fraction``: mean fraction of the region at or above the calibrated threshold on the images
  without a lesion of the class; ``fp_image_rate``: the fraction of those images with any such pixel;
- ``auroc``, ``auprc``: image-level predictions against image labels (scikit-learn);
- ``n_images`` (lesion-positive images), ``n_lesion_free``, ``n_lesions``, ``n_label_only`` (images labelled
  with the class whose lesion has no location: they count for AUROC/AUPRC only and enter no localisation metric,
  as lesion-positive or as lesion-free; see :mod:`wsseg.evaluation.stats`).

Chance levels (:func:`chance_levels`, the record's ``references.chance``): what a prediction that ignores the image
content scores on each metric, computed exactly from the masks and regions (no map is involved):

- ``pointing_game_<r>mm``: a peak drawn uniformly in the region hits with probability
  ``|{p in region: distance(p, lesion) x spacing <= r}| / |region|`` (the pointing game's own rule), averaged over
  the lesion images like the metric;
- ``dice``, ``iou`` (and ``soft_dice``, the oracle and pooled variants): the whole region predicted, ``2|G| / (|R| +
  |G|)`` and ``|G| / |R|`` per lesion image. A random mask covering a fraction q of the region, independent of the
  lesion, has expected Dice about ``2 q|G| / (q|R| + |G|)``, largest at q = 1, so no image-independent mask does
  better: it is the uniform map's Dice; ``fp_area_fraction`` and ``fp_image_rate`` are then 1;
- ``pxap``: scores independent of the labels have precision equal to the lesion-pixel prevalence at every recall,
  so AP is ``sum |G| / sum |R|`` over all images (the uniform map's PxAP);
- ``froc`` and ``sensitivity_at_<f>_fppi``: a detector that places a Poisson number of detections, n per image on
  average, uniformly in the region. A lesion whose grown component covers a fraction a of its image's region is
  found with probability ``1 - exp(-n a)``; false positives per image average ``n m``, m the mean uncovered
  fraction over all images; so the sensitivity at f false positives per image is ``mean_L (1 - exp(-a_L f / m))``
  (detections in a grown lesion never count as false positives, as in the FROC itself);
- ``auroc``: 0.5; ``auprc``: the fraction of images with a lesion of the class.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from wsseg.evaluation.lesions import equivalent_diameter_mm
from wsseg.evaluation.localization import FPPI_POINTS, IOU_THRESHOLDS, froc_curves, sensitivity_at
from wsseg.evaluation.metrics import (
    dice_from_counts,
    iou_from_counts,
    pxap_from_histograms,
    reverse_cumsum,
    soft_dice,
    threshold_grid,
)
from wsseg.evaluation.stats import POINTING_TOLERANCES_MM as POINTING_TOLERANCES_MM
from wsseg.evaluation.stats import ClassArrays, SplitStats, concat_arrays

NAN = float("nan")


def fixed_key(fixed_threshold: float) -> str:
    """The suffix of the fixed-threshold keys, e.g. ``at_0.5``."""
    return f"at_{fixed_threshold:g}"


def interval_keys(fixed_threshold: float = 0.5) -> list[str]:
    """The metrics that get bootstrap intervals and paired comparisons (all but the oracle ones)."""
    fk = fixed_key(fixed_threshold)
    return [
        "dice",
        "iou",
        "dice_pooled",
        "iou_pooled",
        f"dice_{fk}",
        f"iou_{fk}",
        f"dice_pooled_{fk}",
        f"iou_pooled_{fk}",
        "soft_dice",
        "pxap",
        *(f"pointing_game_{r:g}mm" for r in POINTING_TOLERANCES_MM),
        "froc",
        *(f"sensitivity_at_{f:g}_fppi" for f in FPPI_POINTS),
        "fp_area_fraction",
        "fp_image_rate",
        "auroc",
        "auprc",
    ]


@dataclass
class ClassTable:
    """Per-image values of one class at the record's thresholds, ready for weighted reduction.

    All arrays are (N,) over the images unless noted; values that do not apply to an image are NaN.
    """

    arrays: ClassArrays
    positive: np.ndarray  # bool: a lesion of the class inside the region
    negative: np.ndarray  # bool: no lesion, non-empty region
    gt: np.ndarray
    area: np.ndarray
    tp: np.ndarray  # at the calibrated threshold
    fp: np.ndarray
    tp_fixed: np.ndarray  # at the fixed threshold
    fp_fixed: np.ndarray
    dice: np.ndarray
    iou: np.ndarray
    dice_fixed: np.ndarray
    iou_fixed: np.ndarray
    soft_dice: np.ndarray
    point_mm: np.ndarray  # distance from the peak to the lesion, mm (NaN: spacing unknown)
    point_px: np.ndarray


def class_table(arrays: ClassArrays, spacing_mm: np.ndarray, n_bins: int, threshold: float, fixed: float) -> ClassTable:
    """Per-image values of one class at the calibrated ``threshold`` and the ``fixed`` one."""
    k, k0 = round(threshold * n_bins), round(fixed * n_bins)
    gt, area = arrays.gt.astype(np.float64), arrays.area.astype(np.float64)
    tp_all = reverse_cumsum(arrays.pos_hist)  # (N, n_bins + 1)
    fp_all = reverse_cumsum(arrays.neg_hist)
    positive = gt > 0
    tp, fp = tp_all[:, k].astype(np.float64), fp_all[:, k].astype(np.float64)
    tp0, fp0 = tp_all[:, k0].astype(np.float64), fp_all[:, k0].astype(np.float64)

    def on_positive(x: np.ndarray) -> np.ndarray:
        return np.where(positive, x, np.nan)

    return ClassTable(
        arrays=arrays,
        positive=positive,
        negative=(~positive) & (area > 0),
        gt=gt,
        area=area,
        tp=tp,
        fp=fp,
        tp_fixed=tp0,
        fp_fixed=fp0,
        dice=on_positive(dice_from_counts(tp, fp, gt)),
        iou=on_positive(iou_from_counts(tp, fp, gt)),
        dice_fixed=on_positive(dice_from_counts(tp0, fp0, gt)),
        iou_fixed=on_positive(iou_from_counts(tp0, fp0, gt)),
        soft_dice=on_positive(soft_dice(arrays.sum_sg, arrays.sum_s, gt)),
        point_mm=arrays.point_px * spacing_mm,
        point_px=arrays.point_px,
    )


def concat_tables(tables: Sequence[ClassTable]) -> ClassTable:
    """Per-image values of several image sets, each at its own thresholds, as one table (pooled test folds)."""
    fields = [f.name for f in dataclasses.fields(ClassTable) if f.name != "arrays"]
    joined = {name: np.concatenate([getattr(t, name) for t in tables]) for name in fields}
    return ClassTable(arrays=concat_arrays([t.arrays for t in tables]), **joined)


def weighted_mean(values: np.ndarray, w: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Weighted means of ``values[mask]`` for each row of ``w`` (B, N) -> (B,); NaN where the weights sum to 0."""
    ww = w[:, mask]
    total = ww.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (ww @ np.nan_to_num(values[mask])) / total, np.nan)


def _pooled(tp: np.ndarray, fp: np.ndarray, gt: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    stp, sfp, sgt = w @ tp, w @ fp, w @ gt  # (B,)
    return dice_from_counts(stp, sfp, sgt), iou_from_counts(stp, sfp, sgt)


def image_level_point(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """AUROC and AUPRC of image-level predictions (scikit-learn); NaN when unknown or one class only."""
    if len(scores) == 0 or np.isnan(scores).any() or np.isnan(labels).any():
        return NAN, NAN
    y = labels > 0.5
    if y.all() or not y.any():
        return NAN, NAN
    return float(roc_auc_score(y, scores)), float(average_precision_score(y, scores))


def image_level_weighted(scores: np.ndarray, labels: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AUPRC for B weightings of the images at once, (B,) each.

    Equal to scikit-learn's ``roc_auc_score`` and ``average_precision_score`` with ``sample_weight=w[b]``
    (tests/evaluation/test_agreement.py checks it); vectorised because the bootstrap needs 1,000 of them
    and scikit-learn's input validation alone costs milliseconds per call.

    AUROC is the weighted Mann-Whitney statistic (ties count one half); AUPRC is
    ``sum_n (R_n - R_{n-1}) P_n`` over the distinct scores from the highest down.
    """
    nan = np.full(len(w), np.nan)
    if len(scores) == 0 or np.isnan(scores).any() or np.isnan(labels).any():
        return nan, nan
    y = labels > 0.5
    if y.all() or not y.any():
        return nan, nan
    sp, sn = scores[y], scores[~y]
    pairs = (sp[:, None] > sn[None, :]) + 0.5 * (sp[:, None] == sn[None, :])  # (P, Q) Mann-Whitney kernel
    wp, wn = w[:, y], w[:, ~y]  # (B, P), (B, Q)
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = np.einsum("bp,pq,bq->b", wp, pairs, wn) / (wp.sum(axis=1) * wn.sum(axis=1))
    order = np.argsort(-scores, kind="stable")
    s_sorted, y_sorted, w_sorted = scores[order], y[order], w[:, order]
    last = np.append(s_sorted[1:] != s_sorted[:-1], True)  # ties form one threshold
    tps = np.cumsum(np.where(y_sorted, w_sorted, 0.0), axis=1)[:, last]  # (B, T)
    fps = np.cumsum(np.where(y_sorted, 0.0, w_sorted), axis=1)[:, last]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tps + fps > 0, tps / (tps + fps), 0.0)
        recall = tps / tps[:, -1:]
    steps = np.diff(np.concatenate([np.zeros((len(w), 1)), recall], axis=1), axis=1)
    auprc = np.sum(steps * precision, axis=1)
    valid = (wp.sum(axis=1) > 0) & (wn.sum(axis=1) > 0)
    return np.where(valid, auroc, np.nan), np.where(valid, auprc, np.nan)


def pointing_hits(table: ClassTable, tolerance_mm: float) -> np.ndarray:
    """(N,) 1.0 where the map's peak lies within ``tolerance_mm`` of the lesion, 0.0 where not, NaN where unknown.

    Unknown: lesion-free images, and tolerances above 0 without the pixel spacing. A map that is 0 in the whole
    region (distance ``inf``) misses.
    """
    with np.errstate(invalid="ignore"):
        hit = (table.point_px == 0) if tolerance_mm == 0 else (table.point_mm <= tolerance_mm)
    known = table.positive & ~np.isnan(table.point_px)
    if tolerance_mm > 0:
        known &= ~np.isnan(table.point_mm)
    return np.where(known, hit.astype(np.float64), np.nan)


def reduce_batch(table: ClassTable, fixed: float, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The non-oracle metrics of one class for B weightings of the images at once.

    Args:
        table: the class's per-image values.
        fixed: the fixed threshold (names the ``*_at_<fixed>`` keys).
        weights: (B, N) non-negative image weights (bootstrap counts; a row of ones is the point estimate).

    Returns:
        ``{metric: (B,) values}`` for every key of :func:`interval_keys`.
    """
    a = table.arrays
    w = np.asarray(weights, dtype=np.float64).reshape(-1, len(table.gt))  # (B, N)
    fk = fixed_key(fixed)
    out: dict[str, np.ndarray] = {"dice": weighted_mean(table.dice, w, table.positive)}
    out["iou"] = weighted_mean(table.iou, w, table.positive)
    out["dice_pooled"], out["iou_pooled"] = _pooled(table.tp, table.fp, table.gt, w)
    out[f"dice_{fk}"] = weighted_mean(table.dice_fixed, w, table.positive)
    out[f"iou_{fk}"] = weighted_mean(table.iou_fixed, w, table.positive)
    out[f"dice_pooled_{fk}"], out[f"iou_pooled_{fk}"] = _pooled(table.tp_fixed, table.fp_fixed, table.gt, w)
    out["soft_dice"] = weighted_mean(table.soft_dice, w, table.positive)
    out["pxap"] = pxap_from_histograms(w @ a.pos_hist, w @ a.neg_hist)  # (B, n_bins + 1) pooled histograms
    for r in POINTING_TOLERANCES_MM:
        # r = 0: the peak lies on the lesion, no spacing needed; r > 0 needs the spacing (NaN otherwise).
        hits = (table.point_px == 0).astype(np.float64) if r == 0 else (table.point_mm <= r).astype(np.float64)
        rate = weighted_mean(hits, w, table.positive)
        if r > 0 and np.isnan(table.point_mm[table.positive]).any():
            rate = np.full(len(w), np.nan)
        out[f"pointing_game_{r:g}mm"] = rate
    if a.froc_done and len(a.lesion_scores):
        # False positives per image over the located images: a label-only image had no detections to count.
        n_located = w @ a.located.astype(np.float64)  # (B,)
        fppi, sens = froc_curves(a.lesion_scores, a.fp_scores, n_located, w[:, a.lesion_image], w[:, a.fp_image])
        at = sensitivity_at(fppi, sens)  # (B, len(FPPI_POINTS))
        out["froc"] = at.mean(axis=1)
        for j, f in enumerate(FPPI_POINTS):
            out[f"sensitivity_at_{f:g}_fppi"] = at[:, j]
    else:
        out["froc"] = np.full(len(w), np.nan)
        out.update({f"sensitivity_at_{f:g}_fppi": np.full(len(w), np.nan) for f in FPPI_POINTS})
    with np.errstate(invalid="ignore", divide="ignore"):
        out["fp_area_fraction"] = weighted_mean(table.fp / table.area, w, table.negative)
    out["fp_image_rate"] = weighted_mean((table.fp > 0).astype(np.float64), w, table.negative)
    out["auroc"], out["auprc"] = image_level_weighted(a.image_score, a.image_label, w)
    return out


def reduce_class(table: ClassTable, fixed: float) -> dict[str, float]:
    """The non-oracle metrics of one class (every image weighs 1; AUROC and AUPRC from scikit-learn)."""
    out = {k: float(v[0]) for k, v in reduce_batch(table, fixed, np.ones((1, len(table.gt)))).items()}
    out["auroc"], out["auprc"] = image_level_point(table.arrays.image_score, table.arrays.image_label)
    return out


def oracle_class(arrays: ClassArrays, n_bins: int) -> dict[str, float]:
    """Oracle Dice/IoU: at the threshold that maximises the test split's own Dice (upper bounds)."""
    grid = threshold_grid(n_bins)
    tp, fp = reverse_cumsum(arrays.pos_hist), reverse_cumsum(arrays.neg_hist)  # (N, n_bins + 1)
    gt = arrays.gt.astype(np.float64)[:, None]
    positive = gt[:, 0] > 0
    out = {k: NAN for k in ("dice_oracle", "iou_oracle", "threshold_oracle")}
    if positive.any():
        dice = dice_from_counts(tp[positive], fp[positive], gt[positive]).mean(axis=0)  # (n_bins + 1,)
        k = int(np.argmax(dice))
        iou = iou_from_counts(tp[positive, k], fp[positive, k], gt[positive, 0]).mean()
        out.update(dice_oracle=float(dice[k]), iou_oracle=float(iou), threshold_oracle=float(grid[k]))
    stp, sfp, sgt = tp.sum(axis=0), fp.sum(axis=0), float(gt.sum())
    pooled = dice_from_counts(stp, sfp, np.full_like(stp, sgt, dtype=np.float64))
    if sgt > 0:
        k = int(np.nanargmax(pooled))
        out.update(
            dice_pooled_oracle=float(pooled[k]),
            iou_pooled_oracle=float(iou_from_counts(stp[k], sfp[k], sgt)),
            threshold_pooled_oracle=float(grid[k]),
        )
    else:
        out.update(dice_pooled_oracle=NAN, iou_pooled_oracle=NAN, threshold_pooled_oracle=NAN)
    return out


def box_metrics(arrays: ClassArrays) -> dict[str, float]:
    """MaxBoxAccV2 over the images whose ground truth of this class is boxes; empty when there are none.

    As defined by Choe et al. (wsolevaluation): per IoU threshold delta in 0.3/0.5/0.7, the best (over the map
    thresholds tau * max) fraction of images whose best predicted box reaches IoU delta with a ground-truth box,
    then the mean over delta. The max over tau is part of the definition (it is not calibrated on validation).
    """
    curves = arrays.box_iou
    rows = curves[np.isfinite(curves).all(axis=1)] if curves.size else curves
    if not len(rows):
        return {}
    out, per_delta = {}, []
    for delta in IOU_THRESHOLDS:
        acc = (rows >= delta).mean(axis=0)  # (T,) BoxAcc(tau, delta)
        out[f"box_acc_iou_{delta:g}"] = float(acc.max())
        per_delta.append(float(acc.max()))
    out["max_box_acc_v2"] = float(np.mean(per_delta))
    out["n_box_images"] = float(len(rows))
    return out


def summarize(stats: SplitStats, thresholds: dict[str, float], fixed: float = 0.5) -> dict[str, dict[str, float]]:
    """Every metric of every class (the record's ``metrics`` block).

    Args:
        stats: the split's per-image statistics.
        thresholds: per class, the frozen threshold (calibrated on validation, or given).
        fixed: the fixed threshold reported beside it.
    """
    out: dict[str, dict[str, float]] = {}
    for name, arrays in stats.classes.items():
        table = class_table(arrays, stats.spacing_mm, stats.n_bins, thresholds[name], fixed)
        k = round(thresholds[name] * stats.n_bins)
        metrics = {"threshold": float(threshold_grid(stats.n_bins)[k])}
        metrics.update(reduce_class(table, fixed))
        metrics.update(oracle_class(arrays, stats.n_bins))
        metrics["n_images"] = float(table.positive.sum())
        metrics["n_lesion_free"] = float(table.negative.sum())
        metrics["n_lesions"] = float(len(arrays.lesion_scores)) if arrays.froc_done else NAN
        metrics["n_label_only"] = float(np.count_nonzero(~arrays.located))
        metrics.update(box_metrics(arrays))
        out[name] = metrics
    return out


def _froc_chance(arrays: ClassArrays, n_images: int) -> np.ndarray:
    """Sensitivity of the uniform random detector at each of ``FPPI_POINTS`` (see the module docstring)."""
    cover = arrays.lesion_cover  # (L,) fraction of its image's region each grown lesion covers
    uncovered = 1.0 - np.nan_to_num(arrays.grown_cover, nan=0.0)  # (N,) lesion-free images: all of the region
    m = float(uncovered.sum()) / n_images if n_images else math.nan
    if not arrays.froc_done or not len(cover) or np.isnan(cover).any() or not m > 0:
        return np.full(len(FPPI_POINTS), np.nan)
    f = np.asarray(FPPI_POINTS)[:, None]  # (P, 1)
    return np.asarray((1.0 - np.exp(-cover[None, :] * f / m)).mean(axis=1))  # (P,)


def chance_levels(stats: SplitStats, fixed: float = 0.5) -> dict[str, dict[str, float]]:
    """Per class, the chance level of every metric (the module docstring defines them), exactly from the masks.

    Args:
        stats: the split's per-image statistics (the masks' and regions' facts are used, not the maps).
        fixed: the fixed threshold (names the ``*_at_<fixed>`` keys).

    Returns:
        ``{class: {metric: value}}`` with the keys of the record's metrics (oracle keys equal the headline ones:
        a prediction that ignores the image has no threshold to choose) and ``n_images``.
    """
    out: dict[str, dict[str, float]] = {}
    for name, a in stats.classes.items():
        gt, area = a.gt.astype(np.float64), a.area.astype(np.float64)
        positive, negative = gt > 0, (gt == 0) & (area > 0)
        with np.errstate(invalid="ignore", divide="ignore"):
            dice = float(np.mean(2 * gt[positive] / (area[positive] + gt[positive]))) if positive.any() else NAN
            iou = float(np.mean(gt[positive] / area[positive])) if positive.any() else NAN
            pooled = float(gt.sum() / area.sum()) if area.sum() > 0 and gt.sum() > 0 else NAN
        fp = 1.0 if negative.any() else NAN
        c: dict[str, float] = {"dice": dice, "iou": iou, "soft_dice": dice, "dice_oracle": dice, "iou_oracle": iou}
        fk = fixed_key(fixed)
        c.update({f"dice_{fk}": dice, f"iou_{fk}": iou})
        dice_pooled = 2 * pooled / (1 + pooled) if math.isfinite(pooled) else NAN
        c.update(dice_pooled=dice_pooled, iou_pooled=pooled, dice_pooled_oracle=dice_pooled, iou_pooled_oracle=pooled)
        c["pxap"] = pooled
        for j, r in enumerate(POINTING_TOLERANCES_MM):
            values = a.chance_hit[positive, j]
            c[f"pointing_game_{r:g}mm"] = float(values.mean()) if len(values) and not np.isnan(values).any() else NAN
        sens = _froc_chance(a, len(stats))
        c["froc"] = float(sens.mean())
        c.update({f"sensitivity_at_{f:g}_fppi": float(v) for f, v in zip(FPPI_POINTS, sens, strict=True)})
        c.update(fp_area_fraction=fp, fp_image_rate=fp)
        labels = a.image_label
        two_classes = not np.isnan(labels).any() and 0 < (labels > 0.5).sum() < len(labels)
        c["auroc"] = 0.5 if two_classes else NAN
        c["auprc"] = float((labels > 0.5).mean()) if two_classes else NAN
        c["n_images"] = float(positive.sum())
        out[name] = c
    return out


def calibrated_thresholds(stats: SplitStats) -> dict[str, float]:
    """Per class, the grid threshold that maximises the image-averaged Dice of these images.

    Computed on the validation split and frozen for test. The lowest such threshold wins ties; a class
    with no lesion-positive image falls back to 0.5.
    """
    grid = threshold_grid(stats.n_bins)
    out = {}
    for name, a in stats.classes.items():
        positive = a.gt > 0
        if not positive.any():
            out[name] = 0.5
            continue
        tp, fp = reverse_cumsum(a.pos_hist[positive]), reverse_cumsum(a.neg_hist[positive])
        dice = dice_from_counts(tp, fp, a.gt[positive][:, None]).mean(axis=0)
        out[name] = float(grid[int(np.argmax(dice))])
    return out


def per_image_rows(stats: SplitStats, thresholds: dict[str, float], fixed: float = 0.5) -> list[dict[str, object]]:
    """One row per image and class with the per-image values behind the record (for ``per_image.csv``)."""
    rows: list[dict[str, object]] = []
    fk = fixed_key(fixed)
    tables = {
        name: class_table(a, stats.spacing_mm, stats.n_bins, thresholds[name], fixed)
        for name, a in stats.classes.items()
    }
    for i, (image_id, patient_id) in enumerate(zip(stats.image_ids, stats.patient_ids, strict=True)):
        for name, t in tables.items():
            a = t.arrays
            lesions = a.lesion_scores[a.lesion_image == i]
            with np.errstate(invalid="ignore", divide="ignore"):
                fp_fraction = t.fp[i] / t.area[i] if t.negative[i] else math.nan
            rows.append(
                {
                    "image_id": image_id,
                    "patient_id": patient_id,
                    "class": name,
                    "has_lesion": int(t.positive[i]),
                    "located": int(a.located[i]),
                    "lesion_pixels": int(t.gt[i]),
                    "region_pixels": int(t.area[i]),
                    "dice": t.dice[i],
                    "iou": t.iou[i],
                    f"dice_{fk}": t.dice_fixed[i],
                    f"iou_{fk}": t.iou_fixed[i],
                    "soft_dice": t.soft_dice[i],
                    "pointing_distance_mm": t.point_mm[i] if t.positive[i] else math.nan,
                    "lesion_diameter_mm": float(equivalent_diameter_mm(a.lesion_px[i], stats.spacing_mm[i])),
                    "lesion_components": int(a.n_components[i]) if np.isfinite(a.n_components[i]) else math.nan,
                    "lesion_type": str(a.lesion_type[i]),
                    "n_lesions": len(lesions) if a.froc_done else math.nan,
                    "lesions_detected": int(np.sum(~np.isnan(lesions))) if a.froc_done else math.nan,
                    "fp_detections": int(np.sum(a.fp_image == i)) if a.froc_done else math.nan,
                    "fp_area_fraction": fp_fraction,
                    "image_score": a.image_score[i],
                    "image_label": a.image_label[i],
                }
            )
    return rows
