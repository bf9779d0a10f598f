"""Run records: one JSON file per run, the input of every leaderboard.

Schema (``schema_version`` 3; version 1 records lack the keys marked *v2*, version 1 and 2 records the keys marked
*v3*, and both are still read); every key is always present. The records are typed (:class:`RunRecord`,
:class:`ScoreRecord`): the pipelines build them as dataclasses and write their :meth:`~RunRecord.to_json`;
:func:`read_record` reads any readable schema back into them, :func:`read_record_json` as checked JSON.

- ``schema_version``: int, bumped on changes; ``record_type`` (*v2*): ``run``, ``score`` or ``evaluate``.
- ``run_id``: folder name of the run; ``created``: UTC ISO timestamp of the record.
- ``method``: registry name; ``supervision``: ``weak``, ``full`` or ``reference`` (below); ``method_source``: built-in,
  plugin or file.
- ``explains`` (added with the post-hoc method zoo; absent from older records, read as null): the trained method
  whose classifier a post-hoc run explains when it is not the post-hoc method's own CAM classifier (``gmic``
  for ``wsseg run --method gradcam --from-run <a gmic run>``), else null. Leaderboards name such rows
  ``<method>@<explains>`` (:func:`method_label`).
- ``dataset``: dataset name; ``dataset_info``: version, cache key, image size, pixel spacing, per-split image
  counts and id hashes; for a run of one k-fold cross-validation fold only, ``folds``: ``k``, ``fold``, ``seed``,
  ``assignment`` (a hash of the whole assignment, the leaderboards' comparability key), ``source`` (``derived`` or
  the committed split file), ``file`` (``folds.csv`` in the run folder), ``rule`` and ``patients`` per split.
- ``profile``: ``tiny`` | ``quick`` | ``paper``; ``seed``: training seed.
- ``config``: the resolved run config (data, train, eval, method_config, and ``explains``: the explained method's
  name and config, or null).
- ``versions``: wsseg, torch, timm, numpy, python, phantom generator, git sha (null outside a git checkout).
- ``device``: ``cpu`` or the CUDA device name; ``precision``: ``fp32`` or ``bf16``, the training's (autocast).
- ``timings``: seconds for ``data``, ``train``, ``eval``, ``bootstrap`` (*v2*) and ``total``;
  ``throughput``: ``train_images_per_s`` and ``eval_images_per_s``; ``peak_memory_mb``: host RSS or CUDA peak;
  ``n_parameters``: the method's parameter count (added in schema 2; absent from older records);
  ``initialisation``: how each network started before training, ``{network: "random" | "imagenet:<timm tag>" |
  "file:<sha256>"}`` (``method.pretrained``, ``method.backbone_weights``; absent from older records, which were
  random unless their config names a weights file); leaderboards keep differently initialised runs apart.
- ``training``: best epoch, best validation AUROC and the per-epoch history.
- ``thresholds``: per class, the Dice-maximising threshold chosen on the validation split, and the rule used.
- ``evaluation`` (*v2*): how maps became numbers: ``n_bins``, ``fixed_threshold``, ``upsampling`` (bilinear by
  default), ``normalization``, ``region``, ``pointing_tolerances_mm``, ``froc`` (detection settings and the
  false-positive rates), the empty-ground-truth ``policy``, the ``oracle`` note and (*v3*) ``precision``: ``fp32``
  or ``bf16``, the precision the maps were computed in (a run evaluating a weights file computes in fp32 under
  ``train.precision=auto``, even on CUDA; CPU runs always in fp32). Records without it read as ``fp32``
  (:func:`evaluation_precision`); leaderboards mark rows whose precision differs from the others'.
- ``metrics``: per class (``benign``, ``malignant``) on the test split. Version 1 keys:
  ``dice``, ``iou`` (at the calibrated threshold, the headline), ``threshold``, ``dice_at_0.5``,
  ``iou_at_0.5``, ``auroc`` (image level) and ``n_images`` (test images with a lesion of that class;
  Dice and IoU are image-averaged over them, per the empty-ground-truth policy of
  :mod:`wsseg.evaluation.metrics`). *v2* adds ``dice_pooled``, ``iou_pooled``, ``dice_pooled_at_0.5``,
  ``iou_pooled_at_0.5``, the oracle upper bounds ``dice_oracle``, ``iou_oracle``, ``threshold_oracle``,
  ``dice_pooled_oracle``, ``iou_pooled_oracle``, ``threshold_pooled_oracle``, ``soft_dice``, ``pxap``,
  ``pointing_game_0mm``/``5mm``/``10mm``, ``froc`` and ``sensitivity_at_<f>_fppi`` (f = 0.25 ... 8),
  ``fp_area_fraction``, ``fp_image_rate``, ``auprc``, ``n_lesion_free``, ``n_lesions`` and ``n_label_only``
  (label-only test images: labelled with the class, lesion not located; no localisation metric uses them); for box
  ground truth also ``max_box_acc_v2``, ``box_acc_iou_0.3``/``0.5``/``0.7`` and ``n_box_images``
  (definitions in :mod:`wsseg.evaluation.summary`).
- ``intervals`` (*v2*): 95% percentile intervals from 1,000 patient-bootstrap resamples: ``rule``, ``level``,
  ``n_resamples``, ``seed``, ``n_patients`` and per class ``{metric: [low, high]}`` for every metric above
  except the oracle ones, thresholds and counts.
- ``per_image`` (*v2*): file names, in the run folder, of ``per_image.csv`` (one row per test image and class)
  and ``per_image_stats.npz`` (the statistics ``wsseg compare`` resamples).
- ``maps`` (*v2*): ``maps`` when the test maps were saved (``--save-maps``), else null.
- ``references``: the same per-class block for reference maps scored by the same evaluator, e.g.
  ``uniform_breast`` (a constant map inside the breast): the floor a method must beat; and ``chance``: each
  metric's chance level computed exactly from the test masks and breasts (pointing game: the probability that a
  peak drawn uniformly in the breast hits; definitions in :mod:`wsseg.evaluation.summary`). Records written before
  the chance block lack it; leaderboards show its pointing-game and FROC cells as n/a for them.
- ``method``'s ``supervision``: ``weak`` (image labels), ``full`` (trained on masks: an upper bound) or ``reference``
  (a map that learns nothing: uniform, random, intensity). Records written before ``reference`` existed call those
  ``weak``; leaderboards take the supervision of a registered method from the registry.

``wsseg score`` and ``wsseg evaluate`` write records of type ``score`` / ``evaluate`` with ``schema_version``,
``record_type``, ``created``, ``versions``, ``inputs``, ``dataset_info``, ``evaluation``, ``thresholds``,
``metrics``, ``intervals``, ``per_image``, ``skipped`` (images left out by ``--skip-invalid``, with file and
reason), ``n_skipped`` and ``timings``; ``evaluate`` records also carry ``run_id`` and ``method``. Their
``evaluation.precision`` is the run's for ``evaluate`` and null for ``score`` (maps made by another program).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Literal, TypedDict, TypeVar

import numpy as np
import timm
import torch

from wsseg._io import atomic_write_json
from wsseg.core import CLASSES, VERSION
from wsseg.data.phantom import PHANTOM_VERSION
from wsseg.evaluation.curves import CURVES_JSON, curves_from_stats, curves_problem
from wsseg.evaluation.stats import SplitStats

SCHEMA_VERSION = 3
READABLE_SCHEMAS = (1, 2, 3)
_R = TypeVar("_R", "RunRecord", "ScoreRecord")


def git_sha() -> str | None:
    """The commit of the wsseg checkout, or None when wsseg is not running from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def versions() -> dict[str, str | None]:
    """Versions of everything that decides a run's numbers."""
    return {
        "wsseg": VERSION,
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "phantom": PHANTOM_VERSION,
        "git_sha": git_sha(),
    }


