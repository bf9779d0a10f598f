"""`wsseg benchmark --launcher submitit`: the runs as jobs of submitit's local executor give the local records."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
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


def test_submitit_jobs_give_the_records_of_local_runs(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bit-equal records need the same float summation order: one torch thread here and in the jobs' fresh processes
    # (earlier tests of this session may have left this process at another thread count).
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _jobs_equal_local_runs(tmp_path, cache_dir)
    finally:
        torch.set_num_threads(threads)


def _jobs_equal_local_runs(tmp_path: Path, cache_dir: Path) -> None:
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


FAKE_SBATCH = """#!/bin/sh
# Stands in for Slurm's sbatch: keeps the submission script, answers with the next job id.
n=$(( $(cat "$FAKE_SLURM/count" 2>/dev/null || echo 1000) + 1 ))
echo $n > "$FAKE_SLURM/count"
cp "$1" "$FAKE_SLURM/script-$n.sh"
echo "Submitted batch job $n"
"""
FAKE_SACCT = """#!/bin/sh
# Stands in for Slurm's sacct: tasks 0-3 of every array asked about are in the state written to $FAKE_SLURM/state.
echo "JobID|State|NodeList"
while [ $# -gt 0 ]; do
  if [ "$1" = "-j" ]; then for i in 0 1 2 3; do echo "$2_$i|$(cat "$FAKE_SLURM/state")|node1"; done; fi
  shift
done
"""


def test_slurm_jobs_ask_for_the_launcher_table_and_post_hoc_runs_depend_on_cam(
    tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slurm cannot run here: sbatch, sacct and srun are stand-ins that record what submitit asks of them."""
    fake = tmp_path / "slurm"
    (fake / "bin").mkdir(parents=True)
    for name, text in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("srun", "#!/bin/sh\n")):
        (fake / "bin" / name).write_text(text)
        (fake / "bin" / name).chmod(0o755)
    (fake / "state").write_text("PENDING\n")
    monkeypatch.setenv("FAKE_SLURM", str(fake))
    monkeypatch.setenv("PATH", f"{fake / 'bin'}:{os.environ['PATH']}")
    path = tmp_path / "b.toml"
    path.write_text(
        f'[benchmark]\nname = "s"\nprofile = "tiny"\nmethods = ["cam", "gradcam", "uniform"]\nseeds = [0, 1]\n'
        f'set = ["data.cache_dir={cache_dir}"]\n'
        '[launcher]\npartition = "gpu"\naccount = "lab"\nqos = "high"\nconstraint = "a100"\ngpus_per_node = 1\n'
        "cpus_per_task = 8\nmem_gb = 64\ntimeout_min = 90\nslurm_array_parallelism = 3\n"
    )
    cmd = ["benchmark", str(path), "--launcher", "submitit", "--no-wait", "--setup", "module load cuda"]
    first = runner.invoke(app, cmd)
    assert first.exit_code == 0, first.output
    assert "submitit executor: slurm" in first.output and first.output.count("submitted as job") == 6
    scripts = sorted(fake.glob("script-*.sh"))
    assert len(scripts) == 2  # one array of the trained runs, one of the post-hoc runs
    trained, posthoc = (s.read_text() for s in scripts)
    for line in (
        "--partition=gpu",
        "--account=lab",
        "--qos=high",
        "--constraint=a100",
        "--gpus-per-node=1",
        "--cpus-per-task=8",
        "--mem=64GB",
        "--time=90",
        "--array=0-3%3",  # cam and uniform of seeds 0 and 1, 3 at a time
        "module load cuda",
    ):
        assert line in trained, line
    assert "--dependency" not in trained and "--dependency=afterany:1001" in posthoc and "--array=0-1%" in posthoc
    # Pending jobs are never submitted twice; a job that failed is.
    again = runner.invoke(app, ["benchmark", str(path), "--launcher", "submitit", "--no-wait"])
    assert (
        again.exit_code == 0
        and again.output.count("still in flight; not submitted again") == 6
        and len(list(fake.glob("script-*"))) == 2
    )
    (fake / "state").write_text("FAILED\n")
    third = runner.invoke(app, ["benchmark", str(path), "--launcher", "submitit", "--no-wait"])
    assert third.exit_code == 0 and third.output.count("submitted as job") == 6, third.output


def test_a_benchmark_file_cannot_carry_shell_lines(tmp_path: Path) -> None:
    # A benchmark file is data: a [launcher] setup (shell lines run in every Slurm job) is refused with the fix.
    path = tmp_path / "b.toml"
    path.write_text(
        '[benchmark]\nname = "s"\nprofile = "tiny"\nmethods = ["cam"]\nseeds = [0]\n[launcher]\nsetup = ["id"]\n'
    )
    result = runner.invoke(app, ["benchmark", str(path), "--launcher", "submitit", "--no-wait"])
    assert result.exit_code == 2 and "--setup" in result.output and "b.toml" in result.output, result.output
    assert not (tmp_path / "runs").exists()
