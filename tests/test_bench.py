"""`wsseg bench`: the reference mode and its speedup, torch.compile, and the loader's throughput (tiny, CPU)."""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.pipelines.bench import bench, bench_loader

runner = CliRunner()


def test_bench_measures_both_modes_in_one_run_and_prints_the_speedup(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    args = ["bench", "-m", "glam", "--profile", "tiny", "--phase", "inference", "--seconds", "0.05"]
    result = runner.invoke(app, [*args, "--mode", "wsseg,reference", "--batch", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(out.open()))
    assert [(r["method"], r["mode"], r["batch"]) for r in rows] == [("glam", "wsseg", "2"), ("glam", "reference", "2")]
    assert all(float(r["images_per_s"]) > 0 for r in rows)
    assert "speedup over the reference mode, glam inference fp32 batch 2: " in result.output


def test_reference_mode_of_a_method_without_crops_names_the_fix() -> None:
    args = ["bench", "-m", "cam", "--profile", "tiny", "--phase", "inference", "--mode", "reference"]
    result = runner.invoke(app, [*args, "--seconds", "0.05"])
    assert result.exit_code == 2 and "(gmic, glam)" in result.output and "use --mode wsseg" in result.output
    result = runner.invoke(app, ["bench", "-m", "gmic", "--mode", "fast"])
    assert result.exit_code == 2 and "unknown --mode ['fast']" in result.output


def test_compile_runs_the_method_through_torch_compile() -> None:
    # The eager backend traces with TorchDynamo without generating kernels: the real code path, in seconds on CPU.
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    row = bench("gmic", "tiny", 2, "fp32", "train", "cpu", seconds=0.0, warmup=1, compile=True, compile_backend="eager")
    assert row["mode"] == "wsseg+compile" and row["images_per_s"] > 0
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # graphs were captured
    torch._dynamo.reset()


def test_loader_reads_the_prepared_phantom_through_worker_processes(tmp_path: Path) -> None:
    row = bench_loader("tiny", batch=4, workers=2, images=8, device="cpu", seconds=0.2, cache_dir=tmp_path)
    assert (row["method"], row["phase"], row["mode"], row["batch"]) == ("loader", "load", "workers2", 4)
    assert row["images_per_s"] > 0
    raw = bench_loader("tiny", batch=4, workers=0, images=8, device="cpu", seconds=0.1, cache_dir=tmp_path, raw=True)
    assert raw["mode"] == "workers0+raw" and raw["images_per_s"] > 0
    args = ["bench", "--loader", "--profile", "tiny", "--workers", "0", "--images", "8", "--seconds", "0.1"]
    result = runner.invoke(app, [*args, "--cache-dir", str(tmp_path), "--augment", "--out", str(tmp_path / "l.csv")])
    assert result.exit_code == 0, result.output
    assert "loader tiny batch 8, 0 workers: " in result.output
    assert "loader tiny batch 8, 0 workers + window noise: " in result.output
    modes = [line.split(",")[4] for line in (tmp_path / "l.csv").read_text().splitlines()[1:]]
    assert modes == ["workers0", "workers0+window"]
    both = runner.invoke(app, [*args, "-m", "gmic"])
    assert both.exit_code == 2 and "or --loader (without --method)" in both.output


def test_kernel_tables_name_where_the_time_goes(tmp_path: Path) -> None:
    args = ["bench", "-m", "glam", "--profile", "tiny", "--phase", "train", "--seconds", "0.01"]
    result = runner.invoke(app, [*args, "--kernels", str(tmp_path / "k")])
    assert result.exit_code == 0, result.output
    table = (tmp_path / "k" / "glam-train-fp32-batch-1-wsseg.txt").read_text()
    assert table.startswith("2 steps, sorted by self_cpu_time_total")
    assert "aten::convolution_backward" in table  # the training step's backward pass was profiled
