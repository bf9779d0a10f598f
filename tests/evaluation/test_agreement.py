"""The evaluator agrees with reference implementations: MONAI (Dice, IoU, FROC) and scikit-learn (AP, AUROC).

Maps are given at the mask resolution, so no upsampling happens and both sides see the same pixels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.metrics import DiceMetric, MeanIoU
from monai.metrics.froc import compute_fp_tp_probs_nd, compute_froc_curve_data, compute_froc_score
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from wsseg.evaluation.evaluator import SegmentationEvaluator
from wsseg.evaluation.localization import EIGHT_CONNECTED, froc, match_detections
from wsseg.evaluation.metrics import pxap_from_histograms
from wsseg.evaluation.stats import FrocSettings, class_stats
from wsseg.evaluation.summary import image_level_weighted

CLASSES = ("benign", "malignant")
N_BINS = 1000


def _random_case(rng: np.random.Generator, n: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(N, K, H, W) float32 maps and bool masks with blobs, some images empty for a class."""
    maps = rng.random((n, 2, *size)).astype(np.float32)
    masks = np.zeros((n, 2, *size), dtype=bool)
    for i in range(n):
        for k in range(2):
            if rng.random() < 0.3:
                continue  # no lesion of this class
            r, c = rng.integers(0, size[0] - 6), rng.integers(0, size[1] - 6)
            h, w = rng.integers(1, 7, size=2)
            masks[i, k, r : r + h, c : c + w] = True
            maps[i, k, r : r + h, c : c + w] = np.clip(maps[i, k, r : r + h, c : c + w] + 0.4, 0, 1)
    return maps, masks


