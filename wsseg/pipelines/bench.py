"""`wsseg bench`: throughput and memory of a method's forward pass and training step on synthetic images.

Random standardised images of the profile's size go through the method (no data loading, no evaluation), after
warm-up and with CUDA synchronisation around the timed loop. FLOPs per image come from
``torch.utils.flop_counter`` on one image (multiply-add counted as two). Rows use the columns of
``benchmarks/perf/*.csv``.

The ``mode`` column says what ran: ``wsseg`` (the batched crop and paste-back helpers) or ``reference`` (GMIC's
and GLAM's ``roi_impl="reference"``: the official code's per-image, per-crop host loops), with ``+compile`` when
the method ran under ``torch.compile``. :func:`bench_loader` measures the data pipeline instead (``method`` =
``loader``, ``phase`` = ``load``, ``mode`` = ``workers<N>``).
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import torch
from torch.utils.data import DataLoader, RandomSampler
from torch.utils.flop_counter import FlopCounterMode

from wsseg._io import atomic_write_text
from wsseg._threads import available_cpus
from wsseg.config import MAX_BATCH, MAX_IMAGES, TrainConfig, make_run_config, phantom_config
from wsseg.core import PROFILE_GEOMETRY
from wsseg.data.dataset import MammogramDataset, prepare_phantom
from wsseg.method import Profile, WSSegMethod
from wsseg.registry import create_method, get_method_spec
from wsseg.runtime.device import collate, resolve_device, to_device
from wsseg.runtime.precision import autocast
from wsseg.training.augment import augment_batch

Phase = Literal["inference", "train"]
Mode = Literal["wsseg", "reference"]
MODES: tuple[Mode, Mode] = ("wsseg", "reference")
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
            loss = method.loss(method(images), {"labels": labels})["loss"]
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        else:
            with torch.no_grad():
                method.predict(images)
    method.zero_grad(set_to_none=True)
    return float(counter.get_total_flops()) / 1e9


def bench(
    name: str,
    profile: Profile = "paper",
    batch: int = 1,
    precision: Literal["fp32", "bf16"] = "bf16",
    phase: Phase = "inference",
    device: str = "auto",
    seconds: float = 3.0,
    warmup: int = 2,
    mode: Mode = "wsseg",
    compile: bool = False,
    compile_mode: str | None = None,
    compile_backend: str = "inductor",
    kernels: str | Path | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Measure one (method, batch, precision, phase, mode) configuration; returns a row with :data:`COLUMNS`.

    Args:
        name: registered method.
        profile: preset and image size (``paper``: 2944x1920).
        batch: images per step.
        precision: ``bf16`` autocast (CUDA only) or ``fp32``.
        phase: ``inference`` (``predict`` under ``no_grad``) or ``train`` (forward, loss, backward, AdamW step).
        device: ``auto``, ``cpu`` or ``cuda``.
        seconds: minimum timed duration (at least three steps are timed).
        warmup: untimed steps first (cuDNN autotuning, allocator growth, ``torch.compile``'s compilation).
        mode: ``wsseg`` or ``reference`` (GMIC/GLAM with ``roi_impl="reference"``, the official code's host loops).
        compile: run the method under ``torch.compile`` (:meth:`torch.nn.Module.compile`, so ``predict`` and the
            training step both call the compiled forward); the row's mode gets ``+compile``. Compilation happens in
            the warm-up steps and is not timed.
        compile_mode: ``torch.compile``'s ``mode`` (None: its default; ``max-autotune-no-cudagraphs`` tries more
            kernels and compiles for minutes).
        compile_backend: ``torch.compile``'s backend (``eager`` only traces, for tests on CPU).
        kernels: after timing, profile two more steps with ``torch.profiler`` and write the operators and kernels
            that took the most device time (CPU time on CPU) to this text file: where a speed-up has to come from.
        **overrides: method config overrides.
    """
    dev = resolve_device(device)
    overrides = _check_bench(name, precision, mode, dev, overrides)
    geometry = PROFILE_GEOMETRY[profile]
    size = (geometry.height, geometry.width)
    torch.manual_seed(0)
    method = create_method(name, profile=profile, **overrides)
    memory_format = torch.channels_last if dev.type == "cuda" else torch.contiguous_format
    method.to(dev)
    method.to(memory_format=memory_format)  # torch's stubs have no overload taking a device and a memory format
    gflop = gflop_per_image(method, size, phase, dev)
    if compile:
        method.compile(mode=compile_mode, backend=compile_backend, dynamic=False)
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
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    ips = batch * _steps_per_second(step, dev, warmup, seconds)
    if kernels is not None:
        write_kernel_table(step, dev, Path(kernels))
    return {
        "method": name,
        "profile": profile,
        "precision": precision,
        "batch": batch,
        "mode": mode + ("+compile" if compile else ""),
        "phase": phase,
        "images_per_s": round(ips, 2),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated(dev) / 2**30, 2) if dev.type == "cuda" else math.nan,
        "gflop_per_image": round(gflop, 1),
        "tflops": round(ips * gflop / 1e3, 1),
        **_machine(dev),
    }