def utc_now() -> str:
    """The current UTC time, ISO 8601, seconds precision."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


Precision = Literal["fp32", "bf16"]


def evaluation_precision(record: dict[str, Any] | RunRecord | ScoreRecord) -> str | None:
    """The precision a record's maps were computed in: ``evaluation.precision``, ``fp32`` for records without it.

    Records before schema 3 lack the field; every one of them in ``results/`` was computed on a CPU, in fp32. A
    ``wsseg score`` record says null: the maps were made by another program, in a precision wsseg cannot know.
    """
    evaluation = (record.get("evaluation") if isinstance(record, dict) else record.evaluation) or {}
    return evaluation["precision"] if "precision" in evaluation else "fp32"


class TrainingBlock(TypedDict):
    """A run record's ``training``: the best epoch, its validation AUROC, the epoch history and the weights' source."""

    best_epoch: int
    best_val_auroc: float
    history: list[dict[str, float]]
    from_run: str | None
    weights: str | None


@dataclass(kw_only=True)
class RunRecord:
    """The record of one ``wsseg run`` (``record.json`` in the run folder; the keys in the module docstring).

    Built by :func:`wsseg.pipelines.run.run` and nowhere else; :meth:`to_json` is the file's content, in the file's
    key order. Fields a record of an older schema lacks are None (or empty) when read with :func:`read_record`.
    ``extra`` keeps keys this version of wsseg does not know, so that reading and writing a record loses nothing.
    """

    run_id: str
    method: str
    explains: str | None = None
    supervision: str = "weak"
    method_source: str = "built-in"
    dataset: str
    dataset_info: dict[str, Any]
    profile: str
    seed: int
    config: dict[str, Any]
    device: str
    precision: str
    timings: dict[str, float]
    throughput: dict[str, float]
    peak_memory_mb: float | None = None
    n_parameters: int | None = None
    initialisation: dict[str, str] | None = None
    training: TrainingBlock | dict[str, Any]
    thresholds: dict[str, Any]
    evaluation: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, dict[str, float]]
    intervals: dict[str, Any] = field(default_factory=dict)
    per_image: dict[str, str] = field(default_factory=dict)
    maps: str | None = None
    gallery: str | None = None
    references: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: utc_now())
    versions: dict[str, str | None] = field(default_factory=lambda: versions())
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    record_type: ClassVar[str] = "run"

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``record.json``."""
        return {
            "schema_version": self.schema_version,
            "record_type": self.record_type,
            "run_id": self.run_id,
            "created": self.created,
            "method": self.method,
            "explains": self.explains,
            "supervision": self.supervision,
            "method_source": self.method_source,
            "dataset": self.dataset,
            "dataset_info": self.dataset_info,
            "profile": self.profile,
            "seed": self.seed,
            "config": self.config,
            "versions": self.versions,
            "device": self.device,
            "precision": self.precision,
            "timings": self.timings,
            "throughput": self.throughput,
            "peak_memory_mb": self.peak_memory_mb,
            "n_parameters": self.n_parameters,
            "initialisation": self.initialisation,
            "training": self.training,
            "thresholds": self.thresholds,
            "evaluation": self.evaluation,
            "metrics": self.metrics,
            "intervals": self.intervals,
            "per_image": self.per_image,
            "maps": self.maps,
            "gallery": self.gallery,
            "references": self.references,
            **self.extra,
        }


