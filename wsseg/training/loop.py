"""THE training loop: one function, read top to bottom.

Every method trains here. What differs between methods lives in the method (its loss, its parameter
groups, its ``on_train_start``/``on_epoch_end`` hooks), never in ``if`` branches of this file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sized
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from wsseg.config import TrainConfig
from wsseg.evaluation.classification import mean_auroc
from wsseg.method import TrainContext, WSSegMethod
from wsseg.runtime.device import collate, resolve_device, to_device
from wsseg.runtime.distributed import DataParallel, all_reduce_sum, gather_rows, rank_and_world, shard
from wsseg.runtime.inference import predict_logits
from wsseg.runtime.precision import autocast, use_bf16
from wsseg.training.augment import augment_batch, image_seeds
from wsseg.training.checkpoint import load_checkpoint, save_checkpoint

LAST, BEST = "last.pt", "best.pt"


class TrainingDiverged(ValueError):
    """The loss or the weights became NaN or infinite: a setting to change, reported as one line by the CLI."""


def _finite_weights(method: WSSegMethod) -> bool:
    """Whether every floating-point parameter and buffer is finite (checked before a checkpoint is written)."""
    return all(bool(torch.isfinite(t).all()) for t in method.state_dict().values() if t.is_floating_point())


def _diverged(cfg: TrainConfig, what: str, epoch: int, step: int, kept: Path) -> TrainingDiverged:
    clip = f"train.clip_grad={cfg.clip_grad}" if cfg.clip_grad is not None else "no gradient clipping"
    saved = f"the last good checkpoint {kept} is kept" if kept.exists() else "no checkpoint had been written yet"
    return TrainingDiverged(
        f"training diverged: {what} at epoch {epoch + 1}, optimizer step {step} (train.lr={cfg.lr:g}, {clip}). "
        f"Start a new run with a lower train.lr (e.g. {min(cfg.lr, 1e-3) / 10:g}) or with train.clip_grad=5; "
        f"{saved}"
    )


@dataclass
class TrainResult:
    """What training returns (nothing is kept on the method).

    Attributes:
        best_checkpoint: weights with the best validation AUROC.
        last_checkpoint: the full run state after the last epoch.
        best_epoch: 1-based epoch of the best checkpoint.
        best_val_auroc: its mean validation AUROC.
        history: one dict per epoch (loss, val AUROC, seconds).
        train_seconds: wall time spent in this process's training (resumed runs add up).
        images_per_second: training throughput.
    """

    best_checkpoint: Path
    last_checkpoint: Path
    best_epoch: int
    best_val_auroc: float
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0
    images_per_second: float = 0.0


def epoch_order(seed: int, epoch: int, n: int) -> list[int]:
    """The sample order of one epoch, a function of (seed, epoch) alone so a resumed run replays it exactly."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0x5EED]))
    return [int(i) for i in rng.permutation(n)]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up to 1, then cosine decay to 5 % of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass
class TrainState:
    """Where a run stands: everything besides the weights, optimizer and RNGs that a killed run needs to continue.

    Saved at the top level of ``last.pt`` (the checkpoint's keys ``epoch``, ``micro``, ``step``, ``best_val_auroc``,
    ``best_epoch``).

    Attributes:
        epoch: 0-based epoch being trained (epochs done).
        micro: micro-batches done in that epoch.
        step: optimizer steps done in the run.
        best_val_auroc: the best validation AUROC so far (-inf before the first eligible epoch).
        best_epoch: its 1-based epoch (0: none yet).
    """

    epoch: int = 0
    micro: int = 0
    step: int = 0
    best_val_auroc: float = -math.inf
    best_epoch: int = 0


