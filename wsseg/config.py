"""Run configuration: typed dataclasses, profile presets and checked ``--set`` overrides.

Precedence, lowest to highest: the profile preset, then ``--set section.field=value`` overrides, then
the explicit CLI flags (``--epochs``, ``--batch-size``, ...). Unknown keys and values of the wrong
type are rejected with the list of valid keys. The resolved config goes into every checkpoint and
run record.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsseg.data.phantom import PhantomConfig
from wsseg.method import Profile
from wsseg.registry import make_config

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16"]


@dataclass
class DataConfig:
    """Which images a run reads.

    Attributes:
        dataset: ``phantom`` (built in) or a registered data source (``wsseg list datasets``).
        root: the downloaded dataset's folder (or index file) for a data source; unused by the phantom.
        seed: the dataset's generator seed, fixed so every method and training seed sees the same images.
        n_train, n_val, n_test: phantom images per split (multiples of 4: one exam of four views per patient).
        cache_dir: base cache folder; ``$WSSEG_CACHE_DIR`` or the XDG cache when None.
        num_workers: data-loading processes; 0 on CPU (the 2 cores are busier computing), more on CUDA.
        allow_outside_root: let a data source's index (a manifest CSV) list files outside ``root``; off by
            default, so a downloaded index cannot make wsseg read ``../../etc/passwd`` or another user's files.
        voi_lut: a data source's DICOMs are read through their VOI LUT / window instead of as raw linear values.
        folds: k of a k-fold cross-validation by patient (:mod:`wsseg.data.folds`); None: one train/val/test split.
        fold: which fold this run tests on, 0 .. folds - 1 (needs ``folds``).
    """

    dataset: str = "phantom"
    root: str | None = None
    seed: int = 0
    n_train: int = 1280
    n_val: int = 320
    n_test: int = 320
    cache_dir: str | None = None
    num_workers: int | None = None
    allow_outside_root: bool = False
    voi_lut: bool = False
    folds: int | None = None
    fold: int | None = None


@dataclass
class TrainConfig:
    """The training loop's settings.

    Attributes:
        epochs: passes over the training split.
        batch_size: images per micro-batch.
        grad_accum: micro-batches per optimizer step.
        lr: peak learning rate (AdamW), reached after ``warmup_steps`` and decayed with a cosine.
        weight_decay: AdamW weight decay on weights (not on norms and biases).
        warmup_steps: linear warm-up length in optimizer steps.
        clip_grad: global gradient-norm clip; None disables it.
        checkpoint_every: optimizer steps between mid-epoch checkpoints (each epoch end is checkpointed too).
        device: ``auto`` picks CUDA when available.
        precision: ``auto`` is bf16 autocast on CUDA and fp32 on CPU.
        deterministic: ask torch for deterministic kernels (slower on GPU).
        augment: ``window`` moves and resizes each training image's window on the training device (the NYU
            classifier's window noise, :mod:`wsseg.training.augment`); ``none`` trains on the images as they are.
        augment_shift_px: window shift per axis at most, in pixels of the 2944-row paper frame (scaled by height).
        augment_size_px: border noise at most, vertical, in paper-frame pixels (horizontal: times 1920/2944).
    """

    epochs: int = 8
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 20
    clip_grad: float | None = 5.0
    checkpoint_every: int = 25
    device: Device = "auto"
    precision: Precision = "auto"
    deterministic: bool = False
    augment: Literal["none", "window"] = "none"
    augment_shift_px: float = 100.0
    augment_size_px: float = 100.0


@dataclass
class EvalConfig:
    """The evaluator's settings (definitions in wsseg.evaluation and the README's evaluation protocol).

    Attributes:
        n_bins: threshold grid resolution (thresholds k / n_bins).
        fixed_threshold: the fixed operating point reported beside the calibrated one.
        batch_size: images per inference batch.
        upsample: how maps reach the mask resolution: ``bilinear`` (the benchmark's rule), ``nearest`` or ``bicubic``.
        froc_nms_mm: FROC detections are local maxima of a (2 r + 1)-pixel window, r = this / pixel spacing.
        froc_tolerance_mm: lesions are grown by this distance before detections are matched to them.
        froc_max_candidates: detections kept per image and class (the highest-scoring ones).
        bootstrap_resamples: patient-bootstrap resamples for the 95% intervals (0 disables them).
        bootstrap_seed: the bootstrap's seed.
        save_maps: store the test maps (float16 ``.npy``, 2 bytes per pixel) in the run folder for
            ``wsseg evaluate`` and ``wsseg score``.
    """

    n_bins: int = 1000
    fixed_threshold: float = 0.5
    batch_size: int = 8
    upsample: Literal["bilinear", "nearest", "bicubic"] = "bilinear"
    froc_nms_mm: float = 5.0
    froc_tolerance_mm: float = 5.0
    froc_max_candidates: int = 100
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    save_maps: bool = False


@dataclass
class RunConfig:
    """Everything that defines a run."""

    method: str
    profile: Profile = "quick"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method_config: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-compatible data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(
            method=d["method"],
            profile=d["profile"],
            seed=d["seed"],
            data=DataConfig(**d["data"]),
            train=TrainConfig(**d["train"]),
            eval=EvalConfig(**d["eval"]),
            method_config=dict(d["method_config"]),
        )

    @classmethod
    def read(cls, path: str | Path) -> RunConfig:
        """The config a run saved (``<run>/config.json``)."""
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# Per-profile presets of the run-level settings; method hyperparameters come from each method's Config.
PROFILES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "data": {"n_train": 16, "n_val": 8, "n_test": 8},
        "train": {"epochs": 2, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2},
        "eval": {"batch_size": 8},
    },
    "quick": {},
    "paper": {
        "data": {"n_train": 2000, "n_val": 400, "n_test": 400},
        "train": {"epochs": 30, "batch_size": 8, "lr": 1e-4, "warmup_steps": 200, "checkpoint_every": 200},
        "eval": {"batch_size": 4},
    },
}


def phantom_config(profile: Profile) -> PhantomConfig:
    """The phantom generator settings of a profile (image size and pixel spacing)."""
    return {"tiny": PhantomConfig.tiny, "quick": PhantomConfig.quick, "paper": PhantomConfig.paper}[profile]()


def make_run_config(
    method: str, profile: Profile = "quick", seed: int = 0, overrides: list[str] | None = None
) -> RunConfig:
    """The ``profile`` preset for ``method`` with ``--set``-style overrides applied.

    Args:
        method: registered method name.
        profile: ``tiny``, ``quick`` or ``paper``.
        seed: the training seed.
        overrides: items ``section.field=value`` with section one of data, train, eval, method.

    Raises:
        ValueError: an unknown profile, section or field, or a value that does not parse as the field's type.
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    preset = PROFILES[profile]
    cfg = RunConfig(
        method=method,
        profile=profile,
        seed=seed,
        data=DataConfig(**preset.get("data", {})),
        train=TrainConfig(**preset.get("train", {})),
        eval=EvalConfig(**preset.get("eval", {})),
    )
    method_cfg = make_config(method, profile)
    sections: dict[str, Any] = {"data": cfg.data, "train": cfg.train, "eval": cfg.eval, "method": method_cfg}
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or section not in sections:
            raise ValueError(f"bad override {item!r}; write section.field=value with section one of {sorted(sections)}")
        target = sections[section]
        fields = {f.name: f for f in dataclasses.fields(target)}
        if name not in fields:
            raise ValueError(f"{section} has no field {name!r}; valid fields: {', '.join(sorted(fields))}")
        hint = typing.get_type_hints(type(target))[name]
        setattr(target, name, parse_value(raw.strip(), hint, key))
    check_ranges(cfg)
    check_folds(cfg.data)
    cfg.method_config = method_cfg.to_dict()
    return cfg


# field -> (test, what it must be); a value outside its range would fail far from the flag that set it.
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda v: v >= 0, "an integer >= 0"),
    "data.seed": (lambda v: v >= 0, "an integer >= 0"),
    "data.num_workers": (lambda v: v is None or v >= 0, "none or an integer >= 0"),
    "train.epochs": (lambda v: v >= 1, "at least 1"),
    "train.batch_size": (lambda v: v >= 1, "at least 1"),
    "train.grad_accum": (lambda v: v >= 1, "at least 1"),
    "train.lr": (lambda v: v > 0, "a positive number"),
    "train.weight_decay": (lambda v: v >= 0, "0 or more"),
    "train.warmup_steps": (lambda v: v >= 0, "0 or more"),
    "train.clip_grad": (lambda v: v is None or v > 0, "none or a positive number"),
    "train.checkpoint_every": (lambda v: v >= 1, "at least 1"),
    "train.augment_shift_px": (lambda v: 0 <= v < 1000, "in [0, 1000)"),
    "train.augment_size_px": (lambda v: 0 <= v < 1000, "in [0, 1000)"),
    "eval.n_bins": (lambda v: v >= 1, "at least 1"),
    "eval.fixed_threshold": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "eval.batch_size": (lambda v: v >= 1, "at least 1"),
    "eval.froc_nms_mm": (lambda v: v > 0, "a positive number"),
    "eval.froc_tolerance_mm": (lambda v: v >= 0, "0 or more"),
    "eval.froc_max_candidates": (lambda v: v >= 1, "at least 1"),
    "eval.bootstrap_resamples": (lambda v: v >= 0, "0 or more"),
    "eval.bootstrap_seed": (lambda v: v >= 0, "an integer >= 0"),
}


