"""Dice, IoU and the evaluator on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsseg.evaluation.classification import auroc
from wsseg.evaluation.evaluator import SaliencyError, SegmentationEvaluator
from wsseg.evaluation.metrics import counts_at_thresholds, dice_from_counts, iou_from_counts


def _masks(*pixel_lists: list[tuple[int, int]], size: tuple[int, int] = (4, 4)) -> torch.Tensor:
    m = torch.zeros(len(pixel_lists), *size, dtype=torch.bool)
    for k, pixels in enumerate(pixel_lists):
        for r, c in pixels:
            m[k, r, c] = True
    return m


def test_counts_exact_on_the_grid() -> None:
    scores = torch.tensor([0.0, 0.25, 0.5, 0.5, 0.75, 1.0])
    target = torch.tensor([False, True, True, False, True, True])
    tp, fp = counts_at_thresholds(scores, target, n_bins=4)  # thresholds 0, .25, .5, .75, 1
    assert tp.tolist() == [4, 4, 3, 2, 1]
    assert fp.tolist() == [2, 1, 1, 0, 0]


def test_dice_iou_hand_computed() -> None:
    # |P| = 3, |G| = 2, |P & G| = 1: Dice = 2/5, IoU = 1/4.
    assert dice_from_counts(np.array(1), np.array(2), np.array(2)) == pytest.approx(0.4)
    assert iou_from_counts(np.array(1), np.array(2), np.array(2)) == pytest.approx(0.25)
    # Both empty: undefined, NaN.
    assert math.isnan(float(dice_from_counts(np.array(0), np.array(0), np.array(0))))
    assert math.isnan(float(iou_from_counts(np.array(0), np.array(0), np.array(0))))


def _evaluate(saliency: torch.Tensor, masks: torch.Tensor, tau: float = 0.5) -> dict[str, dict[str, float]]:
    ev = SegmentationEvaluator(("benign", "malignant"), n_bins=100)
    ev.add("img", saliency, masks)
    return ev.summary({"benign": tau, "malignant": tau})


def test_perfect_prediction_scores_one() -> None:
    masks = _masks([(0, 0), (0, 1)], [(3, 3)])
    out = _evaluate(masks.float(), masks)
    for name in ("benign", "malignant"):
        assert out[name]["dice"] == pytest.approx(1.0)
        assert out[name]["iou"] == pytest.approx(1.0)
        assert out[name]["dice_at_0.5"] == pytest.approx(1.0)


def test_empty_prediction_on_a_lesion_scores_zero() -> None:
    masks = _masks([(1, 1)], [(2, 2), (2, 3)])
    out = _evaluate(torch.zeros(2, 4, 4), masks)
    assert out["benign"]["dice"] == 0.0 and out["malignant"]["iou"] == 0.0


def test_empty_ground_truth_is_excluded_from_dice() -> None:
    # Image 1 has a benign lesion predicted perfectly; image 2 has no lesion and a fully positive map.
    ev = SegmentationEvaluator(("benign", "malignant"), n_bins=100)
    m1 = _masks([(0, 0)], [])
    ev.add("with-lesion", m1.float(), m1)
    ev.add("lesion-free", torch.ones(2, 4, 4), _masks([], []))
    out = ev.summary({"benign": 0.5, "malignant": 0.5})
    assert out["benign"]["dice"] == pytest.approx(1.0)  # the lesion-free image does not pull it down
    assert out["benign"]["n_images"] == 1
    assert math.isnan(out["malignant"]["dice"]) and out["malignant"]["n_images"] == 0


def test_half_overlap_and_threshold() -> None:
    # GT = 2 pixels; map marks one GT pixel at 0.9 and one background pixel at 0.6.
    masks = _masks([(0, 0), (0, 1)], [(3, 3)])
    sal = torch.zeros(2, 4, 4)
    sal[0, 0, 0], sal[0, 2, 2] = 0.9, 0.6
    out = _evaluate(sal, masks, tau=0.5)
    assert out["benign"]["dice"] == pytest.approx(2 * 1 / (2 + 2))  # P = 2, G = 2, TP = 1
    out = _evaluate(sal, masks, tau=0.7)
    assert out["benign"]["dice"] == pytest.approx(2 * 1 / (1 + 2))  # P = 1, G = 2, TP = 1
    assert out["benign"]["iou"] == pytest.approx(0.5)


def test_region_restricts_evaluation() -> None:
    masks = _masks([(0, 0)], [(0, 0)])
    sal = torch.ones(2, 4, 4)
    region = torch.zeros(4, 4, dtype=torch.bool)
    region[0, :2] = True  # only two pixels are evaluated
    ev = SegmentationEvaluator(("benign", "malignant"), n_bins=10)
    ev.add("img", sal, masks, region)
    assert ev.summary({"benign": 0.5, "malignant": 0.5})["benign"]["dice"] == pytest.approx(2 / 3)


def test_calibration_picks_the_dice_maximising_threshold() -> None:
    masks = _masks([(0, 0), (0, 1)], [(3, 3)])
    sal = torch.full((2, 4, 4), 0.2)
    sal[:, 0, 0] = sal[:, 0, 1] = sal[:, 3, 3] = 0.8
    ev = SegmentationEvaluator(("benign", "malignant"), n_bins=100)
    ev.add("img", sal, masks)
    tau = ev.calibrated_thresholds()
    # Any threshold in (0.2, 0.8] separates; the lowest such grid point is 0.21.
    assert tau["benign"] == pytest.approx(0.21)
    assert ev.summary(tau)["benign"]["dice"] == pytest.approx(2 * 2 / (3 + 2))


def test_maps_are_upsampled_to_the_mask_resolution() -> None:
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :4, :4] = True
    sal = torch.zeros(2, 2, 2)
    sal[:, 0, 0] = 1.0  # the top-left quadrant at low resolution
    ev = SegmentationEvaluator(("benign", "malignant"), n_bins=100)
    ev.add("img", sal, masks)
    assert ev.summary({"benign": 0.5, "malignant": 0.5})["benign"]["dice"] > 0.6


@pytest.mark.parametrize(
    ("saliency", "message"),
    [
        (torch.full((2, 4, 4), float("nan")), "NaN"),
        (torch.full((2, 4, 4), 1.5), r"\[0, 1\]"),
        (torch.zeros(3, 4, 4), "K=2"),
        (torch.zeros(4, 4), "K=2"),
    ],
)
def test_invalid_maps_name_the_image_and_the_fix(saliency: torch.Tensor, message: str) -> None:
    ev = SegmentationEvaluator(("benign", "malignant"))
    with pytest.raises(SaliencyError, match=message) as err:
        ev.add("case-17", saliency, torch.zeros(2, 4, 4, dtype=torch.bool))
    assert "case-17" in str(err.value)


def test_auroc_matches_hand_count() -> None:
    # 2 positives, 2 negatives; pairs ordered correctly: 3 of 4.
    assert auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.3, 0.5, 0.1])) == pytest.approx(0.75)
    assert math.isnan(auroc(np.array([1, 1]), np.array([0.2, 0.3])))