def _check_bench(name: str, precision: str, mode: str, dev: torch.device, overrides: dict[str, Any]) -> dict[str, Any]:
    """Refuse bf16 off CUDA and unknown modes; the method overrides with ``roi_impl="reference"`` for that mode."""
    if precision == "bf16" and dev.type != "cuda":
        raise ValueError("bench --precision bf16 needs a CUDA device; use --precision fp32 on CPU")
    if mode not in MODES:
        raise ValueError(f"bench mode must be one of {list(MODES)}, got {mode!r}")
    if mode != "reference":
        return overrides
    fields = {f.name for f in dataclasses.fields(get_method_spec(name).cls.Config)}
    if "roi_impl" not in fields:
        raise ValueError(
            f"--mode reference measures the host-loop crops of methods with a roi_impl setting (gmic, glam); "
            f"{name} has none: use --mode wsseg"
        )
    return {**overrides, "roi_impl": "reference"}


def _steps_per_second(step: Callable[[], None], dev: torch.device, warmup: int, seconds: float) -> float:
    """Calls of ``step`` per second after ``warmup`` untimed ones, for at least ``seconds`` and three calls.

    The peak-memory counter is reset after the warm-up, so it covers the timed steps only.
    """
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
    return n / (time.perf_counter() - t0)


def _machine(dev: torch.device) -> dict[str, str]:
    """The ``card`` and ``torch`` columns of a row."""
    return {
        "card": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "torch": torch.__version__.split("+")[0],
    }


