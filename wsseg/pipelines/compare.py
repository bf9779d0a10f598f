"""``wsseg compare``: paired bootstrap of two scored folders over their shared test images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wsseg.core import PER_IMAGE_STATS
from wsseg.evaluation.stats import SplitStats
from wsseg.pipelines.scored import InputError
from wsseg.report.records import evaluation_precision, read_record_json

# wsseg compare


def load_scored(folder: Path) -> tuple[dict[str, Any], SplitStats]:
    """The record and per-image statistics of a run, score or evaluate folder.

    Raises:
        InputError: the folder lacks either file.
    """
    folder = Path(folder)
    if not (folder / "record.json").is_file():
        raise InputError(f"{folder} has no record.json; pass a wsseg run folder or a `wsseg score --out` folder")
    record = read_record_json(folder / "record.json")
    name = (record.get("per_image") or {}).get("stats", PER_IMAGE_STATS)
    if not (folder / name).is_file():
        raise InputError(
            f"{folder} has no {name} (per-image statistics); it was made by an older wsseg: re-run it, or re-score "
            "its maps with `wsseg evaluate` or `wsseg score`"
        )
    return record, SplitStats.load(folder / name)


def check_comparable(a: tuple[dict[str, Any], SplitStats], b: tuple[dict[str, Any], SplitStats]) -> None:
    """Raise InputError unless two scored folders share their test images, patients, ground truth and grid settings."""
    from wsseg.evaluation.bootstrap import check_same_images

    (ra, sa), (rb, sb) = a, b
    try:
        check_same_images(sa, sb)
    except ValueError as e:
        raise InputError(str(e)) from e
    key_a = (ra.get("dataset_info") or {}).get("cache_key")
    key_b = (rb.get("dataset_info") or {}).get("cache_key")
    if key_a and key_b and key_a != key_b:
        raise InputError(
            f"the test sets differ: dataset cache keys {key_a} vs {key_b} (another profile, seed or generator "
            "version); compare runs made on the same data"
        )
    sb = sb.reorder(sa.image_ids)
    for name in sa.classes:
        if name in sb.classes and not (
            np.array_equal(sa.classes[name].gt, sb.classes[name].gt)
            and np.array_equal(sa.classes[name].area, sb.classes[name].area)
        ):
            raise InputError(
                f"the test sets differ: the same image ids but other {name} masks or evaluated regions (or another "
                "resolution); compare runs scored against the same ground truth"
            )
    fa = ra.get("evaluation", {}).get("fixed_threshold")
    fb = rb.get("evaluation", {}).get("fixed_threshold")
    if fa != fb:
        raise InputError(f"the runs used other fixed thresholds ({fa} vs {fb}); re-score one with the other's")


def comparability_notes(ra: dict[str, Any], rb: dict[str, Any]) -> list[str]:
    """What differs between two comparable records without making them incomparable: the evaluation precision.

    A run evaluated in bf16 beside one in fp32 is a fair paired comparison of their maps, but part of a small
    difference may be numerical; records without a precision read as fp32, a ``wsseg score`` record's is unknown.
    """
    pa, pb = evaluation_precision(ra), evaluation_precision(rb)
    if pa is None or pb is None or pa == pb:
        return []
    return [
        f"precision mismatch: A's maps were computed in {pa}, B's in {pb}; part of a small difference may be "
        "numerical (evaluate both in the same precision: --set train.precision=fp32)"
    ]


def _metric_thresholds(record: dict[str, Any], stats: SplitStats, folder: Path) -> dict[str, float]:
    """Per class of ``stats``, the threshold of the record's metrics (read_record_json checked its type and range)."""
    metrics = record.get("metrics")
    if not isinstance(metrics, dict):
        metrics = {}  # every class is missing
    missing = [c for c in stats.classes if "threshold" not in metrics.get(c, {})]
    if missing:
        raise InputError(
            f"{Path(folder) / 'record.json'} has no metrics.<class>.threshold for {missing}; re-run the evaluation"
        )
    return {c: float(metrics[c]["threshold"]) for c in stats.classes}


def compare_folders(a: Path, b: Path, n_resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Paired patient bootstrap of the difference between two scored folders (``wsseg compare``)."""
    from wsseg.evaluation.bootstrap import paired_bootstrap

    ra, sa = load_scored(a)
    rb, sb = load_scored(b)
    check_comparable((ra, sa), (rb, sb))
    fixed = float(ra.get("evaluation", {}).get("fixed_threshold", 0.5))
    ta, tb = _metric_thresholds(ra, sa, a), _metric_thresholds(rb, sb, b)
    result = paired_bootstrap(sa, ta, sb, tb, fixed, n_resamples, seed)
    return {
        "a": str(a),
        "b": str(b),
        "rule": "paired percentile bootstrap over patients (the same resamples for both), thresholds frozen",
        "n_resamples": n_resamples,
        "seed": seed,
        "n_images": len(sa),
        "n_patients": len(set(sa.patient_ids)),
        "notes": comparability_notes(ra, rb),
        "classes": result,
    }


# The metrics `wsseg compare` shows unless told otherwise.
DEFAULT_METRICS = ("dice", "iou", "dice_pooled", "soft_dice", "pxap", "pointing_game_10mm", "froc", "auroc")


def compare_and_write(
    a: Path, b: Path, n_resamples: int, seed: int, metrics: list[str] | None, out: Path | None
) -> tuple[dict[str, Any], list[str]]:
    """``wsseg compare``: :func:`compare_folders`, the metric keys to show, and the full result written to ``out``.

    Args:
        a: scored folder A.
        b: scored folder B (the difference is A - B).
        n_resamples: paired bootstrap resamples.
        seed: bootstrap seed.
        metrics: keys to show; ``None`` for :data:`DEFAULT_METRICS`, a list holding ``all`` for every one.
        out: a JSON file for the full comparison (written atomically), or None.

    Raises:
        ValueError: an unknown metric key (nothing is written then).
    """
    from wsseg._io import atomic_write_json
    from wsseg.evaluation.summary import interval_keys

    result = compare_folders(a, b, n_resamples, seed)
    known = interval_keys()
    keys = known if metrics and "all" in metrics else list(metrics or DEFAULT_METRICS)
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ValueError(f"unknown metric {unknown[0]!r}; choose from {', '.join(known)}")
    if out is not None:
        atomic_write_json(out, result)
    return result, keys