@dataclass(kw_only=True)
class ScoreRecord:
    """The record of ``wsseg score`` (maps made elsewhere) or ``wsseg evaluate`` (a run's saved maps re-scored).

    ``record_type`` says which; ``run_id`` and ``method`` are the evaluated run's (``evaluate`` only, None for
    ``score``). Built by :mod:`wsseg.pipelines.score` and :mod:`wsseg.pipelines.evaluate` and nowhere else.
    """

    record_type: Literal["score", "evaluate"]
    inputs: dict[str, str | None]
    dataset_info: dict[str, Any] | None
    evaluation: dict[str, Any]
    thresholds: dict[str, Any]
    metrics: dict[str, dict[str, float]]
    intervals: dict[str, Any]
    per_image: dict[str, str]
    timings: dict[str, float]
    skipped: list[dict[str, str]] = field(default_factory=list)
    run_id: str | None = None
    method: str | None = None
    created: str = field(default_factory=lambda: utc_now())
    versions: dict[str, str | None] = field(default_factory=lambda: versions())
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as written to ``record.json`` (``run_id`` and ``method`` only in ``evaluate`` records)."""
        run = {"run_id": self.run_id, "method": self.method} if self.record_type == "evaluate" else {}
        return {
            "schema_version": self.schema_version,
            "record_type": self.record_type,
            "created": self.created,
            "versions": self.versions,
            **run,
            "inputs": self.inputs,
            "dataset_info": self.dataset_info,
            "evaluation": self.evaluation,
            "thresholds": self.thresholds,
            "metrics": self.metrics,
            "intervals": self.intervals,
            "per_image": self.per_image,
            "skipped": self.skipped,
            "n_skipped": len(self.skipped),
            "timings": self.timings,
            **self.extra,
        }


def write_record(path: str | Path, record: RunRecord | ScoreRecord) -> Path:
    """Write a record atomically (a reader never sees half a record)."""
    return atomic_write_json(path, record.to_json())


def _from_json(cls: type[_R], data: dict[str, Any], skip: tuple[str, ...]) -> _R:
    """``cls`` from a record's JSON: known keys become fields, the others go to ``extra``."""
    names = {f.name for f in fields(cls) if f.init and f.name != "extra"}
    known = {k: v for k, v in data.items() if k in names}
    extra = {k: v for k, v in data.items() if k not in names and k not in skip}
    return cls(**known, extra=extra)


