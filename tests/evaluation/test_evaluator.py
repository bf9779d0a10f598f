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


def _case(
    seed: int, n: int = 8, size: tuple[int, int] = (40, 32)
) -> list[tuple[str, torch.Tensor, torch.Tensor, list[float]]]:
    """Images with blob lesions (some lesion-free), maps that fire on them and elsewhere, and logits."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        maps = rng.random((2, *size)).astype(np.float32) * 0.8
        masks = np.zeros((2, *size), dtype=bool)
        for k in range(2):
            if rng.random() < 0.4:
                continue
            r, c = rng.integers(0, size[0] - 8), rng.integers(0, size[1] - 8)
            masks[k, r : r + 6, c : c + 5] = True
            maps[k, r : r + 6, c : c + 5] += 0.15
        out.append((f"i{i}", torch.from_numpy(maps), torch.from_numpy(masks), rng.normal(size=2).tolist()))
    return out


def _label_only_image(size: tuple[int, int] = (40, 32)) -> tuple[str, torch.Tensor, torch.Tensor, list[float]]:
    """An image labelled benign whose lesion has no location: empty benign mask, a map firing hard somewhere."""
    maps = torch.full((2, *size), 0.05)
    maps[0, 5:15, 5:15] = 0.9  # many false-positive pixels and FROC detections if it counted as lesion-free
    maps[0, 2:38:4, 2:30:4] = 0.99
    masks = torch.zeros(2, *size, dtype=torch.bool)
    masks[1, 20:26, 10:16] = True  # a located malignant lesion: the flag is per class
    maps[1, 20:26, 10:16] = 0.9
    return "u", maps, masks, [2.5, 1.0]


def _evaluator(items: list, located: dict[str, list[bool]] | None = None) -> SegmentationEvaluator:
    ev = SegmentationEvaluator(CLASSES)
    for image_id, maps, masks, scores in items:
        labels = [float(masks[k].any()) for k in range(2)]
        if image_id == "u":
            labels[0] = 1.0  # labelled benign, nowhere
        ev.add(
            image_id,
            maps,
            masks,
            patient_id=f"p{image_id}",
            spacing_mm=2.0,  # 2-pixel FROC windows: many candidate detections on these small maps
            image_scores=scores,
            image_labels=labels,
            located=(located or {}).get(image_id),
        )
    return ev


def test_label_only_images_enter_no_localisation_metric_but_count_for_auroc(tmp_path) -> None:
    from sklearn.metrics import average_precision_score, roc_auc_score

    from wsseg.evaluation.stats import SplitStats
    from wsseg.evaluation.summary import interval_keys, summarize

    items = _case(3)
    u = _label_only_image()
    flagged = _evaluator([*items, u], {"u": [False, True]})  # benign: label-only; malignant: located
    without = _evaluator(items)  # the same images without u
    naive = _evaluator([*items, u])  # u's empty benign mask taken for lesion-free: the bug this flag prevents
    t = {"benign": 0.55, "malignant": 0.55}
    got, ref, bad = flagged.summary(t)["benign"], without.summary(t)["benign"], naive.summary(t)["benign"]
    localisation = [k for k in interval_keys(0.5) if k not in ("auroc", "auprc")]
    localisation += ["dice_oracle", "dice_pooled_oracle", "n_images", "n_lesion_free", "n_lesions"]
    for key in localisation:
        assert got[key] == pytest.approx(ref[key], nan_ok=True), key
    # Counted as lesion-free, u's firing map adds false-positive pixels and detections: these metrics move.
    for key in ("dice_pooled", "pxap", "fp_area_fraction", "froc", "n_lesion_free"):
        assert bad[key] != pytest.approx(ref[key], nan_ok=True), key
    assert got["n_label_only"] == 1 and ref["n_label_only"] == 0 and bad["n_label_only"] == 0
    assert flagged.calibrated_thresholds() == without.calibrated_thresholds()
    # AUROC and AUPRC keep u (labelled benign, with its logit), as scikit-learn computes them on all images.
    labels = [float(m[0].any()) for _, _, m, _ in items] + [1.0]
    scores = [s[0] for *_, s in items] + [u[3][0]]
    assert got["auroc"] == pytest.approx(roc_auc_score(labels, scores))
    assert got["auprc"] == pytest.approx(average_precision_score(labels, scores))
    assert got["auroc"] != pytest.approx(ref["auroc"])
    # Malignant is located on u: it counts there as on any image.
    assert flagged.summary(t)["malignant"] == pytest.approx(naive.summary(t)["malignant"], nan_ok=True)
    assert flagged.summary(t)["malignant"]["n_label_only"] == 0
    # The flag survives the per-image statistics file (wsseg compare, bootstrap) and old files read as located.
    path = flagged.stats().save(tmp_path / "s.npz")
    again = SplitStats.load(path)
    assert again.classes["benign"].located.tolist() == [True] * len(items) + [False]
    assert summarize(again, t)["benign"] == pytest.approx(flagged.summary(t)["benign"], nan_ok=True)
    with np.load(path) as z:
        old = {k: z[k] for k in z.files if not k.endswith(".located")}
    np.savez(tmp_path / "old.npz", **old)
    assert SplitStats.load(tmp_path / "old.npz").classes["benign"].located.all()


def test_located_needs_one_flag_per_class() -> None:
    with pytest.raises(ValueError, match="one flag per class"):
        SegmentationEvaluator(CLASSES).add(
            "x", torch.zeros(2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.bool), located=[False]
        )
