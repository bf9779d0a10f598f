"""Patient bootstrap intervals and the paired comparison of two runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from wsseg.evaluation.bootstrap import (
    bootstrap_intervals,
    check_same_images,
    paired_bootstrap,
    patient_weights,
    pooled_intervals,
)
from wsseg.evaluation.evaluator import SegmentationEvaluator
from wsseg.evaluation.stats import SplitStats
from wsseg.evaluation.summary import summarize

CLASSES = ("benign", "malignant")


def _stats(
    n_patients: int,
    views: int,
    quality: np.ndarray | None = None,
    patients: bool = True,
    seed: int = 0,
    value: float = 1.0,
) -> SplitStats:
    """A split where each patient's views are identical copies (perfectly correlated images).

    ``quality[p]`` in [0, 1] scales how much of patient p's lesion the map covers (its Dice); covered pixels have
    the map value ``value``.
    """
    rng = np.random.default_rng(seed)
    quality = rng.random(n_patients) if quality is None else quality
    ev = SegmentationEvaluator(CLASSES, 100)
    for p in range(n_patients):
        g = np.zeros((2, 10, 10), dtype=bool)
        g[:, 2:6, 2:6] = True  # 16 lesion pixels, both classes
        s = np.zeros((2, 10, 10), dtype=np.float32)
        covered = int(round(16 * quality[p]))
        s.reshape(2, -1)[:, np.flatnonzero(g[0])[:covered]] = value
        for v in range(views):
            image_id = f"p{p}-v{v}"
            ev.add(image_id, torch.from_numpy(s), torch.from_numpy(g), patient_id=f"p{p}" if patients else image_id)
    return ev.stats()


def test_patient_weights_keep_a_patients_images_together() -> None:
    ids = ["a", "a", "b", "c", "c", "c"]
    w = patient_weights(ids, n_resamples=200, seed=1)
    assert w.shape == (200, 6)
    assert np.array_equal(w[:, 0], w[:, 1]) and np.array_equal(w[:, 3], w[:, 5])
    # Three patients drawn per resample: the patient counts sum to 3.
    assert np.all(w[:, 0] + w[:, 2] + w[:, 3] == 3)
    assert np.array_equal(w, patient_weights(ids, 200, seed=1))
    assert not np.array_equal(w, patient_weights(ids, 200, seed=2))


def test_intervals_cover_the_estimate_and_are_reproducible() -> None:
    stats = _stats(30, 2)
    thresholds = {c: 0.5 for c in CLASSES}
    a = bootstrap_intervals(stats, thresholds, n_resamples=300, seed=0)
    b = bootstrap_intervals(stats, thresholds, n_resamples=300, seed=0)
    assert a == b and a["n_patients"] == 30 and a["n_resamples"] == 300
    point = summarize(stats, thresholds)["benign"]["dice"]
    low, high = a["benign"]["dice"]
    assert low < point < high and high - low > 0.05


def test_resampling_patients_widens_intervals_of_correlated_views() -> None:
    # 4 identical views per patient: treating views as independent understates the uncertainty by about 2x.
    quality = np.random.default_rng(3).random(40)
    by_patient = bootstrap_intervals(_stats(40, 4, quality), {c: 0.5 for c in CLASSES}, n_resamples=500)
    by_image = bootstrap_intervals(_stats(40, 4, quality, patients=False), {c: 0.5 for c in CLASSES}, n_resamples=500)
    width_patient = np.diff(by_patient["benign"]["dice"])[0]
    width_image = np.diff(by_image["benign"]["dice"])[0]
    assert by_patient["n_patients"] == 40 and by_image["n_patients"] == 160
    assert 1.5 < width_patient / width_image < 2.6  # sqrt(4) = 2 in expectation


def test_paired_bootstrap_of_a_run_against_itself_is_zero() -> None:
    stats = _stats(20, 2)
    t = {c: 0.5 for c in CLASSES}
    out = paired_bootstrap(stats, t, stats, t, n_resamples=200)
    row = out["benign"]["dice"]
    assert row["diff"] == 0.0 and row["low"] == 0.0 and row["high"] == 0.0 and row["p"] == 1.0


def test_paired_bootstrap_detects_a_consistently_better_method() -> None:
    quality = np.random.default_rng(5).random(25) * 0.7
    better, worse = _stats(25, 2, quality + 0.3), _stats(25, 2, quality)
    t = {c: 0.5 for c in CLASSES}
    row = paired_bootstrap(better, t, worse, t, n_resamples=500)["benign"]["dice"]
    assert row["diff"] > 0 and row["low"] > 0 and row["p"] < 0.01
    # The reverse order gives the negated difference; the images may come in another order.
    reordered = worse.reorder(list(reversed(worse.image_ids)))
    rev = paired_bootstrap(reordered, t, better, t, n_resamples=500)["benign"]["dice"]
    assert rev["diff"] == pytest.approx(-row["diff"]) and rev["high"] < 0


def test_different_test_sets_are_refused() -> None:
    a, b = _stats(5, 2), _stats(6, 2)
    with pytest.raises(ValueError, match="test sets differ"):
        check_same_images(a, b)
    c = _stats(5, 2, patients=False)
    with pytest.raises(ValueError, match="different patients"):
        check_same_images(a, c)


def test_stats_round_trip_through_a_file(tmp_path: Path) -> None:
    stats = _stats(4, 2)
    path = stats.save(tmp_path / "s.npz")
    back = SplitStats.load(path)
    assert back.image_ids == stats.image_ids and back.patient_ids == stats.patient_ids
    for name in CLASSES:
        assert np.array_equal(back.classes[name].pos_hist, stats.classes[name].pos_hist)
        assert np.array_equal(back.classes[name].lesion_image, stats.classes[name].lesion_image)
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="re-run the evaluation"):
        SplitStats.load(tmp_path / "bad.npz")


def _part(stats: SplitStats, index: np.ndarray) -> SplitStats:
    """The images ``index`` of ``stats`` as a split of their own (one test fold)."""
    return SplitStats(
        [stats.image_ids[i] for i in index],
        [stats.patient_ids[i] for i in index],
        stats.spacing_mm[index],
        stats.n_bins,
        {c: a.subset(index) for c, a in stats.classes.items()},
    )


def test_pooled_folds_resample_the_union_of_their_patients_once() -> None:
    stats = _stats(30, 2)  # 60 images; the first 15 patients are fold 0, the others fold 1
    t = {c: 0.5 for c in CLASSES}
    folds = [(_part(stats, np.arange(0, 30)), t), (_part(stats, np.arange(30, 60)), t)]
    pooled = pooled_intervals(folds, n_resamples=300, seed=0)
    whole = bootstrap_intervals(stats, t, n_resamples=300, seed=0)
    assert pooled["n_patients"] == 30 and pooled["n_folds"] == 2
    # At one threshold, pooling the folds is exactly the bootstrap of all their images together.
    assert all(pooled[c] == whole[c] for c in CLASSES)
    # Each fold keeps its own threshold: maps of value 0.6 score as before at 0.5 and nothing at 0.7.
    lowered = _stats(30, 2, value=0.6)
    parts = [_part(lowered, np.arange(0, 30)), _part(lowered, np.arange(30, 60))]
    same = pooled_intervals([(parts[0], t), (parts[1], t)], n_resamples=300, seed=0)
    mixed = pooled_intervals([(parts[0], t), (parts[1], {c: 0.7 for c in CLASSES})], n_resamples=300, seed=0)
    assert same["benign"]["dice"] == whole["benign"]["dice"]
    assert (
        mixed["benign"]["dice"][0] < same["benign"]["dice"][0]
        and mixed["benign"]["dice"][1] < same["benign"]["dice"][1]
    )
    # Fold 1 contributes zeros: the pooled Dice is about half of fold 0's alone.
    fold0 = bootstrap_intervals(parts[0], t, n_resamples=300, seed=0)["benign"]["dice"]
    assert mixed["benign"]["dice"][1] < fold0[1]
