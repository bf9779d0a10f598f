"""Lesion size and type for the breakdown tables, and the chance levels of the floor row, on hand-made masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from wsseg.evaluation.curves import curves_from_stats
from wsseg.evaluation.evaluator import SegmentationEvaluator
from wsseg.evaluation.lesions import (
    equivalent_diameter_mm,
    image_lesion_type,
    lesion_type_group,
    size_bin,
)
from wsseg.evaluation.stats import (
    OPTIONAL_ARRAYS,
    POINTING_TOLERANCES_MM,
    FrocSettings,
    SplitStats,
    class_stats,
    lesion_facts,
)
from wsseg.evaluation.summary import chance_levels


@pytest.mark.parametrize(
    ("name", "group"),
    [
        ("mass", "mass"),  # the phantom, CBIS-DDSM
        ("calcification", "calcification"),
        ("calc", "calcification"),
        ("CALC", "calcification"),  # mini-MIAS
        ("CIRC", "mass"),
        ("SPIC", "mass"),
        ("MISC", "mass"),
        ("ARCH", "other"),
        ("ASYM", "other"),
        ("calcification cluster", "calcification"),  # INbreast after its ROI-name table
        ("distortion", "other"),
        ("Mass", "mass"),  # VinDr-Mammo finding categories
        ("Suspicious Calcification", "calcification"),
        ("Architectural Distortion", "other"),
        ("Mass|Suspicious Calcification", "other"),  # one finding of two groups
        ("Mass|Mass", "mass"),
        ("", ""),  # no name (NYU, manifests): unknown
    ],
)
def test_every_sources_lesion_names_map_to_one_group(name: str, group: str) -> None:
    assert lesion_type_group(name) == group


def test_an_images_type_is_its_lesions_group_or_other_when_they_differ() -> None:
    lesions = [
        {"class": "benign", "type": "mass"},
        {"class": "malignant", "type": "calcification"},
        {"class": "malignant", "type": "mass"},
    ]
    assert image_lesion_type(lesions, "benign") == "mass"
    assert image_lesion_type(lesions, "malignant") == "other"
    assert image_lesion_type([{"class": "benign", "type": ""}], "benign") == ""
    assert image_lesion_type([], "benign") == ""


def test_size_bins_are_half_open() -> None:
    assert size_bin(0.0) == "<5 mm" and size_bin(4.999) == "<5 mm"
    assert size_bin(5.0) == "5-10 mm" and size_bin(10.0) == "10-20 mm" and size_bin(19.99) == "10-20 mm"
    assert size_bin(20.0) == ">=20 mm" and size_bin(150.0) == ">=20 mm"
    assert size_bin(math.nan) is None


def test_the_size_is_the_largest_components_equivalent_diameter() -> None:
    target = np.zeros((40, 40), dtype=bool)
    target[5:10, 5:10] = True  # 25 pixels
    target[20:22, 30:32] = True  # 4 pixels, a second lesion of the class
    target[30, 5] = target[31, 6] = True  # diagonal neighbours: one 8-connected component of 2
    facts = lesion_facts(target, None, 0.4, FrocSettings())
    assert facts.lesion_px == 25 and facts.n_components == 3
    d = float(equivalent_diameter_mm(facts.lesion_px, 0.4))
    assert d == pytest.approx(2 * math.sqrt(25 / math.pi) * 0.4)  # 2.26 mm: the disc of 25 x 0.16 mm^2
    assert size_bin(d) == "<5 mm"
    # Outside the region the mask does not count (the evaluator restricts it first).
    empty = lesion_facts(np.zeros((8, 8), dtype=bool), None, 0.4, FrocSettings())
    assert math.isnan(empty.lesion_px) and empty.n_components == 0 and np.isnan(empty.chance_hit).all()


def _breast_and_lesion(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    h, w = 36, 28
    rows, cols = np.mgrid[:h, :w]
    breast = (rows - h / 2) ** 2 / (h / 2) ** 2 + cols**2 / (w * 0.95) ** 2 <= 1.0  # a half ellipse, chest wall left
    target = np.zeros((h, w), dtype=bool)
    r, c = int(rng.integers(8, 28)), int(rng.integers(3, 16))
    target[r : r + 3, c : c + 4] = True
    target[r + 6, c + 7] = True  # a second, one-pixel lesion
    return breast, target & breast


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pointing_chance_equals_every_breast_pixel_tried_as_the_peak(seed: int) -> None:
    breast, target = _breast_and_lesion(seed)
    spacing = 1.6
    facts = lesion_facts(target, breast, spacing, FrocSettings())
    hits = np.zeros(len(POINTING_TOLERANCES_MM))
    pixels = np.argwhere(breast)
    for r, c in pixels:
        # The real pointing game on a map whose only peak is this pixel.
        saliency = np.zeros(breast.shape, dtype=np.float32)
        saliency[r, c] = 1.0
        s = class_stats(saliency, target, breast, 100, spacing, FrocSettings())
        hits += [(s.point_px == 0) if t == 0 else (s.point_px * spacing <= t) for t in POINTING_TOLERANCES_MM]
    np.testing.assert_allclose(facts.chance_hit, hits / len(pixels), rtol=0, atol=1e-12)
    assert 0 < facts.chance_hit[0] < facts.chance_hit[1] < facts.chance_hit[2] < 1


def _uniform_maps(images: list[tuple[np.ndarray, np.ndarray]], spacing: float = 1.6) -> SegmentationEvaluator:
    """The uniform map (1 in the breast) of every image through the real evaluator; lesions are benign."""
    ev = SegmentationEvaluator(classes=("benign", "malignant"), n_bins=100)
    for i, (breast, target) in enumerate(images):
        masks = torch.from_numpy(np.stack([target, np.zeros_like(target)]))
        saliency = torch.from_numpy(np.stack([breast, breast]).astype(np.float32))
        labels = [float(target.any()), 0.0]
        ev.add(f"img{i}", saliency, masks, torch.from_numpy(breast), spacing_mm=spacing, image_labels=labels)
    return ev


def test_chance_levels_average_the_exact_per_image_chance_and_equal_the_uniform_maps_scores() -> None:
    images = [_breast_and_lesion(s) for s in range(3)] + [(_breast_and_lesion(9)[0], np.zeros((36, 28), bool))]
    ev = _uniform_maps(images)
    stats = ev.stats()
    chance = chance_levels(stats)["benign"]
    per_image = [lesion_facts(t, b, 1.6, FrocSettings()).chance_hit for b, t in images[:3]]
    for j, r in enumerate(POINTING_TOLERANCES_MM):
        assert chance[f"pointing_game_{r:g}mm"] == pytest.approx(np.mean([p[j] for p in per_image]))
    # The whole breast predicted is what the uniform map scores at any threshold: the same Dice, IoU, PxAP, FP area.
    uniform = ev.summary({"benign": 1.0, "malignant": 1.0})["benign"]
    for key in ("dice", "iou", "dice_pooled", "iou_pooled", "pxap", "fp_area_fraction", "fp_image_rate", "soft_dice"):
        assert chance[key] == pytest.approx(uniform[key], rel=1e-9), key
    assert chance["auroc"] == 0.5 and chance["auprc"] == pytest.approx(0.75)
    assert uniform["pointing_game_10mm"] < chance["pointing_game_10mm"]  # the constant map's peak is its first pixel
    assert chance["n_images"] == 3


def test_froc_chance_of_one_lesion_is_the_poisson_formula() -> None:
    target = np.zeros((40, 40), dtype=bool)
    target[18:22, 18:22] = True
    ev = SegmentationEvaluator(classes=("benign", "malignant"), n_bins=100, froc=FrocSettings(tolerance_mm=2.0))
    masks = torch.from_numpy(np.stack([target, np.zeros_like(target)]))
    for i in range(2):  # one lesion image and one lesion-free image
        ev.add(f"i{i}", torch.zeros(2, 40, 40), masks if i == 0 else torch.zeros_like(masks), None, spacing_mm=1.0)
    stats = ev.stats()
    a = stats.classes["benign"]
    # The lesion grown by 2 mm: every pixel within Euclidean distance 2 of the 4 x 4 square.
    rows, cols = np.mgrid[:40, :40]
    dr = np.maximum(np.maximum(18 - rows, rows - 21), 0)
    dc = np.maximum(np.maximum(18 - cols, cols - 21), 0)
    cover = float((dr**2 + dc**2 <= 4).sum()) / 1600
    assert a.lesion_cover.tolist() == pytest.approx([cover])
    m = ((1 - cover) + 1.0) / 2  # the mean uncovered fraction over both images
    chance = chance_levels(stats)["benign"]
    for f in (0.25, 1.0, 8.0):
        assert chance[f"sensitivity_at_{f:g}_fppi"] == pytest.approx(1 - math.exp(-cover * f / m))
    assert chance["froc"] == pytest.approx(np.mean([1 - math.exp(-cover * f / m) for f in (0.25, 0.5, 1, 2, 4, 8)]))


def test_statistics_saved_before_the_lesion_facts_still_load_and_give_unknown_sizes(tmp_path: Path) -> None:

    images = [_breast_and_lesion(s) for s in range(2)]
    stats = _uniform_maps(images).stats()
    stats.save(tmp_path / "new.npz")
    with np.load(tmp_path / "new.npz") as z:
        old = {k: z[k] for k in z.files if k.split(".")[-1] not in OPTIONAL_ARRAYS}  # as an older wsseg wrote it
    np.savez_compressed(tmp_path / "old.npz", **old)
    loaded = SplitStats.load(tmp_path / "old.npz").reorder(["img1", "img0"])
    a = loaded.classes["benign"]
    assert np.isnan(a.lesion_px).all() and np.isnan(a.chance_hit).all() and list(a.lesion_type) == ["", ""]
    block = curves_from_stats(loaded, {"benign": 0.5, "malignant": 0.5})["benign"]["lesion_size"]
    assert block["diameter_mm"] == [None, None] and block["type"] == ["", ""] and len(block["dice"]) == 2
    assert math.isnan(chance_levels(loaded)["benign"]["pointing_game_10mm"])  # unknown, never 0
    # The new file keeps everything through a save and load.
    again = SplitStats.load(tmp_path / "new.npz").classes["benign"]
    np.testing.assert_array_equal(again.chance_hit, stats.classes["benign"].chance_hit)
    assert list(again.lesion_px) == list(stats.classes["benign"].lesion_px)
