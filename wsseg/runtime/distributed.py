"""Data-parallel training over processes started by ``torchrun`` (one GPU per process, or CPU processes).

``torchrun --nproc-per-node N -m wsseg run ...`` starts N copies of the command; :func:`init_from_env` joins them
into a process group from torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``): NCCL on CUDA, gloo on CPU. Multi-node runs use torchrun's rendezvous the same way.

The design makes N processes compute what one process computes with the same settings:

- ``train.batch_size`` stays the global batch. Every process walks the same (seed, epoch) sample order and takes
  every N-th image of each global batch (:func:`shard`), the order ``DistributedSampler`` would give with
  ``set_epoch``, but keyed to wsseg's own order so a resumed run replays it exactly. A last global batch with fewer
  images than processes is dropped.
- Each process's loss is weighted by its share of the global batch and torch's ``DistributedDataParallel`` averages
  the gradients over the processes during the backward pass (:class:`DataParallel`), so the optimizer step is the
  step of the global batch's mean loss (every wsseg loss is a mean over images). Staged methods change which
  parameters train between epochs (GLAM freezes its global network in the local stage and skips its local network
  in the global stage): DDP registers the parameters that require gradients when it is built, so
  :class:`DataParallel` builds it again whenever that set changes, and lets it find the parameters a step does not
  use (``find_unused_parameters``) by walking the graph from the loss, not from the method's outputs.
- BatchNorm normalises with the statistics of the global batch: :func:`sync_batchnorm` converts the method's
  BatchNorm layers to ``SyncBatchNorm`` on CUDA and to :class:`GlobalBatchNorm2d` on CPU (PyTorch's
  ``SyncBatchNorm`` runs on GPUs only). Without it each process would normalise its own shard and N processes
  would train a different model from one process with the same batch size.
- Validation after each epoch is shared: rank r predicts validation images r, r + N, ... and the logits are
  gathered back into dataset order (:func:`gather_rows`), so every rank computes the same AUROC. The final
  evaluation is shared the same way (``wsseg.pipelines.run.gather_split`` puts the per-image statistics together
  on rank 0).
- Only rank 0 writes checkpoints, records and logs (with ``--save-maps`` each rank writes its images' maps).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

_T = TypeVar("_T")


def init_from_env() -> bool:
    """Join torchrun's process group when ``WORLD_SIZE`` > 1 (NCCL on CUDA, gloo on CPU); True when distributed.

    Sets the process's CUDA device to ``LOCAL_RANK``, so ``--device cuda`` means this process's GPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return False
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if cuda else "gloo")
    return True


def rank_and_world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True on rank 0 (and in a single process): the one process that writes files and logs."""
    return rank_and_world()[0] == 0


def shard(batch: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's images of a global batch: every ``world``-th one, starting at ``rank``."""
    return list(batch[rank::world])


def unshard(parts: Sequence[Sequence[_T]]) -> list[_T]:
    """The inverse of :func:`shard`: ``parts[r]`` is rank r's share; returns the items in their original order."""
    world = len(parts)
    out: list[Any] = [None] * sum(len(p) for p in parts)
    for r, part in enumerate(parts):
        out[r::world] = list(part)
    return out


# The BatchNorm layers compute their running statistics from the global batch on every rank, so the buffers agree
# without DDP's broadcast of rank 0's buffers before every forward pass. torch 2.14 renamed the option (the old name
# warns); wsseg supports torch >= 2.2.
_NO_FORWARD_BUFFER_SYNC: dict[str, Any] = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)

_StepFn = Callable[[Tensor, dict[str, Any]], dict[str, Tensor]]


