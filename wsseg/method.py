"""The method interface every wsseg method implements.

A method is an ``nn.Module`` registered under one name. ``forward`` returns a :class:`MethodOutput`;
``loss`` turns that output and the batch into a dict with a ``"loss"`` key. Everything a method
computes is returned, never stored on ``self`` (the GMIC/GLAM originals stash outputs on the module;
wsseg does not).
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

Profile = Literal["tiny", "quick", "paper"]
Supervision = Literal["weak", "full"]


@dataclass
class MethodOutput:
    """What a method's forward pass returns.

    Attributes:
        logits: (B, K) image-level class logits before the sigmoid.
        saliency: (B, K, H, W) per-class maps at the input resolution, values in [0, 1].
        extras: anything the loss or an analysis needs (native-resolution maps, branch outputs, ...).
    """

    logits: Tensor
    saliency: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class MethodConfig:
    """Base of every method's ``Config`` dataclass.

    Subclasses add their hyperparameters as typed fields with defaults and override the presets.
    ``quick`` is the default when no profile is named (a 2-core CPU trains it in minutes), ``paper``
    is the published architecture for GPUs and ``tiny`` is sized for unit tests.
    """

    @classmethod
    def tiny(cls) -> MethodConfig:
        """A preset sized for unit tests on CPU (seconds)."""
        return cls()

    @classmethod
    def quick(cls) -> MethodConfig:
        """The default preset: minutes on a 2-core CPU at 736x480."""
        return cls()

    @classmethod
    def paper(cls) -> MethodConfig:
        """The published configuration at 2944x1920, for GPUs."""
        return cls()

    @classmethod
    def preset(cls, profile: Profile) -> MethodConfig:
        """Return the preset named ``profile`` (``tiny``, ``quick`` or ``paper``)."""
        presets = {"tiny": cls.tiny, "quick": cls.quick, "paper": cls.paper}
        if profile not in presets:
            raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(presets)}")
        return presets[profile]()

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-compatible data (for records and checkpoints)."""
        return dataclasses.asdict(self)


class WSSegMethod(nn.Module, ABC):
    """Base class of all methods.

    Subclasses set ``Config`` to their config dataclass and implement ``forward`` and ``loss``.
    The registry sets ``name`` and ``source``; ``supervision`` marks fully supervised reference rows
    (the only methods whose training batches may carry masks).
    """

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    supervision: ClassVar[Supervision] = "weak"
    # Post-hoc methods (Grad-CAM and friends) need autograd to produce their maps.
    saliency_requires_grad: ClassVar[bool] = False

    def __init__(self, cfg: MethodConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__()
        if not isinstance(cfg, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.in_chans = in_chans

    @abstractmethod
    def forward(self, images: Tensor) -> MethodOutput:
        """Map (B, C, H, W) images to a :class:`MethodOutput`."""

    @abstractmethod
    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Return a dict whose ``"loss"`` entry is the scalar to backpropagate; other entries are logged."""

    def predict(self, images: Tensor) -> MethodOutput:
        """The output used for evaluation. Post-hoc methods override this to compute maps with autograd."""
        return self(images)

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; by default no weight decay on norms and biases (1-D tensors)."""
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim <= 1]
        return [
            {"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]

    def on_train_start(self, ctx: dict[str, Any]) -> None:
        """Hook called once before the first training step (staged schedules start here)."""

    def on_epoch_end(self, ctx: dict[str, Any], epoch: int, metrics: dict[str, float]) -> None:
        """Hook called after each epoch's validation."""


def bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label binary cross-entropy on (B, K) logits; the default weak-supervision loss."""
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())


def check_output(out: MethodOutput, batch_size: int, num_classes: int, size: tuple[int, int]) -> None:
    """Raise a ValueError naming the problem when a method's output breaks the contract."""
    if tuple(out.logits.shape) != (batch_size, num_classes):
        raise ValueError(f"logits must be (B, K) = {(batch_size, num_classes)}, got {tuple(out.logits.shape)}")
    expected = (batch_size, num_classes, *size)
    if tuple(out.saliency.shape) != expected:
        raise ValueError(
            f"saliency must be (B, K, H, W) = {expected} at the input resolution, got {tuple(out.saliency.shape)}; "
            "upsample with wsseg.nn.upsample.to_input_resolution"
        )
    if not torch.isfinite(out.saliency).all():
        raise ValueError("saliency contains NaN or inf")
    lo, hi = float(out.saliency.detach().min()), float(out.saliency.detach().max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"saliency must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]")
