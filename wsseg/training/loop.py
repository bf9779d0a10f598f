"""THE training loop: one function, read top to bottom.

Every method trains here. What differs between methods lives in the method (its loss, its parameter
groups, its ``on_train_start``/``on_epoch_end`` hooks), never in ``if`` branches of this file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from wsseg.config import TrainConfig
from wsseg.evaluation.classification import mean_auroc
from wsseg.method import WSSegMethod
from wsseg.runtime.device import collate, resolve_device, to_device
from wsseg.runtime.distributed import DataParallel, all_reduce_sum, gather_rows, rank_and_world, shard
from wsseg.runtime.inference import predict_logits
from wsseg.runtime.precision import autocast, use_bf16
from wsseg.training.augment import augment_batch
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
    if not isinstance(train_set, Sized) or not isinstance(val_set, Sized):
        bad = val_set if isinstance(train_set, Sized) else train_set
        raise TypeError(f"train needs map-style datasets with a length; got a {type(bad).__name__}")
    run_dir = Path(run_dir)
    rank, world = rank_and_world()
    main = rank == 0
    last_path, best_path = run_dir / LAST, run_dir / BEST
    device = resolve_device(cfg.device)
    bf16 = use_bf16(cfg.precision, device)
    torch.manual_seed(seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)

    # channels_last lets cuDNN pick its fastest convolution kernels; on CPU it only costs conversions.
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    method.to(device)
    method.to(memory_format=memory_format)  # torch's stubs have no overload taking a device and a memory format
    if not any(p.requires_grad for p in method.parameters()):
        # Reference maps (uniform, random, intensity) have nothing to learn: one weights file, no epochs.
        if main:
            save_checkpoint(best_path, {"model": method.state_dict(), "epoch": 0, "config": run_config})
        return TrainResult(best_checkpoint=best_path, last_checkpoint=best_path, best_epoch=0, best_val_auroc=math.nan)
    if world > 1:
        if cfg.batch_size % world:
            raise ValueError(
                f"train.batch_size {cfg.batch_size} is the global batch and must be a multiple of the {world} "
                f"processes; set --batch-size {cfg.batch_size - cfg.batch_size % world or world}"
            )
    # DDP over the ranks (one process: the plain forward); BatchNorm then normalises with the global batch.
    parallel = DataParallel(method, lambda x, b: method.loss(method(x), b), device)
    optimizer = torch.optim.AdamW(method.param_groups(cfg.lr, cfg.weight_decay), lr=cfg.lr)
    # Micro-batches per epoch (global batches); with several ranks a last batch smaller than the world is dropped.
    n_micro = math.ceil(len(train_set) / cfg.batch_size) - (0 < len(train_set) % cfg.batch_size < world)
    steps_per_epoch = math.ceil(n_micro / cfg.grad_accum)  # optimizer steps per epoch
    total_steps = cfg.epochs * steps_per_epoch
    base_lrs = [float(g["lr"]) for g in optimizer.param_groups]

    def set_lr(step: int, epoch: int) -> None:
        # The schedule is a function of the step (so resuming needs no scheduler state); methods scale it per
        # parameter group and epoch (staged schedules).
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * lr_factor(step, cfg.warmup_steps, total_steps) * method.lr_scale(group, epoch)

    # The run state: everything needed to continue exactly where a killed run stopped.
    state: dict[str, Any] = {"epoch": 0, "micro": 0, "step": 0, "best_val_auroc": -math.inf, "best_epoch": 0}
    history: list[dict[str, float]] = []
    resumed_losses: list[float] = []
    if resume and last_path.exists():
        ckpt = load_checkpoint(last_path, map_location=device)
        method.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        torch.set_rng_state(ckpt["rng"]["torch"].cpu())
        if device.type == "cuda" and ckpt["rng"].get("cuda"):
            torch.cuda.set_rng_state_all([s.cpu() for s in ckpt["rng"]["cuda"]])
        state.update({k: ckpt[k] for k in state})
        history = list(ckpt["history"])
        resumed_losses = [float(v) for v in ckpt.get("epoch_losses", [])]  # the interrupted epoch's, so far

    def checkpoint() -> None:
        if not main:
            return
        if not _finite_weights(method):  # never replace the last good state with NaN weights
            raise _diverged(cfg, "the weights are NaN or infinite", state["epoch"], state["step"], last_path)
        rng = {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []}
        save_checkpoint(
            last_path,
            {
                "model": method.state_dict(),
                "optimizer": optimizer.state_dict(),
                "rng": rng,
                "history": history,
                "config": run_config,
                "method": method.name,
                # The losses of the current epoch so far: a mid-epoch resume reports the same epoch loss.
                "epoch_losses": list(losses) if state["micro"] else [],
                **state,
            },
        )

    ctx = {"device": device, "total_steps": total_steps, "epochs": cfg.epochs, "run_dir": run_dir}
    method.on_train_start(ctx)
    bar = tqdm(
        total=cfg.epochs * n_micro,
        initial=state["epoch"] * n_micro + state["micro"],
        desc=f"train {method.name}",
        unit="batch",
        disable=not progress or not main,
        dynamic_ncols=True,
    )
    t_start, images_done = time.perf_counter(), 0
    while state["epoch"] < cfg.epochs:
        epoch, t_epoch = state["epoch"], time.perf_counter()
        losses: list[float] = resumed_losses if state["micro"] else []
        order = epoch_order(seed, epoch, len(train_set))
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)][:n_micro]
        # Resuming mid-epoch skips the micro-batches already done; the order itself is replayed exactly. Each rank
        # reads its share of every global batch.
        loader = DataLoader(
            train_set,
            batch_sampler=[shard(b, rank, world) for b in batches[state["micro"] :]],
            collate_fn=collate,
            num_workers=num_workers,
            pin_memory=device.type == "cuda",
            # Its own generator: drawing the loader's base seed from the global RNG would shift the stream
            # that dropout and friends use, by one draw at each (re)start, so a resumed run would diverge.
            generator=torch.Generator().manual_seed(seed * 100_003 + epoch),
        )
        method.train()
        method.on_epoch_start(ctx, epoch)
        set_lr(state["step"], epoch)
        for global_batch, batch in zip(batches[state["micro"] :], loader, strict=True):
            if "masks" in batch and method.supervision != "full":
                raise RuntimeError(f"the training loader yielded masks to weakly supervised method {method.name}")
            batch = to_device(batch, device)
            if cfg.augment == "window":
                # On the device, after the copy; every image gets the draw it gets in one uninterrupted process.
                batch = augment_batch(
                    batch,
                    shard(range(len(global_batch)), rank, world),  # this rank's places in the global batch
                    len(global_batch),
                    seed=seed,
                    epoch=epoch,
                    micro=state["micro"],
                    shift_px=cfg.augment_shift_px,
                    size_px=cfg.augment_size_px,
                )
            images = batch["image"].to(memory_format=memory_format)  # (B, 1, H, W)
            # The last micro-batch of an optimizer step averages the accumulated gradients over the ranks.
            sync = (state["micro"] + 1) % cfg.grad_accum == 0 or state["micro"] + 1 == n_micro
            with autocast(device, bf16):
                loss_terms = parallel.loss(images, batch, sync=sync)
            loss = loss_terms["loss"]
            if not torch.isfinite(loss):
                raise _diverged(cfg, f"the loss is {float(loss)}", epoch, state["step"], last_path)
            # Dividing by grad_accum makes the accumulated gradient the mean over the larger effective batch; with
            # several ranks, weighting by this rank's share makes DDP's averaged gradient the global batch's.
            share = images.shape[0] * world / len(global_batch)
            (loss * share / cfg.grad_accum).backward()
            state["micro"] += 1
            images_done += len(global_batch)
            losses.append(float(loss.detach()) * share)
            if sync:
                if cfg.clip_grad is not None:
                    torch.nn.utils.clip_grad_norm_(method.parameters(), cfg.clip_grad)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                set_lr(state["step"], epoch)
                if state["step"] % cfg.checkpoint_every == 0 and state["micro"] < n_micro:
                    checkpoint()
            bar.update()
            bar.set_postfix(epoch=f"{epoch + 1}/{cfg.epochs}", loss=f"{np.mean(losses[-20:]):.4f}")

        # End of epoch: validate (shared by the ranks), keep the best weights, then checkpoint the full state.
        loss_sum, loss_count = float(np.sum(losses)), float(len(losses))
        if world > 1:
            loss_sum, loss_count = all_reduce_sum([loss_sum, loss_count], device)  # over ranks
        if world > 1 and len(val_set) >= world:
            # Each rank predicts every world-th validation image; the logits are gathered back in order.
            mine = Subset(val_set, shard(range(len(val_set)), rank, world))
            val_logits, val_labels = predict_logits(method, mine, eval_batch_size, device, bf16, num_workers)
            val_logits, val_labels = gather_rows(val_logits, world), gather_rows(val_labels, world)
        else:
            val_logits, val_labels = predict_logits(method, val_set, eval_batch_size, device, bf16, num_workers)
        val_auroc = mean_auroc(val_labels, val_logits)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / loss_count if loss_count else math.nan,
            "val_auroc": val_auroc,
            "lr": float(optimizer.param_groups[0]["lr"]),
            "seconds": time.perf_counter() - t_epoch,
        }
        history.append(record)
        if main:
            bar.write(
                f"epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f}  val AUROC {val_auroc:.3f}"
                f"  ({record['seconds']:.0f} s)"
            )
        # Staged methods (GLAM) make early-stage epochs ineligible: their weights hold an untrained part.
        stale = state["best_epoch"] == 0 or not method.eligible_for_best(state["best_epoch"] - 1)
        improved = not math.isnan(val_auroc) and val_auroc > state["best_val_auroc"]
        if main and method.eligible_for_best(epoch) and (stale or improved):
            if not _finite_weights(method):
                raise _diverged(cfg, "the weights are NaN or infinite", epoch, state["step"], last_path)
            state["best_val_auroc"], state["best_epoch"] = val_auroc, epoch + 1
            save_checkpoint(best_path, {"model": method.state_dict(), "epoch": epoch + 1, "config": run_config})
        state["epoch"], state["micro"] = epoch + 1, 0
        checkpoint()
        method.on_epoch_end(ctx, epoch + 1, record)
    bar.close()

    seconds = time.perf_counter() - t_start
    return TrainResult(
        best_checkpoint=best_path,
        last_checkpoint=last_path,
        best_epoch=int(state["best_epoch"]),
        best_val_auroc=float(state["best_val_auroc"]),
        history=history,
        train_seconds=seconds,
        images_per_second=images_done / seconds if seconds > 0 else 0.0,
    )