def record_from_json(data: dict[str, Any], path: str | Path = "record") -> RunRecord | ScoreRecord:
    """The typed record of a record's JSON (of any readable schema; see :func:`read_record`).

    Raises:
        ValueError: a run record without a key every schema has (naming ``path`` and the key).
    """
    kind = data.get("record_type", "run")  # schema 1 wrote run records only, without a type
    try:
        if kind == "run":
            return _from_json(RunRecord, data, skip=("record_type",))
        return _from_json(ScoreRecord, data, skip=("n_skipped",))
    except TypeError as e:  # a required field is missing
        raise ValueError(f"{path} lacks a key every wsseg {kind} record has ({e}); re-run what wrote it") from None


def read_record(path: str | Path) -> RunRecord | ScoreRecord:
    """Read a record of schema 1, 2 or 3 as a :class:`RunRecord` or :class:`ScoreRecord`.

    The JSON is checked as by :func:`read_record_json`. Keys an older schema lacks take the field's default (None
    or empty): readers that must tell an absent key from an empty one (the leaderboards, which regenerate old tables
    unchanged) read the JSON with :func:`read_record_json` instead.

    Raises:
        ValueError: as :func:`read_record_json`, or a run record that lacks a key every schema has.
    """
    return record_from_json(read_record_json(path), path)


def method_label(record: dict[str, Any]) -> str:
    """A record's row name: its method, or ``<method>@<classifier>`` for a post-hoc run on another method's classifier.

    Post-hoc runs on their own CAM classifier (and every record older than the ``explains`` field) keep the plain
    method name, so existing tables regenerate unchanged.
    """
    explains = record.get("explains")
    return f"{record['method']}@{explains}" if explains else str(record["method"])


