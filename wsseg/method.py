"""The method interface every wsseg method implements.

A method is an ``nn.Module`` registered under one name. ``forward`` returns a :class:`MethodOutput`;
``loss`` turns that output and the batch into a dict with a ``"loss"`` key. Everything a method
computes is returned, never stored on ``self`` (the GMIC/GLAM originals stash outputs on the module;
wsseg does not).
"""

from __future__ import annotations

import dataclasses
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsseg.nn.backbones import Pretrained, check_pretrained, create_backbone
from wsseg.nn.input_pool import InputPool, pool_input, pooled_channels
from wsseg.nn.upsample import to_input_resolution
from wsseg.weights import load_strict, read_state_dict, rename_prefixes

Profile = Literal["tiny", "quick", "paper"]
# weak: image-level labels only (the competitors); full: trained on the lesion masks (an upper bound, e.g. unet);
# reference: a map that learns nothing (uniform, random, intensity): a floor or prior, never a competitor.
Supervision = Literal["weak", "full", "reference"]


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

    def __post_init__(self) -> None:
        # Tuples come back from JSON records as lists; keep the declared type so configs compare equal.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, list):
                setattr(self, f.name, tuple(value))

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON-compatible data (for records and checkpoints)."""
        return dataclasses.asdict(self)

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """Per field, a test its value must pass and what it must be, checked before a run starts.

        ``image_hw`` is the profile's image size, for limits that depend on it (pooling factors, crop sizes).
        ``wsseg run`` also builds the network on PyTorch's meta device before reading data
        (:func:`wsseg.config.check_method_config`), so fields without a limit here cannot crash a run late; a limit
        gives the clearer message.
        """
        return {}


# A field's limit: a test of its value and what the value must be, e.g. ``(lambda v: v >= 1, "at least 1")``.
Limit = tuple[Callable[[Any], bool], str]


def between(low: float, high: float) -> Callable[[Any], bool]:
    """A test that a number lies in [low, high]."""
    return lambda v: low <= v <= high


def in_unit_interval(v: float) -> bool:
    """0 < v <= 1: a fraction such as a top-t% pooling's t."""
    return 0 < v <= 1


def fits_image(image_hw: tuple[int, int]) -> Callable[[Any], bool]:
    """A test that a (rows, cols) size is positive and fits inside an image of ``image_hw``."""
    return lambda v: len(v) == 2 and all(1 <= n <= m for n, m in zip(v, image_hw, strict=True))


def weights_file_ok(value: str | None) -> bool:
    """None, or an existing file that starts like a weights file (a torch.save zip or pickle, or safetensors)."""
    if value is None:
        return True
    from wsseg.weights import weights_file_problem

    return weights_file_problem(value) is None