@dataclass
class _Schedule:
    """The run's step counts and learning-rate schedule."""

    n_micro: int  # micro-batches (global batches) per epoch
    steps_per_epoch: int  # optimizer steps per epoch
    total_steps: int
    base_lrs: list[float]

    def set_lr(
        self, optimizer: torch.optim.Optimizer, method: WSSegMethod, cfg: TrainConfig, step: int, epoch: int
    ) -> None:
        """The learning rate of every parameter group at optimizer ``step`` of 0-based ``epoch``.

        The schedule is a function of the step (so resuming needs no scheduler state); methods scale it per parameter
        group and epoch (staged schedules).
        """
        for group, base in zip(optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * lr_factor(step, cfg.warmup_steps, self.total_steps) * method.lr_scale(group, epoch)


@dataclass(frozen=True)
class _Settings:
    """What every step of one training run reads; fixed for the run."""

    cfg: TrainConfig
    seed: int
    device: torch.device
    bf16: bool
    memory_format: torch.memory_format
    run_config: dict[str, Any]
    last_path: Path
    main: bool  # rank 0: the process that logs and writes checkpoints
    parallel: DataParallel  # the training forward; DDP averages the gradients over the ranks


def _check_sized(train_set: Dataset[dict[str, Any]], val_set: Dataset[dict[str, Any]]) -> None:
    if not isinstance(train_set, Sized) or not isinstance(val_set, Sized):
        bad = val_set if isinstance(train_set, Sized) else train_set
        raise TypeError(f"train needs map-style datasets with a length; got a {type(bad).__name__}")


def _prepare_ranks(method: WSSegMethod, cfg: TrainConfig, device: torch.device, world: int) -> DataParallel:
    """The training forward over the ranks (one process: the plain forward), once the batch splits evenly.

    With several ranks, DDP averages the gradients and BatchNorm normalises with the global batch.
    """
    if world > 1 and cfg.batch_size % world:
        raise ValueError(
            f"train.batch_size {cfg.batch_size} is the global batch and must be a multiple of the {world} "
            f"processes; set --batch-size {cfg.batch_size - cfg.batch_size % world or world}"
        )
    return DataParallel(method, lambda x, b: method.loss(method(x), b), device)


def _schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, n_train: int, world: int) -> _Schedule:
    # Micro-batches per epoch (global batches); with several ranks a last batch smaller than the world is dropped.
    n_micro = math.ceil(n_train / cfg.batch_size) - (0 < n_train % cfg.batch_size < world)
    steps_per_epoch = math.ceil(n_micro / cfg.grad_accum)
    base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
    return _Schedule(n_micro, steps_per_epoch, cfg.epochs * steps_per_epoch, base_lrs)


def _resume(
    last_path: Path, method: WSSegMethod, optimizer: torch.optim.Optimizer, device: torch.device
) -> tuple[TrainState, list[dict[str, float]], list[float]]:
    """Load ``last.pt`` into the method, optimizer and RNGs.

    Returns:
        The run state, the epoch history and the losses of the interrupted epoch so far.
    """
    ckpt = load_checkpoint(last_path, map_location=device)
    method.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    torch.set_rng_state(ckpt["rng"]["torch"].cpu())
    if device.type == "cuda" and ckpt["rng"].get("cuda"):
        torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
    state = TrainState(**{f.name: ckpt[f.name] for f in fields(TrainState)})
    return state, list(ckpt["history"]), [float(v) for v in ckpt.get("epoch_losses", [])]


def _save_last(
    run: _Settings,
    method: WSSegMethod,
    optimizer: torch.optim.Optimizer,
    state: TrainState,
    history: list[dict[str, float]],
    losses: list[float],
) -> None:
    """Checkpoint the full run state to ``last.pt`` (rank 0 only), never NaN weights over the last good state."""
    if not _finite_weights(method):
        raise _diverged(run.cfg, "the weights are NaN or infinite", state.epoch, state.step, run.last_path)
    cuda = run.device.type == "cuda"
    rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if cuda else []}
    save_checkpoint(
        run.last_path,
        {
            "model": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "rng": rng,
            "history": history,
            "config": run.run_config,
            "method": method.name,
            # The losses of the current epoch so far: a mid-epoch resume reports the same epoch loss.
            "epoch_losses": list(losses) if state.micro else [],
            **asdict(state),
        },
    )


def _epoch_loader(
    train_set: Dataset[dict[str, Any]],
    batches: list[list[int]],
    device: torch.device,
    num_workers: int,
    seed: int,
    epoch: int,
) -> DataLoader[dict[str, Any]]:
    """The loader of one epoch's remaining global ``batches``; each rank reads its share of every one."""
    rank, world = rank_and_world()
    return DataLoader(
        train_set,
        batch_sampler=[shard(b, rank, world) for b in batches],
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        # Its own generator: drawing the loader's base seed from the global RNG would shift the stream
        # that dropout and friends use, by one draw at each (re)start, so a resumed run would diverge.
        generator=torch.Generator().manual_seed(seed * 100_003 + epoch),
    )


