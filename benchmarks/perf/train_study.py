"""One row of a training study: train and evaluate a method with some settings, append its figures to a JSONL log.

Runs ``wsseg run`` in this process (same code path as the command) and records what a training study compares:
validation AUROC per epoch, test AUROC, Dice (calibrated on validation) and the 10 mm pointing game per class, and
the wall and CPU time (user + system, all threads) of the whole run. CPU seconds / cores approximates the wall time
on an otherwise idle machine when other jobs share the cores.

    python benchmarks/perf/train_study.py --name base --method cam
    python benchmarks/perf/train_study.py --name lr3e-3 --method cam --set train.lr=3e-3
    python benchmarks/perf/train_study.py --name gradcampp --method gradcampp --from-run runs-study/cam-base
    python benchmarks/perf/train_study.py --table   # print the log as a Markdown table
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import threading
import time
from pathlib import Path
from typing import Any

import torch

from wsseg.config import make_run_config
from wsseg.core import CLASSES, Geometry
from wsseg.data.phantom import PhantomConfig
from wsseg.pipelines.run import run


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (every thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def row_of(name: str, record: dict[str, Any], overrides: list[str], wall_s: float, cpu_s: float) -> dict[str, Any]:
    """The figures of a finished run's record that the study compares."""
    m = record["metrics"]
    history = record["training"]["history"]
    return {
        "name": name,
        "method": record["method"],
        "seed": record["seed"],
        "set": overrides,
        "phantom": record["dataset_info"]["cache_key"],
        "best_epoch": record["training"]["best_epoch"],
        "val_auroc": [round(h["val_auroc"], 4) for h in history],
        **{f"auroc_{c}": m[c]["auroc"] for c in CLASSES},
        **{f"dice_{c}": m[c]["dice"] for c in CLASSES},
        **{f"dice_oracle_{c}": m[c]["dice_oracle"] for c in CLASSES},
        **{f"hit10_{c}": m[c]["pointing_game_10mm"] for c in CLASSES},
        "train_s": record["timings"]["train"],
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "threads": torch.get_num_threads(),
        "run_id": record["run_id"],
    }


def phantom_changes(items: list[str]) -> dict[str, Any]:
    """``field=value`` items as PhantomConfig changes: a number, or a range written ``lo,hi``."""
    changes: dict[str, Any] = {}
    for item in items:
        field, value = item.split("=", 1)
        numbers = tuple(float(v) for v in value.split(","))
        changes[field] = numbers if len(numbers) > 1 else numbers[0]
    return changes


def table(log: Path) -> str:
    """The log as a Markdown table (one row per run, in order)."""
    head = (
        "| name | method | setting | AUROC b / m | Dice b / m | hit@10mm b / m | best ep. | wall s | CPU s |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    lines = [head]
    for line in log.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        lines.append(
            f"| {r['name']} | {r['method']} | {' '.join(r['set']) or 'defaults'} "
            f"| {r['auroc_benign']:.3f} / {r['auroc_malignant']:.3f} "
            f"| {r['dice_benign']:.3f} / {r['dice_malignant']:.3f} "
            f"| {r['hit10_benign']:.3f} / {r['hit10_malignant']:.3f} | {r['best_epoch']} | {r['wall_s']:.0f} "
            f"| {r['cpu_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Run one configuration (or print the table) and append its row to the log."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", help="the row's name (also the run folder's suffix)")
    ap.add_argument("--method", default="cam")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="section.field=value (repeatable)")
    ap.add_argument("--from-run", default=None, help="reuse a finished run's classifier (post-hoc methods)")
    ap.add_argument("--out", type=Path, default=Path("runs-study"))
    ap.add_argument("--log", type=Path, default=Path("runs-study/study.jsonl"))
    ap.add_argument(
        "--phantom",
        action="append",
        default=[],
        help="field=value or field=lo,hi: a PhantomConfig change for this row (a study knob)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's, one per core)")
    ap.add_argument("--table", action="store_true", help="print the log as a Markdown table and exit")
    args = ap.parse_args()
    if args.threads is not None:
        # On a shared CPU, two OpenMP threads that spin-wait for each other burn CPU while the other is descheduled.
        torch.set_num_threads(args.threads)
    if args.table:
        print(table(args.log))
        return
    if not args.name:
        ap.error("--name is required")
    if args.phantom:
        # The phantom's settings are not run settings; a study row may still vary them (the cache key follows).
        # The phantom source builds its generator with PhantomConfig.for_geometry, so the change is made there.
        changes = phantom_changes(args.phantom)
        preset = PhantomConfig.for_geometry

        def changed(geometry: Geometry) -> PhantomConfig:
            return dataclasses.replace(preset(geometry), **changes)

        PhantomConfig.for_geometry = staticmethod(changed)  # type: ignore[method-assign]
    cfg = make_run_config(args.method, args.profile, args.seed, args.overrides)
    run_id = f"{args.method}-{args.name}-s{args.seed}"
    run_dir = args.out / run_id
    # A killed row resumes from its checkpoint; the time it had already spent is kept beside the run.
    resume = (run_dir / "last.pt").exists()
    spent_path = run_dir / "study_time.json"
    spent = json.loads(spent_path.read_text()) if resume and spent_path.exists() else {"wall_s": 0.0, "cpu_s": 0.0}
    wall0, cpu0 = time.perf_counter(), cpu_seconds()

    def elapsed() -> dict[str, float]:
        return {"wall_s": spent["wall_s"] + time.perf_counter() - wall0, "cpu_s": spent["cpu_s"] + cpu_seconds() - cpu0}

    stop = threading.Event()

    def keep_time() -> None:
        while not stop.wait(20.0):
            if run_dir.is_dir():
                spent_path.write_text(json.dumps(elapsed()))

    threading.Thread(target=keep_time, daemon=True).start()
    record = run(cfg, args.out, run_id=run_id, resume=resume, from_run=args.from_run, progress=False)
    stop.set()
    total = elapsed()
    row = row_of(args.name, record, args.overrides + [f"phantom.{p}" for p in args.phantom], **total)
    args.log.parent.mkdir(parents=True, exist_ok=True)
    with open(args.log, "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row))


if __name__ == "__main__":
    main()
