"""Crash safety: real `wsseg` processes killed with SIGKILL and resumed, and writes that fail (disk full, no
permission, a path in the way) reported in one line with earlier results intact.

The SIGKILL tests run the real command in a subprocess (its own session, so the whole process group dies, as
under a scheduler's kill), wait for a file that marks the moment to kill, kill it, run the same command with
``--resume`` and compare the outcome with an uninterrupted run of the same seed. A full disk cannot be made
without root tricks, so ENOSPC (and, since tests may run as root, EACCES) is injected in process at the one
place every write goes through: the fsync of :func:`wsseg._io.atomic_open`'s temporary file.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cli_helpers import invoke
from click.testing import Result

from wsseg.data.fixtures import MANIFEST_HEADER, phantom, save_mask, save_png16, write_csv
from wsseg.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
# Process groups (os.killpg) and the fault injection's /proc/self/fd are POSIX/Linux.
pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux (/proc/self/fd)")


def wsseg_env() -> dict[str, str]:
    """The test's environment, with this checkout first on the path so the subprocess runs the code under test."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    """``python -m wsseg ARGS`` in its own process group, output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "wsseg", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=wsseg_env(),
            start_new_session=True,
            # Ctrl-C as a terminal delivers it: a shell starts background jobs (pytest itself, in CI scripts) with
            # SIGINT ignored, which the child would inherit; Python installs its KeyboardInterrupt handler only over
            # the default disposition.
            preexec_fn=_default_sigint,
        )


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], log: Path, timeout: float = 120) -> None:
    """SIGKILL ``proc`` and its children as soon as ``ready()``; fail if it ends or times out first."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "the command ended before it could be killed:\n" + log.read_text()
            assert time.monotonic() < deadline, "timed out waiting for the kill point:\n" + log.read_text()
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def finish(args: list[str], log: Path) -> str:
    """Run ``python -m wsseg ARGS`` to the end; return its output."""
    proc = start(args, log)
    assert proc.wait(timeout=600) == 0, log.read_text()
    return log.read_text()


# ---------------------------------------------------------------------------------------------------------------
# SIGKILL, then --resume: the same result as an uninterrupted run.


def benchmark_file(folder: Path, cache: Path) -> Path:
    """CAM then Grad-CAM (which reuses CAM's classifier): tiny profile, one epoch of 4 steps, deterministic, a
    checkpoint after every step."""
    folder.mkdir()
    path = folder / "bench.toml"
    path.write_text(
        '[benchmark]\nname = "k"\nprofile = "tiny"\nmethods = ["cam", "gradcam"]\nseeds = [0]\ndevice = "cpu"\n'
        'out = "runs"\nleaderboard = "lb"\n'
        f'set = ["data.cache_dir={cache}", "train.deterministic=true", "train.epochs=1", "train.checkpoint_every=1", '
        '"eval.bootstrap_resamples=50"]\n'
    )
    return path


def outcome(run_dir: Path) -> dict[str, Any]:
    """What must not depend on interruptions: every metric, interval and threshold, the per-image table and the
    training history (all but the wall-clock seconds)."""
    r = json.loads((run_dir / "record.json").read_text())
    history = [{k: v for k, v in h.items() if k != "seconds"} for h in r["training"]["history"]]
    keep = ("metrics", "intervals", "thresholds", "references", "dataset_info", "config")
    return {
        **{k: json.dumps(r[k], sort_keys=True) for k in keep},  # JSON text: NaN compares equal to NaN
        "training": json.dumps([history, r["training"]["best_epoch"], r["training"]["best_val_auroc"]]),
        "per_image.csv": (run_dir / "per_image.csv").read_text(),
    }


def leaderboard_rows(path: Path) -> list[dict[str, str]]:
    """The leaderboard's rows without its wall-clock columns."""
    import csv

    with open(path, newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("train s", "eval img/s")} for row in csv.DictReader(f)]


