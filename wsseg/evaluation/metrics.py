"""Segmentation statistics on a fixed threshold grid, and the metrics reduced from them.

Statistics first, reduction later (the smp shape). For every image and class the evaluator keeps two
histograms of the map's values on the grid tau_k = k / n_bins (k = 0..n_bins): one over the
ground-truth-positive pixels and one over the ground-truth-negative pixels of the evaluated region
(the breast). A pixel is predicted positive at tau_k when its score is >= tau_k, so the reverse
cumulative sums of the histograms are exactly TP(tau_k) and FP(tau_k) on the grid. Memory per image is
O(n_bins), independent of the resolution; full-resolution maps are never held together.

Empty ground truth and empty predictions (the one policy, used by every metric; README "Evaluation protocol"):

- A class's per-image metrics (Dice, IoU, soft Dice, pointing game) are averaged over the images whose
  ground truth *of that class* is non-empty inside the evaluated region ("lesion-positive" images).
  On such an image ``|P| + |G| > 0`` always, so Dice and IoU are always defined; an empty prediction
  scores 0, and a map that is 0 everywhere in the region misses in the pointing game.
- Lesion-free images (of that class) do not enter the image-averaged Dice/IoU. They do enter every
  pooled quantity as false positives (``*_pooled`` Dice/IoU, PxAP), the FROC (their candidates are
  false positives and they count as images), and the false-positive burden, which is measured on
  them alone.
- A quantity with nothing to average is NaN and never 0: Dice with no lesion-positive image, pooled
  Dice where ``sum |P| + sum |G| = 0``, PxAP or FROC with no lesion in the split, AUROC/AUPRC with one
  image class only, false-positive burden with no lesion-free image. The counts (``n_images``,
  ``n_lesion_free``, ``n_lesions``) are reported beside the values.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from torch import Tensor


def threshold_grid(n_bins: int) -> np.ndarray:
    """The thresholds k / n_bins for k = 0..n_bins, (n_bins + 1,)."""
    return np.arange(n_bins + 1, dtype=np.float64) / n_bins


def bin_indices(scores: np.ndarray, n_bins: int) -> np.ndarray:
    """Grid bin of every score: the largest k with k / n_bins <= score, clamped to [0, n_bins].

    The product is taken in float64, which is exact for float32 and float16 scores: a float32 value is
    either exactly a grid point or farther from it than float64 rounding can move ``score * n_bins``.

    Args:
        scores: (...) scores in [0, 1], float16/32/64.
        n_bins: grid resolution.

    Returns:
        (...) int32 bin indices.
    """
    x: np.ndarray = np.multiply(scores, float(n_bins), dtype=np.float64)
    np.floor(x, out=x)
    np.clip(x, 0, n_bins, out=x)
    return x.astype(np.int32)


def reverse_cumsum(hist: np.ndarray) -> np.ndarray:
    """Counts at or above each grid threshold from a per-bin histogram, along the last axis."""
    return np.flip(np.cumsum(np.flip(hist, -1), axis=-1), -1)


def counts_at_thresholds(scores: Tensor, target: Tensor, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """TP and FP at every threshold of the grid for one map.

    Args:
        scores: (N,) scores in [0, 1] (the evaluated pixels only).
        target: (N,) bool ground truth.
        n_bins: grid resolution; thresholds are k / n_bins.

    Returns:
        tp, fp: (n_bins + 1,) int64 arrays; ``tp[k]`` = #{target & score >= k / n_bins}.
    """
    idx = bin_indices(scores.detach().cpu().numpy(), n_bins)
    t = target.detach().cpu().numpy().astype(bool)
    pos = np.bincount(idx[t], minlength=n_bins + 1)
    neg = np.bincount(idx[~t], minlength=n_bins + 1)
    return reverse_cumsum(pos).astype(np.int64), reverse_cumsum(neg).astype(np.int64)


def dice_from_counts(tp: npt.ArrayLike, fp: npt.ArrayLike, gt: npt.ArrayLike) -> np.ndarray:
    """Dice = 2TP / (2TP + FP + FN) elementwise, NaN where |P| + |G| = 0."""
    tp, fp, gt = (np.asarray(a, dtype=np.float64) for a in (tp, fp, gt))
    denom = tp + fp + gt  # = |P| + |G|
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * tp / denom, np.nan)


def iou_from_counts(tp: npt.ArrayLike, fp: npt.ArrayLike, gt: npt.ArrayLike) -> np.ndarray:
    """IoU = TP / (TP + FP + FN) = |P & G| / |P | G| elementwise, NaN where the union is empty."""
    tp, fp, gt = (np.asarray(a, dtype=np.float64) for a in (tp, fp, gt))
    union = fp + gt  # |P | G| = TP + FP + FN = FP + |G|
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / union, np.nan)


def soft_dice(sum_sg: npt.ArrayLike, sum_s: npt.ArrayLike, gt: npt.ArrayLike) -> np.ndarray:
    """Soft Dice 2 sum(s g) / (sum(s) + |G|) elementwise (s the map in [0, 1], g the mask), NaN where 0 / 0."""
    sum_sg, sum_s, gt = (np.asarray(a, dtype=np.float64) for a in (sum_sg, sum_s, gt))
    denom = sum_s + gt
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 2.0 * sum_sg / denom, np.nan)


def pxap_from_histograms(pos_hist: np.ndarray, neg_hist: np.ndarray) -> np.ndarray:
    """Pixel average precision from pooled score histograms (wsolevaluation's PxAP).

    ``PxAP = sum_k P(tau_k) (R(tau_k) - R(tau_{k+1}))`` with ``R(tau_{n_bins+1}) = 0``: the step-wise
    area under the precision-recall curve, computed like scikit-learn's ``average_precision_score``
    with the scores rounded down to the grid.

    Args:
        pos_hist: (..., n_bins + 1) pixel counts (or weights) per bin at ground-truth-positive pixels.
        neg_hist: (..., n_bins + 1) the same at ground-truth-negative pixels.

    Returns:
        (...) PxAP in [0, 1] (a 0-d array for 1-d input); NaN where there is no positive pixel.
    """
    tp = reverse_cumsum(np.asarray(pos_hist, dtype=np.float64))  # (..., n_bins + 1) TP(tau_k)
    fp = reverse_cumsum(np.asarray(neg_hist, dtype=np.float64))
    total = tp[..., :1]
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(total > 0, tp / total, 0.0)
        # Where nothing is predicted (TP + FP = 0) the recall step is 0, so the precision there does not count.
        precision = np.where(tp + fp > 0, tp / (tp + fp), 1.0)
    recall_next = np.concatenate([recall[..., 1:], np.zeros_like(recall[..., :1])], axis=-1)
    ap = np.sum(precision * (recall - recall_next), axis=-1)
    return np.where(total[..., 0] > 0, ap, np.nan)


def calibrate_threshold(mean_dice: np.ndarray, thresholds: np.ndarray) -> float:
    """The threshold that maximises the mean Dice curve; the lowest such threshold on ties, NaN-safe."""
    if np.all(np.isnan(mean_dice)):
        return 0.5
    return float(thresholds[int(np.nanargmax(mean_dice))])
