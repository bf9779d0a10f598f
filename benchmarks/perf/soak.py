"""Soak benchmark: train on 1,000 phantom images for several epochs and sample resident memory after each epoch.

Resident memory must not grow from epoch to epoch (a leak would grow it by the data or activations held per
step). Uses the tiny profile's 184x120 images and timm's test ResNet so it runs in minutes on a 2-core CPU.

Usage: python benchmarks/perf/soak.py [--images 1000] [--epochs 6] [--method cam] [--cache-dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from wsseg import create_method
from wsseg.config import TrainConfig, phantom_config
from wsseg.data.dataset import MammogramDataset, prepare_phantom
from wsseg.method import TrainContext
from wsseg.training.loop import train


def rss_mib() -> float:
    """Current resident set size of this process in MiB (Linux /proc)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main() -> None:
    """Run the soak and print one line per epoch, then the growth from the second epoch to the last."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=1000, help="training images (a multiple of 4)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--method", default="cam")
    parser.add_argument("--cache-dir", default=None)
    args = parser.parse_args()

    cache = args.cache_dir or tempfile.mkdtemp(prefix="wsseg-soak-")
    counts = {"train": args.images, "val": 40, "test": 4}
    root = prepare_phantom(phantom_config("tiny"), 0, counts, cache, progress=False)
    samples: list[dict[str, Any]] = []
    torch.manual_seed(0)
    method = create_method(args.method, profile="tiny")
    original_end = method.on_epoch_end

    def on_epoch_end(ctx: TrainContext, epoch: int, metrics: dict[str, float]) -> None:
        samples.append({"epoch": epoch, "rss_mib": rss_mib(), "seconds": metrics["seconds"]})
        print(f"epoch {epoch}: RSS {samples[-1]['rss_mib']:.1f} MiB ({metrics['seconds']:.1f} s)", flush=True)
        original_end(ctx, epoch, metrics)

    method.on_epoch_end = on_epoch_end  # type: ignore[method-assign]
    cfg = dataclasses.replace(TrainConfig(), epochs=args.epochs, batch_size=16, device="cpu", checkpoint_every=10**6)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        train(
            method,
            MammogramDataset(root, "train", with_masks=False),
            MammogramDataset(root, "val", with_masks=True),
            cfg,
            run_dir,
            seed=0,
            run_config={},
            progress=False,
        )
    growth = samples[-1]["rss_mib"] - samples[1]["rss_mib"] if len(samples) > 1 else 0.0
    print(
        f"{args.images} images x {args.epochs} epochs of {args.method} in {time.perf_counter() - t0:.0f} s; "
        f"RSS after epoch 2 {samples[1]['rss_mib']:.1f} MiB, after the last {samples[-1]['rss_mib']:.1f} MiB "
        f"(growth {growth:+.1f} MiB)"
    )


if __name__ == "__main__":
    main()