def test_benchmark_killed_mid_epoch_and_between_runs_then_resumed_equals_an_uninterrupted_run(
    tmp_path: Path, tiny_root: Path
) -> None:
    cache = tiny_root.parent.parent  # the session's tiny phantom: no data is generated here
    clean = benchmark_file(tmp_path / "clean", cache)
    killed = benchmark_file(tmp_path / "killed", cache)
    baseline = start(["benchmark", str(clean), "-q"], tmp_path / "clean.log")  # runs beside the killed one
    runs = killed.parent / "runs"
    cam, gradcam = runs / "cam-phantom-tiny-s0", runs / "gradcam-phantom-tiny-s0"
    log = tmp_path / "killed.log"

    # 1. Killed in CAM's first epoch, right after its first mid-epoch checkpoint.
    kill_when(start(["benchmark", str(killed), "-q"], log), lambda: (cam / "last.pt").is_file(), log)
    assert not (cam / "record.json").exists()
    # 2. Resumed, then killed between the runs: CAM's record is written, Grad-CAM has not finished.
    kill_when(start(["benchmark", str(killed), "--resume", "-q"], log), lambda: (cam / "record.json").is_file(), log)
    assert not (gradcam / "record.json").exists()
    # 3. Resumed to the end: CAM is not run again, Grad-CAM reuses it.
    out = finish(["benchmark", str(killed), "--resume", "-q"], tmp_path / "final.log")
    assert "cam-phantom-tiny-s0: done, skipped" in out and "gradcam-phantom-tiny-s0: reusing" in out, out
    assert "cam-phantom-tiny-s0: resuming" in log.read_text()

    assert baseline.wait(timeout=600) == 0, (tmp_path / "clean.log").read_text()
    for name in (cam.name, gradcam.name):
        assert outcome(runs / name) == outcome(clean.parent / "runs" / name), name
    tables = sorted((killed.parent / "lb").glob("*.csv"))  # the main table and the lesion size/type table
    assert len(tables) == 2
    for table in tables:
        assert leaderboard_rows(table) == leaderboard_rows(clean.parent / "lb" / table.name)
    assert not list(runs.rglob("*.tmp"))  # what the kills cut short was cleaned up


