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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from wsseg.evaluation.localization import FPPI_POINTS, IOU_THRESHOLDS, froc_curves, sensitivity_at
from wsseg.evaluation.metrics import (
    dice_from_counts,
    iou_from_counts,
    pxap_from_histograms,
    reverse_cumsum,
    soft_dice,
    threshold_grid,
)
from wsseg.evaluation.stats import ClassArrays, SplitStats

POINTING_TOLERANCES_MM: tuple[float, ...] = (0.0, 5.0, 10.0)
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


def _wmean(values: np.ndarray, w: np.ndarray, mask: np.ndarray) -> np.ndarray:
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
    out: dict[str, np.ndarray] = {"dice": _wmean(table.dice, w, table.positive)}
    out["iou"] = _wmean(table.iou, w, table.positive)
    out["dice_pooled"], out["iou_pooled"] = _pooled(table.tp, table.fp, table.gt, w)
    out[f"dice_{fk}"] = _wmean(table.dice_fixed, w, table.positive)
    out[f"iou_{fk}"] = _wmean(table.iou_fixed, w, table.positive)
    out[f"dice_pooled_{fk}"], out[f"iou_pooled_{fk}"] = _pooled(table.tp_fixed, table.fp_fixed, table.gt, w)
    out["soft_dice"] = _wmean(table.soft_dice, w, table.positive)
    out["pxap"] = pxap_from_histograms(w @ a.pos_hist, w @ a.neg_hist)  # (B, n_bins + 1) pooled histograms
    for r in POINTING_TOLERANCES_MM:
        # r = 0: the peak lies on the lesion, no spacing needed; r > 0 needs the spacing (NaN otherwise).
        hits = (table.point_px == 0).astype(np.float64) if r == 0 else (table.point_mm <= r).astype(np.float64)
        rate = _wmean(hits, w, table.positive)
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
        out["fp_area_fraction"] = _wmean(table.fp / table.area, w, table.negative)
    out["fp_image_rate"] = _wmean((table.fp > 0).astype(np.float64), w, table.negative)
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
                    "n_lesions": len(lesions) if a.froc_done else math.nan,
                    "lesions_detected": int(np.sum(~np.isnan(lesions))) if a.froc_done else math.nan,
                    "fp_detections": int(np.sum(a.fp_image == i)) if a.froc_done else math.nan,
                    "fp_area_fraction": fp_fraction,
                    "image_score": a.image_score[i],
                    "image_label": a.image_label[i],
                }
            )
    return rows