def check_ranges(cfg: RunConfig) -> None:
    """Refuse run-level values outside their range (``train.epochs=0``, ``--seed -1``...).

    Raises:
        ValueError: naming the field, the value and what it must be.
    """
    for key, (ok, must) in _RANGES.items():
        section, _, name = key.rpartition(".")
        value = getattr(getattr(cfg, section) if section else cfg, name)
        if not ok(value):
            flag = "--seed" if key == "seed" else key
            raise ValueError(f"{flag} must be {must}, got {value!r}")


def check_folds(data: DataConfig) -> None:
    """Refuse a fold without a fold count, a fold count without a fold, or either out of range.

    Raises:
        ValueError: naming the option and the fix.
    """
    from wsseg.data.folds import check_folds as check_range

    if data.folds is None and data.fold is None:
        return
    if data.folds is None or data.fold is None:
        raise ValueError(
            "--folds K and --fold F go together (data.folds and data.fold): a run tests on one fold of a k-fold "
            "split; `folds = K` in a benchmark file runs every fold"
        )
    check_range(data.folds, data.fold)


def parse_value(raw: str, hint: Any, key: str) -> Any:
    """Parse ``raw`` as the type ``hint`` (int, float, bool, str, Literal, Optional of those)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return parse_value(raw, arg, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        choices = typing.get_args(hint)
        if raw not in choices:
            raise ValueError(f"{key} must be one of {list(choices)}, got {raw!r}")
        return raw
    if hint is bool:
        if raw.lower() in ("true", "1", "yes"):
            return True
        if raw.lower() in ("false", "0", "no"):
            return False
        raise ValueError(f"{key} must be true or false, got {raw!r}")
    if hint in (int, float, str):
        try:
            value = hint(raw)
        except ValueError:
            raise ValueError(f"{key} must be {hint.__name__}, got {raw!r}") from None
        if hint is float and not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {raw!r}")
        return value
    raise ValueError(f"{key} cannot be set from the command line (type {hint})")
