"""Typed records (RunRecord, ScoreRecord), the recorded evaluation precision and its leaderboard marker."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch

from wsseg.method import TrainContext
from wsseg.pipelines.compare import comparability_notes
from wsseg.report.leaderboard import PRECISION_MARK, write_leaderboards
from wsseg.report.records import (
    SCHEMA_VERSION,
    RunRecord,
    ScoreRecord,
    evaluation_precision,
    read_record,
    read_record_json,
    record_from_json,
)

RUNS = Path(__file__).resolve().parents[2] / "results" / "phantom-quick" / "runs"
COMMITTED = sorted(RUNS.glob("*/record.json"))


def test_every_committed_record_reads_typed_and_writes_back_what_it_read() -> None:
    assert COMMITTED, f"no committed records under {RUNS}"
    for path in COMMITTED:
        original = read_record_json(path)
        typed = read_record(path)
        assert isinstance(typed, RunRecord), path
        written = typed.to_json()
        assert {k: written[k] for k in original} == original, path  # nothing read is lost or changed
        assert evaluation_precision(typed) == "fp32"  # schema 2: no field, read as fp32 (all were CPU runs)


def test_a_schema_1_record_reads_with_the_keys_it_lacks_empty() -> None:
    v2 = read_record_json(COMMITTED[0])
    v1 = {k: v for k, v in v2.items() if k not in ("record_type", "evaluation", "intervals", "per_image", "maps")}
    typed = record_from_json({**v1, "schema_version": 1})
    assert isinstance(typed, RunRecord) and typed.evaluation == {} and typed.maps is None
    assert evaluation_precision(typed) == "fp32"
    with pytest.raises(ValueError, match="lacks a key"):
        record_from_json({k: v for k, v in v1.items() if k != "metrics"})


def test_score_record_json_has_run_keys_only_for_evaluate() -> None:
    common = {
        "inputs": {},
        "dataset_info": None,
        "evaluation": {"precision": None},
        "thresholds": {},
        "metrics": {},
        "intervals": {},
        "per_image": {},
        "timings": {},
    }
    score = ScoreRecord(record_type="score", **common).to_json()  # type: ignore[arg-type]
    evaluate = ScoreRecord(record_type="evaluate", run_id="r", method="cam", **common).to_json()  # type: ignore[arg-type]
    assert "run_id" not in score and evaluate["run_id"] == "r" and evaluate["method"] == "cam"
    assert score["schema_version"] == SCHEMA_VERSION == 3 and score["n_skipped"] == 0
    assert evaluation_precision(score) is None  # maps made elsewhere: unknown
    back = record_from_json(evaluate)
    assert isinstance(back, ScoreRecord) and back.to_json() == evaluate


def _copy_runs(tmp_path: Path, names: list[str]) -> Path:
    runs = tmp_path / "runs"
    for name in names:
        shutil.copytree(RUNS / name, runs / name)
    return runs


def _set_precision(run: Path, precision: str) -> None:
    path = run / "record.json"
    record = json.loads(path.read_text())
    record["schema_version"] = 3
    record["evaluation"]["precision"] = precision
    path.write_text(json.dumps(record))


def test_leaderboard_marks_the_row_evaluated_in_another_precision(tmp_path: Path) -> None:
    names = ["cam-phantom-quick-s0", "cam-phantom-quick-s1", "gmic-phantom-quick-s0", "gmic-phantom-quick-s1"]
    runs = _copy_runs(tmp_path, names)
    plain = write_leaderboards([runs], tmp_path / "plain", ["md"])
    assert not any(PRECISION_MARK.strip() in p.read_text() for p in plain.files)
    for name in names[2:]:
        _set_precision(runs / name, "bf16")
    marked = write_leaderboards([runs], tmp_path / "marked", ["md", "csv"])
    assert len(marked.groups) == 1  # a precision difference marks rows; it does not split the table
    md = next(p for p in marked.files if p.name.endswith(".md") and "lesions" not in p.name).read_text()
    assert f"gmic{PRECISION_MARK}" in md and f"cam{PRECISION_MARK}" not in md
    assert "another precision than the other rows' (fp32): gmic in bf16" in md
    csv = next(p for p in marked.files if p.name.endswith(".csv") and "lesions" not in p.name).read_text()
    assert f"gmic{PRECISION_MARK}" in csv


def test_compare_names_a_precision_mismatch() -> None:
    a = read_record_json(COMMITTED[0])
    b = json.loads(json.dumps(a))
    assert comparability_notes(a, b) == []
    b["evaluation"]["precision"] = "bf16"
    (note,) = comparability_notes(a, b)
    assert "precision mismatch" in note and "fp32" in note and "bf16" in note


def test_train_context_item_access_still_works_with_a_deprecation_warning(tmp_path: Path) -> None:
    ctx = TrainContext(device=torch.device("cpu"), total_steps=10, epochs=2, run_dir=tmp_path)
    with pytest.warns(DeprecationWarning, match=r"ctx\.epochs"):
        assert ctx["epochs"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ctx.epochs == 2
    with pytest.raises(KeyError):
        ctx["lr"]
