"""Pointing game, FROC, MaxBoxAccV2 and the false-positive burden on hand-computed cases."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wsseg.evaluation.evaluator import SegmentationEvaluator
from wsseg.evaluation.localization import box_iou, boxes_from_map, detections, froc, max_box_acc_v2
from wsseg.evaluation.stats import FrocSettings, SplitStats

CLASSES = ("benign", "malignant")


def _evaluate(
    images: list[tuple[np.ndarray, np.ndarray]],
    spacing: float | None = 1.0,
    froc_settings: FrocSettings | None = None,
    tau: float = 0.5,
    region: np.ndarray | None = None,
) -> dict[str, float]:
    """Benign metrics of single-class cases (the malignant channel is an empty copy)."""
    ev = SegmentationEvaluator(CLASSES, 100, froc=froc_settings or FrocSettings(nms_mm=1.0, tolerance_mm=0.0))
    for i, (s, g) in enumerate(images):
        maps = torch.from_numpy(np.stack([s, np.zeros_like(s)]).astype(np.float32))
        masks = torch.from_numpy(np.stack([g, np.zeros_like(g)]))
        ev.add(f"img{i}", maps, masks, None if region is None else torch.from_numpy(region), spacing_mm=spacing)
    return ev.summary({"benign": tau, "malignant": tau})["benign"]


def _lesion(size: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    g = np.zeros(size, dtype=bool)
    g[rows, cols] = True
    return g


def test_pointing_game_hits_at_each_tolerance() -> None:
    size = (20, 20)
    g = _lesion(size, slice(5, 7), slice(5, 7))  # lesion pixels rows 5-6, cols 5-6
    on = np.zeros(size)
    on[6, 6] = 1.0  # peak on the lesion
    near = np.zeros(size)
    near[6, 9] = 1.0  # 3 pixels right of the lesion's nearest pixel (6, 6)
    far = np.zeros(size)
    far[6, 6 + 8] = 0.9  # 8 pixels away
    diag = np.zeros(size)
    diag[10, 10] = 0.7  # nearest lesion pixel (6, 6): sqrt(16 + 16) = 5.66 px
    # Spacing 1.5 mm: distances 0, 4.5, 12 and 8.49 mm.
    m = _evaluate([(on, g), (near, g), (far, g), (diag, g)], spacing=1.5)
    assert m["pointing_game_0mm"] == pytest.approx(1 / 4)
    assert m["pointing_game_5mm"] == pytest.approx(2 / 4)
    assert m["pointing_game_10mm"] == pytest.approx(3 / 4)


def test_pointing_game_ties_go_to_the_first_pixel_and_a_zero_map_misses() -> None:
    size = (10, 10)
    g = _lesion(size, slice(0, 1), slice(0, 1))  # the top-left pixel
    flat = np.full(size, 0.3)  # every pixel ties: the first one (0, 0) is the peak: a hit
    g2 = _lesion(size, slice(9, 10), slice(9, 10))  # the bottom-right pixel: the same flat map misses it
    zero = np.zeros(size)
    assert _evaluate([(flat, g)])["pointing_game_0mm"] == 1.0
    assert _evaluate([(flat, g2)])["pointing_game_0mm"] == 0.0
    assert _evaluate([(zero, g)])["pointing_game_0mm"] == 0.0  # an all-zero map points nowhere
    assert _evaluate([(zero, g)])["pointing_game_10mm"] == 0.0


def test_pointing_game_looks_only_inside_the_region() -> None:
    size = (10, 10)
    g = _lesion(size, slice(2, 3), slice(2, 3))
    s = np.zeros(size)
    s[2, 2] = 0.5
    s[8, 8] = 1.0  # a higher peak outside the region
    region = np.zeros(size, dtype=bool)
    region[:6, :6] = True
    assert _evaluate([(s, g)])["pointing_game_0mm"] == 0.0
    assert _evaluate([(s, g)], region=region)["pointing_game_0mm"] == 1.0


def test_pointing_game_beyond_0_mm_needs_the_spacing() -> None:
    size = (10, 10)
    g = _lesion(size, slice(2, 3), slice(2, 3))
    s = np.zeros(size)
    s[2, 2] = 1.0
    m = _evaluate([(s, g)], spacing=None)
    assert m["pointing_game_0mm"] == 1.0
    assert math.isnan(m["pointing_game_5mm"]) and math.isnan(m["froc"])


def test_detections_are_local_maxima_and_plateaus_count_once() -> None:
    s = np.zeros((9, 12))
    s[1, 1] = 0.9
    s[1, 3] = 0.5  # within the 5x5 window of the 0.9 peak: suppressed
    s[6, 2:5] = 0.7  # a plateau: one detection at its first pixel (6, 2)
    s[7, 10] = 0.2
    coords, scores = detections(s, nms_px=2, max_candidates=10)
    assert coords.tolist() == [[1, 1], [6, 2], [7, 10]]
    assert scores.tolist() == pytest.approx([0.9, 0.7, 0.2])
    coords, scores = detections(s, nms_px=2, max_candidates=2)
    assert scores.tolist() == pytest.approx([0.9, 0.7])
    coords, _ = detections(s, nms_px=0, max_candidates=10)  # no suppression: 0.5 is a local maximum too
    assert [1, 3] in coords.tolist()


def test_froc_hand_computed_through_the_evaluator() -> None:
    # Three 12x12 images at 1 mm; single-pixel detections (window 3x3), lesions not grown.
    size = (12, 12)
    a_lesion = _lesion(size, slice(2, 4), slice(2, 4))
    a = np.zeros(size)
    a[2, 2] = 0.9  # hits lesion A
    a[3, 3] = 0.3  # also on lesion A but suppressed by the 0.9 peak in its window: no detection
    a[8, 8] = 0.8  # false positive
    b = np.zeros(size)  # lesion-free
    b[5, 5], b[10, 1] = 0.6, 0.2  # two false positives
    c_lesion = _lesion(size, slice(7, 9), slice(7, 9))
    c = np.zeros(size)
    c[7, 8] = 0.6  # hits lesion C, at the same score as a false positive: one operating point for both
    m = _evaluate([(a, a_lesion), (b, np.zeros(size, bool)), (c, c_lesion)])
    # Operating points (FP per image over 3 images, sensitivity over 2 lesions), from the highest score:
    # origin (0, 0); 0.9 -> (0, 1/2); 0.8 -> (1/3, 1/2); 0.6 -> (2/3, 1); 0.2 -> (1, 1).
    assert m["sensitivity_at_0.25_fppi"] == pytest.approx(0.5)
    assert m["sensitivity_at_0.5_fppi"] == pytest.approx(0.75)  # halfway from (1/3, 1/2) to (2/3, 1)
    assert m["sensitivity_at_1_fppi"] == pytest.approx(1.0)
    assert m["sensitivity_at_8_fppi"] == pytest.approx(1.0)
    assert m["froc"] == pytest.approx((0.5 + 0.75 + 1 + 1 + 1 + 1) / 6)
    assert m["n_lesions"] == 2


def test_froc_counts_repeated_hits_once_and_grows_lesions_by_the_tolerance() -> None:
    size = (20, 20)
    g = _lesion(size, slice(5, 7), slice(5, 7))
    s = np.zeros(size)
    s[5, 5] = 0.9
    s[6, 12] = 0.8  # 6 px (6 mm) right of the lesion: a false positive unless the lesion grows by >= 6 mm
    s[15, 15] = 0.1  # a false positive either way

    def benign_stats(tolerance_mm: float) -> tuple[list[float], list[float]]:
        ev = SegmentationEvaluator(CLASSES, 100, froc=FrocSettings(nms_mm=2.0, tolerance_mm=tolerance_mm))
        ev.add(
            "img",
            torch.from_numpy(np.stack([s, s]).astype(np.float32)),
            torch.from_numpy(np.stack([g, g])),
            spacing_mm=1.0,
        )
        a = ev.stats().classes["benign"]
        return a.lesion_scores.tolist(), sorted(a.fp_scores.tolist())

    lesions, fps = benign_stats(0.0)
    assert lesions == pytest.approx([0.9]) and fps == pytest.approx([0.1, 0.8])
    lesions, fps = benign_stats(6.0)  # 0.8 becomes a second hit on the detected lesion: neither TP nor FP
    assert lesions == pytest.approx([0.9]) and fps == pytest.approx([0.1])
    r_strict = froc(np.array([0.9]), np.array([0.8, 0.1]), 1)
    assert r_strict.fppi.tolist() == pytest.approx([0, 0, 1, 2])
    assert r_strict.sensitivity.tolist() == pytest.approx([0, 1, 1, 1])


def test_speckled_lesions_merge_when_grown() -> None:
    # Two specks 4 px apart are two lesions at tolerance 0 and one lesion once grown by 2 mm (at 1 mm).
    g = np.zeros((12, 12), dtype=bool)
    g[5, 2] = g[5, 6] = True
    s = np.zeros((12, 12))
    s[5, 2] = 1.0
    one = _evaluate([(s, g)], froc_settings=FrocSettings(nms_mm=1.0, tolerance_mm=2.0))
    two = _evaluate([(s, g)], froc_settings=FrocSettings(nms_mm=1.0, tolerance_mm=0.0))
    assert one["n_lesions"] == 1 and one["froc"] == 1.0
    assert two["n_lesions"] == 2 and two["froc"] == 0.5


def test_froc_with_missed_lesions_and_no_lesions() -> None:
    r = froc(np.array([0.7, np.nan, np.nan, 0.2]), np.array([0.5]), n_images=2)
    # 0.7 -> (0, 1/4); 0.5 -> (1/2, 1/4); 0.2 -> (1/2, 2/4): flat, then a vertical step at 1/2 FP per image.
    assert r.sensitivity.tolist() == pytest.approx([0, 0.25, 0.25, 0.5])
    assert r.sensitivity_at[0.25] == pytest.approx(0.25)
    assert r.sensitivity_at[0.5] == pytest.approx(0.5)
    assert r.sensitivity_at[8.0] == pytest.approx(0.5)
    assert math.isnan(froc(np.zeros(0), np.array([0.5]), n_images=2).score)


def test_box_iou_and_boxes_from_a_map() -> None:
    assert box_iou(np.array([[0, 0, 4, 4]]), np.array([[2, 2, 6, 6]]))[0, 0] == pytest.approx(4 / 28)
    assert box_iou(np.array([[0, 0, 2, 2]]), np.array([[2, 2, 4, 4]]))[0, 0] == 0.0  # touching, no overlap
    s = np.zeros((10, 10))
    s[2:6, 3:5] = 1.0
    s[8, 8] = 0.6
    assert boxes_from_map(s, 0.7).tolist() == [[3, 2, 5, 6]]  # (x0, y0, x1, y1), half-open
    assert sorted(boxes_from_map(s, 0.5).tolist()) == [[3, 2, 5, 6], [8, 8, 9, 9]]
    assert boxes_from_map(s, 0.0).tolist() == [[0, 0, 10, 10]]  # every pixel >= 0: one component
    assert boxes_from_map(np.zeros((4, 4)), 0.5).shape == (0, 4)


def test_max_box_acc_v2_hand_computed() -> None:
    size = (10, 10)
    s1 = np.zeros(size)
    s1[2:6, 2:6] = 1.0
    s1[7:9, 7:9] = 0.4  # a weaker blob elsewhere: an extra box at tau <= 0.4 that does not hurt
    s2 = np.zeros(size)
    s2[0:2, 0:4] = 1.0  # half of the ground-truth box
    maps = [s1, s2]
    boxes = [np.array([[2, 2, 6, 6]]), np.array([[0, 0, 4, 4]])]
    # Image 1: IoU 1 for 0 < tau; image 2: IoU 8/16 = 0.5 for 0 < tau; at tau = 0 one box covers the image.
    out = max_box_acc_v2(maps, boxes)
    assert out["box_acc_iou_0.3"] == 1.0 and out["box_acc_iou_0.5"] == 1.0 and out["box_acc_iou_0.7"] == 0.5
    assert out["max_box_acc_v2"] == pytest.approx(2.5 / 3)
    assert out["threshold_iou_0.5"] == pytest.approx(0.01)  # the lowest tau reaching the maximum


def test_max_box_acc_v2_maximises_tau_separately_per_iou() -> None:
    # Two images share one map (a 2x2 core at 1.0 inside a 4x4 ring at 0.5); one has the core as its box,
    # the other the ring: no single tau serves both, so each delta's BoxAcc peaks at 1/2.
    s = np.zeros((10, 10))
    s[3:7, 3:7] = 0.5
    s[4:6, 4:6] = 1.0
    out = max_box_acc_v2([s, s], [np.array([[4, 4, 6, 6]]), np.array([[3, 3, 7, 7]])])
    assert out["box_acc_iou_0.3"] == 0.5 and out["box_acc_iou_0.7"] == 0.5
    assert out["max_box_acc_v2"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one box list per map"):
        max_box_acc_v2([s], [])


def test_false_positive_burden_on_lesion_free_images() -> None:
    size = (10, 10)
    clean = np.zeros(size)
    noisy = np.zeros(size)
    noisy[:2, :5] = 0.8  # 10 of 100 pixels at or above tau
    with_lesion = np.ones(size)  # lesion-positive: not part of the burden
    g = _lesion(size, slice(0, 1), slice(0, 1))
    m = _evaluate([(clean, np.zeros(size, bool)), (noisy, np.zeros(size, bool)), (with_lesion, g)], tau=0.5)
    assert m["fp_area_fraction"] == pytest.approx((0 + 0.1) / 2)
    assert m["fp_image_rate"] == pytest.approx(1 / 2)
    assert m["n_lesion_free"] == 2 and m["n_images"] == 1


def test_evaluator_reports_max_box_acc_v2_for_box_ground_truth_only(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    maps, gt, masks = [], [], []
    for i in range(6):
        s = rng.random((2, 24, 20)).astype(np.float32) * 0.3
        m = np.zeros((2, 24, 20), dtype=bool)
        y, x = 2 + 3 * i, 1 + 2 * i
        m[1, y : y + 5, x : x + 6] = True  # one malignant box per image
        s[1, y : y + 5 + i % 3, x : x + 6] = 0.9  # a blob that fits the box more or less well
        maps.append(s)
        masks.append(m)
        gt.append(np.array([[x, y, x + 6, y + 5]]))
    boxed, plain = SegmentationEvaluator(("benign", "malignant")), SegmentationEvaluator(("benign", "malignant"))
    for i, (s, m) in enumerate(zip(maps, masks, strict=True)):
        boxed.add(f"img{i}", torch.from_numpy(s), torch.from_numpy(m), boxes=True)
        plain.add(f"img{i}", torch.from_numpy(s), torch.from_numpy(m))
    thresholds = {"benign": 0.5, "malignant": 0.5}
    got = boxed.summary(thresholds)["malignant"]
    expected = max_box_acc_v2([s[1] for s in maps], gt)
    assert got["max_box_acc_v2"] == pytest.approx(expected["max_box_acc_v2"])
    assert got["box_acc_iou_0.7"] == pytest.approx(expected["box_acc_iou_0.7"]) and got["n_box_images"] == 6
    assert "max_box_acc_v2" not in boxed.summary(thresholds)["benign"]  # no benign box anywhere
    assert "max_box_acc_v2" not in plain.summary(thresholds)["malignant"]  # mask ground truth: not a box metric
    # The curves survive the per-image statistics file (bootstrap and compare read it).
    loaded = SplitStats.load(boxed.stats().save(tmp_path / "stats.npz"))
    assert np.array_equal(loaded.classes["malignant"].box_iou, boxed.stats().classes["malignant"].box_iou)