def record_thresholds(record: dict[str, Any] | RunRecord | ScoreRecord) -> dict[str, float]:
    """Per class, the threshold the run calibrated on validation (the record's ``thresholds`` less its rule)."""
    thresholds = record["thresholds"] if isinstance(record, dict) else record.thresholds
    return {k: float(v) for k, v in thresholds.items() if k != "rule"}


def read_record_json(path: str | Path) -> dict[str, Any]:
    """Read a record's JSON and check the types of the keys wsseg's commands read (:func:`record_problem`).

    Raises:
        ValueError: unreadable, not JSON, not a wsseg record of a known schema version, or a key of the wrong type
            (the message names the file and the key).
    """
    path = Path(path)
    if (path.exists() or path.is_symlink()) and not path.is_file():  # a FIFO would block the read forever
        raise ValueError(f"{path} is not a regular file; pass a record.json written by wsseg")
    try:
        # utf-8-sig: a record re-saved by an editor may start with a byte-order mark.
        record = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read run record {path}: {e}; re-run the evaluation or remove it") from None
    if not isinstance(record, dict) or record.get("schema_version") not in READABLE_SCHEMAS:
        raise ValueError(f"{path} is not a wsseg record of schema version {' or '.join(map(str, READABLE_SCHEMAS))}")
    problem = record_problem(record)
    if problem is not None:
        raise ValueError(f"{path} is damaged: {problem}; re-run the evaluation that wrote it, or remove it")
    return record


def _number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _numbers(v: Any) -> bool:
    """A dict of numbers (metrics of one class: NaN is written as NaN, so every value is a number)."""
    return isinstance(v, dict) and all(_number(x) for x in v.values())


def _per_class(v: Any) -> bool:
    return isinstance(v, dict) and all(isinstance(x, dict) and _numbers(x) for x in v.values())


def _metrics(v: Any) -> bool:
    """Every class's block of numbers, with its threshold on the [0, 1] grid."""
    return _per_class(v) and all(c in v and 0 <= v[c].get("threshold", -1) <= 1 for c in CLASSES)


def _intervals(v: Any) -> bool:
    """``{rule, level, n_resamples, seed, n_patients, <class>: {metric: [low, high]}}``."""
    if not isinstance(v, dict):
        return False
    for x in v.values():
        if isinstance(x, dict) and not all(
            isinstance(p, list) and len(p) == 2 and all(_number(e) for e in p) for p in x.values()
        ):
            return False
    return True


def _file_name(v: Any) -> bool:
    """A file name inside the run folder: one plain path component (a record must not point elsewhere)."""
    return isinstance(v, str) and v not in ("", ".", "..") and "/" not in v and "\\" not in v and "\x00" not in v


def _thresholds(v: Any) -> bool:
    return isinstance(v, dict) and all(
        isinstance(x, str) if k == "rule" else _number(x) and 0 <= x <= 1 for k, x in v.items()
    )


def _folds(v: Any) -> bool:
    """``dataset_info.folds`` of a cross-validation fold's run: the keys the leaderboards group and pool by."""

    def integer(x: Any) -> bool:
        return isinstance(x, int) and not isinstance(x, bool)

    return (
        isinstance(v, dict)
        and integer(v.get("k"))
        and v["k"] >= 2
        and integer(v.get("fold"))
        and 0 <= v["fold"] < v["k"]
        and isinstance(v.get("assignment"), str)
        and v["assignment"] != ""
    )