class _Step(nn.Module):
    """The module DDP wraps: the method (its parameters) and the function from a batch to the loss terms.

    Wrapping forward *and* loss lets DDP's search for unused parameters start at the loss: a parameter that reaches
    the method's outputs but not the loss (a map that no loss term reads) gets no gradient, and DDP, walking from
    the outputs, would wait for it forever.
    """

    def __init__(self, method: nn.Module, fn: _StepFn) -> None:
        super().__init__()
        self.method = method
        self.fn = fn

    def forward(self, images: Tensor, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Images (B, C, H, W) and the batch -> the method's loss terms (``"loss"`` and detached parts)."""
        return self.fn(images, batch)


class DataParallel:
    """A method's training forward (images -> loss terms), with gradients averaged over the ranks by DDP.

    In one process it just calls ``fn``. In a process group it converts the method's BatchNorm layers
    (:func:`sync_batchnorm`) and runs ``fn`` through ``torch.nn.parallel.DistributedDataParallel``, which
    averages the gradients over the ranks during the backward pass of every step that ends with ``sync``.

    DDP is (re)built whenever the set of parameters that require gradients changes: DDP only ever reduces the
    parameters that required gradients when it was built, so a staged method that unfreezes a part later would
    otherwise step that part with each rank's own gradient. Building it also broadcasts rank 0's parameters and
    buffers (every rank seeds alike, so they already agree; after a stage they agree because every rank took the
    same steps).
    """

    def __init__(self, method: nn.Module, fn: _StepFn, device: torch.device) -> None:
        """Prepare ``method`` (already on ``device``) for training over the ranks of the current process group.

        Args:
            method: the method; its BatchNorm layers are converted in place when there are several ranks.
            fn: the training forward: (images, batch) -> the loss terms, ``"loss"`` the one to minimise.
            device: the method's device.
        """
        self.world = rank_and_world()[1]
        self.fn, self.device = fn, device
        self._step = _Step(sync_batchnorm(method, device) if self.world > 1 else method, fn)
        self._ddp: DistributedDataParallel | None = None
        self._trainable: list[int] = []

    def loss(self, images: Tensor, batch: dict[str, Any], *, sync: bool) -> dict[str, Tensor]:
        """The loss terms of this rank's images; the next backward averages the gradients over the ranks if ``sync``.

        With gradient accumulation only the last micro-batch of an optimizer step syncs (DDP's ``no_sync`` for
        the others, which decides at the forward pass); the gradients accumulated before it are averaged with it.
        """
        if self.world == 1:
            return self.fn(images, batch)
        ddp = self._wrapped()
        if sync:
            out: dict[str, Tensor] = ddp(images, batch)
            return out
        with ddp.no_sync():
            out = ddp(images, batch)
        return out

    def _wrapped(self) -> DistributedDataParallel:
        """DDP over the parameters that require gradients now, built again when they changed since the last step."""
        trainable = [id(p) for p in self._step.parameters() if p.requires_grad]
        if self._ddp is None or trainable != self._trainable:
            self._ddp = None  # the old reducer's gradient hooks go with it
            cuda = self.device.type == "cuda"
            self._ddp = DistributedDataParallel(
                self._step,
                device_ids=[torch.cuda.current_device()] if cuda else None,
                # A step may leave trainable parameters out (GLAM skips its local network in the global stage);
                # DDP then marks them ready itself and leaves their gradient None, as one process does. Without it
                # DDP averages wrong gradients there (tests/test_distributed.py). The price is a walk over the
                # graph per step (CAM tiny on 2 gloo processes: within the noise of the step time) and a warning
                # printed once by torch when a method uses every parameter. static_graph would avoid both but
                # needs the same parameters used in every step of a DDP's life, which stage changes that keep
                # the trainable set (GLAM's global -> joint) break.
                find_unused_parameters=True,
                **_NO_FORWARD_BUFFER_SYNC,
            )
            self._trainable = trainable
        return self._ddp


def all_reduce_sum(values: Sequence[float], device: torch.device) -> list[float]:
    """Sum a few numbers over the ranks (loss sums and counts for the epoch's log; DDP reduces gradients only)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def gather_rows(rows: np.ndarray, world: int) -> np.ndarray:
    """Every rank's rows, back in dataset order, on every rank: rank r holds rows r, r + world, r + 2 world, ...

    For the shared validation (DDP synchronises training gradients, not predictions).

    Args:
        rows: (n_r, ...) this rank's rows (the same trailing shape and dtype on every rank).
        world: the number of ranks.

    Returns:
        (sum n_r, ...) the rows of all ranks, interleaved as one process would have computed them.
    """
    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, rows)
    return np.asarray(unshard(parts), dtype=rows.dtype).reshape(-1, *rows.shape[1:])


class _AllReduceSum(torch.autograd.Function):
    """Sum over the ranks, differentiable: the gradient of every rank's input is the sum of the ranks' gradients."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # noqa: ARG004
        out = x.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # noqa: ARG004
        out = grad.clone()
        dist.all_reduce(out)
        return out


def _sum_over_ranks(x: Tensor) -> Tensor:
    total: Tensor = _AllReduceSum.apply(x)  # autograd.Function.apply is typed as returning Any
    return total


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that normalises with the statistics of the batch over all ranks, on any device (gloo on CPU).

    The same state and the same result as ``nn.BatchNorm2d`` on the concatenated global batch: the per-channel sum
    and then the sum of squared deviations are all-reduced (two passes, as exact as the single-process variance)
    through differentiable all-reduces, so the backward pass sees the global statistics too. The running variance
    is the unbiased one of the global batch. Outside training, or in one process, it is plain BatchNorm2d.

    Hand-written because ``torch.nn.SyncBatchNorm`` runs on CUDA only (it refuses CPU tensors), and the CPU
    (gloo) runs are what make distributed training testable without GPUs; CUDA runs use ``SyncBatchNorm``.
    """

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C, H, W), normalised with the global batch's per-channel mean and variance."""
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        count = torch.tensor([float(x.numel() // x.shape[1])], device=x.device, dtype=torch.float32)
        dims = (0, 2, 3)
        xf = x.float()
        n = _sum_over_ranks(count)  # images x pixels of the global batch
        mean = _sum_over_ranks(xf.sum(dim=dims)) / n  # (C,)
        centred = xf - mean[None, :, None, None]
        var = _sum_over_ranks(centred.square().sum(dim=dims)) / n  # (C,) biased, used to normalise
        tracked = self.num_batches_tracked
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            assert tracked is not None  # BatchNorm creates it whenever it tracks running statistics
            tracked.add_(1)
            momentum = 1.0 / float(tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), momentum)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def _to_global_bn(module: nn.Module) -> None:
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d  # a subclass without state of its own: weights, device and flags stay
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and not isinstance(m, GlobalBatchNorm2d):
            raise ValueError(
                f"distributed training on CPU synchronises plain BatchNorm2d layers only, and this method has a "
                f"{type(m).__name__}; train on CUDA (SyncBatchNorm) or in one process"
            )


def sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Convert ``module``'s BatchNorm layers in place to global-batch ones (state dict keys unchanged).

    CUDA: timm's conversion to ``SyncBatchNorm`` (it also handles timm's BatchNorm+activation layers);
    CPU: :class:`GlobalBatchNorm2d`.
    """
    if device.type == "cuda":
        from timm.layers.norm_act import convert_sync_batchnorm

        # timm leaves convert_sync_batchnorm unannotated.
        converted: nn.Module = convert_sync_batchnorm(module)  # type: ignore[no-untyped-call]
        return converted
    _to_global_bn(module)
    return module


__all__ = [
    "DataParallel",
    "GlobalBatchNorm2d",
    "all_reduce_sum",
    "gather_rows",
    "init_from_env",
    "is_main",
    "rank_and_world",
    "shard",
    "sync_batchnorm",
    "unshard",
]
