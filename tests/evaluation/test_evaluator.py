"""The evaluator's boundary: validation of single bad pixels, upsampling, normalisation, image-level fallbacks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from wsseg.evaluation.evaluator import SaliencyError, SegmentationEvaluator

CLASSES = ("benign", "malignant")


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_single_non_finite_pixel_is_caught(bad: float) -> None:
    s = torch.rand(2, 6, 6)
    s[1, 4, 2] = bad
    with pytest.raises(SaliencyError, match="NaN or inf"):
        SegmentationEvaluator(CLASSES).add("case-3", s, torch.zeros(2, 6, 6, dtype=torch.bool))


def test_minmax_normalisation_makes_logits_usable_and_equals_normalising_by_hand() -> None:
    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(2, 8, 8)).astype(np.float32) * 5)
    masks = torch.from_numpy(rng.random((2, 8, 8)) < 0.3)
    with pytest.raises(SaliencyError, match=r"\[0, 1\]"):
        SegmentationEvaluator(CLASSES).add("x", logits, masks)
    ev = SegmentationEvaluator(CLASSES, normalization="minmax")
    ev.add("x", logits, masks)
    lo = logits.amin(dim=(1, 2), keepdim=True)
    by_hand = (logits - lo) / (logits.amax(dim=(1, 2), keepdim=True) - lo)
    ref = SegmentationEvaluator(CLASSES)
    ref.add("x", by_hand, masks)
    t = {c: 0.4 for c in CLASSES}
    assert ev.summary(t)["benign"]["dice"] == pytest.approx(ref.summary(t)["benign"]["dice"])
    constant = SegmentationEvaluator(CLASSES, normalization="minmax")
    constant.add("c", torch.full((2, 8, 8), 3.0), masks)  # a constant map becomes all zeros
    assert constant.summary(t)["benign"]["dice"] == 0.0


def test_low_resolution_maps_are_upsampled_bilinearly_like_the_methods_do() -> None:
    import torch.nn.functional as F

    low = torch.rand(2, 4, 3)
    masks = torch.rand(2, 16, 12) < 0.3
    direct = SegmentationEvaluator(CLASSES)
    direct.add("a", F.interpolate(low[None], size=(16, 12), mode="bilinear", align_corners=False)[0], masks)
    harness = SegmentationEvaluator(CLASSES)
    harness.add("a", low, masks)
    t = {c: 0.5 for c in CLASSES}
    a, b = harness.summary(t), direct.summary(t)
    for name in CLASSES:
        assert a[name] == pytest.approx(b[name], abs=0, nan_ok=True)
    nearest = SegmentationEvaluator(CLASSES, upsample="nearest")
    nearest.add("a", low, masks)
    assert nearest.summary(t)["benign"]["soft_dice"] != harness.summary(t)["benign"]["soft_dice"]


def test_without_scores_the_image_score_is_the_maps_maximum_in_the_region() -> None:
    ev = SegmentationEvaluator(CLASSES)
    region = torch.zeros(6, 6, dtype=torch.bool)
    region[:, :3] = True
    for i, (peak, label) in enumerate([(0.9, 1.0), (0.2, 0.0), (0.7, 1.0), (0.4, 0.0)]):
        s = torch.zeros(2, 6, 6)
        s[:, 1, 1] = peak
        s[:, 1, 5] = 1.0  # outside the region: ignored
        ev.add(f"i{i}", s, torch.zeros(2, 6, 6, dtype=torch.bool), region, image_labels=[label, label])
    m = ev.summary({c: 0.5 for c in CLASSES})
    assert m["benign"]["auroc"] == 1.0 and m["benign"]["auprc"] == 1.0
    bare = SegmentationEvaluator(CLASSES)
    bare.add("i", torch.zeros(2, 6, 6), torch.zeros(2, 6, 6, dtype=torch.bool))
    assert math.isnan(bare.summary({c: 0.5 for c in CLASSES})["benign"]["auroc"])  # no labels: no AUROC


def test_region_of_another_size_is_refused() -> None:
    with pytest.raises(ValueError, match="region is"):
        SegmentationEvaluator(CLASSES).add(
            "r", torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool), torch.ones(3, 4, dtype=torch.bool)
        )