def backbone_limits(image_hw: tuple[int, int], stride: int, pool_field: str, weights: str | None) -> dict[str, Limit]:
    """Limits shared by the backbone fields of classifier methods (input pooling, stride, weights file)."""
    side = min(image_hw)
    largest = max(1, side // stride)
    out: dict[str, Limit] = {
        pool_field: (
            between(1, largest),
            f"an integer in [1, {largest}] at this profile ({image_hw[0]}x{image_hw[1]} images): the pooled image "
            f"must keep at least {stride} pixels per side",
        ),
        "backbone_weights": (
            weights_file_ok,
            "none or the path of a weights file (.pth/.pt saved by torch.save, or .safetensors)"
            + (f"; {weights}: " + _weights_problem(weights) if weights else ""),
        ),
    }
    return out


def _weights_problem(path: str) -> str:
    from wsseg.weights import weights_file_problem

    return weights_file_problem(path) or "readable"


@dataclass
class ClassifierConfig(MethodConfig):
    """Config of a method built as a backbone and a global-average-pooled linear classifier.

    CAM and every post-hoc CAM method share these fields and presets, so a checkpoint trained by one
    of them loads into the others.

    Attributes:
        backbone: backbone name (wsseg alias or timm model).
        backbone_weights: optional local weights file; random initialisation when None.
        pretrained: ``none`` (random) or ``imagenet``: timm's pretrained weights of ``backbone`` (full-width timm
            models only; see :mod:`wsseg.nn.backbones`); excludes ``backbone_weights``.
        output_stride: backbone stride; 16 doubles the map resolution of a plain ResNet at little cost.
        input_downsample: reduce the input by this factor before the backbone (1 = full resolution).
            The quick preset uses 4 (1.6 mm pixels) so that training on 1,280 images fits minutes on a
            2-core CPU; maps are still returned at the input resolution.
        input_pool: how the input is reduced (:mod:`wsseg.nn.input_pool`): ``avg`` (average pooling) or
            ``unshuffle`` (space-to-depth: each cell's pixels become channels, so sub-cell details such as
            calcifications survive).
    """

    backbone: str = "resnet18-w16"
    backbone_weights: str | None = None
    pretrained: Pretrained = "none"
    output_stride: int = 16
    input_downsample: int = 1
    input_pool: InputPool = "avg"

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """The output stride timm's ResNets support, input pooling that leaves a map, a readable weights file."""
        return {
            "backbone": (lambda v: bool(v.strip()), "a backbone name (see `wsseg list backbones`)"),
            "output_stride": (lambda v: v in (8, 16, 32), "8, 16 or 32"),
            **backbone_limits(image_hw, 32, "input_downsample", self.backbone_weights),
        }

    @classmethod
    def tiny(cls) -> ClassifierConfig:
        """Timm's test ResNet."""
        return cls(backbone="test-resnet", output_stride=16)

    @classmethod
    def quick(cls) -> ClassifierConfig:
        """A quarter-width ResNet-18 at stride 16 on the input pooled 4x: minutes on a 2-core CPU at 736x480."""
        return cls(input_downsample=4)

    @classmethod
    def paper(cls) -> ClassifierConfig:
        """A full ResNet-18 at stride 16 (184x120 maps at 2944x1920)."""
        return cls(backbone="resnet18", output_stride=16)


@dataclass(frozen=True)
class TrainContext:
    """What the training loop tells a method's hooks about the run (``on_train_start``, ``on_epoch_start``, ...).

    Attributes:
        device: where the method trains.
        total_steps: optimizer steps of the whole run.
        epochs: epochs of the whole run (staged schedules split them).
        run_dir: the run folder (checkpoints live there).
    """

    device: torch.device
    total_steps: int
    epochs: int
    run_dir: Path

    def __getitem__(self, key: str) -> Any:
        """``ctx["epochs"]``, as hooks written when the context was a dict read it; deprecated: use ``ctx.epochs``."""
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise KeyError(key)
        warnings.warn(
            f"ctx[{key!r}] is deprecated: the training context is a TrainContext, read ctx.{key}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self, key)


class WSSegMethod(nn.Module, ABC):
    """Base class of all methods.

    Subclasses set ``Config`` to their config dataclass and implement ``forward`` and ``loss``.
    The registry sets ``name`` and ``source``. ``supervision`` is ``weak`` (image labels only), ``full`` (fully
    supervised upper bounds: the only methods whose training batches may carry masks) or ``reference`` (maps that
    learn nothing, such as the uniform floor; leaderboards never rank them among the weakly supervised methods).
    """

    name: ClassVar[str] = ""
    source: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    supervision: ClassVar[Supervision] = "weak"
    # Post-hoc methods (Grad-CAM and friends) need autograd to produce their maps.
    saliency_requires_grad: ClassVar[bool] = False
    # Key prefixes of another code base's state dicts -> wsseg's, for methods that load official weights.
    official_prefixes: ClassVar[dict[str, str]] = {}
    # Post-hoc methods only: the trained methods whose runs they explain (`--from-run`) instead of training. The
    # first is the classifier they train themselves, and the one whose run `wsseg benchmark` reuses.
    reads: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: MethodConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__()
        if not isinstance(cfg, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(cfg).__name__}")
        self.cfg = cfg
        self.num_classes = num_classes
        self.in_chans = in_chans
        if hasattr(cfg, "pretrained"):
            check_pretrained(str(cfg.pretrained), getattr(cfg, "backbone_weights", None))

    @abstractmethod
    def forward(self, images: Tensor) -> MethodOutput:
        """Map (B, C, H, W) images to a :class:`MethodOutput`."""

    @abstractmethod
    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Return a dict whose ``"loss"`` entry is the scalar to backpropagate; other entries are logged."""

    def predict(self, images: Tensor) -> MethodOutput:
        """The output used for evaluation. Post-hoc methods override this to compute maps with autograd."""
        out: MethodOutput = self(images)  # through __call__, so that forward hooks run
        return out

    def training_batch(self, batch: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
        """The batch one training step feeds this method: by default the loader's batch as it comes.

        Called by the training loop on the training device, after the window noise and before the forward. A method
        may reshape what it trains on here (the fully supervised U-Net cuts lesion-centred crops); evaluation always
        sees whole images. ``seeds`` holds one integer per image, a function of the run's seed, the epoch, the
        micro-batch and the image's place in the global batch
        (:func:`wsseg.training.augment.image_seeds`), so a resumed run and a multi-process run draw what one
        uninterrupted process draws.
        """
        return batch

    def param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups; by default no weight decay on norms and biases (1-D tensors)."""
        decay = [p for p in self.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in self.parameters() if p.requires_grad and p.ndim <= 1]
        return [
            {"params": decay, "lr": lr, "weight_decay": weight_decay},
            {"params": no_decay, "lr": lr, "weight_decay": 0.0},
        ]

    def on_train_start(self, ctx: TrainContext) -> None:
        """Hook called once before the first training step (staged schedules start here)."""

    def on_epoch_start(self, ctx: TrainContext, epoch: int) -> None:
        """Hook called at the start of every epoch (0-based ``epoch``), after ``train()``; also on resume.

        Staged schedules freeze and unfreeze submodules here; ``ctx`` holds ``epochs`` (the total).
        """

    def lr_scale(self, group: dict[str, Any], epoch: int) -> float:
        """Factor on the loop's learning rate for optimizer ``group`` during 0-based ``epoch`` (1 by default)."""
        return 1.0

    def on_epoch_end(self, ctx: TrainContext, epoch: int, metrics: dict[str, float]) -> None:
        """Hook called after each epoch (``metrics["val_auroc"]`` is NaN for an epoch that was not validated)."""

    def eligible_for_best(self, epoch: int) -> bool:
        """Whether 0-based ``epoch`` may provide the best checkpoint (staged methods exclude early stages).

        The loop validates only these epochs: validation exists to pick the best checkpoint.
        """
        return True

    def explained_layer(self) -> nn.Module:
        """The layer post-hoc methods hook when they explain this method's classifier (``--from-run``).

        It must run exactly once in :meth:`explained_logits` and output a (B, C, h, w) feature map. A method whose
        classifier can be explained overrides this and :meth:`explained_logits`.
        """
        raise NotImplementedError(
            f"{self.name or type(self).__name__} has no classifier for post-hoc methods to explain; "
            "implement explained_layer() and explained_logits(images)"
        )

    def explained_logits(self, images: Tensor) -> Tensor:
        """Images (B, C_in, H, W) -> the (B, K) class scores post-hoc methods explain, computed in this call.

        GMIC and GLAM return the logit of their global network's prediction; CAM and its variants their logits.
        """
        raise NotImplementedError(
            f"{self.name or type(self).__name__} has no classifier for post-hoc methods to explain; "
            "implement explained_layer() and explained_logits(images)"
        )

    def initialisation(self) -> dict[str, str]:
        """How each network of the method was initialised before training (the run record's ``initialisation``).

        A submodule that carries a ``wsseg_init`` string (a :class:`~wsseg.nn.backbones.Backbone`, a local ResNet or
        an encoder built from timm's pretrained weights) reports it: ``random``, ``imagenet:<timm tag>`` or
        ``file:<sha256>``; any other top-level submodule with parameters is ``random``, and so are the parameters of
        a submodule outside its marked parts (``<name> (rest)``). Methods without parameters return ``{}``.
        """
        marked = {
            n: str(m.wsseg_init)
            for n, m in self.named_modules()
            if n and isinstance(getattr(m, "wsseg_init", None), str)
        }
        out: dict[str, str] = {}
        for name, child in self.named_children():
            inside = {n: v for n, v in marked.items() if n == name or n.startswith(name + ".")}
            if name in inside:
                out[name] = inside[name]
                continue
            out.update(inside)
            covered = {id(p) for n in inside for p in self.get_submodule(n).parameters()}
            if any(id(p) not in covered for p in child.parameters()):
                out[f"{name} (rest)" if inside else name] = "random"
        return out

    def load_weights(self, path: str | Path) -> None:
        """Load a weights file strictly: a wsseg checkpoint, a flat state dict, or the official layout.

        Read with ``torch.load(weights_only=True)``. Keys in the layout of :attr:`official_prefixes` are renamed
        first; then every key must match, with equal shapes.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file cannot be read safely, or its keys differ (the message lists them).
        """
        state = read_state_dict(path)
        if self.official_prefixes and any(k.startswith(tuple(self.official_prefixes)) for k in state):
            state = rename_prefixes(state, self.official_prefixes)
        load_strict(self, state, str(path))

    def official_state_dict(self) -> dict[str, Tensor]:
        """This method's weights in the official layout (:attr:`official_prefixes`), e.g. to run the original code."""
        if not self.official_prefixes:
            raise ValueError(f"{self.name or type(self).__name__} has no official weight layout")
        return rename_prefixes(self.state_dict(), {new: old for old, new in self.official_prefixes.items()})


class ParameterFreeMethod(WSSegMethod):
    """Base of reference maps with nothing to learn (uniform, random, intensity).

    The training loop trains no method without trainable parameters; the zero loss only keeps the
    method contract whole. Their ``supervision`` is ``reference``: they are floors and priors, not competitors.
    """

    supervision: ClassVar[Supervision] = "reference"

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """A zero loss: the method has nothing to learn."""
        return {"loss": torch.zeros((), device=out.logits.device)}


def bce_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Multi-label binary cross-entropy on (B, K) logits; the default weak-supervision loss."""
    return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())


def probability_bce(probs: Tensor, labels: Tensor, eps: float = 1e-6) -> Tensor:
    """Binary cross-entropy of (B, K) probabilities (not logits), in float32 and safe under autocast.

    For models whose prediction is a pooled probability map (GMIC's y_global, GLAM's top-k scores).
    """
    p = probs.float().clamp(eps, 1.0 - eps)
    y = labels.float()
    return -(y * torch.log(p) + (1.0 - y) * torch.log1p(-p)).mean()


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


# pytorch-grad-cam's ``scale_cam_image`` divides by (max + 1e-7): an all-zero map stays zero instead of 0/0.
CAM_EPS = 1e-7


@contextmanager
def capture_output(module: nn.Module) -> Iterator[list[Tensor]]:
    """Record ``module``'s output while the context is open; the hook is removed on exit, even on errors.

    The hook swaps the output for a copy of a fresh autograd leaf: the layers after ``module`` compute the
    same values, the gradient w.r.t. the leaf is exactly d logits / d activations, and backpropagation stops
    there, so no layer before ``module`` is differentiated and no parameter ``.grad`` is written. The copy
    (rather than the leaf itself) lets a following in-place op such as ``ReLU(inplace=True)`` run.
    """
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor):
            raise TypeError(f"the target layer must output a tensor, got {type(output).__name__}")
        leaf = output.detach().requires_grad_(True)
        captured.append(leaf)
        return leaf.clone()

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def replace_output(module: nn.Module, value: Tensor) -> Iterator[None]:
    """Make ``module`` output ``value`` instead of what it computes while the context is open (Ablation-CAM).

    The layers before ``module`` still run; the hook is removed on exit, even on errors.
    """

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Tensor:
        if not isinstance(output, Tensor) or output.shape != value.shape:
            got = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
            raise ValueError(f"the target layer output {got}; the replacement is {tuple(value.shape)}")
        return value

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each (image, class) map of (B, K, h, w) to [0, 1] (pytorch-grad-cam's rule)."""
    maps = maps - maps.amin(dim=(2, 3), keepdim=True)
    return maps / (maps.amax(dim=(2, 3), keepdim=True) + CAM_EPS)


def map_dtype(t: Tensor) -> torch.dtype:
    """The dtype post-hoc formulas run in: float32, or float64 for a float64 model (never bf16).

    The weighted sums cancel and the normalisation divides by their maximum, so bf16 rounding would be amplified.
    """
    return torch.promote_types(t.dtype, torch.float32)


def class_gradients(scores: Tensor, activations: Tensor) -> Tensor:
    """The gradients (B, K, C, h, w) of each class score (B, K) w.r.t. ``activations`` (B, C, h, w).

    Per class k, ONE backward pass for the whole batch gives d(sum_b scores[b, k]) / d activations; in eval mode
    the batch items are independent, so this is every image's own gradient.
    """
    k_last = scores.shape[1] - 1
    grads = [
        torch.autograd.grad(scores[:, k].sum(), activations, retain_graph=k < k_last)[0] for k in range(scores.shape[1])
    ]
    return torch.stack(grads, dim=1)  # (B, K, C, h, w)


class PostHocCAMMethod(WSSegMethod):
    """Template of the post-hoc CAM family: Grad-CAM and friends on top of a trained classifier.

    Training is CAM's: a backbone and a 1x1-convolution classifier whose spatial mean is the image logit,
    trained with multi-label BCE. The submodules are CAM's under the same names (``backbone``,
    ``classifier``), so a CAM checkpoint's state dict loads strictly into every post-hoc method.

    Built with ``network=`` another trained method (``wsseg run --method gradcam --from-run <a gmic run>``), the
    maps explain that method's classifier instead: the layer its :meth:`~WSSegMethod.explained_layer` names and the
    scores of its :meth:`~WSSegMethod.explained_logits` (GMIC's and GLAM's global network). :attr:`reads` lists
    the trained methods a post-hoc method reads; such an instance is not trained (its network was).

    ``forward`` (training) returns the sigmoid CAM as its saliency, detached and computed without any
    backward pass, so training costs what CAM costs. ``predict`` (evaluation) computes the post-hoc maps
    the way pytorch-grad-cam's ``BaseCAM`` does:

    1. a forward hook on :meth:`target_layer` records its activations A, (B, C, h, w), while :meth:`scores`
       computes the explained class scores;
    2. :meth:`raw_maps` turns them into (B, K, h, w) maps. By default, per class k, ONE backward pass for the
       whole batch gives d(sum_b score[b, k]) / dA (in eval mode every image's own gradient), and
       :meth:`class_maps` combines A and the gradients, by default ``sum_c channel_weights(A, grads)[b, k, c] *
       A[b, c]``;
    3. a ReLU, then each (image, class) map is min-max normalised to [0, 1] (an all-zero map stays zero) and
       upsampled with :func:`wsseg.nn.upsample.to_input_resolution`.

    A subclass implements :meth:`channel_weights` (Grad-CAM, Grad-CAM++, XGrad-CAM); a method whose map is not a
    channel-weighted sum of the activations overrides :meth:`class_maps` (HiResCAM, LayerCAM, Eigen-Grad-CAM); a
    method that needs more than one backward pass per class overrides :meth:`raw_maps` (Score-CAM, Ablation-CAM,
    Eigen-CAM, SmoothGrad-CAM++) and sets ``saliency_requires_grad = False`` when it needs no gradient at all.
    Call ``predict`` in eval mode (``predict_batches`` does): in train mode batch norm mixes the batch items.
    """

    Config = ClassifierConfig
    saliency_requires_grad = True
    reads: ClassVar[tuple[str, ...]] = ("cam", "has", "cutmix", "adl", "acol", "spg", "gmic", "glam")

    cfg: ClassifierConfig

    def __init__(
        self, cfg: ClassifierConfig, num_classes: int = 2, in_chans: int = 1, network: WSSegMethod | None = None
    ) -> None:
        super().__init__(cfg, num_classes, in_chans)
        self.network = network
        if network is None:
            # Built exactly as CAM builds them, so CAM checkpoints load with strict=True.
            chans = pooled_channels(in_chans, cfg.input_downsample, cfg.input_pool)
            self.backbone = create_backbone(
                cfg.backbone, chans, cfg.backbone_weights, cfg.output_stride, pretrained=cfg.pretrained
            )
            self.classifier = nn.Conv2d(self.backbone.num_features, num_classes, kernel_size=1)
        elif network.num_classes != num_classes:
            raise ValueError(f"the explained {network.name} has {network.num_classes} classes, not {num_classes}")

    def _classify(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, C_in, H, W) -> logits (B, K) and pixel logits (B, K, h, w), as CAM computes them."""
        x = pool_input(images, self.cfg.input_downsample, self.cfg.input_pool)  # (B, C_in or C_in*d*d, H/d, W/d)
        features = self.backbone(x)  # (B, C, h, w)
        pixel_logits = self.classifier(features)  # (B, K, h, w)
        return pixel_logits.mean(dim=(2, 3)), pixel_logits  # (B, K): equals classifier(GAP(features))

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, C_in, H, W) -> logits (B, K) and the sigmoid CAM (B, K, H, W), no post-hoc maps.

        The saliency here is the cheap training-time map (detached: no loss uses it); the post-hoc maps
        need a backward pass per class and come from :meth:`predict`. With another method's ``network``, its
        forward pass.
        """
        if self.network is not None:
            out: MethodOutput = self.network(images)
            return out
        logits, pixel_logits = self._classify(images)
        saliency = to_input_resolution(
            torch.sigmoid(pixel_logits.detach().float()), (images.shape[-2], images.shape[-1])
        )
        return MethodOutput(logits=logits, saliency=saliency, extras={"pixel_logits": pixel_logits})

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Multi-label BCE on the image labels (another method's ``network``: its loss)."""
        if self.network is not None:
            return self.network.loss(out, batch)
        return {"loss": bce_loss(out.logits, batch["labels"])}

    def explained_layer(self) -> nn.Module:
        """As a trained classifier: the backbone, whose feature map is the classifier's input."""
        return self.backbone

    def explained_logits(self, images: Tensor) -> Tensor:
        """As a trained classifier: CAM's logits (B, K)."""
        return self._classify(images)[0]

    def explained(self) -> WSSegMethod:
        """The method whose classifier the maps explain: this one, or the ``network`` it was built on."""
        return self if self.network is None else self.network

    def target_layer(self) -> nn.Module:
        """The module whose output is explained: the explained method's :meth:`~WSSegMethod.explained_layer`."""
        return self.explained().explained_layer()

    def scores(self, images: Tensor) -> Tensor:
        """Images (B, C_in, H, W) -> the explained (B, K) class scores (running :meth:`target_layer` once)."""
        return self.explained().explained_logits(images)

    def channel_weights(self, activations: Tensor, grads: Tensor) -> Tensor:
        """The hook a subclass implements: one weight per (image, class, channel).

        Args:
            activations: (B, C, h, w) activations of the target layer, float32 or float64.
            grads: (B, K, C, h, w) gradients of each class logit w.r.t. ``activations``, same dtype.

        Returns:
            (B, K, C) channel weights.
        """
        raise NotImplementedError(
            f"{type(self).__name__} must implement channel_weights(activations, grads) -> (B, K, C), "
            "or override class_maps(activations, grads) -> (B, K, h, w) for an elementwise map"
        )

    def class_maps(self, activations: Tensor, grads: Tensor) -> Tensor:
        """The maps before ReLU and normalisation; override only when they are not channel-weighted sums.

        Args:
            activations: (B, C, h, w) activations of the target layer, float32 or float64.
            grads: (B, K, C, h, w) gradients of each class logit w.r.t. ``activations``, same dtype.

        Returns:
            (B, K, h, w) raw maps; the template applies the ReLU and the normalisation.
        """
        weights = self.channel_weights(activations, grads)  # (B, K, C)
        return torch.einsum("bkc,bchw->bkhw", weights, activations)  # (B, K, h, w)

    def raw_maps(self, images: Tensor, scores: Tensor, activations: Tensor) -> Tensor:
        """The (B, K, h, w) maps before the ReLU and the normalisation, in :func:`map_dtype`.

        By default the gradients of each class score (:func:`class_gradients`), then :meth:`class_maps` in float32
        with autocast off. Methods that run more forward or backward passes override this.

        Args:
            images: (B, C_in, H, W) the input.
            scores: (B, K) the explained class scores of ``images``; connected to ``activations`` by autograd when
                ``saliency_requires_grad`` is set.
            activations: (B, C, h, w) the target layer's output (an autograd leaf).
        """
        grads = class_gradients(scores, activations)  # (B, K, C, h, w)
        dtype = map_dtype(activations)
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.class_maps(activations.detach().to(dtype), grads.to(dtype))

    def predict(self, images: Tensor) -> MethodOutput:
        """Images (B, C_in, H, W) -> logits (B, K) and post-hoc maps (B, K, H, W) in [0, 1], all detached.

        Works under ``torch.no_grad()`` (autograd is enabled inside when the method needs gradients), leaves no
        hook and no parameter ``.grad`` behind and does not change the train/eval mode. ``logits`` are the
        explained scores; ``extras["cam_lowres"]`` holds the normalised (B, K, h, w) maps at the target layer's
        resolution.
        """
        with torch.set_grad_enabled(self.saliency_requires_grad):
            with capture_output(self.target_layer()) as captured:
                logits = self.scores(images)  # (B, K)
            if len(captured) != 1:
                raise RuntimeError(f"the target layer ran {len(captured)} times in one forward pass; expected once")
            maps = self.raw_maps(images, logits, captured[0])  # (B, K, h, w), float32 or float64
        with torch.autocast(device_type=images.device.type, enabled=False):
            cam_lowres = normalize_maps(F.relu(maps))  # (B, K, h, w)
        saliency = to_input_resolution(cam_lowres, (images.shape[-2], images.shape[-1]))  # (B, K, H, W)
        return MethodOutput(logits=logits.detach(), saliency=saliency, extras={"cam_lowres": cam_lowres})


class CAMMethod(PostHocCAMMethod):
    """Base of CAM and the training-time WSOL methods built on it (HaS, CutMix, ADL, SPG).

    The post-hoc template's classifier, trained; the evaluation map is the sigmoid CAM of :meth:`forward`, computed
    without any backward pass. Subclasses change training only (the input, the loss, the backbone's training
    forward), so their weights are a CAM classifier that post-hoc methods explain (``--from-run``).
    """

    # CAM's map is the classifier itself, applied at every location: no gradients needed.
    saliency_requires_grad = False
    # These methods train their classifier; they are what post-hoc methods read, not post-hoc methods.
    reads = ()

    def predict(self, images: Tensor) -> MethodOutput:
        """Images (B, 1, H, W) -> logits (B, K) and sigmoid CAMs (B, K, H, W): the forward pass's own map."""
        out: MethodOutput = self(images)
        return out