def manifest_download(dl: Path, n: int = 16, h: int = 736, w: int = 480) -> None:
    """``n`` mammogram-sized images (one PNG per side, copied), each with a mask; 8 patients, no split column."""
    sides = {}
    for lat in ("L", "R"):
        ph = phantom(chest_wall_right=lat == "R", lesion_rc=(h // 2, w // 4), radius=h // 16, h=h, w=w)
        save_png16(dl / f"{lat}.png", ph.image)
        save_mask(dl / f"{lat}_mask.png", ph.lesion)
        sides[lat] = (dl / f"{lat}.png").read_bytes(), (dl / f"{lat}_mask.png").read_bytes()
    rows = []
    for i in range(n):
        lat, cls = ("L", "benign") if i % 2 == 0 else ("R", "malignant")
        (dl / "images").mkdir(exist_ok=True)
        (dl / "masks").mkdir(exist_ok=True)
        (dl / f"images/{i:02d}.png").write_bytes(sides[lat][0])
        (dl / f"masks/{i:02d}.png").write_bytes(sides[lat][1])
        rows.append(
            {
                "image": f"images/{i:02d}.png",
                "image_id": f"im{i:02d}",
                "patient_id": f"P{i // 2}",
                "laterality": lat,
                "view": "CC",
                "benign": int(cls == "benign"),
                "malignant": int(cls == "malignant"),
                f"{cls}_mask": f"masks/{i:02d}.png",
            }
        )
    write_csv(dl / "manifest.csv", MANIFEST_HEADER, rows)


def cache_contents(cache: Path) -> dict[str, Any]:
    """Everything a prepared cache holds, by relative path (arrays by value: .npz zips carry timestamps)."""
    (folder,) = [p.parent for p in cache.rglob("manifest.csv")]
    out: dict[str, Any] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.suffix == ".npz":
            with np.load(p) as z:
                out[rel] = {k: z[k].tobytes() + str(z[k].dtype).encode() for k in z.files}
        elif p.name == "report.json":
            out[rel] = {k: v for k, v in json.loads(p.read_text()).items() if k != "cache"}
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def test_data_prepare_killed_midway_then_resumed_equals_an_uninterrupted_prepare(tmp_path: Path) -> None:
    from wsseg.data.prepare import prepare_source

    dl = tmp_path / "dl"
    manifest_download(dl)
    prepare_source("manifest", dl, (184, 120), cache_dir=tmp_path / "clean", workers=1, progress=False)
    expected = cache_contents(tmp_path / "clean")

    cache, log = tmp_path / "killed", tmp_path / "prepare.log"
    args = ["data", "prepare", "manifest", "--root", str(dl), "--profile", "tiny", "--cache-dir", str(cache)]
    kill_when(start([*args, "--workers", "2"], log), lambda: len(list(cache.rglob("*.npz"))) >= 2, log)
    cached = sorted(cache.rglob("*.npz"))
    assert 2 <= len(cached) < 16 and not list(cache.rglob("manifest.csv")), log.read_text()
    # A cached file damaged after the kill (a bad disk, a careless copy) must not be trusted, and a temporary
    # file of a write the kill cut short must not survive.
    cached[0].write_bytes(cached[0].read_bytes()[:300])
    (cached[0].parent / f".{cached[1].name}.x1y2.tmp").write_bytes(b"half a write")
    kept = {p: p.stat().st_mtime_ns for p in cached[1:]}

    out = finish([*args, "--resume"], tmp_path / "resume.log")
    assert "16 usable images" in out, out
    assert cache_contents(cache) == expected
    assert {p: p.stat().st_mtime_ns for p in cached[1:]} == kept  # intact images were reused, not redone
    assert not list(cache.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------------------------
# A write that fails: one line naming the path and the fix, no traceback, earlier files intact.


@contextmanager
def failing_writes(monkeypatch: pytest.MonkeyPatch, name: str, code: int, after: int = 0) -> Iterator[list[str]]:
    """Make atomic writes of files whose name ends with ``name`` fail with ``code``, after ``after`` successes.

    The failure is raised by the fsync of the temporary file, where a full disk reports a delayed allocation;
    yields the list of temporary files that failed.
    """
    real_fsync = os.fsync
    failed: list[str] = []
    seen = [0]

    def fsync(fd: int) -> None:
        target = os.readlink(f"/proc/self/fd/{fd}")
        base = Path(target).name
        if base.startswith(".") and base.endswith(".tmp") and base[1:].rsplit(".", 2)[0].endswith(name):
            seen[0] += 1
            if seen[0] > after:
                failed.append(target)
                raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    yield failed
    monkeypatch.undo()


def error_line(result: Result) -> str:
    """The one ``error:`` line of a failed command (exit code 2)."""
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, result.output
    return lines[0]


def test_run_and_leaderboard_write_failures_keep_the_earlier_files(
    tmp_path: Path, tiny_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tiny_root.parent.parent
    run_dir = tmp_path / "r"
    args = ["run", "-m", "cam", "--profile", "tiny", "--epochs", "1", "--out", str(tmp_path), "--run-id", "r"]
    args += ["--cache-dir", str(cache), "--set", "eval.bootstrap_resamples=0", "-q"]

    # The disk fills up at the end-of-epoch checkpoint: the mid-epoch one (step 2 of 4) stays usable.
    with failing_writes(monkeypatch, "last.pt", errno.ENOSPC, after=1) as failed:
        line = error_line(invoke(args))
    assert failed and f"cannot write {run_dir / 'last.pt'}: No space left on device" in line
    assert "the disk is full" in line and "earlier files are intact" in line
    assert load_checkpoint(run_dir / "last.pt")["step"] == 2 and not list(run_dir.glob(".*.tmp"))

    # Resumed, it trains steps 3-4, but the record cannot be written (no permission): the checkpoints stay.
    with failing_writes(monkeypatch, "record.json", errno.EACCES):
        line = error_line(invoke([*args, "--resume"]))
    assert f"cannot write {run_dir / 'record.json'}: Permission denied" in line and "make the folder writable" in line
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 1 and not (run_dir / "record.json").exists()

    # Fixed, the record is written from the last checkpoint without training again.
    done = invoke([*args, "--resume"])
    assert done.exit_code == 0 and "epoch 1/1" not in done.output, done.output

    # The leaderboard: a failed write keeps the previous table; a file in the way of the folder is named.
    board = tmp_path / "board"
    assert invoke(["leaderboard", str(run_dir), "--out", str(board)]).exit_code == 0
    (table,) = (p for p in board.glob("*.md") if not p.stem.endswith("-lesions"))
    (table).write_text("the previous table\n")
    with failing_writes(monkeypatch, ".md", errno.ENOSPC):
        line = error_line(invoke(["leaderboard", str(run_dir), "--out", str(board)]))
    assert f"cannot write {table}: No space left on device" in line
    assert table.read_text() == "the previous table\n"
    # Real errors, no injection: a file in the way of the output folder, a folder in the way of a table.
    (tmp_path / "file").write_text("")
    line = error_line(invoke(["leaderboard", str(run_dir), "--out", str(tmp_path / "file" / "board")]))
    assert str(tmp_path / "file") in line and "a file is in the way" in line
    csv_table = table.with_suffix(".csv")
    csv_table.unlink()
    csv_table.mkdir()
    line = error_line(invoke(["leaderboard", str(run_dir), "--out", str(board)]))
    assert f"cannot write {csv_table}: Is a directory (a folder is in the way" in line
    assert not list(board.glob(".*.tmp"))


def test_prepare_write_failure_stops_with_the_path_and_the_rerun_reuses_what_was_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dl, cache = tmp_path / "dl", tmp_path / "cache"
    manifest_download(dl, n=8, h=128, w=96)
    args = ["data", "prepare", "manifest", "--root", str(dl), "--profile", "tiny", "--cache-dir", str(cache)]
    with failing_writes(monkeypatch, ".npz", errno.ENOSPC, after=3) as failed:
        line = error_line(invoke([*args, "--workers", "1"]))
    assert failed and ".npz: No space left on device (the disk is full" in line and str(cache) in line
    written = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npz")}
    assert len(written) == 3 and not list(cache.rglob("manifest.csv")) and not list(cache.rglob("*.tmp"))
    # Not counted as bad images: once space is free, the same command finishes and keeps the 3 files.
    result = invoke([*args, "--workers", "1"])
    assert result.exit_code == 0 and "8 usable images" in result.output and "skipped" not in result.output
    assert {p: p.stat().st_mtime_ns for p in written} == written
    # report.json is written before manifest.csv, which marks a complete cache: a failure there leaves none.
    (manifest,) = cache.rglob("manifest.csv")
    manifest.unlink()
    report = (manifest.parent / "report.json").read_bytes()
    with failing_writes(monkeypatch, "report.json", errno.EROFS):
        line = error_line(invoke([*args, "--workers", "1"]))
    assert "report.json: Read-only file system (the filesystem is read-only" in line
    assert not manifest.exists() and (manifest.parent / "report.json").read_bytes() == report


# ---------------------------------------------------------------------------------------------------------------
# Run folders: one safe name, never overwritten, one process at a time.


@pytest.mark.parametrize("run_id", ["../victim", "/abs", "a/b", "", ".", "..", ".hidden", "a" * 129, "a b", "x\\y"])
def test_a_run_id_is_one_safe_folder_name(run_id: str, tmp_path: Path, tiny_root: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "config.json").write_text("precious")
    (victim / ".notes.txt.abc123.tmp").write_text("also precious")
    args = ["run", "-m", "uniform", "--profile", "tiny", "--out", str(tmp_path / "out"), "--run-id", run_id]
    line = error_line(invoke([*args, "--cache-dir", str(tiny_root.parent.parent), "-q"]))
    assert f"--run-id {run_id!r} is not a valid run folder name" in line and "letters, digits" in line
    assert sorted(p.name for p in victim.iterdir()) == [".notes.txt.abc123.tmp", "config.json"]
    assert (victim / "config.json").read_text() == "precious" and not (tmp_path / "out").exists()


def test_stale_temporaries_are_removed_only_for_the_files_the_run_names(tmp_path: Path) -> None:
    from wsseg._io import remove_stale_temporaries
    from wsseg.pipelines.run import RUN_FILES

    run = tmp_path / "run"
    mine = [run / ".last.pt.k2j4x9zz.tmp", run / ".record.json.x1y2.tmp", run / "maps" / ".im01_benign.npy.ab_1.tmp"]
    foreign = [run / ".notes.txt.abc123.tmp", run / "sub" / ".last.pt.abc123.tmp", run / "last.pt.tmp", run / "x.tmp"]
    for path in mine + foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
    assert remove_stale_temporaries(run, RUN_FILES) == 2
    assert remove_stale_temporaries(run / "maps", suffixes=["_benign.npy"]) == 1
    assert not any(p.exists() for p in mine) and all(p.exists() for p in foreign)


def test_a_folder_that_holds_a_run_is_not_overwritten(tmp_path: Path, tiny_root: Path) -> None:
    """Reference methods (and --from-run, --weights) write no last.pt: the folder itself is what is guarded."""

    def args(run_id: str) -> list[str]:
        return ["run", "-m", "uniform", "--profile", "tiny", "--out", str(tmp_path), "--run-id", run_id, "-q"] + [
            "--cache-dir",
            str(tiny_root.parent.parent),
            "--set",
            "eval.bootstrap_resamples=0",
        ]

    run = tmp_path / "u"
    assert invoke(args("u")).exit_code == 0

    def contents() -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".wsseg.lock"}

    files = contents()
    line = error_line(invoke(args("u")))
    assert f"{run} already holds a finished run" in line and "record.json" in line and "another --run-id" in line
    assert contents() == files
    assert "found no checkpoint" in error_line(invoke([*args("u"), "--resume"]))  # nothing to resume either
    # Interrupted before its record (best.pt only): still refused, with what to do.
    for name in files:
        if name not in ("config.json", "best.pt"):
            (run / name).unlink()
    line = error_line(invoke(args("u")))
    assert "files of another run (best.pt, config.json)" in line and f"delete {run} to run it again" in line
    # Somebody else's folder: refused too.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("")
    assert "already holds files (thesis.tex)" in error_line(invoke(args("mine")))
    # A run stopped before it computed anything (only its config.json): started again in place.
    (run / "best.pt").unlink()
    (run / ".config.json.zz99.tmp").write_text("half a write")
    assert invoke(args("u")).exit_code == 0 and (run / "record.json").is_file()
    assert not (run / ".config.json.zz99.tmp").exists()


def wait_for(ready: Callable[[], bool], proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    """Poll ``ready()`` while ``proc`` runs; fail if it ends or times out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the command ended too early:\n" + log.read_text()
        assert time.monotonic() < deadline, "timed out:\n" + log.read_text()
        time.sleep(0.01)


def holds_lock(folder: Path) -> bool:
    """The holder has written its name into the folder's lock file (it holds the lock from then on)."""
    lock = folder / ".wsseg.lock"
    return lock.is_file() and lock.stat().st_size > 0


def test_a_second_run_on_a_locked_folder_fails_at_once_and_a_killed_holder_never_blocks_resume(
    tmp_path: Path, tiny_root: Path
) -> None:
    run = tmp_path / "runs" / "r"
    # Many epochs: the holder is still training when the second process starts (both are killed before the end).
    args = ["run", "-m", "cam", "--profile", "tiny", "--epochs", "200", "--out", str(tmp_path / "runs")]
    args += ["--run-id", "r", "--cache-dir", str(tiny_root.parent.parent), "--set", "train.checkpoint_every=1", "-q"]
    first = start(args, tmp_path / "first.log")
    try:
        wait_for(lambda: holds_lock(run) and (run / "last.pt").is_file(), first, tmp_path / "first.log")
        config = (run / "config.json").read_bytes()
        for extra in ([], ["--resume"]):
            second = subprocess.run(
                [sys.executable, "-m", "wsseg", *args, *extra],
                capture_output=True,
                text=True,
                env=wsseg_env(),
                timeout=300,
            )
            assert second.returncode == 2, second.stdout + second.stderr
            assert f"error: {run} is in use by another wsseg run: pid {first.pid} on " in second.stderr, second.stderr
            assert "--resume" in second.stderr and "Traceback" not in second.stderr
            assert first.poll() is None  # the holder was running all along
        assert (run / "config.json").read_bytes() == config  # the second process wrote nothing
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    # The OS released the lock with the killed process (its lock file stays): --resume takes it and trains on.
    assert holds_lock(run)
    step = load_checkpoint(run / "last.pt")["step"]
    resumed = start([*args, "--resume"], tmp_path / "resume.log")
    try:
        wait_for(
            lambda: (
                json.loads((run / ".wsseg.lock").read_text() or "{}").get("pid") == resumed.pid
                and load_checkpoint(run / "last.pt")["step"] > step
            ),
            resumed,
            tmp_path / "resume.log",
        )
    finally:
        os.killpg(resumed.pid, signal.SIGKILL)
        resumed.wait(timeout=30)


def test_a_second_benchmark_on_the_same_runs_folder_fails_at_once(tmp_path: Path, tiny_root: Path) -> None:
    path = benchmark_file(tmp_path / "b", tiny_root.parent.parent)
    path.write_text(path.read_text().replace('"train.epochs=1"', '"train.epochs=200"'))  # killed long before the end
    runs = path.parent / "runs"
    first = start(["benchmark", str(path), "-q"], tmp_path / "first.log")
    try:
        wait_for(lambda: holds_lock(runs), first, tmp_path / "first.log")
        second = subprocess.run(
            [sys.executable, "-m", "wsseg", "benchmark", str(path), "-q"],
            capture_output=True,
            text=True,
            env=wsseg_env(),
            timeout=300,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert f"error: {runs} is in use by another wsseg benchmark: pid {first.pid}" in second.stderr, second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)


def test_a_second_prepare_of_the_same_cache_waits_for_the_first(tmp_path: Path) -> None:
    from wsseg._lock import folder_lock
    from wsseg.data.prepare import source_cache_dir

    dl, cache = tmp_path / "dl", tmp_path / "cache"
    manifest_download(dl, n=8, h=128, w=96)
    args = ["data", "prepare", "manifest", "--root", str(dl), "--profile", "tiny", "--cache-dir", str(cache)]
    target = source_cache_dir("manifest", dl, (184, 120), 0, cache)
    log = tmp_path / "prepare.log"
    # This test process plays the first prepare: it holds the cache's lock while the real command starts.
    with folder_lock(target, "wsseg data prepare", "", lock_file=target.with_name(f".{target.name}.lock")):
        proc = start([*args, "--workers", "1"], log)
        wait_for(lambda: "waiting for" in log.read_text(), proc, log)
        time.sleep(1)
        assert proc.poll() is None and not list(cache.rglob("*.npz"))  # blocked, nothing written
    assert proc.wait(timeout=600) == 0, log.read_text()
    text = log.read_text()
    assert f"waiting for {target}: in use by another wsseg data prepare, pid {os.getpid()} on " in text, text
    assert "8 usable images" in text and len(list(cache.rglob("*.npz"))) == 8 and not list(cache.rglob("*.tmp"))


# ---------------------------------------------------------------------------------------------------------------
# Ctrl-C (SIGINT) and SIGTERM: what was saved, and the command that continues it.


def test_ctrl_c_says_what_was_saved_and_its_resume_command_finishes_the_same_run(
    tmp_path: Path, tiny_root: Path
) -> None:
    import re
    import shlex

    cache = tiny_root.parent.parent
    common = ["run", "-m", "cam", "--profile", "tiny", "--epochs", "1", "--cache-dir", str(cache), "-q"]
    common += ["--set", "train.deterministic=true", "--set", "train.checkpoint_every=1"]
    common += ["--set", "eval.bootstrap_resamples=50"]
    baseline = start([*common, "--out", str(tmp_path / "clean"), "--run-id", "c"], tmp_path / "clean.log")
    runs, log = tmp_path / "runs", tmp_path / "interrupted.log"
    proc = start([*common, "--out", str(runs)], log)  # no --run-id: the message must name the folder
    try:
        wait_for(lambda: any(runs.glob("*/last.pt")), proc, log)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert proc.wait(timeout=120) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    (run,) = runs.iterdir()
    saved = re.search(
        r"interrupted: the last checkpoint (\S+) holds (epoch 1 of 1, \d batches in|1 of 1 epochs done)", text
    )
    assert saved and saved.group(1) == str(run / "last.pt"), text
    assert "Traceback" not in text and "continue it with:" in text, text
    command = shlex.split(text.split("continue it with:")[1].strip().splitlines()[0])
    assert (
        command[:2] == ["wsseg", "run"] and command[-1] == "--resume" and f"--run-id {run.name}" in shlex.join(command)
    )
    # Temporaries: the run's own are removed by the resume, anybody else's are left alone.
    (run / ".last.pt.zz99.tmp").write_text("half a write")
    (run / ".notes.txt.zz99.tmp").write_text("not the run's")
    finish(command[1:], tmp_path / "resume.log")
    assert not (run / ".last.pt.zz99.tmp").exists() and (run / ".notes.txt.zz99.tmp").exists()
    assert baseline.wait(timeout=600) == 0, (tmp_path / "clean.log").read_text()
    assert outcome(run) == outcome(tmp_path / "clean" / "c")


def test_sigterm_stops_a_benchmark_with_its_resume_command(tmp_path: Path, tiny_root: Path) -> None:
    path = benchmark_file(tmp_path / "b", tiny_root.parent.parent)
    path.write_text(path.read_text().replace('["cam", "gradcam"]', '["cam"]'))
    cam, log = path.parent / "runs" / "cam-phantom-tiny-s0", tmp_path / "b.log"
    proc = start(["benchmark", str(path), "-q"], log)
    try:
        wait_for(lambda: (cam / "last.pt").is_file(), proc, log)
        os.killpg(proc.pid, signal.SIGTERM)  # a scheduler's stop
        assert proc.wait(timeout=120) == 130, log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    assert "interrupted: 0 of 1 runs are finished; cam-phantom-tiny-s0 was stopped: the last checkpoint" in text, text
    assert f"continue it with:\n  wsseg benchmark {path} -q --resume" in text and "Traceback" not in text
    out = finish(["benchmark", str(path), "-q", "--resume"], tmp_path / "resume.log")
    assert "cam-phantom-tiny-s0: resuming" in out and (cam / "record.json").is_file()


def test_what_an_interrupted_run_saved(tmp_path: Path) -> None:
    from wsseg.pipelines.run import describe_saved
    from wsseg.training.checkpoint import save_checkpoint

    assert describe_saved(tmp_path) == ("nothing was saved yet (no checkpoint)", False)
    save_checkpoint(tmp_path / "best.pt", {"model": {}})
    assert describe_saved(tmp_path)[1] is False and "no checkpoint to resume" in describe_saved(tmp_path)[0]
    state = {"model": {}, "epoch": 2, "micro": 3, "step": 11, "config": {"train": {"epochs": 5}}}
    save_checkpoint(tmp_path / "last.pt", state)
    assert describe_saved(tmp_path) == (
        f"the last checkpoint {tmp_path / 'last.pt'} holds epoch 3 of 5, 3 batches in (11 optimizer steps)",
        True,
    )
    save_checkpoint(tmp_path / "last.pt", {**state, "micro": 0})
    assert "holds 2 of 5 epochs done (11 optimizer steps)" in describe_saved(tmp_path)[0]


# ---------------------------------------------------------------------------------------------------------------
# A real full disk during torch.save: the file-size limit of a child process (no root, no special filesystem).


def test_a_checkpoint_that_does_not_fit_is_one_line_and_the_previous_one_stays(tmp_path: Path, tiny_root: Path) -> None:
    import resource

    run = tmp_path / "r"
    args = ["run", "-m", "cam", "--profile", "tiny", "--epochs", "2", "--out", str(tmp_path), "--run-id", "r", "-q"]
    args += ["--cache-dir", str(tiny_root.parent.parent), "--set", "train.checkpoint_every=1"]
    log = tmp_path / "first.log"
    kill_when(start(args, log), lambda: (run / "last.pt").is_file(), log)
    before = (run / "last.pt").read_bytes()
    limit = len(before) // 2  # config.json fits, the next checkpoint does not

    def small_disk() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "wsseg", *args, "--resume"],
        capture_output=True,
        text=True,
        env=wsseg_env(),
        preexec_fn=small_disk,
        timeout=600,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [
        f"error: cannot write {run / 'last.pt'}: File too large (the file is larger than this process may write "
        "(ulimit -f, or the filesystem's limit): raise the limit or write elsewhere; earlier files are intact)"
    ], proc.stderr
    assert "Traceback" not in proc.stderr
    assert (run / "last.pt").read_bytes() == before and not list(run.glob(".*.tmp"))
    assert load_checkpoint(run / "last.pt")["step"] >= 1
