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
import os
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from wsseg.core import PROFILE_GEOMETRY
from wsseg.data.phantom import PhantomConfig
from wsseg.method import MethodConfig, Profile
from wsseg.registry import get_method_spec, make_config

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
    """Everything that defines a run.

    ``explains`` is set on post-hoc runs that explain another trained method's classifier (``--from-run`` of a
    GMIC, GLAM, HaS... run): ``{"method": <its name>, "method_config": <its config>}``, from which the explained
    network is rebuilt. None for every other run, post-hoc runs on their own CAM classifier included.
    """

    method: str
    profile: Profile = "quick"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    method_config: dict[str, Any] = field(default_factory=dict)
    explains: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-compatible data."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`, checked as ``--set`` values are.

        Every key must be known and every value of its field's type and in its range. A field missing from a
        section takes the profile preset's value, and a missing ``explains`` is null (configs saved by older versions
        lack newer fields). ``explains`` names a method ``method`` reads, with a config checked as the method's is.

        Raises:
            ValueError: naming the key and what it must be.
        """
        if not isinstance(d, dict):
            raise ValueError(f"expected a JSON object with the keys {sorted(_TOP_KEYS)}, got {type(d).__name__}")
        unknown, missing = sorted(set(d) - _TOP_KEYS - _OPTIONAL_KEYS), sorted(_TOP_KEYS - set(d))
        if unknown or missing:
            raise ValueError(f"unknown key(s) {unknown} and missing key(s) {missing}; the keys are {sorted(_TOP_KEYS)}")
        method = check_json_value(d["method"], str, "method")
        profile = check_json_value(d["profile"], Profile, "profile")
        seed = check_json_value(d["seed"], int, "seed")
        preset = PROFILES[profile]
        sections = {
            name: _section_from_json(d[name], section_cls(**preset.get(name, {})), name)
            for name, section_cls in (("data", DataConfig), ("train", TrainConfig), ("eval", EvalConfig))
        }
        method_cfg = make_config(method, profile)  # KeyError names an unknown method
        method_cfg = _section_from_json(d["method_config"], method_cfg, "method_config")
        cfg = cls(method, profile, seed, sections["data"], sections["train"], sections["eval"], method_cfg.to_dict())
        check_ranges(cfg)
        check_folds(cfg.data)
        check_method_config(cfg, method_cfg, given=sorted(d["method_config"]))
        # Absent from runs made before post-hoc runs could explain other methods: their own classifier.
        cfg.explains = _explains_from_json(d.get("explains"), cfg)
        return cfg

    @classmethod
    def read(cls, path: str | Path) -> RunConfig:
        """The config a run saved (``<run>/config.json``), checked (see :meth:`from_dict`).

        Raises:
            FileNotFoundError: no such file.
            ValueError: unreadable, not JSON, or an unknown key or bad value; the message names the file and the key.
        """
        path = Path(path)
        if not path.is_file():
            if path.exists() or path.is_symlink():
                raise ValueError(f"{path} is not a regular file; restore the run's config.json")
            raise FileNotFoundError(f"{path} does not exist; point at a wsseg run folder")
        fix = "restore it from a backup or start a new run (without --resume)"
        try:
            d = json.loads(path.read_text(encoding="utf-8-sig"))  # -sig: an editor may have added a byte-order mark
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"cannot read the run config {path}: {e}; {fix}") from None
        try:
            return cls.from_dict(d)
        except KeyError as e:
            raise ValueError(f"the run config {path} is invalid: {e.args[0] if e.args else e}; {fix}") from None
        except ValueError as e:
            raise ValueError(f"the run config {path} is invalid: {e}; {fix}") from None


_TOP_KEYS = {"method", "profile", "seed", "data", "train", "eval", "method_config"}
# Keys older configs lack: read as their default.
_OPTIONAL_KEYS = {"explains"}


def _explains_from_json(value: Any, cfg: RunConfig) -> dict[str, Any] | None:
    """The ``explains`` of a saved config, checked: null, or a method ``cfg.method`` reads with a valid config.

    Raises:
        ValueError: naming ``explains`` and what it must be.
    """
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"method", "method_config"}:
        raise ValueError(f"explains must be null or an object with the keys method and method_config, got {value!r}")
    name = check_json_value(value["method"], str, "explains.method")
    reads = get_method_spec(cfg.method).cls.reads
    if name not in reads:
        can = f"it explains runs of {', '.join(reads)}" if reads else "it is not a post-hoc method"
        raise ValueError(f"explains.method is {name!r}, which {cfg.method} cannot explain; {can}")
    explained = dataclasses.replace(cfg, method=name, explains=None)
    method_cfg = _section_from_json(value["method_config"], make_config(name, cfg.profile), "explains.method_config")
    try:
        check_method_config(explained, method_cfg, given=sorted(value["method_config"]))
    except ValueError as e:
        raise ValueError(f"explains.method_config, the config of the {name} classifier: {e}") from None
    return {"method": name, "method_config": method_cfg.to_dict()}


def _section_from_json(values: Any, default: Any, section: str) -> Any:
    """``default`` (a config dataclass) with the JSON ``values`` of its fields, each checked against its type."""
    if not isinstance(values, dict):
        raise ValueError(f"{section} must be a JSON object of fields, got {type(values).__name__}")
    fields = {f.name for f in dataclasses.fields(default)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"{section} has unknown field(s) {unknown}; valid fields: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(type(default))
    prefix = "method" if section == "method_config" else section
    checked = {k: check_json_value(v, hints[k], f"{prefix}.{k}") for k, v in values.items()}
    return dataclasses.replace(default, **checked)


def check_json_value(value: Any, hint: Any, key: str) -> Any:
    """``value`` read from JSON, checked against the type ``hint`` (tuples come back from lists).

    Raises:
        ValueError: naming ``key``, the value and the type it must have.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return check_json_value(value, arg, key)
            except ValueError as e:
                errors.append(str(e))
        raise ValueError("; ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin is tuple:
        items = list(args)
        if not isinstance(value, list | tuple):
            raise ValueError(f"{key} must be a list, got {value!r}")
        if len(items) == 2 and items[1] is Ellipsis:
            items = [items[0]] * len(value)
        if len(items) != len(value):
            raise ValueError(f"{key} must be a list of {len(items)} values, got {value!r}")
        return tuple(check_json_value(v, t, f"{key}[{i}]") for i, (v, t) in enumerate(zip(value, items, strict=True)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{key} must be int, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"{key} must be a finite number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(f"{key} must be a string, got {value!r}")
        return value
    raise ValueError(f"{key} has a type wsseg cannot read from JSON ({hint})")


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
    given = []
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
        if section == "method":
            given.append(name)
    check_ranges(cfg)
    check_folds(cfg.data)
    cfg.method_config = method_cfg.to_dict()
    check_method_config(cfg, method_cfg, given)
    return cfg


# Seeds go into numpy and torch generators; torch's take 64 bits and the loop multiplies the seed by 100,003.
MAX_SEED = 2**32 - 1
# Upper bounds of sizes and counts: far above any real setting, low enough that a typo (4e12 images) is refused
# at once instead of exhausting memory or time.
MAX_IMAGES = 1_000_000
MAX_BATCH = 4096
MAX_STEPS = 100_000_000


SEED_RANGE = f"an integer >= 0 and <= {MAX_SEED}"


def seed_ok(value: int) -> bool:
    """Whether ``value`` is a usable seed: an integer in [0, MAX_SEED]."""
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= MAX_SEED


def check_seed(value: int, flag: str) -> None:
    """Refuse a seed outside [0, MAX_SEED], naming the flag.

    Raises:
        ValueError: ``--seed must be an integer >= 0 and <= 4294967295, got -1``.
    """
    if not seed_ok(value):
        raise ValueError(f"{flag} must be {SEED_RANGE}, got {value!r}")


def check_method_config(cfg: RunConfig, method_cfg: MethodConfig, given: list[str]) -> None:
    """Refuse a method config no run can use, before any data is read.

    First the method's own limits (:meth:`MethodConfig.limits`), naming the field; then the network is built on
    PyTorch's ``meta`` device (no memory, no compute) and run on a batch of two images of the profile's size, so
    that a stride or a pooling factor the architecture cannot take is refused now rather than after the data is
    prepared. Methods whose forward pass needs real data (``nonzero``, ``quantile``) are only built.

    Raises:
        ValueError: naming the field, or the ``method.`` fields that were set when the network cannot be built.
    """
    import torch

    geometry = PROFILE_GEOMETRY[cfg.profile]
    hw = (geometry.height, geometry.width)
    for name, (ok, must) in method_cfg.limits(hw).items():
        value = getattr(method_cfg, name)
        if not ok(value):
            raise ValueError(f"method.{name} must be {must}, got {value!r}")
    # Weights files are checked (and read) when the run builds the method; the probe needs shapes only. Only file
    # fields are cleared (a path or a name): GLAM's scale_weights are numbers the forward pass uses.
    files = [
        f.name
        for f in dataclasses.fields(method_cfg)
        if f.name.endswith("weights") and isinstance(getattr(method_cfg, f.name), str | os.PathLike)
    ]
    changes: dict[str, Any] = dict.fromkeys(files)
    if "pretrained" in {f.name for f in dataclasses.fields(method_cfg)}:
        # method.pretrained=imagenet would make timm fetch the weights (network or cache) just to check shapes: the
        # run loads them when it builds the method; a random network has the same shapes.
        changes["pretrained"] = "none"
    probe = dataclasses.replace(method_cfg, **changes)
    spec = get_method_spec(cfg.method)
    try:
        with torch.device("meta"):
            model = spec.cls(probe, num_classes=2, in_chans=1)
            model.train()
            try:
                model(torch.zeros(2, 1, *hw))
            except NotImplementedError:
                pass  # an operation without a meta kernel (data-dependent shapes): the build check is what remains
            except RuntimeError as e:
                if "meta" not in str(e):
                    raise
                # A tensor made on another device (a CPU constant) meets the meta tensors: nothing to learn here.
    except Exception as e:  # any failure to build or run: this configuration cannot train (a plugin's bug too)
        fields = ", ".join(f"method.{k}={getattr(method_cfg, k)!r}" for k in given) or "none; the preset itself"
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"{cfg.method} cannot run with this configuration at --profile {cfg.profile} ({hw[0]}x{hw[1]} images): "
            f"{detail}. method fields set: {fields}; change them (see the method's Config docstring)"
        ) from None


def _between(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: low <= v <= high


# field -> (test, what it must be); a value outside its range would fail far from the flag that set it. Upper
# bounds are far above any real setting: they stop typos (a count of 4e12 images) before memory or time runs out.
# train.lr's is float32's range only: a learning rate that makes training diverge stops the run with a message
# naming the step (training.loop).
_RANGES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (seed_ok, SEED_RANGE),
    "data.seed": (seed_ok, SEED_RANGE),
    "data.n_train": (_between(1, MAX_IMAGES), f"at least 1 and at most {MAX_IMAGES}"),
    "data.n_val": (_between(1, MAX_IMAGES), f"at least 1 and at most {MAX_IMAGES}"),
    "data.n_test": (_between(1, MAX_IMAGES), f"at least 1 and at most {MAX_IMAGES}"),
    "data.num_workers": (lambda v: v is None or 0 <= v <= 256, "none or an integer >= 0 and <= 256"),
    # k of a cross-validation: the patients bound it (wsseg.data.folds says so); this refuses a typo at once. The
    # lower bound and data.fold are check_folds's.
    "data.folds": (lambda v: v is None or v <= MAX_IMAGES, f"none or an integer <= {MAX_IMAGES}"),
    "train.epochs": (_between(1, 100_000), "at least 1 and at most 100000"),
    "train.batch_size": (_between(1, MAX_BATCH), f"at least 1 and at most {MAX_BATCH}"),
    "train.grad_accum": (_between(1, MAX_BATCH), f"at least 1 and at most {MAX_BATCH}"),
    "train.lr": (lambda v: 0 < v <= 1e30, "a positive number (at most 1e30: the optimizer computes in float32)"),
    "train.weight_decay": (_between(0, 10), "0 or more and at most 10"),
    "train.warmup_steps": (_between(0, MAX_STEPS), f"0 or more and at most {MAX_STEPS}"),
    "train.clip_grad": (lambda v: v is None or 0 < v <= 1e6, "none or a positive number up to 1e6"),
    "train.checkpoint_every": (_between(1, MAX_STEPS), f"at least 1 and at most {MAX_STEPS}"),
    "train.augment_shift_px": (lambda v: 0 <= v < 1000, "in [0, 1000)"),
    "train.augment_size_px": (lambda v: 0 <= v < 1000, "in [0, 1000)"),
    "eval.n_bins": (_between(1, 100_000), "at least 1 and at most 100000"),
    "eval.fixed_threshold": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "eval.batch_size": (_between(1, MAX_BATCH), f"at least 1 and at most {MAX_BATCH}"),
    "eval.froc_nms_mm": (lambda v: 0 < v <= 1000, "a positive number up to 1000 (mm)"),
    "eval.froc_tolerance_mm": (_between(0, 1000), "0 or more and at most 1000 (mm)"),
    "eval.froc_max_candidates": (_between(1, 100_000), "at least 1 and at most 100000"),
    "eval.bootstrap_resamples": (_between(0, 1_000_000), "0 or more and at most 1000000"),
    "eval.bootstrap_seed": (seed_ok, SEED_RANGE),
}


def check_ranges(cfg: RunConfig) -> None:
    """Refuse run-level values outside their range (``train.epochs=0``, ``--seed -1``, ``data.n_train=4e12``...).

    Raises:
        ValueError: naming the field, the value and what it must be.
    """
    for key, (ok, must) in _RANGES.items():
        section, _, name = key.rpartition(".")
        value = getattr(getattr(cfg, section) if section else cfg, name)
        if not ok(value):
            flag = "--seed" if key == "seed" else key
            raise ValueError(f"{flag} must be {must}, got {value!r}")
    from wsseg.data.sources import get_source

    try:
        source = get_source(cfg.data.dataset)
    except KeyError as e:  # its message lists the registered datasets
        raise ValueError(f"{e.args[0]} (data.dataset / --dataset)") from None
    source.validate(cfg.data)


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