def _adversarial_case(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Empty masks, empty predictions, full masks, full predictions, and all at once."""
    z, o = np.zeros(size, np.float32), np.ones(size, np.float32)
    fz, fo = np.zeros(size, bool), np.ones(size, bool)
    spot = fz.copy()
    spot[2:4, 3:5] = True
    cases = [  # (map, mask)
        (z, spot),  # empty prediction on a lesion: 0
        (o, spot),  # everything predicted on a small lesion
        (o, fo),  # full mask, full prediction: 1
        (z, fo),  # full mask, empty prediction: 0
        (spot.astype(np.float32), spot),  # perfect
        (o, fz),  # no lesion, full prediction: excluded from the image average
        (z, fz),  # no lesion, no prediction: undefined, excluded
    ]
    maps = np.stack([np.stack([m, m]) for m, _ in cases])
    masks = np.stack([np.stack([g, g]) for _, g in cases])
    return maps, masks


def _ours(maps: np.ndarray, masks: np.ndarray, tau: float) -> dict[str, dict[str, float]]:
    ev = SegmentationEvaluator(CLASSES, N_BINS)
    for i in range(len(maps)):
        ev.add(f"img{i}", torch.from_numpy(maps[i]), torch.from_numpy(masks[i]))
    return ev.summary({c: tau for c in CLASSES})


def _monai(metric_cls: type, maps: np.ndarray, masks: np.ndarray, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """MONAI's per-class mean over images (ignore_empty: images without a lesion are NaN and skipped).

    MONAI reduces in float32, so agreement is to float32 rounding (1e-6).

    Returns:
        (K,) means and (K,) counts of the images that entered them.
    """
    metric = metric_cls(include_background=True, reduction="mean_batch", ignore_empty=True, get_not_nans=True)
    pred = torch.from_numpy(maps.astype(np.float64) >= tau).double()  # (N, K, H, W) binarised at tau
    metric(y_pred=pred, y=torch.from_numpy(masks).double())
    value, not_nans = metric.aggregate()
    return value.numpy(), not_nans.numpy()


CASES = [("random", 0.5), ("random", 0.731), ("random", 0.05), ("adversarial", 0.5), ("adversarial", 1.0)]


@pytest.mark.parametrize(("kind", "tau"), CASES)
def test_dice_and_iou_equal_monai(kind: str, tau: float) -> None:
    rng = np.random.default_rng(3)
    maps, masks = _random_case(rng, 12, (24, 20)) if kind == "random" else _adversarial_case((8, 10))
    ours = _ours(maps, masks, tau)
    (dice, counted), (iou, _) = _monai(DiceMetric, maps, masks, tau), _monai(MeanIoU, maps, masks, tau)
    for k, name in enumerate(CLASSES):
        assert ours[name]["dice"] == pytest.approx(float(dice[k]), abs=1e-6)
        assert ours[name]["iou"] == pytest.approx(float(iou[k]), abs=1e-6)
        assert ours[name]["n_images"] == counted[k]  # the same images are averaged


def test_pooled_dice_equals_monai_on_the_concatenated_images() -> None:
    # Pooled (micro) Dice over all pixels of all images is MONAI's Dice of the images laid side by side.
    maps, masks = _random_case(np.random.default_rng(5), 10, (16, 16))
    ours = _ours(maps, masks, 0.6)
    wide_maps = np.concatenate(list(maps), axis=-1)[None]  # (1, K, H, N * W)
    wide_masks = np.concatenate(list(masks), axis=-1)[None]
    (dice, _), (iou, _) = _monai(DiceMetric, wide_maps, wide_masks, 0.6), _monai(MeanIoU, wide_maps, wide_masks, 0.6)
    for k, name in enumerate(CLASSES):
        assert ours[name]["dice_pooled"] == pytest.approx(float(dice[k]), abs=1e-6)
        assert ours[name]["iou_pooled"] == pytest.approx(float(iou[k]), abs=1e-6)


def test_a_class_without_any_lesion_is_nan_where_monai_averages_nothing() -> None:
    # MONAI reports 0 over zero images (with a count of 0); wsseg's policy says NaN, never 0.
    maps, masks = _random_case(np.random.default_rng(1), 4, (10, 10))
    masks[:, 1] = False
    ours = _ours(maps, masks, 0.5)
    _, counted = _monai(DiceMetric, maps, masks, 0.5)
    assert counted[1] == 0 and ours["malignant"]["n_images"] == 0
    assert math.isnan(ours["malignant"]["dice"]) and math.isnan(ours["malignant"]["soft_dice"])


def test_grid_counts_agree_with_direct_comparison_at_every_threshold() -> None:
    # floor(s * n) in float64 is exact for float32 maps: counts equal #{s >= k / n} computed directly.
    rng = np.random.default_rng(7)
    s = rng.random(20_000).astype(np.float32)
    s[:100] = np.arange(100, dtype=np.float32) / 8  # dyadic values lie exactly on the grid points k / 1000
    s = np.clip(s, 0, 1)
    g = rng.random(20_000) < 0.2
    st = class_stats(s.reshape(100, 200), g.reshape(100, 200), None, N_BINS, None, FrocSettings())
    tp = np.cumsum(st.pos_hist[::-1])[::-1]
    for k in (0, 1, 125, 250, 333, 500, 999, 1000):
        assert tp[k] == int(np.sum(g & (s.astype(np.float64) >= k / N_BINS)))


def test_pxap_equals_sklearn_on_grid_scores() -> None:
    # Scores at bin centres lose nothing to the histogram: PxAP is exactly sklearn's average precision.
    rng = np.random.default_rng(11)
    s = ((rng.integers(0, N_BINS, size=30_000) + 0.5) / N_BINS).astype(np.float32)
    g = rng.random(30_000) < 0.1 + 0.5 * s  # positives at higher scores
    st = class_stats(s.reshape(150, 200), g.reshape(150, 200), None, N_BINS, None, FrocSettings())
    assert float(pxap_from_histograms(st.pos_hist, st.neg_hist)) == pytest.approx(
        average_precision_score(g, s), abs=1e-12
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pxap_equals_sklearn_within_the_bin_width(seed: int) -> None:
    # Continuous float32 maps, several images, a region, lesion-free images included (pooled over all pixels).
    rng = np.random.default_rng(seed)
    maps, masks = _random_case(rng, 8, (30, 24))
    region = np.ones((30, 24), dtype=bool)
    region[:, :4] = False
    ev = SegmentationEvaluator(CLASSES, N_BINS)
    for i in range(len(maps)):
        ev.add(f"i{i}", torch.from_numpy(maps[i]), torch.from_numpy(masks[i]), torch.from_numpy(region))
    ours = ev.summary({c: 0.5 for c in CLASSES})
    for k, name in enumerate(CLASSES):
        scores = maps[:, k][:, region].ravel()
        target = masks[:, k][:, region].ravel()
        assert abs(ours[name]["pxap"] - average_precision_score(target, scores)) <= 1.0 / N_BINS


def test_soft_dice_equals_the_direct_formula() -> None:
    maps, masks = _random_case(np.random.default_rng(4), 6, (12, 14))
    ours = _ours(maps, masks, 0.5)
    for k, name in enumerate(CLASSES):
        values = [
            2
            * np.sum(maps[i, k] * masks[i, k], dtype=np.float64)
            / (np.sum(maps[i, k], dtype=np.float64) + masks[i, k].sum())
            for i in range(len(maps))
            if masks[i, k].any()
        ]
        assert ours[name]["soft_dice"] == pytest.approx(float(np.mean(values)), rel=1e-9)


def test_auroc_and_auprc_equal_sklearn() -> None:
    rng = np.random.default_rng(8)
    maps, masks = _random_case(rng, 40, (8, 8))
    labels = masks.reshape(40, 2, -1).any(axis=2).astype(float)
    scores = np.round(rng.random((40, 2)) + 0.5 * labels, 1)  # rounded: ties across classes of images
    ev = SegmentationEvaluator(CLASSES, N_BINS)
    for i in range(40):
        ev.add(
            f"i{i}",
            torch.from_numpy(maps[i]),
            torch.from_numpy(masks[i]),
            image_scores=scores[i],
            image_labels=labels[i],
        )
    ours = ev.summary({c: 0.5 for c in CLASSES})
    for k, name in enumerate(CLASSES):
        assert ours[name]["auroc"] == pytest.approx(roc_auc_score(labels[:, k], scores[:, k]), abs=1e-12)
        assert ours[name]["auprc"] == pytest.approx(average_precision_score(labels[:, k], scores[:, k]), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_weighted_auroc_and_auprc_used_by_the_bootstrap_equal_sklearn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 30
    labels = (rng.random(n) < 0.4).astype(float)
    scores = np.round(rng.random(n) + 0.3 * labels, 1)  # many ties
    weights = rng.integers(0, 4, size=(6, n)).astype(float)  # bootstrap-like counts, zeros included
    auroc, auprc = image_level_weighted(scores, labels, weights)
    for b in range(len(weights)):
        w = weights[b]
        assert auroc[b] == pytest.approx(roc_auc_score(labels, scores, sample_weight=w), abs=1e-12)
        assert auprc[b] == pytest.approx(average_precision_score(labels, scores, sample_weight=w), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_froc_equals_monai_on_random_detections(seed: int) -> None:
    # Lesions (tolerance 0) are the 8-connected components of the mask, as MONAI's evaluation_mask labels them.
    rng = np.random.default_rng(seed)
    n_images, size = 5, (40, 40)
    all_fp, all_tp, ours_lesions, ours_fp, n_targets = [], [], [], [], 0
    for _ in range(n_images):
        mask = np.zeros(size, dtype=bool)
        for _ in range(rng.integers(1, 4)):
            r, c = rng.integers(0, 35, size=2)
            mask[r : r + rng.integers(2, 6), c : c + rng.integers(2, 6)] = True
        coords = rng.integers(0, 40, size=(12, 2))
        probs = np.round(rng.random(12), 2) + 0.01  # > 0, with ties
        labels, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
        fp, tp, targets = compute_fp_tp_probs_nd(probs, coords, labels)
        all_fp.append(fp)
        all_tp.append(tp)
        n_targets += targets
        lesion_scores, fp_scores = match_detections(coords, probs, mask, 0.0)
        ours_lesions.append(lesion_scores)
        ours_fp.append(fp_scores)
        # MONAI marks a missed lesion with probability 0; wsseg with NaN.
        np.testing.assert_allclose(np.nan_to_num(lesion_scores, nan=0.0), tp, atol=1e-6)
        np.testing.assert_allclose(np.sort(fp_scores), np.sort(fp), atol=1e-6)
    # A missed lesion with probability 0 makes MONAI's first (skipped) operating point the all-inclusive one;
    # make sure there is one, so that both curves have the same operating points.
    all_tp.append(np.zeros(1, np.float32))
    ours_lesions.append(np.array([np.nan]))
    fppi, sens = compute_froc_curve_data(np.concatenate(all_fp), np.concatenate(all_tp), n_targets + 1, n_images)
    expected = compute_froc_score(fppi, sens)
    result = froc(np.concatenate(ours_lesions), np.concatenate(ours_fp), n_images)
    assert result.score == pytest.approx(float(expected), abs=1e-9)
