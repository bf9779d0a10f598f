"""Leaderboards from run records: grouping of comparable runs, aggregation over seeds, byte-stable output."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from wsseg.cli import app
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
        }
        for c, d in zip(("benign", "malignant"), dice, strict=True)
    }
    record = {
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
    assert [r.method for r in rows] == ["gmic", "cam", "uniform (breast)"]
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
        "leaderboard-phantom-paper-abc.md",
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
    texts = sorted(t.read_text() for t in (tmp_path / "lb").glob("*.md"))
    assert len(texts) == 2
    marked = [t for t in texts if "initialised imagenet:resnet18.a1_in1k" in t]
    assert len(marked) == 1 and "| 1 | cam | weak | 1 | 0.400 |" in marked[0] and "gradcam" not in marked[0]
    plain = next(t for t in texts if t not in marked)
    assert "initialised" not in plain and "| gradcam |" in plain and "0.400" not in plain


def test_two_dataset_versions_on_one_test_split_never_share_a_table(tmp_path: Path) -> None:
    old = _record("cam", 0, (0.1, 0.1))
    new = _record("cam", 0, (0.3, 0.3), run_id="cam-new")
    new["dataset_info"] = {**new["dataset_info"], "version": "phantom-2.0"}
    _write(tmp_path / "runs", [old, new])
    result = runner.invoke(app, ["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "lb")])
    assert result.exit_code == 0, result.output
    assert "dataset version ('phantom-1.0' vs 'phantom-2.0')" in result.output
    tables = sorted((tmp_path / "lb").glob("*.md"))
    assert len(tables) == 2  # one per version, neither overwritten by the other
    texts = sorted(t.read_text() for t in tables)
    assert "(phantom-1.0)" in texts[0] and "| 1 | cam | weak | 1 | 0.100 |" in texts[0]
    assert "(phantom-2.0)" in texts[1] and "| 1 | cam | weak | 1 | 0.300 |" in texts[1]


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
    assert "| 1 | unet | full | 1 | 0.400 |" in md and "| 2 | cam | weak | 2 | 0.030 | 0.014 | [0.020, 0.040] |" in md
    assert "uniform (breast)" in md
    csv_text = (tmp_path / "a" / "leaderboard-phantom-quick-abc.csv").read_text()
    assert csv_text.splitlines()[0].startswith("rank,method,supervision,seeds,benign Dice")
    tex = (tmp_path / "a" / "leaderboard-phantom-quick-abc.tex").read_text()
    assert "\\begin{tabular}" in tex and "uniform (breast)" in tex


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
    (md,) = (tmp_path / "lb").glob("*.md")
    text = md.read_text()
    assert "| 1 | cam | weak | 1 |" in text and "test-resnet" not in text
    record = json.loads(next((tmp_path / "runs").glob("*/record.json")).read_text())
    assert record["n_parameters"] > 0 and f"{record['n_parameters'] / 1e6:.2f}M" in text
