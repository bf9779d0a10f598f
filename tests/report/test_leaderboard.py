"""Leaderboards from run records: grouping of comparable runs, aggregation over seeds, byte-stable output."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from md_tables import header_of, row_of
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.evaluation.bootstrap import paired_seed_bootstrap
from wsseg.report.leaderboard import build_rows, comparability_key, describe_difference, write_leaderboards

runner = CliRunner()


def _record(method: str, seed: int, dice: tuple[float, float], **kw: Any) -> dict[str, Any]:
    metrics = {
        c: {
            "dice": d,
            "iou": d / 2,
            "pxap": 0.1,
            "pointing_game_10mm": 0.2,
            "froc": 0.3,
            "fp_area_fraction": 0.01,
            "auroc": 0.7,
            "threshold": 0.5,
        }
        for c, d in zip(("benign", "malignant"), dice, strict=True)
    }
    record = {
        "schema_version": 2,
        "method": method,
        "seed": seed,
        "run_id": f"{method}-s{seed}",
        "supervision": "full" if method == "unet" else "weak",
        "dataset": "phantom",
        "profile": "quick",
        "dataset_info": {"version": "phantom-1.0", "split_hashes": {"test": "abc"}},
        "evaluation": {"n_bins": 1000},
        "metrics": metrics,
        "intervals": {c: {"dice": [d - 0.01, d + 0.01]} for c, d in zip(("benign", "malignant"), dice, strict=True)},
        "references": {"uniform_breast": {c: {"dice": 0.011, "iou": 0.005} for c in ("benign", "malignant")}},
        "n_parameters": 1_000_000,
        "timings": {"train": 100.0},
        "throughput": {"eval_images_per_s": 30.0},
        "device": "cpu",
    }
    record.update(kw)
    return record


def _write(root: Path, records: list[dict[str, Any]]) -> None:
    for r in records:
        (root / r["run_id"]).mkdir(parents=True)
        (root / r["run_id"] / "record.json").write_text(json.dumps(r))


def test_rows_aggregate_seeds_rank_by_dice_and_end_with_the_floor() -> None:
    rows = build_rows(
        [_record("cam", 0, (0.02, 0.04)), _record("cam", 1, (0.04, 0.06)), _record("gmic", 0, (0.06, 0.04))]
    )
    assert [r.method for r in rows] == ["gmic", "cam", "chance level"]
    cam = rows[1]
    assert cam.seeds == [0, 1] and cam.dice["benign"] == [0.02, 0.04]
    assert math.isclose(cam.score(), (0.03 + 0.05) / 2)
    with pytest.raises(ValueError, match="two runs of cam with seed 0"):
        build_rows([_record("cam", 0, (0.1, 0.1)), _record("cam", 0, (0.2, 0.2), run_id="again")])


def test_incomparable_runs_get_separate_tables_and_the_difference_is_named(tmp_path: Path) -> None:
    paper = _record("cam", 0, (0.1, 0.1), profile="paper", run_id="cam-paper")
    a, b = comparability_key(_record("cam", 0, (0.1, 0.1))), comparability_key(paper)
    assert describe_difference(a, b) == "profile ('quick' vs 'paper')"
    _write(tmp_path / "runs", [_record("cam", 0, (0.1, 0.1)), paper])
    result = runner.invoke(app, ["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "lb")])
    assert result.exit_code == 0, result.output
    assert "not comparable" in result.output and "profile ('paper' vs 'quick')" in result.output
    assert sorted(p.name for p in (tmp_path / "lb").glob("*.md")) == [
        "leaderboard-phantom-paper-abc-lesions.md",
        "leaderboard-phantom-paper-abc.md",
        "leaderboard-phantom-quick-abc-lesions.md",
        "leaderboard-phantom-quick-abc.md",
    ]


def test_pretrained_and_random_runs_never_share_a_table_and_the_pretrained_one_is_marked(tmp_path: Path) -> None:
    random = _record("cam", 0, (0.1, 0.1), initialisation={"backbone": "random", "classifier": "random"})
    old = _record("gradcam", 0, (0.2, 0.2))  # a record made before the initialisation key: random
    pre = _record(
        "cam",
        0,
        (0.4, 0.4),
        run_id="cam-imagenet",
        initialisation={"backbone": "imagenet:resnet18.a1_in1k", "classifier": "random"},
    )
    assert comparability_key(random) == comparability_key(old)
    a, b = comparability_key(random), comparability_key(pre)
    assert describe_difference(a, b) == "initialisation ('random' vs 'imagenet:resnet18.a1_in1k')"
    _write(tmp_path / "runs", [random, old, pre])
    result = runner.invoke(app, ["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "lb")])
    assert result.exit_code == 0, result.output
    texts = sorted(t.read_text() for t in (tmp_path / "lb").glob("*.md") if not t.stem.endswith("-lesions"))
    assert len(texts) == 2
    marked = [t for t in texts if "initialised imagenet:resnet18.a1_in1k" in t]
    assert len(marked) == 1 and row_of(marked[0], "cam")[:5] == ["1", "cam", "weak", "1", "0.400"]
    assert "gradcam" not in marked[0]
    plain = next(t for t in texts if t not in marked)
    assert "initialised" not in plain and row_of(plain, "gradcam")[1] == "gradcam" and "0.400" not in plain


def test_maps_that_learn_nothing_join_the_random_and_the_pretrained_tables(tmp_path: Path) -> None:
    trained = {"training": {"history": [{"epoch": 0}, {"epoch": 1}]}}
    random = _record("cam", 0, (0.1, 0.1), initialisation={"backbone": "random"}, **trained)
    pre = _record("cam", 0, (0.4, 0.4), run_id="cam-pre", initialisation={"backbone": "imagenet:resnet18.a1_in1k"})
    pre.update(trained)
    uniform = _record("uniform", 0, (0.02, 0.02), initialisation={})  # no network: nothing to initialise
    _write(tmp_path / "runs", [random, pre, uniform])
    result = write_leaderboards([tmp_path / "runs"], tmp_path / "lb", ["md"])
    mains = [p.read_text() for p in sorted(result.files) if not p.stem.endswith("-lesions")]
    assert len(mains) == 2 and sum("initialised imagenet:resnet18.a1_in1k" in t for t in mains) == 1
    for text in mains:  # the floor is shown beside each initialisation's cam, never as its own table
        assert row_of(text, "uniform")[:3] == ["", "uniform", "reference"] and row_of(text, "cam")[0] == "1"


def test_two_dataset_versions_on_one_test_split_never_share_a_table(tmp_path: Path) -> None:
    old = _record("cam", 0, (0.1, 0.1))
    new = _record("cam", 0, (0.3, 0.3), run_id="cam-new")
    new["dataset_info"] = {**new["dataset_info"], "version": "phantom-2.0"}
    _write(tmp_path / "runs", [old, new])
    result = runner.invoke(app, ["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "lb")])
    assert result.exit_code == 0, result.output
    assert "dataset version ('phantom-1.0' vs 'phantom-2.0')" in result.output
    tables = sorted(p for p in (tmp_path / "lb").glob("*.md") if not p.stem.endswith("-lesions"))
    assert len(tables) == 2  # one per version, neither overwritten by the other
    texts = sorted(t.read_text() for t in tables)
    assert "(phantom-1.0)" in texts[0] and row_of(texts[0], "cam")[:5] == ["1", "cam", "weak", "1", "0.100"]
    assert "(phantom-2.0)" in texts[1] and row_of(texts[1], "cam")[:5] == ["1", "cam", "weak", "1", "0.300"]


def test_output_is_byte_stable_and_marks_supervision(tmp_path: Path) -> None:
    records = [_record("unet", 0, (0.4, 0.5)), _record("cam", 0, (0.02, 0.04)), _record("cam", 1, (0.04, 0.06))]
    _write(tmp_path / "runs", records)
    first = write_leaderboards([tmp_path / "runs"], tmp_path / "a")
    # The same records in another order and location give the same bytes.
    _write(tmp_path / "runs2", list(reversed(copy.deepcopy(records))))
    second = write_leaderboards([tmp_path / "runs2"], tmp_path / "b")
    for x, y in zip(first.files, second.files, strict=True):
        assert x.read_bytes() == y.read_bytes()
    md = (tmp_path / "a" / "leaderboard-phantom-quick-abc.md").read_text()
    # The ceiling is shown, not ranked: the weakly supervised rows are ranked first.
    assert row_of(md, "cam")[:7] == ["1", "cam", "weak", "2", "0.030", "0.014", "[0.020, 0.040]"]
    assert row_of(md, "unet")[:5] == ["", "unet", "full", "1", "0.400"]
    assert row_of(md, "chance level")[:5] == ["", "chance level", "reference", "n/a", "0.011"]
    csv_text = (tmp_path / "a" / "leaderboard-phantom-quick-abc.csv").read_text()
    assert csv_text.splitlines()[0].startswith("rank,method,supervision,seeds,benign Dice")
    tex = (tmp_path / "a" / "leaderboard-phantom-quick-abc.tex").read_text()
    assert "\\begin{tabular}" in tex and "\\toprule" in tex and "chance level" in tex


def test_bad_inputs_are_clear_errors(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["leaderboard", str(tmp_path / "nope"), "--out", str(tmp_path / "lb")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "record.json").write_text("{not json")
    broken = runner.invoke(app, ["leaderboard", str(tmp_path / "r"), "--out", str(tmp_path / "lb")])
    assert broken.exit_code == 2 and "cannot read run record" in broken.output
    _write(tmp_path / "ok", [_record("cam", 0, (0.1, 0.1))])
    bad_format = runner.invoke(app, ["leaderboard", str(tmp_path / "ok"), "--format", "pdf"])
    assert bad_format.exit_code == 2 and "unknown leaderboard format 'pdf'" in bad_format.output


def test_a_real_tiny_run_makes_a_leaderboard(tmp_path: Path, cache_dir: Path) -> None:
    args = ["run", "-m", "cam", "--profile", "tiny", "--out", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)]
    assert runner.invoke(app, [*args, "-q"]).exit_code == 0
    result = runner.invoke(app, ["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "lb")])
    assert result.exit_code == 0, result.output
    (md,) = (tmp_path / "lb").glob("*[0-9a-f].md")
    text = md.read_text()
    assert row_of(text, "cam")[:4] == ["1", "cam", "weak", "1"] and "test-resnet" not in text
    record = json.loads(next((tmp_path / "runs").glob("*/record.json")).read_text())
    assert record["n_parameters"] > 0 and f"{record['n_parameters'] / 1e6:.2f}M" in text


def _fold_record(method: str, seed: int, fold: int, dice: float, k: int = 3) -> dict[str, Any]:
    record = _record(method, seed, (dice, dice), run_id=f"{method}-s{seed}-fold{fold}of{k}")
    record["dataset_info"] = {
        "version": "phantom-1.0",
        "split_hashes": {"test": f"fold{fold}"},  # each fold tests other patients
        "folds": {"k": k, "fold": fold, "assignment": "xyz"},
    }
    record["references"] = {"uniform_breast": {c: {"dice": 0.01 * (fold + 1)} for c in ("benign", "malignant")}}
    return record


def test_folds_aggregate_into_one_row_and_never_share_a_table_with_a_single_split(tmp_path: Path) -> None:
    folded = [_fold_record("cam", s, f, 0.1 * (f + 1) + 0.2 * s) for s in (0, 1) for f in range(3)]
    single = _record("cam", 0, (0.5, 0.5))
    assert describe_difference(comparability_key(folded[0]), comparability_key(single)) == (
        "test split ('3-fold xyz' vs 'abc')"
    )
    (row, ref) = build_rows(folded)
    assert row.seeds == [0, 1] and row.folds == [0, 1, 2, 0, 1, 2]
    # Each fold averaged over the seeds (0.2, 0.3, 0.4), then the mean and sd over the folds.
    assert row.per_fold(row.dice["benign"]) == pytest.approx([0.2, 0.3, 0.4])
    assert row.score() == pytest.approx(0.3)
    assert ref.per_fold(ref.dice["benign"]) == pytest.approx([0.01, 0.02, 0.03])  # one reference value per fold
    with pytest.raises(ValueError, match="two runs of cam with seed 0 and fold 1"):
        build_rows([*folded, {**folded[1], "run_id": "again"}])
    _write(tmp_path / "runs", [*folded, single])
    result = write_leaderboards([tmp_path / "runs"], tmp_path / "lb", ["md"])
    assert sorted(p.name for p in result.files) == [
        "leaderboard-phantom-quick-3fold-xyz-lesions.md",
        "leaderboard-phantom-quick-3fold-xyz.md",
        "leaderboard-phantom-quick-abc-lesions.md",
        "leaderboard-phantom-quick-abc.md",
    ]
    md = (tmp_path / "lb" / "leaderboard-phantom-quick-3fold-xyz.md").read_text()
    assert "3-fold cross-validation by patient (assignment xyz): 6 runs" in md
    # Without the folds' per-image statistics there is no pooled interval: n/a, never a guess.
    assert header_of(md)[:5] == ["rank", "method", "supervision", "seeds", "folds"]
    assert row_of(md, "cam")[:8] == ["1", "cam", "weak", "2", "3/3", "0.300", "0.100", "n/a"]
    # The chance level of each fold, averaged over the folds.
    assert row_of(md, "chance level")[:7] == ["", "chance level", "reference", "n/a", "3/3", "0.020", "0.010"]
    assert "k-fold cross-validation by patient" in md
    plain = (tmp_path / "lb" / "leaderboard-phantom-quick-abc.md").read_text()
    assert "folds" not in header_of(plain) and row_of(plain, "cam")[:5] == ["1", "cam", "weak", "1", "0.500"]


# A cross-validation built by hand: 3 folds of unequal size (4, 3 and 5 patients of two images each), so that the
# mean over folds and the mean over the union of the test folds differ.
FOLD_PATIENTS = (
    [f"p{i:02d}" for i in range(4)],
    [f"p{i:02d}" for i in range(4, 7)],
    [f"p{i:02d}" for i in range(7, 12)],
)


def _fold_images(fold: int) -> list[tuple[str, str]]:
    return [(f"{p}-v{v}", p) for p in FOLD_PATIENTS[fold] for v in range(2)]


def _fold_run(root: Path, method: str, seed: int, fold: int, dice: dict[str, float]) -> None:
    """A run of one fold: record, per_image.csv (benign lesions on every image) and curves.json (lesion points)."""
    folder = root / f"{method}-s{seed}-fold{fold}of3"
    folder.mkdir(parents=True)
    images = _fold_images(fold)
    lines = ["image_id,patient_id,class,lesion_pixels,region_pixels,dice"]
    for image_id, patient in images:
        lines.append(f"{image_id},{patient},benign,50,5000,{dice[image_id]!r}")
        lines.append(f"{image_id},{patient},malignant,0,5000,nan")
    (folder / "per_image.csv").write_text("\n".join(lines) + "\n")
    values = [dice[i] for i, _ in images]
    diameters = [3.0 if int(i[-1]) == 0 else 12.0 for i, _ in images]  # view 0: <5 mm, view 1: 10-20 mm
    points = {
        "area_mm2": [math.pi * (d / 2) ** 2 for d in diameters],
        "dice": values,
        "diameter_mm": diameters,
        "type": ["mass"] * len(images),
        "hit_10mm": [1.0] * len(images),
        "chance_dice": [2 * 50 / 5050] * len(images),
        "chance_hit_10mm": [0.04] * len(images),
    }
    empty = {key: [] for key in points}
    # curves.json is read checked: every class has its (here empty) PR and FROC curves beside the lesion points.
    curves = {"pr": {"threshold": [], "recall": [], "precision": []}, "froc": {"fppi": [], "sensitivity": []}}
    (folder / "curves.json").write_text(
        json.dumps({"benign": {**curves, "lesion_size": points}, "malignant": {**curves, "lesion_size": empty}})
    )
    record = _record(method, seed, (sum(values) / len(values), math.nan), run_id=folder.name)
    record["dataset_info"] = {
        "version": "phantom-1.0",
        "split_hashes": {"test": f"fold{fold}"},
        "counts": {"train": 100 + fold},  # each fold trains on other patients
        "folds": {"k": 3, "fold": fold, "assignment": "xyz"},
    }
    record["training"] = {"history": [{"epoch": e} for e in range(8)]}
    record["per_image"] = {"csv": "per_image.csv"}
    record["references"] = {"chance": {"benign": {"dice": 0.01 * (fold + 1)}}}
    (folder / "record.json").write_text(json.dumps(record))


def test_a_cross_validation_has_rank_groups_and_a_lesion_table_over_the_union_of_its_test_folds(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(5)
    union = [i for f in range(3) for i, _ in _fold_images(f)]
    patients = [p for f in range(3) for _, p in _fold_images(f)]
    base = dict(zip(union, rng.uniform(0.3, 0.6, len(union)), strict=True))
    dice = {
        (m, s): {i: float(base[i] + shift + rng.normal(0, 0.05)) for i in union}
        for m, shift in (("cam", 0.0), ("gmic", 0.1))
        for s in (0, 1)
    }
    runs = tmp_path / "runs"
    for (method, seed), values in dice.items():
        for fold in range(3):
            _fold_run(runs, method, seed, fold, values)
    result = write_leaderboards([runs], tmp_path / "lb", ["md"])
    stem = "leaderboard-phantom-quick-3fold-xyz"
    assert sorted(p.name for p in result.files) == [f"{stem}-lesions.md", f"{stem}.md"]
    md = (tmp_path / "lb" / f"{stem}.md").read_text()
    assert "3-fold cross-validation by patient (assignment xyz), training budget 8 x each fold's training" in md
    benign = "### benign"
    header, cam, gmic = header_of(md, benign), row_of(md, "cam", benign), row_of(md, "gmic", benign)
    assert gmic[:5] == ["1", "gmic", "weak", "2", "3/3"] and gmic[header.index("group")] == "best"
    # cam against gmic: each side's seeds averaged per image over the union of the folds, paired by image.
    mask = np.ones(len(union), dtype=bool)
    expected = paired_seed_bootstrap(
        [np.array([dice["cam", s][i] for i in union]) for s in (0, 1)],
        [np.array([dice["gmic", s][i] for i in union]) for s in (0, 1)],
        mask,
        patients,
    )
    pooled_diff = float(
        np.mean([(dice["cam", 0][i] + dice["cam", 1][i] - dice["gmic", 0][i] - dice["gmic", 1][i]) / 2 for i in union])
    )
    assert expected["diff"] == pytest.approx(pooled_diff)
    assert cam[header.index("diff vs best")] == f"{expected['diff']:+.3f}"
    assert cam[header.index("diff 95% CI")] == f"[{expected['low']:+.3f}, {expected['high']:+.3f}]"
    assert cam[header.index("group")] == ("below" if expected["high"] < 0 else "= best")
    # The Dice column is the mean over folds of each fold's seed mean, not the pooled mean.
    fold_means = [np.mean([np.mean([dice["cam", s][i] for i, _ in _fold_images(f)]) for s in (0, 1)]) for f in range(3)]
    assert cam[header.index("Dice")] == f"{np.mean(fold_means):.3f}"
    chance = row_of(md, "chance level", benign)
    assert chance[3:6] == ["n/a", "3/3", "0.020"] and chance[header.index("group")] == "below"
    assert row_of(md, "cam", "### training budget")[5] == "8 x 100-102"
    assert "Rank stability between seeds" in md and "mean 1.00" in md  # gmic above cam in both seeds
    # The lesion table bins the 24 images of the union: 12 in <5 mm, 12 in 10-20 mm, all masses.
    lesions = (tmp_path / "lb" / f"{stem}-lesions.md").read_text()
    lesion_header = header_of(lesions, benign)
    counts, cam_bins = row_of(lesions, "lesion images", benign), row_of(lesions, "cam", benign)
    assert lesion_header[4] == "folds" and cam_bins[4] == "3/3"
    col = {name: lesion_header.index(name) for name in ("<5 mm Dice", "10-20 mm Dice", "5-10 mm Dice", "mass Dice")}
    assert [counts[col[n]] for n in ("<5 mm Dice", "10-20 mm Dice", "5-10 mm Dice", "mass Dice")] == [
        "12",
        "12",
        "0",
        "24",
    ]
    small = [i for i in union if i.endswith("-v0")]
    assert cam_bins[col["<5 mm Dice"]] == f"{np.mean([dice['cam', s][i] for s in (0, 1) for i in small]):.3f}"
    assert row_of(lesions, "chance level", benign)[col["mass Dice"]] == f"{2 * 50 / 5050:.3f}"
    # A seed missing a fold makes no claim: no rank group, no seed ranking for that method.
    shutil.rmtree(runs / "cam-s1-fold2of3")
    write_leaderboards([runs], tmp_path / "lb2", ["md"])
    md2 = (tmp_path / "lb2" / f"{stem}.md").read_text()
    cam2 = row_of(md2, "cam", benign)
    assert cam2[4] == "3/3" and cam2[header.index("group")] == "n/a"
    assert "Rank stability between seeds (Kendall's tau): n/a" in md2
