"""`wsseg benchmark --launcher submitit`: the runs as jobs of submitit's local executor give the local records."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.data.fixtures import write_mias

runner = CliRunner()


def bench_file(tmp_path: Path, cache_dir: Path, body: str) -> Path:
    path = tmp_path / "b.toml"
    path.write_text(
        '[benchmark]\nname = "l"\nprofile = "tiny"\ndatasets = ["mini-mias"]\nseeds = [0]\n'
        f'set = ["data.cache_dir={cache_dir}", "train.epochs=1", "eval.bootstrap_resamples=50"]\n{body}'
        '\n[launcher]\ncluster = "local"\ncpus_per_task = 1\ntimeout_min = 20\n'
    )
    return path


def jobs(out: Path) -> dict[str, str]:
    data = json.loads((out / "submitit" / "wsseg-jobs.json").read_text())
    return {run: entry["job_id"] for run, entry in data.items()}


def test_submitit_jobs_give_the_records_of_local_runs(tmp_path: Path, cache_dir: Path) -> None:
    write_mias(tmp_path / "dl")
    path = bench_file(tmp_path, cache_dir, 'methods = ["cam", "gradcam", "uniform"]\nfolds = 2\n')
    common = [str(path), "--data-root", str(tmp_path / "dl"), "-q"]
    local = runner.invoke(
        app, ["benchmark", *common, "--out", str(tmp_path / "local"), "--leaderboard", str(tmp_path / "a")]
    )
    assert local.exit_code == 0, local.output
    sub = [*common, "--launcher", "submitit", "--out", str(tmp_path / "sub"), "--leaderboard", str(tmp_path / "b")]
    # --no-wait: the CAM and uniform runs go out as jobs; Grad-CAM waits for CAM (the local executor has no job
    # dependencies), and the command says how to finish.
    first = runner.invoke(app, ["benchmark", *sub, "--no-wait"])
    assert first.exit_code == 0, first.output
    assert first.output.count("submitted as job") == 4 and "2 post-hoc run(s) wait for their CAM jobs" in first.output
    assert "--launcher submitit` again" in first.output and not (tmp_path / "b").exists()
    submitted = jobs(tmp_path / "sub")
    assert sorted(submitted) == sorted(f"{m}-mini-mias-tiny-s0-fold{f}of2" for m in ("cam", "uniform") for f in (0, 1))
    # Running it again at once submits no second job for a run whose job is in flight (or done).
    again = runner.invoke(app, ["benchmark", *sub, "--no-wait"])
    assert again.exit_code == 0, again.output
    assert all(jobs(tmp_path / "sub")[run] == job for run, job in submitted.items())
    # --wait: waits for the jobs in flight, runs what is left, then writes the leaderboard.
    last = runner.invoke(app, ["benchmark", *sub])
    assert last.exit_code == 0, last.output
    assert len(jobs(tmp_path / "sub")) == 6 and list((tmp_path / "b").glob("*.md"))
    for record_file in sorted((tmp_path / "local").glob("*/record.json")):
        a = json.loads(record_file.read_text())
        b = json.loads((tmp_path / "sub" / record_file.parent.name / "record.json").read_text())
        assert a["metrics"] == b["metrics"] and a["intervals"] == b["intervals"], record_file.parent.name
        assert a["thresholds"] == b["thresholds"] and a["training"]["best_epoch"] == b["training"]["best_epoch"]
        losses = [[e["train_loss"] for e in r["training"]["history"]] for r in (a, b)]
        assert losses[0] == losses[1]
    gradcam = json.loads((tmp_path / "sub" / "gradcam-mini-mias-tiny-s0-fold1of2" / "record.json").read_text())
    assert gradcam["training"]["from_run"] == str(tmp_path / "sub" / "cam-mini-mias-tiny-s0-fold1of2")


def test_a_failed_job_is_reported_with_its_logs(tmp_path: Path, cache_dir: Path) -> None:
    path = bench_file(tmp_path, cache_dir, 'methods = ["uniform"]\n')
    args = ["benchmark", str(path), "--data-root", str(tmp_path / "missing"), "--launcher", "submitit", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "1 run(s) have no record" in result.output and "uniform-mini-mias-tiny-s0: job" in result.output
    assert "does not exist" in result.output and "_0_log.err" in result.output
    assert not (tmp_path / "leaderboards").exists()


def test_without_submitit_the_launcher_says_how_to_install_it(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # what `import submitit` meets where it is not installed
    path = bench_file(tmp_path, cache_dir, 'methods = ["uniform"]\n')
    result = runner.invoke(app, ["benchmark", str(path), "--data-root", str(tmp_path), "--launcher", "submitit"])
    assert result.exit_code == 2 and "pip install 'wsseg[slurm]'" in result.output, result.output
    bad = runner.invoke(app, ["benchmark", str(path), "--data-root", str(tmp_path), "--launcher", "pbs"])
    assert bad.exit_code == 2 and "--launcher must be local or submitit" in bad.output
