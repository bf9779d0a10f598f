"""Dice per epoch of a training run: keep each epoch's weights while it trains, score them afterwards.

The training loop keeps only ``last.pt`` and ``best.pt``. ``--watch`` copies every epoch-end ``last.pt`` (``micro``
0) of a running run to ``ep<NN>.pt`` (model and history only) until the run folder holds a file named ``DONE``;
polling can miss an epoch when the next mid-epoch checkpoint follows within the poll interval. Scoring evaluates
chosen ``ep<NN>.pt`` with the run's own evaluator: thresholds calibrated on validation and frozen for test, plus
every ``--train-every``-th training image (memorising shows as training Dice far above validation's).

    python benchmarks/perf/checkpoint_dice.py runs-study/unet-e24-s0 --watch &
    python benchmarks/perf/train_study.py --name e24 --method unet --set train.epochs=24
    touch runs-study/unet-e24-s0/DONE
    python benchmarks/perf/checkpoint_dice.py runs-study/unet-e24-s0 --epochs 3,6,13,24 --log epochs.jsonl
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import torch

from wsseg.config import RunConfig
from wsseg.data.dataset import MammogramDataset
from wsseg.data.prepare import prepare_dataset
from wsseg.data.sources import PrepareOptions
from wsseg.evaluation.summary import summarize
from wsseg.pipelines.run import build_method, evaluate_split
from wsseg.training.checkpoint import load_checkpoint


def watch(run_dir: Path, poll_s: float) -> None:
    """Copy each epoch-end checkpoint of a running run to ``ep<NN>.pt`` until ``run_dir/DONE`` exists."""
    seen: set[int] = set()
    mtime = 0.0
    last = run_dir / "last.pt"
    while not (run_dir / "DONE").exists():
        if last.exists() and last.stat().st_mtime != mtime:
            mtime = last.stat().st_mtime
            try:
                ckpt = load_checkpoint(last)
            except (ValueError, FileNotFoundError):
                continue  # replaced while being read: the next poll sees the new file
            epoch = len(ckpt["history"])
            if ckpt["micro"] == 0 and epoch not in seen:
                seen.add(epoch)
                torch.save({"model": ckpt["model"], "history": ckpt["history"]}, run_dir / f"ep{epoch:02d}.pt")
                print(f"kept epoch {epoch}", flush=True)
        time.sleep(poll_s)


def score(run_dir: Path, epochs: list[int], train_every: int) -> list[dict[str, Any]]:
    """Validation, test and training-subset figures of the kept epochs (one row each)."""
    cfg = RunConfig.read(run_dir / "config.json")
    cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, bootstrap_resamples=0))
    root = prepare_dataset(cfg.data, cfg.profile, PrepareOptions(progress=False)).root
    splits = {s: MammogramDataset(root, s, True, cfg.data.dataset) for s in ("val", "test", "train")}
    method = build_method(cfg)
    args = (cfg.eval.batch_size, torch.device("cpu"), False, cfg.eval, 0, False)
    rows = []
    for epoch in epochs:
        ckpt = torch.load(run_dir / f"ep{epoch:02d}.pt", weights_only=True)
        method.load_state_dict(ckpt["model"])
        method.eval()
        val = evaluate_split(method, splits["val"], *args)
        thresholds = val.evaluator.calibrated_thresholds()
        row: dict[str, Any] = {"epoch": epoch, **ckpt["history"][-1]}
        for name, ev in (
            ("val", val),
            ("test", evaluate_split(method, splits["test"], *args)),
            ("train", evaluate_split(method, splits["train"], *args, None, (0, train_every))),
        ):
            metrics = summarize(ev.evaluator.stats(), thresholds)
            for cls, m in metrics.items():
                for key in ("dice", "dice_oracle", "auroc", "pointing_game_10mm"):
                    row[f"{name}_{key}_{cls}"] = m[key]
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    """Watch a running run, or score its kept epochs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--watch", action="store_true", help="keep epoch-end checkpoints until run_dir/DONE appears")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between looks at last.pt (--watch)")
    ap.add_argument("--epochs", default="", help="comma-separated epochs to score (default: every ep<NN>.pt)")
    ap.add_argument("--train-every", type=int, default=4, help="score every n-th training image")
    ap.add_argument("--log", type=Path, default=None, help="append the rows here (JSON lines)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.watch:
        watch(args.run_dir, args.poll)
        return
    kept = sorted(int(p.stem[2:]) for p in args.run_dir.glob("ep[0-9]*.pt"))
    epochs = [int(e) for e in args.epochs.split(",")] if args.epochs else kept
    missing = sorted(set(epochs) - set(kept))
    if missing:
        raise SystemExit(f"{args.run_dir} keeps no ep<NN>.pt for epochs {missing}; kept: {kept}")
    rows = score(args.run_dir, epochs, args.train_every)
    if args.log is not None:
        with open(args.log, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)


if __name__ == "__main__":
    main()
