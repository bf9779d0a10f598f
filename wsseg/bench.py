"""`wsseg bench`: throughput and memory of a method's forward pass and training step on synthetic images.

Random standardised images of the profile's size go through the method (no data loading, no evaluation), after
warm-up and with CUDA synchronisation around the timed loop. FLOPs per image come from
``torch.utils.flop_counter`` on one image (multiply-add counted as two). Rows use the columns of
``benchmarks/perf/*.csv``.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.flop_counter import FlopCounterMode

from wsseg.config import phantom_config
from wsseg.evaluation.inference import autocast
from wsseg.method import Profile, WSSegMethod
from wsseg.registry import create_method
from wsseg.training.loop import resolve_device

Phase = Literal["inference", "train"]
COLUMNS = [
    "method",
    "profile",
    "precision",
    "batch",
    "mode",
    "phase",
    "images_per_s",
    "peak_mem_gib",
    "gflop_per_image",
    "tflops",
    "card",
    "torch",
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gflop_per_image(method: WSSegMethod, size: tuple[int, int], phase: Phase, device: torch.device) -> float:
    """FLOPs of one image's forward pass (inference) or forward + backward (train), in GFLOP."""
    images = torch.randn(1, 1, *size, device=device)
    labels = torch.zeros(1, method.num_classes, device=device)
    method.train(phase == "train")
    with FlopCounterMode(display=False) as counter:
        if phase == "train":
            method.loss(method(images), {"labels": labels})["loss"].backward()
        else:
            with torch.no_grad():
                method.predict(images)
    method.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 1e9


def bench(
    name: str,
    profile: Profile = "paper",
    batch: int = 1,
    precision: Literal["fp32", "bf16"] = "bf16",
    phase: Phase = "inference",
    device: str = "auto",
    seconds: float = 3.0,
    warmup: int = 2,
    **overrides: Any,
) -> dict[str, Any]:
    """Measure one (method, batch, precision, phase) configuration; returns a row with :data:`COLUMNS`.

    Args:
        name: registered method.
        profile: preset and image size (``paper``: 2944x1920).
        batch: images per step.
        precision: ``bf16`` autocast (CUDA only) or ``fp32``.
        phase: ``inference`` (``predict`` under ``no_grad``) or ``train`` (forward, loss, backward, AdamW step).
        device: ``auto``, ``cpu`` or ``cuda``.
        seconds: minimum timed duration (at least three steps are timed).
        warmup: untimed steps first (cuDNN autotuning, allocator growth).
        **overrides: method config overrides.
    """
    dev = resolve_device(device)
    if precision == "bf16" and dev.type != "cuda":
        raise ValueError("bench --precision bf16 needs a CUDA device; use --precision fp32 on CPU")
    pcfg = phantom_config(profile)
    size = (pcfg.height, pcfg.width)
    torch.manual_seed(0)
    method = create_method(name, profile=profile, **overrides)
    memory_format = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    method.to(device=dev, memory_format=memory_format)
    gflop = gflop_per_image(method, size, phase, dev)
    images = torch.randn(batch, 1, *size, device=dev).to(memory_format=memory_format)
    labels = (torch.rand(batch, method.num_classes, device=dev) < 0.5).float()
    optimizer = torch.optim.AdamW(method.parameters(), lr=1e-5) if phase == "train" else None
    method.train(phase == "train")
    bf16 = precision == "bf16"

    def step() -> None:
        if optimizer is None:
            with torch.no_grad(), autocast(dev, bf16):
                method.predict(images)
            return
        with autocast(dev, bf16):
            loss = method.loss(method(images), {"labels": labels})["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < seconds:
        step()
        n += 1
        if n >= 3:
            _sync(dev)
    elapsed = time.perf_counter() - t0
    ips = n * batch / elapsed
    return {
        "method": name,
        "profile": profile,
        "precision": precision,
        "batch": batch,
        "mode": "wsseg",
        "phase": phase,
        "images_per_s": round(ips, 2),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else math.nan,
        "gflop_per_image": round(gflop, 1),
        "tflops": round(ips * gflop / 1e3, 1),
        "card": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__.split("+")[0],
    }


def append_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to the CSV at ``path`` (with a header when the file is new)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists()
    with path.open("a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
