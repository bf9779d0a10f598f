"""The `wsseg` command end to end on the tiny profile, and a real SIGKILL followed by --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsseg.cli import app

runner = CliRunner()
RECORD_KEYS = {"method", "dataset", "profile", "seed", "config", "versions", "timings", "metrics", "references"}
CLASS_KEYS = {"dice", "iou", "dice_at_0.5", "iou_at_0.5", "threshold", "auroc", "n_images"}


def test_run_end_to_end(tmp_path: Path, cache_dir: Path) -> None:
    args = ["run", "--method", "cam", "--profile", "tiny", "--out", str(tmp_path), "--cache-dir", str(cache_dir), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    for word in ("benign", "malignant", "Dice", "IoU", "AUROC", "uniform Dice"):
        assert word in result.output
    (record_path,) = tmp_path.glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert RECORD_KEYS <= set(record)
    assert record["method"] == "cam" and record["profile"] == "tiny" and record["dataset"] == "phantom"
    for name in ("benign", "malignant"):
        assert CLASS_KEYS <= set(record["metrics"][name])
        assert 0.0 <= record["metrics"][name]["threshold"] <= 1.0
    assert record["config"]["method_config"]["backbone"] == "test-resnet"
    assert record["versions"]["torch"] and record["timings"]["total"] > 0
    assert (record_path.parent / "best.pt").exists() and (record_path.parent / "last.pt").exists()


def test_list_methods_shows_cam() -> None:
    result = runner.invoke(app, ["list", "methods"])
    assert result.exit_code == 0
    assert "cam" in result.output and "built-in" in result.output and "weak" in result.output
    rows = {line.split()[0]: line.split()[1] for line in result.output.splitlines()[2:] if line.strip()}
    assert rows["cam"] == "weak" and rows["unet"] == "full"
    assert rows["uniform"] == rows["random"] == rows["intensity"] == "reference"  # floors and priors, not competitors


def test_unknown_method_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["run", "--method", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown method 'nope'" in result.output and "cam" in result.output


def test_resume_without_a_run_is_a_clear_error(tmp_path: Path, cache_dir: Path) -> None:
    args = [
        "run",
        "--method",
        "cam",
        "--profile",
        "tiny",
        "--out",
        str(tmp_path),
        "--cache-dir",
        str(cache_dir),
        "--resume",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "run without --resume" in result.output


def test_data_preview_writes_a_png(tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "preview.png"
    result = runner.invoke(app, ["data", "preview", "phantom", "--n", "4", "--profile", "tiny", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with Image.open(out) as im:
        assert im.width > 0 and im.height > 0


def test_sigkill_then_resume_continues_from_the_checkpoint(tmp_path: Path, cache_dir: Path) -> None:
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "wsseg", "run", "--method", "cam", "--profile", "tiny", "--out", str(out)]
    cmd += ["--cache-dir", str(cache_dir), "--epochs", "12", "--set", "train.checkpoint_every=1", "-q"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    seen = []
    try:
        # Kill once epoch 2 is reported: by then epoch 1's end-of-epoch checkpoint is on disk.
        for line in iter(proc.stdout.readline, b""):  # type: ignore[union-attr]
            seen.append(line.decode())
            if line.startswith(b"epoch 2/12"):
                break
        assert proc.poll() is None, "the run ended before it could be killed: " + "".join(seen)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    (run_dir,) = out.iterdir()
    assert not (run_dir / "record.json").exists()

    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming {run_dir}" in resumed.stdout
    # The first epoch is not trained again: the resumed process reports epochs 2.. only.
    assert "epoch 1/12" not in resumed.stdout and "epoch 12/12" in resumed.stdout
    record = json.loads((run_dir / "record.json").read_text())
    assert [h["epoch"] for h in record["training"]["history"]] == list(range(1, 13))


@pytest.mark.parametrize("flag", [["--profile", "huge"], ["--set", "train.epochs=x"], ["--device", "tpu"]])
def test_bad_flags_are_clear_errors(tmp_path: Path, flag: list[str]) -> None:
    result = runner.invoke(app, ["run", "--method", "cam", "--out", str(tmp_path), *flag])
    assert result.exit_code == 2 and "error:" in result.output


def test_gradcam_reuses_a_cam_run_without_training(tmp_path: Path, cache_dir: Path) -> None:
    common = ["--profile", "tiny", "--out", str(tmp_path), "--cache-dir", str(cache_dir), "-q"]
    assert runner.invoke(app, ["run", "--method", "cam", "--run-id", "cam-run", *common]).exit_code == 0
    result = runner.invoke(app, ["run", "--method", "gradcam", "--from-run", str(tmp_path / "cam-run"), *common])
    assert result.exit_code == 0, result.output
    assert "no training" in result.output and "epoch 1/" not in result.output
    (record_path,) = [p for p in tmp_path.glob("gradcam-*/record.json")]
    record = json.loads(record_path.read_text())
    assert record["training"]["from_run"] == str(tmp_path / "cam-run") and record["training"]["history"] == []
    assert record["method"] == "gradcam" and 0.0 <= record["metrics"]["benign"]["threshold"] <= 1.0


def test_from_run_refuses_another_backbone(tmp_path: Path, cache_dir: Path) -> None:
    common = ["--profile", "tiny", "--out", str(tmp_path), "--cache-dir", str(cache_dir), "-q"]
    assert (
        runner.invoke(app, ["run", "--method", "cam", "--run-id", "cam-run", "--epochs", "1", *common]).exit_code == 0
    )
    args = ["run", "--method", "gradcam", "--from-run", str(tmp_path / "cam-run"), "--set", "method.output_stride=32"]
    result = runner.invoke(app, [*args, *common])
    assert result.exit_code == 2 and "output_stride" in result.output


@pytest.mark.parametrize("method", ["gmic", "glam"])
def test_weights_in_the_official_layout_are_evaluated_without_training(
    tmp_path: Path, cache_dir: Path, method: str
) -> None:
    import torch

    from wsseg import create_method

    torch.manual_seed(0)
    source = create_method(method, profile="tiny")
    path = tmp_path / "official.ckpt"
    torch.save(source.official_state_dict(), path)
    out = tmp_path / "runs"
    args = ["run", "-m", method, "--profile", "tiny", "--out", str(out), "--cache-dir", str(cache_dir), "-q"]
    result = runner.invoke(app, [*args, "--weights", str(path)])
    assert result.exit_code == 0, result.output
    (record_path,) = out.glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["training"]["weights"] == str(path) and record["training"]["history"] == []
    assert not (record_path.parent / "last.pt").exists()  # nothing was trained
    best = torch.load(record_path.parent / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in best.items())

    torch.save({"not.a.key": torch.zeros(1)}, path)
    bad = runner.invoke(app, [*args, "--run-id", "bad", "--weights", str(path)])
    assert bad.exit_code == 2 and "unexpected keys: not.a.key" in bad.output


def test_bench_writes_the_csv_columns_and_refuses_unknown_fields(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    args = ["bench", "-m", "gmic", "--profile", "tiny", "--phase", "inference", "--seconds", "0.1"]
    result = runner.invoke(app, [*args, "--set", "method.num_crops=3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    header, row = out.read_text().splitlines()
    assert (
        header
        == "method,profile,precision,batch,mode,phase,images_per_s,peak_mem_gib,gflop_per_image,tflops,card,torch"
    )
    assert row.startswith("gmic,tiny,fp32,1,wsseg,inference,")
    bad = runner.invoke(app, [*args, "--set", "method.nope=3"])
    assert bad.exit_code == 2 and "method has no field 'nope'" in bad.output


def test_version_prints_the_installed_distribution_version() -> None:
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"wsseg {version('wsseg')}\n"


def test_importing_the_cli_leaves_torch_and_other_heavy_modules_unloaded() -> None:
    # `wsseg --help` and `--version` import only this module: torch, timm, pandas and matplotlib take seconds.
    heavy = ["torch", "timm", "torchvision", "pandas", "matplotlib", "scipy"]
    code = f"import sys, wsseg.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"
    # The public API is still there, imported on first use.
    code = "import sys, wsseg; m = wsseg.WSSegMethod; print('torch' in sys.modules, wsseg.create_method.__module__)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.split() == ["True", "wsseg.registry"]


def test_listing_methods_does_not_load_timm() -> None:
    # Registering a method imports its module (torch); timm and segmentation-models-pytorch wait for a build.
    code = "import sys; from wsseg.cli import main; sys.argv = ['wsseg', 'list', 'methods']\ntry:\n    main()\n"
    code += "except SystemExit:\n    pass\n"
    code += "print([m for m in ('timm', 'segmentation_models_pytorch') if m in sys.modules])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert "unet" in result.stdout and "gmic" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _run_with_stderr_on(terminal: bool, out: Path, cache_dir: Path, *flags: str) -> tuple[str, str]:
    """`wsseg run` (cam, tiny, 2 epochs) with stderr on a pseudo-terminal or a pipe; returns (stdout, stderr)."""
    cmd = [sys.executable, "-m", "wsseg", "run", "--method", "cam", "--profile", "tiny", "--out", str(out)]
    cmd += ["--cache-dir", str(cache_dir), "--set", "eval.bootstrap_resamples=0", *flags]
    if not terminal:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout, result.stderr
    import fcntl
    import pty
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # 40 rows, 120 columns
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    try:
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        stdout = proc.stdout.read().decode()  # type: ignore[union-attr]
        assert proc.wait(timeout=300) == 0, stdout + b"".join(chunks).decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return stdout, b"".join(chunks).decode(errors="replace")


def test_progress_bars_only_on_a_terminal(tmp_path: Path, cache_dir: Path) -> None:
    # stderr to a pipe (a log file, CI): no bar, no carriage returns; one summary line per epoch on stdout.
    stdout, stderr = _run_with_stderr_on(False, tmp_path / "pipe", cache_dir)
    assert "\r" not in stderr and "train cam" not in stderr and "batch/s" not in stderr
    epochs = [line.split(":")[0] for line in stdout.splitlines() if line.startswith("epoch ")]
    assert epochs == ["epoch 1/2", "epoch 2/2"]
    # stderr on a terminal: the training bar is drawn there, and the epoch lines are printed as well.
    stdout, stderr = _run_with_stderr_on(True, tmp_path / "tty", cache_dir)
    assert "train cam" in stderr and "\r" in stderr
    assert "epoch 1/2:" in stdout and "epoch 2/2:" in stdout
    # -q on a terminal: no bar, the epoch lines stay.
    stdout, stderr = _run_with_stderr_on(True, tmp_path / "quiet", cache_dir, "-q")
    assert "train cam" not in stderr and "epoch 2/2:" in stdout