def _micro_step(
    method: WSSegMethod, batch: dict[str, Any], global_batch: list[int], state: TrainState, run: _Settings, sync: bool
) -> float:
    """Forward and backward one micro-batch (this rank's share of a global batch); its loss weighted by the share.

    ``sync``: the last micro-batch of an optimizer step, whose backward averages the gradients over the ranks.
    """
    rank, world = rank_and_world()
    cfg = run.cfg
    if "masks" in batch and method.supervision != "full":
        raise RuntimeError(f"the training loader yielded masks to weakly supervised method {method.name}")
    batch = to_device(batch, run.device)
    positions = shard(range(len(global_batch)), rank, world)  # this rank's places in the global batch
    if cfg.augment == "window":
        # On the device, after the copy; every image gets the draw it gets in one uninterrupted process.
        batch = augment_batch(
            batch,
            positions,
            len(global_batch),
            seed=run.seed,
            epoch=state.epoch,
            micro=state.micro,
            shift_px=cfg.augment_shift_px,
            size_px=cfg.augment_size_px,
        )
    batch = method.training_batch(batch, image_seeds(run.seed, state.epoch, state.micro, positions))
    images = batch["image"].to(memory_format=run.memory_format)  # (B, 1, H, W), or the method's crops
    with autocast(run.device, run.bf16):
        loss = run.parallel.loss(images, batch, sync=sync)["loss"]
    if not torch.isfinite(loss):
        raise _diverged(cfg, f"the loss is {float(loss)}", state.epoch, state.step, run.last_path)
    # Dividing by grad_accum makes the accumulated gradient the mean over the larger effective batch; with
    # several ranks, weighting by this rank's share makes DDP's averaged gradient the global batch's.
    share = float(images.shape[0] * world / len(global_batch))
    (loss * share / cfg.grad_accum).backward()  # type: ignore[no-untyped-call]  # torch leaves it unannotated
    return float(loss.detach()) * share


def _optimizer_step(method: WSSegMethod, optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> None:
    """Clip the gradients (already averaged over the ranks by DDP's backward) and step."""
    if cfg.clip_grad is not None:
        torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.clip_grad)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def _train_epoch(
    method: WSSegMethod,
    optimizer: torch.optim.Optimizer,
    train_set: Dataset[dict[str, Any]],
    schedule: _Schedule,
    state: TrainState,
    losses: list[float],
    history: list[dict[str, float]],
    run: _Settings,
    num_workers: int,
    bar: tqdm[Any],
) -> int:
    """Train the rest of epoch ``state.epoch`` (all of it unless resumed mid-epoch); return the images trained on.

    Appends each micro-batch's loss to ``losses`` and advances ``state``; checkpoints every ``checkpoint_every``
    optimizer steps.
    """
    cfg, epoch = run.cfg, state.epoch
    order = epoch_order(run.seed, epoch, len(train_set))  # type: ignore[arg-type]  # _check_sized checked it
    # Resuming mid-epoch skips the micro-batches already done; the order itself is replayed exactly.
    batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)][: schedule.n_micro]
    batches = batches[state.micro :]
    loader = _epoch_loader(train_set, batches, run.device, num_workers, run.seed, epoch)
    schedule.set_lr(optimizer, method, cfg, state.step, epoch)
    images = 0
    for global_batch, batch in zip(batches, loader, strict=True):
        sync = (state.micro + 1) % cfg.grad_accum == 0 or state.micro + 1 == schedule.n_micro
        losses.append(_micro_step(method, batch, global_batch, state, run, sync))
        state.micro += 1
        images += len(global_batch)
        if sync:
            _optimizer_step(method, optimizer, cfg)
            state.step += 1
            schedule.set_lr(optimizer, method, cfg, state.step, epoch)
            if run.main and state.step % cfg.checkpoint_every == 0 and state.micro < schedule.n_micro:
                _save_last(run, method, optimizer, state, history, losses)
        bar.update()
        bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{np.mean(losses[-20:]):.4f}")
    return images


def _validate(
    method: WSSegMethod,
    val_set: Dataset[dict[str, Any]],
    batch_size: int,
    device: torch.device,
    bf16: bool,
    num_workers: int,
) -> float:
    """The mean validation AUROC; in a process group each rank predicts every world-th image, gathered in order."""
    rank, world = rank_and_world()
    n_val = len(val_set)  # type: ignore[arg-type]  # _check_sized checked it
    if world > 1 and n_val >= world:
        mine = Subset(val_set, shard(range(n_val), rank, world))
        logits, labels = predict_logits(method, mine, batch_size, device, bf16, num_workers)
        logits, labels = gather_rows(logits, world), gather_rows(labels, world)
    else:
        logits, labels = predict_logits(method, val_set, batch_size, device, bf16, num_workers)
    return mean_auroc(labels, logits)


