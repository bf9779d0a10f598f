"""Segmentation statistics on a fixed threshold grid, and the metrics reduced from them.

Statistics first, reduction later (the smp shape): for every image and class the evaluator keeps, for
each threshold tau_k = k / n_bins (k = 0..n_bins), the counts TP(tau), FP(tau) and the ground-truth size
|G|, computed inside the evaluated region (the breast). A pixel is predicted positive when its score
is >= tau. Memory per image is O(n_bins), independent of the resolution.

Empty-ground-truth policy (written once, used everywhere): per-class Dice and IoU are averaged over the
images whose ground truth for that class is non-empty. An empty prediction on such an image scores 0.
Images without a lesion of the class do not enter that class's Dice/IoU; their false-positive area
is reported separately (the evaluation issue adds it to the record). Where ``|P| + |G| = 0`` the value
is undefined and returned as NaN.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def threshold_grid(n_bins: int) -> np.ndarray:
    """The thresholds k / n_bins for k = 0..n_bins, (n_bins + 1,)."""
    return np.arange(n_bins + 1, dtype=np.float64) / n_bins


def counts_at_thresholds(scores: Tensor, target: Tensor, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP at every threshold of the grid for one map.

    Args:
        scores: (N,) scores in [0, 1] (the evaluated pixels only).
        target: (N,) bool ground truth.
        n_bins: grid resolution; thresholds are k / n_bins.

    Returns:
        tp, fp: (n_bins + 1,) int64 arrays; ``tp[k]`` = #{target & score >= k / n_bins}.
    """
    # floor(s * n) >= k  <=>  s >= k / n, so a histogram over floor(s * n) gives exact counts per threshold.
    idx = (scores.double() * n_bins).floor_().clamp_(0, n_bins).long()
    pos = torch.bincount(idx[target], minlength=n_bins + 1)
    neg = torch.bincount(idx[~target], minlength=n_bins + 1)
    # Reverse cumulative sums: counts of scores at or above each threshold.
    tp = pos.flip(0).cumsum(0).flip(0).cpu().numpy().astype(np.int64)
    fp = neg.flip(0).cumsum(0).flip(0).cpu().numpy().astype(np.int64)
    return tp, fp


def dice_from_counts(tp: np.ndarray, fp: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Dice = 2TP / (2TP + FP + FN) elementwise, NaN where |P| + |G| = 0."""
    tp, fp, gt = (np.asarray(a, dtype=np.float64) for a in (tp, fp, gt))
    denom = tp + fp + gt  # = |P| + |G|
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / denom, np.nan)


def iou_from_counts(tp: np.ndarray, fp: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU = TP / (TP + FP + FN) = |P & G| / |P | G| elementwise, NaN where the union is empty."""
    tp, fp, gt = (np.asarray(a, dtype=np.float64) for a in (tp, fp, gt))
    union = fp + gt  # |P | G| = TP + FP + FN = FP + |G|
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def calibrate_threshold(mean_dice: np.ndarray, thresholds: np.ndarray) -> float:
    """The threshold that maximises the mean Dice curve; the lowest such threshold on ties, NaN-safe."""
    if np.all(np.isnan(mean_dice)):
        return 0.5
    return float(thresholds[int(np.nanargmax(mean_dice))])
