"""Run records: one JSON file per run, the input of every leaderboard.

Schema (``schema_version`` 2; version 1 records lack the keys marked *v2* and are still read);
every key is always present:

- ``schema_version``: int, bumped on changes; ``record_type`` (*v2*): ``run``, ``score`` or ``evaluate``.
- ``run_id``: folder name of the run; ``created``: UTC ISO timestamp of the record.
- ``method``: registry name; ``supervision``: ``weak`` or ``full``; ``method_source``: built-in, plugin or file.
- ``dataset``: dataset name; ``dataset_info``: version, cache key, image size, pixel spacing, per-split image
  counts and id hashes.
- ``profile``: ``tiny`` | ``quick`` | ``paper``; ``seed``: training seed.
- ``config``: the resolved run config (data, train, eval, method_config).
- ``versions``: wsseg, torch, timm, numpy, python, phantom generator, git sha (null outside a git checkout).
- ``device``: ``cpu`` or the CUDA device name; ``precision``: ``fp32`` or ``bf16``.
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
  false-positive rates), the empty-ground-truth ``policy`` and the ``oracle`` note.
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
  ``uniform_breast`` (a constant map inside the breast): the floor a method must beat.

``wsseg score`` and ``wsseg evaluate`` write records of type ``score`` / ``evaluate`` with ``schema_version``,
``record_type``, ``created``, ``versions``, ``inputs``, ``dataset_info``, ``evaluation``, ``thresholds``,
``metrics``, ``intervals``, ``per_image``, ``skipped`` (images left out by ``--skip-invalid``, with file and
reason), ``n_skipped`` and ``timings``; ``evaluate`` records also carry ``run_id`` and ``method``.
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

import wsseg
from wsseg._io import atomic_write_json
from wsseg.data.phantom import PHANTOM_VERSION

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)


def git_sha() -> str | None:
    """The commit of the wsseg checkout, or None when wsseg is not running from a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(wsseg.__file__).parent,
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
        "wsseg": wsseg.__version__,
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


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Write a record atomically (a reader never sees half a record)."""
    return atomic_write_json(path, record)


def record_thresholds(record: dict[str, Any]) -> dict[str, float]:
    """Per class, the threshold the run calibrated on validation (the record's ``thresholds`` less its rule)."""
    return {k: float(v) for k, v in record["thresholds"].items() if k != "rule"}


def read_record(path: str | Path) -> dict[str, Any]:
    """Read a record.

    Raises:
        ValueError: not JSON, or not a wsseg record of a known schema version.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read run record {path}: {e}") from e
    if not isinstance(record, dict) or record.get("schema_version") not in READABLE_SCHEMAS:
        raise ValueError(f"{path} is not a wsseg record of schema version {' or '.join(map(str, READABLE_SCHEMAS))}")
    return record