# key -> (test, what it must be), for the keys that leaderboards, compare, evaluate and the report read. A key that
# is absent is not checked here (version 1 records lack some); the reader that needs it says so.
RECORD_KEYS: dict[str, tuple[Any, str]] = {
    "method": (lambda v: isinstance(v, str) and _file_name(v), "a method name"),
    "explains": (lambda v: v is None or (isinstance(v, str) and _file_name(v)), "null or a method name"),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "an integer >= 0"),
    "run_id": (_file_name, "a run folder name"),
    "dataset": (lambda v: isinstance(v, str), "a string"),
    "profile": (lambda v: isinstance(v, str), "a string"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "supervision": (lambda v: isinstance(v, str), "a string"),
    "record_type": (lambda v: v in ("run", "score", "evaluate"), "run, score or evaluate"),
    "metrics": (_metrics, f"an object of per-class objects of numbers ({', '.join(CLASSES)}; thresholds in [0, 1])"),
    "references": (lambda v: isinstance(v, dict) and all(_per_class(x) for x in v.values()), "per-class numbers"),
    "intervals": (_intervals, "an object of per-class [low, high] pairs"),
    "thresholds": (_thresholds, "an object of per-class thresholds in [0, 1] and a rule"),
    "dataset_info": (
        lambda v: (
            isinstance(v, dict)
            and isinstance(v.get("split_hashes", {}), dict)
            and all(isinstance(x, str) for x in v.get("split_hashes", {}).values())
            and ("folds" not in v or _folds(v["folds"]))
        ),
        "an object (split_hashes: an object of strings; folds, for a cross-validation fold: k >= 2, fold in "
        "[0, k), assignment a string)",
    ),
    "timings": (_numbers, "an object of seconds"),
    "throughput": (_numbers, "an object of numbers"),
    "n_parameters": (lambda v: v is None or _number(v), "a number"),
    "evaluation": (
        lambda v: (
            isinstance(v, dict)
            and (_number(v.get("fixed_threshold", 0.5)) and 0 <= v.get("fixed_threshold", 0.5) <= 1)
            and v.get("precision") in (None, "fp32", "bf16")
        ),
        "an object with fixed_threshold in [0, 1] and precision fp32, bf16 or null",
    ),
    "per_image": (lambda v: isinstance(v, dict) and all(_file_name(x) for x in v.values()), "file names in the folder"),
    "gallery": (lambda v: v is None or _file_name(v), "none or a file name in the folder"),
    "maps": (lambda v: v is None or _file_name(v), "none or a folder name in the run folder"),
    "training": (lambda v: isinstance(v, dict), "an object"),
    "initialisation": (
        lambda v: isinstance(v, dict) and all(isinstance(x, str) for x in v.values()),
        "an object of strings (per network: random, imagenet:<tag> or file:<sha256>)",
    ),
    "config": (lambda v: isinstance(v, dict), "an object"),
}


def record_problem(record: dict[str, Any]) -> str | None:
    """The first key of ``record`` whose value has the wrong type (with what it must be), or None."""
    for key, (ok, must) in RECORD_KEYS.items():
        if key in record and not ok(record[key]):
            shown = repr(record[key])
            return f"{key} must be {must}, got {shown[:80]}{'...' if len(shown) > 80 else ''}"
    return None


def curves_for_run(run_dir: str | Path, record: dict[str, Any]) -> dict[str, Any] | None:
    """A run's curves: ``curves.json`` when present, else rebuilt from ``per_image_stats.npz``; None when neither.

    Raises:
        ValueError: ``curves.json`` exists but is not valid JSON (names the file).
    """
    run_dir = Path(run_dir)
    path = run_dir / CURVES_JSON
    fix = "delete it to rebuild it from per_image_stats.npz"
    if path.exists() or path.is_symlink():
        if not path.is_file():  # a FIFO would block the read forever; a folder or a dangling link is no file
            raise ValueError(f"{path} is not a regular file; {fix}")
        try:
            curves = json.loads(path.read_text(encoding="utf-8-sig"))
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read {path}: {e}; {fix}") from None
        problem = curves_problem(curves)
        if problem is not None:
            raise ValueError(f"{path} is damaged: {problem}; {fix}")
        return dict(curves)
    stats_file = run_dir / str(record.get("per_image", {}).get("stats", "per_image_stats.npz"))
    if not (stats_file.exists() or stats_file.is_symlink()):
        return None
    return curves_from_stats(SplitStats.load(stats_file), record_thresholds(record))
