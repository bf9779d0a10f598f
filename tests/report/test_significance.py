"""Rank groups by the paired patient bootstrap, rank stability over seeds, budgets and reference rows in tables."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from md_tables import header_of, row_of

from wsseg.evaluation.bootstrap import paired_seed_bootstrap
from wsseg.report.leaderboard import describe_difference, group_records, training_budget, write_leaderboards
from wsseg.report.significance import PerImage, compare_with_best, rank_stability, stability_line

N_PATIENTS = 40
PATIENTS = [f"p{i // 2:02d}" for i in range(2 * N_PATIENTS)]  # two lesion images per patient
IDS = [f"img{i:03d}" for i in range(2 * N_PATIENTS)]


def _per_image(dice: np.ndarray) -> PerImage:
    n = len(dice)
    gt = np.full(n, 50.0)
    return PerImage(tuple(IDS[:n]), tuple(PATIENTS[:n]), np.asarray(dice, dtype=np.float64), gt, np.full(n, 5000.0))


def _base(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.3, 0.7, len(IDS))


def test_a_method_equal_up_to_noise_shares_the_best_group_and_a_clearly_worse_one_does_not() -> None:
    rng = np.random.default_rng(1)
    best = [_per_image(_base())]
    tied = [_per_image(_base() + rng.normal(0, 0.03, len(IDS)))]
    worse = [_per_image(_base() - 0.15 + rng.normal(0, 0.03, len(IDS)))]
    better = [_per_image(_base() + 0.2)]
    same = compare_with_best(best, tied)
    assert same.mark == "= best" and same.low <= 0 <= same.high and abs(same.diff) < 0.02
    below = compare_with_best(best, worse)
    assert below.mark == "below" and below.high < 0 and below.diff == pytest.approx(-0.15, abs=0.02)
    above = compare_with_best(best, better)
    assert above.mark == "above" and above.low > 0 and above.diff == pytest.approx(0.2)
    assert compare_with_best(best, None).mark == "n/a"  # no per-image results: no claim
    other_images = [
        PerImage(tuple(f"x{i}" for i in range(len(IDS))), tuple(PATIENTS), _base(), best[0].gt, best[0].area)
    ]
    assert compare_with_best(best, other_images).mark == "n/a"  # another test set: not comparable


def test_the_seed_averaged_statistic_is_each_images_seed_mean_resampled_jointly() -> None:
    rng = np.random.default_rng(2)
    mask = np.ones(len(IDS), dtype=bool)
    mask[::7] = False  # images without a lesion of the class do not enter the mean
    a = [np.where(mask, _base() + rng.normal(0, 0.05, len(IDS)), np.nan) for _ in range(3)]
    b = [np.where(mask, _base() - 0.02 + rng.normal(0, 0.05, len(IDS)), np.nan) for _ in range(2)]
    seeds = paired_seed_bootstrap(a, b, mask, PATIENTS, 500, 0)
    averaged = paired_seed_bootstrap([np.mean(a, axis=0)], [np.mean(b, axis=0)], mask, PATIENTS, 500, 0)
    for key in ("a", "b", "diff", "low", "high", "p"):
        assert seeds[key] == pytest.approx(averaged[key], rel=1e-12), key
    assert seeds["a"] == pytest.approx(np.mean([x[mask].mean() for x in a]))  # the row's table value


def test_kendall_tau_between_seeds_on_hand_cases() -> None:
    same = {"a": {0: 0.3, 1: 0.4}, "b": {0: 0.2, 1: 0.3}, "c": {0: 0.1, 1: 0.2}}
    st = rank_stability(same, weak={"a", "b", "c"})
    assert (st.mean, st.min, st.n_methods) == (1.0, 1.0, 3)
    # Rankings: seed 0 a > b > c; seed 1 a > c > b; seed 2 c > b > a. Pair (0, 1): (a, b) and (a, c) concordant,
    # (b, c) discordant: tau = (2 - 1) / 3. Pair (0, 2): all discordant, -1. Pair (1, 2): only (b, c) concordant, -1/3.
    scores = {"a": {0: 0.3, 1: 0.3, 2: 0.1}, "b": {0: 0.2, 1: 0.1, 2: 0.2}, "c": {0: 0.1, 1: 0.2, 2: 0.3}}
    scores["d"] = {0: 0.9}  # not run with every seed: left out
    st = rank_stability(scores, weak={"a", "b"})
    assert st.seeds == (0, 1, 2) and st.n_methods == 3
    assert st.mean == pytest.approx((1 / 3 - 1 - 1 / 3) / 3) and st.min == pytest.approx(-1.0)
    # a and b alone: the same order in seeds 0 and 1 (+1), the opposite in seed 2 (-1 twice).
    assert st.n_weak == 2 and st.weak_mean == pytest.approx((1 - 1 - 1) / 3) and st.weak_min == -1.0
    assert "mean -0.33, min -1.00; the 2 weakly supervised methods alone: mean -0.33, min -1.00" in stability_line(st)
    one_seed = rank_stability({"a": {0: 0.1}, "b": {0: 0.2}}, weak={"a", "b"})
    assert math.isnan(one_seed.mean) and "n/a" in stability_line(one_seed)


# --- leaderboards from run folders with per-image results -------------------------------------------------------


def _run(root: Path, method: str, seed: int, dice: np.ndarray, supervision: str, epochs: int = 8) -> None:
    """A run folder: a record whose Dice is the per-image mean, and the per_image.csv the rank groups read."""
    folder = root / f"{method}-s{seed}"
    folder.mkdir(parents=True)
    rows = []
    for i, (image_id, patient) in enumerate(zip(IDS, PATIENTS, strict=True)):
        for c in ("benign", "malignant"):
            lesion = c == "benign"
            rows.append(
                {
                    "image_id": image_id,
                    "patient_id": patient,
                    "class": c,
                    "has_lesion": int(lesion),
                    "lesion_pixels": 50 if lesion else 0,
                    "region_pixels": 5000,
                    "dice": repr(float(dice[i])) if lesion else "nan",
                }
            )
    with open(folder / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    metrics = {
        "benign": {"dice": float(np.mean(dice)), "threshold": 0.5},
        "malignant": {"dice": math.nan, "threshold": 0.5},
    }
    history = [{"epoch": e + 1} for e in range(epochs)] if supervision != "reference" else []
    record: dict[str, Any] = {
        "schema_version": 2,
        "method": method,
        "seed": seed,
        "run_id": folder.name,
        "supervision": supervision,
        "dataset": "phantom",
        "profile": "quick",
        "dataset_info": {"version": "phantom-2.0", "split_hashes": {"test": "abc"}, "counts": {"train": 1280}},
        "evaluation": {"n_bins": 1000},
        "metrics": metrics,
        "training": {"history": history, "from_run": None, "weights": None},
        "per_image": {"csv": "per_image.csv"},
        "references": {"chance": {"benign": {"dice": 2 * 50 / 5050, "pointing_game_10mm": 0.04}}},
    }
    (folder / "record.json").write_text(json.dumps(record))


def test_leaderboard_marks_rank_groups_and_never_ranks_reference_rows(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    runs = tmp_path / "runs"
    for seed in (0, 1, 2):
        noise = rng.normal(0, 0.02, len(IDS))
        _run(runs, "cam", seed, _base() + noise, "weak")
        _run(runs, "gmic", seed, _base() + rng.normal(0, 0.03, len(IDS)), "weak")
        _run(runs, "glam", seed, _base() - 0.2 + noise, "weak")
        _run(runs, "unet", seed, _base() + 0.25, "full")
        # An old record of the brightness prior still says "weak"; the registry says reference. It scores highest.
        _run(runs, "intensity", seed, _base() + 0.28, "weak")
    write_leaderboards([runs], tmp_path / "lb", ["md", "csv", "tex"])
    md = (tmp_path / "lb" / "leaderboard-phantom-quick-abc.md").read_text()
    benign = "### benign"
    assert header_of(md, benign)[7:10] == ["group", "diff vs best", "diff 95% CI"]
    best = row_of(md, "cam", benign) if row_of(md, "cam", benign)[7] == "best" else row_of(md, "gmic", benign)
    assert best[0] == "1" and best[2] == "weak"
    other = "gmic" if best[1] == "cam" else "cam"
    assert row_of(md, other, benign)[7] == "= best"
    assert row_of(md, "glam", benign)[7] == "below"
    assert float(row_of(md, "glam", benign)[8]) == pytest.approx(-0.2, abs=0.02)
    assert row_of(md, "glam", benign)[0] == "3"
    assert row_of(md, "unet", benign)[:3] == ["", "unet", "full"] and row_of(md, "unet", benign)[7] == "above"
    intensity = row_of(md, "intensity", benign)
    assert intensity[:3] == ["", "intensity", "reference"] and intensity[7] == "above"  # never "best"
    chance = row_of(md, "chance level", benign)
    assert chance[7] == "below" and chance[4] == f"{2 * 50 / 5050:.3f}" and chance[12] == "0.040"
    assert "Rank stability between seeds" in md and "the 3 weakly supervised methods alone" in md
    tex = (tmp_path / "lb" / "leaderboard-phantom-quick-abc.tex").read_text()
    assert "= best" in tex and "diff 95\\% CI" in tex  # escaped by tabulate's LaTeX format
    # Without the per-image files the same records make no claim.
    for p in runs.glob("*/per_image.csv"):
        p.unlink()
    write_leaderboards([runs], tmp_path / "lb2", ["md"])
    md2 = (tmp_path / "lb2" / "leaderboard-phantom-quick-abc.md").read_text()
    assert row_of(md2, "glam", benign)[7:10] == ["n/a", "n/a", "n/a"]


def test_different_training_budgets_get_separate_tables_with_the_reference_rows_in_each(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    _run(runs, "cam", 0, _base(), "weak", epochs=8)
    _run(runs, "cam", 1, _base(), "weak", epochs=16)  # the same method and seed count, twice the training
    _run(runs, "gmic", 0, _base(), "weak", epochs=16)
    _run(runs, "uniform", 0, _base() * 0.01, "reference")
    records = [json.loads(p.read_text()) for p in sorted(runs.glob("*/record.json"))]
    assert sorted({training_budget(r) for r in records}) == ["16 x 1,280", "8 x 1,280", "none"]
    groups = group_records(records)
    assert [sorted(r["run_id"] for r in g) for g in groups.values()] == [
        ["cam-s1", "gmic-s0", "uniform-s0"],
        ["cam-s0", "uniform-s0"],
    ]
    a, b = groups
    assert describe_difference(a, b) == "training budget ('16 x 1,280' vs '8 x 1,280')"
    result = write_leaderboards([runs], tmp_path / "lb", ["md"])
    mains = sorted(p for p in result.files if not p.stem.endswith("-lesions"))
    assert len(mains) == 2  # neither overwrites the other
    for path in mains:
        text = path.read_text()
        assert row_of(text, "uniform")[2] == "reference"
        budget = row_of(text, "cam", "### training budget")[4]
        assert budget in text.splitlines()[0]  # the title names the table's budget
    assert {row_of(p.read_text(), "cam", "### training budget")[4] for p in mains} == {"8 x 1,280", "16 x 1,280"}


def test_an_unreadable_per_image_file_is_a_clear_error_naming_it(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wsseg.cli import app

    runs = tmp_path / "runs"
    _run(runs, "cam", 0, _base(), "weak")
    _run(runs, "gmic", 0, _base(), "weak")
    (runs / "gmic-s0" / "per_image.csv").write_text("image_id,class\nimg000,benign\n")  # truncated columns
    result = CliRunner().invoke(app, ["leaderboard", str(runs), "--out", str(tmp_path / "lb")])
    assert result.exit_code == 2 and "gmic-s0/per_image.csv" in result.output and "Traceback" not in result.output