def _epoch_loss(losses: list[float], device: torch.device) -> float:
    """The epoch's mean training loss over every rank's micro-batches."""
    loss_sum, loss_count = float(np.sum(losses)), float(len(losses))
    if rank_and_world()[1] > 1:
        loss_sum, loss_count = all_reduce_sum([loss_sum, loss_count], device)  # over ranks
    return loss_sum / loss_count if loss_count else math.nan


def _progress_bar(method: WSSegMethod, schedule: _Schedule, state: TrainState, epochs: int, show: bool) -> tqdm[Any]:
    """The run's progress bar over micro-batches, starting where a resumed run stands."""
    return tqdm(
        total=epochs * schedule.n_micro,
        initial=state.epoch * schedule.n_micro + state.micro,
        desc=f"train {method.name}",
        unit="batch",
        disable=not show,
        dynamic_ncols=True,
    )


def _place(method: WSSegMethod, cfg: TrainConfig, seed: int) -> tuple[torch.device, bool, torch.memory_format]:
    """Seed torch, move ``method`` to the training device and memory format; return them and whether bf16 is on."""
    device = resolve_device(cfg.device)
    bf16 = use_bf16(cfg.precision, device)
    torch.manual_seed(seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    # channels_last lets cuDNN pick its fastest convolution kernels; on CPU it only costs conversions.
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    method.to(device)
    method.to(memory_format=memory_format)  # torch's stubs have no overload taking a device and a memory format
    return device, bf16, memory_format


def _epoch_record(
    method: WSSegMethod,
    optimizer: torch.optim.Optimizer,
    val_set: Dataset[dict[str, Any]],
    losses: list[float],
    run: _Settings,
    eval_batch_size: int,
    num_workers: int,
    epoch: int,
    t_epoch: float,
) -> dict[str, float]:
    """The epoch's line of the history: its epoch (1-based), mean training loss, validation AUROC, rate and seconds.

    The validation picks the best checkpoint, so an epoch that cannot provide it (``eligible_for_best`` false: the
    U-Net ceiling's epochs before its last, GLAM's stages before its last) is not validated and its ``val_auroc`` is
    NaN: on phantom 2 at 0.4 mm, validating 320 whole images took 50 s of each 2 min U-Net epoch.
    """
    train_loss = _epoch_loss(losses, run.device)  # before the validation: every rank runs the collectives in order
    val_auroc = math.nan
    if method.eligible_for_best(epoch):  # the same answer on every rank: they validate together or not at all
        val_auroc = _validate(method, val_set, eval_batch_size, run.device, run.bf16, num_workers)
    return {
        "epoch": epoch + 1,
        "train_loss": train_loss,
        "val_auroc": val_auroc,
        "lr": float(optimizer.param_groups[0]["lr"]),
        "seconds": time.perf_counter() - t_epoch,
    }


def _keep_if_best(method: WSSegMethod, state: TrainState, val_auroc: float, best_path: Path, run: _Settings) -> None:
    """Write ``best.pt`` when the epoch just done (``state.epoch``) is the best eligible one so far (rank 0 only)."""
    epoch = state.epoch
    # Staged methods (GLAM) make early-stage epochs ineligible: their weights hold an untrained part.
    stale = state.best_epoch == 0 or not method.eligible_for_best(state.best_epoch - 1)
    improved = not math.isnan(val_auroc) and val_auroc > state.best_val_auroc
    if method.eligible_for_best(epoch) and (stale or improved):
        if not _finite_weights(method):
            raise _diverged(run.cfg, "the weights are NaN or infinite", epoch, state.step, run.last_path)
        state.best_val_auroc, state.best_epoch = val_auroc, epoch + 1
        save_checkpoint(best_path, {"model": method.state_dict(), "epoch": epoch + 1, "config": run.run_config})


def train(
    method: WSSegMethod,
    train_set: Dataset[dict[str, Any]],
    val_set: Dataset[dict[str, Any]],
    cfg: TrainConfig,
    run_dir: str | Path,
    *,
    seed: int,
    run_config: dict[str, Any],
    resume: bool = False,
    num_workers: int = 0,
    eval_batch_size: int = 8,
    progress: bool = True,
) -> TrainResult:
    """Train ``method`` on ``train_set``, select the best epoch on ``val_set`` AUROC, checkpoint into ``run_dir``.

    Args:
        method: the method to train (modified in place: its weights are the last epoch's on return).
        train_set: training split, a map-style dataset with a length; for weakly supervised methods its samples must
            carry no masks.
        val_set: validation split (map-style, with a length), used for the per-epoch AUROC.
        cfg: loop settings.
        run_dir: where ``last.pt`` (full state) and ``best.pt`` (best weights) are written.
        seed: the training seed (initialisation, sample order, dropout).
        run_config: the resolved run config, stored in every checkpoint.
        resume: continue from ``run_dir/last.pt`` when it exists.
        num_workers: data-loading processes.
        eval_batch_size: batch size of the per-epoch validation.
        progress: show a progress bar.

    In a process group (``torchrun``, see :mod:`wsseg.runtime.distributed`) every rank calls this with the same
    arguments: ``cfg.batch_size`` is the global batch, each rank trains on its share with BatchNorm synchronised
    and gradients averaged; the ranks share the validation, and only rank 0 writes checkpoints (the other ranks'
    result has ``best_val_auroc`` NaN). N ranks compute what one process computes with the same settings.

    Raises:
        TypeError: a dataset without a length (an iterable-style dataset): the epoch schedule needs its size.
    """
    _check_sized(train_set, val_set)
    run_dir = Path(run_dir)
    rank, world = rank_and_world()
    main, last_path, best_path = rank == 0, run_dir / LAST, run_dir / BEST
    device, bf16, memory_format = _place(method, cfg, seed)
    if not any(p.requires_grad for p in method.parameters()):
        # Reference maps (uniform, random, intensity) have nothing to learn: one weights file, no epochs.
        if main:
            save_checkpoint(best_path, {"model": method.state_dict(), "epoch": 0, "config": run_config})
        return TrainResult(best_checkpoint=best_path, last_checkpoint=best_path, best_epoch=0, best_val_auroc=math.nan)
    parallel = _prepare_ranks(method, cfg, device, world)
    optimizer = torch.optim.AdamW(method.param_groups(cfg.lr, cfg.weight_decay), lr=cfg.lr)
    schedule = _schedule(optimizer, cfg, len(train_set), world)  # type: ignore[arg-type]  # _check_sized checked it
    run = _Settings(cfg, seed, device, bf16, memory_format, run_config, last_path, main, parallel)

    # The run state: everything needed to continue exactly where a killed run stopped.
    state, history, resumed_losses = TrainState(), list[dict[str, float]](), list[float]()
    if resume and last_path.exists():
        state, history, resumed_losses = _resume(last_path, method, optimizer, device)
    ctx = TrainContext(device=device, total_steps=schedule.total_steps, epochs=cfg.epochs, run_dir=run_dir)
    method.on_train_start(ctx)
    bar = _progress_bar(method, schedule, state, cfg.epochs, progress and main)
    t_start, images_done = time.perf_counter(), 0
    while state.epoch < cfg.epochs:
        epoch, t_epoch = state.epoch, time.perf_counter()
        losses: list[float] = resumed_losses if state.micro else []
        method.train()
        method.on_epoch_start(ctx, epoch)
        images_done += _train_epoch(
            method, optimizer, train_set, schedule, state, losses, history, run, num_workers, bar
        )

        # End of epoch: validate (shared by the ranks), keep the best weights, then checkpoint the full state.
        record = _epoch_record(method, optimizer, val_set, losses, run, eval_batch_size, num_workers, epoch, t_epoch)
        history.append(record)
        if main:
            auroc = record["val_auroc"]
            validated = "not validated" if math.isnan(auroc) else f"val AUROC {auroc:.3f}"
            loss = record["train_loss"]
            bar.write(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f}  {validated}  ({record['seconds']:.0f} s)")
            _keep_if_best(method, state, record["val_auroc"], best_path, run)
        state.epoch, state.micro = epoch + 1, 0
        if main:
            _save_last(run, method, optimizer, state, history, losses)
        method.on_epoch_end(ctx, epoch + 1, record)
    bar.close()

    seconds = time.perf_counter() - t_start
    return TrainResult(
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        best_epoch=int(state.best_epoch),
        best_val_auroc=float(state.best_val_auroc),
        history=history,
        train_seconds=seconds,
        images_per_second=images_done / seconds if seconds > 0 else 0.0,
    )