def write_kernel_table(step: Callable[[], None], device: torch.device, path: Path, steps: int = 2) -> None:
    """Profile ``steps`` calls of ``step`` and write the 40 most expensive operators and kernels to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            step()
        _sync(device)
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=40, max_name_column_width=80)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, f"{steps} steps, sorted by {sort}\n{table}\n")


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


def speedups(rows: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """``wsseg`` images/s over ``reference`` images/s for every configuration measured in both modes.

    Returns (description, ratio) pairs; a ``+compile`` wsseg row is compared with the reference row of the same
    configuration measured with ``+compile`` too.
    """
    key_cols = ("method", "profile", "precision", "batch", "phase")
    reference = {
        (tuple(r[c] for c in key_cols), r["mode"].removeprefix("reference")): r
        for r in rows
        if r["mode"].startswith("reference")
    }
    out = []
    for r in rows:
        if not r["mode"].startswith("wsseg"):
            continue
        suffix = r["mode"].removeprefix("wsseg")
        ref = reference.get((tuple(r[c] for c in key_cols), suffix))
        if ref is not None and ref["images_per_s"] > 0:
            what = f"{r['method']} {r['phase']} {r['precision']} batch {r['batch']}{suffix}"
            out.append((what, r["images_per_s"] / ref["images_per_s"]))
    return out


def bench_loader(
    profile: Profile = "quick",
    batch: int = 8,
    workers: int = 0,
    images: int = 64,
    device: str = "auto",
    seconds: float = 3.0,
    warmup_batches: int = 2,
    cache_dir: str | Path | None = None,
    augment: bool = False,
    raw: bool | None = None,
) -> dict[str, Any]:
    """Images/s of the training data pipeline: a prepared phantom split read through a DataLoader to the device.

    The training split of a phantom of ``images`` images at the profile's size (generated into the cache on first
    use) is read in random order, as the training loop reads it (``MammogramDataset`` without masks, ``collate``,
    ``workers`` processes, pinned memory on CUDA, ``non_blocking`` copies), for at least ``seconds`` after
    ``warmup_batches`` batches (worker start-up). The files are re-read many times, so after the first pass they come
    from the page cache: this measures decoding, standardisation, collation and the copy, not the disk. With
    ``augment``, each batch then gets the training loop's window noise on the device (``train.augment=window``).
    ``raw`` ships uint16 pixels and standardises them on the device (``wsseg run`` does on CUDA, the default
    there), instead of standardising in the workers (the default on CPU).

    Returns a row with :data:`COLUMNS` (``method`` = ``loader``, ``phase`` = ``load``, ``mode`` = ``workers<N>``,
    with ``+raw`` for uint16 batches and ``+window`` when augmenting).
    """
    if images <= 0 or images % 4:
        raise ValueError(f"bench --loader needs --images as a positive multiple of 4, got {images}")
    dev = resolve_device(device)
    root = prepare_phantom(phantom_config(profile), 0, {"train": images}, cache_dir, progress=False)
    raw = dev.type == "cuda" if raw is None else raw
    dataset = MammogramDataset(root, "train", with_masks=False, standardize=not raw)
    n_batches = warmup_batches + 10**6  # enough: the loop stops on time
    sampler = RandomSampler(dataset, num_samples=n_batches * batch, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        collate_fn=collate,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
    it = iter(loader)
    defaults = TrainConfig()  # the training loop's default noise amplitudes
    noise = {"shift_px": defaults.augment_shift_px, "size_px": defaults.augment_size_px}

    def next_batch(it: Iterator[dict[str, Any]], i: int) -> dict[str, Any]:
        b = to_device(next(it), dev)
        if augment:
            size = int(b["image"].shape[0])
            b = augment_batch(b, range(size), size, seed=0, epoch=0, micro=i, **noise)
        return b

    for i in range(warmup_batches):
        next_batch(it, i)
    _sync(dev)
    n, t0 = 0, time.perf_counter()
    while n < 3 * batch or time.perf_counter() - t0 < seconds:
        b = next_batch(it, n)
        n += int(b["image"].shape[0])
    _sync(dev)
    elapsed = time.perf_counter() - t0
    del it  # stops the workers
    return {
        "method": "loader",
        "profile": profile,
        "precision": "fp32",
        "batch": batch,
        "mode": f"workers{workers}" + ("+raw" if raw else "") + ("+window" if augment else ""),
        "phase": "load",
        "images_per_s": round(n / elapsed, 2),
        "peak_mem_gib": math.nan,
        "gflop_per_image": math.nan,
        "tflops": math.nan,
        **_machine(dev),
    }


@dataclass(frozen=True)
class BenchPlan:
    """What one ``wsseg bench`` call measures (its options); :func:`run_plan` checks and runs it.

    ``None`` lists take the defaults: batch 1 for methods (8 for the loader), bf16 on CUDA and fp32 elsewhere, both
    phases, one loader run with as many workers as there are usable cores.
    """

    methods: list[str]
    profile: str = "paper"
    batches: list[int] | None = None
    precisions: list[str] | None = None
    phases: list[str] | None = None
    modes: list[str] = dataclasses.field(default_factory=lambda: ["wsseg"])
    compile: bool = False
    compile_mode: str | None = None
    loader: bool = False
    workers: list[int] | None = None
    images: int = 64
    raw: bool | None = None
    augment: bool = False
    cache_dir: Path | None = None
    device: str = "auto"
    seconds: float = 3.0
    set_items: list[str] = dataclasses.field(default_factory=list)
    kernels: Path | None = None

    def check(self) -> None:
        """Refuse unknown modes, a method together with --loader (or neither) and out-of-range numbers.

        Raises:
            ValueError: the message names the option and its valid values.
        """
        unknown = sorted(set(self.modes) - set(MODES))
        if unknown:
            raise ValueError(f"unknown --mode {unknown}; choose from {list(MODES)}")
        if self.loader == bool(self.methods):
            raise ValueError(
                "pass --method M to measure a method, or --loader (without --method) for the data pipeline"
            )
        if not all(1 <= n <= MAX_BATCH for n in self.batches or []):
            raise ValueError(f"--batch must be in [1, {MAX_BATCH}], got {self.batches}")
        if not all(0 <= n <= 256 for n in self.workers or []):
            raise ValueError(f"--workers must be in [0, 256], got {self.workers}")
        if not 4 <= self.images <= MAX_IMAGES or self.images % 4:
            raise ValueError(f"--images must be a multiple of 4 in [4, {MAX_IMAGES}], got {self.images}")
        if not 0 < self.seconds <= 3600:
            raise ValueError(f"--seconds must be in (0, 3600], got {self.seconds}")


def run_plan(plan: BenchPlan, log: Callable[[str], None], warn: Callable[[str], None]) -> list[dict[str, Any]]:
    """Measure every configuration of ``plan`` in turn, logging one line per row; returns the rows.

    A configuration that runs out of GPU memory is skipped with a line to ``warn``.

    Raises:
        ValueError: a bad option (:meth:`BenchPlan.check`) or method override.
    """
    plan.check()
    return _loader_rows(plan, log) if plan.loader else _method_rows(plan, log, warn)


def _loader_rows(plan: BenchPlan, log: Callable[[str], None]) -> list[dict[str, Any]]:
    rows = []
    profile = cast(Profile, plan.profile)
    for n_workers in plan.workers or [available_cpus()]:
        for n in plan.batches or [8]:
            for noise in (False, True) if plan.augment else (False,):
                row = bench_loader(
                    profile,
                    n,
                    n_workers,
                    plan.images,
                    plan.device,
                    plan.seconds,
                    cache_dir=plan.cache_dir,
                    augment=noise,
                    raw=plan.raw,
                )
                rows.append(row)
                what = f"{n_workers} workers{' + window noise' if noise else ''}"
                log(f"loader {plan.profile} batch {n}, {what}: {row['images_per_s']} images/s")
    return rows


def _method_rows(plan: BenchPlan, log: Callable[[str], None], warn: Callable[[str], None]) -> list[dict[str, Any]]:
    cuda = plan.device == "cuda" or (plan.device == "auto" and torch.cuda.is_available())
    precisions = plan.precisions or (["bf16"] if cuda else ["fp32"])
    # Modes vary fastest: a speedup compares rows measured one after the other.
    grid = list(itertools.product(precisions, plan.phases or ["inference", "train"], plan.batches or [1], plan.modes))
    rows = []
    for name in plan.methods:
        # The run config's checked `--set method.field=value` parsing, for the method section only.
        items = [f"method.{item.removeprefix('method.')}" for item in plan.set_items]
        overrides = make_run_config(name, plan.profile, 0, items).method_config  # type: ignore[arg-type]
        for prec, phase, n, mode in grid:
            label = f"{name} {phase} {prec} batch {n} {mode}{'+compile' if plan.compile else ''}"
            kernels = plan.kernels / f"{label.replace(' ', '-')}.txt" if plan.kernels else None
            try:
                row = bench(
                    name,
                    cast(Profile, plan.profile),
                    n,
                    cast(Any, prec),
                    cast(Phase, phase),
                    plan.device,
                    plan.seconds,
                    mode=cast(Mode, mode),
                    compile=plan.compile,
                    compile_mode=plan.compile_mode,
                    kernels=kernels,
                    **overrides,
                )
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                warn(f"{label}: out of GPU memory; skipped")
                continue
            rows.append(row)
            log(f"{label}: {row['images_per_s']} images/s, {row['peak_mem_gib']} GiB, {row['tflops']} TFLOP/s")
    return rows
