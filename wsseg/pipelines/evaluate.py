"""``wsseg run --save-maps`` writes maps; ``wsseg evaluate`` re-scores them against the dataset."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from wsseg.config import EvalConfig, RunConfig
from wsseg.core import CLASSES, short_list
from wsseg.data.dataset import MammogramDataset, split_hash
from wsseg.data.prepare import prepare_dataset
from wsseg.data.sources import PrepareOptions
from wsseg.evaluation.evaluator import SegmentationEvaluator
from wsseg.evaluation.lesions import image_lesion_type
from wsseg.pipelines.run import fold_splits
from wsseg.pipelines.score import LabelRow, check_map_size, index_class_files, map_size, read_labels, read_map
from wsseg.pipelines.scored import (
    MAP_SUFFIXES,
    MAPS_DIR,
    TEST_LABELS,
    InputError,
    evaluation_settings,
    make_evaluator,
    map_file_stem,
    score_stats,
)
from wsseg.report.records import (
    RunRecord,
    ScoreRecord,
    evaluation_precision,
    read_record,
    record_thresholds,
    write_record,
)

# wsseg run --save-maps, wsseg evaluate


def _finished_run(run_dir: Path) -> tuple[RunRecord, RunConfig]:
    """The record and config of a run folder that saved its test maps.

    Raises:
        InputError: the folder is not a finished run, or it saved no maps.
    """
    for name in ("record.json", "config.json"):
        if not (run_dir / name).is_file():
            raise InputError(f"--run {run_dir} has no {name}; point it at a finished wsseg run folder")
    if not (run_dir / MAPS_DIR).is_dir():
        raise InputError(f"--run {run_dir} has no {MAPS_DIR}/ folder; re-run it with `wsseg run ... --save-maps`")
    record = read_record(run_dir / "record.json")
    if not isinstance(record, RunRecord):
        raise InputError(f"--run {run_dir}: its record.json is a {record.record_type} record; pass a wsseg run folder")
    if not (run_dir / TEST_LABELS).is_file():
        raise InputError(f"--run {run_dir} has no {TEST_LABELS}; re-run it with `wsseg run ... --save-maps`")
    return record, RunConfig.read(run_dir / "config.json")


def _run_test_set(run_dir: Path, record: RunRecord, cfg: RunConfig, progress: bool) -> MammogramDataset:
    """The test split the run was scored on, from its dataset (remade when the cache is gone).

    Raises:
        InputError: the dataset's test split holds other images than the run's.
    """
    # The run's own dataset (phantom or download), as `wsseg run` prepared it.
    root = prepare_dataset(cfg.data, cfg.profile, PrepareOptions(progress=progress, log=lambda _: None)).root
    # A run of one cross-validation fold tests that fold's patients.
    splits = fold_splits(cfg, root, {})
    test_set = MammogramDataset(root, "test", with_masks=True, dataset=cfg.data.dataset, patient_splits=splits)
    scored = (record.dataset_info.get("split_hashes") or {}).get("test")
    if scored is not None and split_hash(test_set.image_ids) != scored:
        raise InputError(
            f"--run {run_dir}: the test split of {cfg.data.dataset} in {root} is not the one the run was scored on "
            "(other images); evaluate with the data the run used (its --data-root, --cache-dir)"
        )
    return test_set


def _score_saved_maps(
    test_set: MammogramDataset, maps_dir: Path, rows: dict[str, LabelRow], cfg: EvalConfig, progress: bool
) -> SegmentationEvaluator:
    """Every test image's saved maps added to an evaluator with the image's masks, region and run scores.

    Raises:
        InputError: a map of an image outside the split, a missing map, or a map of the wrong size.
    """
    map_index = index_class_files(maps_dir, MAP_SUFFIXES, "--run maps")  # keyed by map_file_stem(image id)
    stems = {map_file_stem(i): i for i in test_set.image_ids}
    extra = sorted(set(map_index) - set(stems))
    if extra:
        raise InputError(
            f"{maps_dir}: maps of {len(extra)} image(s) outside the test split: {short_list(extra)}; move them out"
        )
    ev = make_evaluator(cfg)
    for i in tqdm(range(len(test_set)), desc="evaluate", unit="img", disable=not progress):
        sample = test_set[i]
        image_id = sample["meta"]["image_id"]
        have = map_index.get(map_file_stem(image_id), {})
        lacking = [c for c in CLASSES if c not in have]
        if lacking:
            raise InputError(
                f"{maps_dir}: no map {map_file_stem(image_id)}_{lacking[0]}.npy; the saved maps are incomplete, re-run"
            )
        size = (int(sample["masks"].shape[-2]), int(sample["masks"].shape[-1]))
        arrays = []
        for c in CLASSES:
            check_map_size(have[c], map_size(have[c]), size)
            arrays.append(read_map(have[c]))
        row = rows.get(image_id)
        ev.add(
            image_id,
            torch.from_numpy(np.stack(arrays)),
            sample["masks"],
            sample["breast_mask"],
            patient_id=sample["meta"]["patient_id"],
            spacing_mm=float(sample["meta"]["pixel_spacing_mm"]),
            image_scores=row.scores if row is not None else None,
            image_labels=sample["labels"],
            lesion_types=[image_lesion_type(sample["meta"].get("lesions", []), c) for c in CLASSES],
            located=sample["meta"].get("localized"),
        )
    return ev


def evaluate_run(
    run_dir: Path,
    out: Path | None = None,
    cache_dir: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Re-score the test maps a run saved with ``--save-maps``; write ``<out>/record.json`` (default ``DIR/evaluate``).

    The masks and breast regions come from the run's own dataset (the phantom, or the data source, root and
    cache in its ``config.json``; the cache is remade when it is gone, from the phantom generator or from the
    download), the thresholds and image-level scores from the run. The numbers equal the run's up to the float16
    rounding of the stored maps. Returns the record written (its JSON).

    Raises:
        InputError: the folder is not a finished run with saved maps, the dataset's test split is not the one the
            run was scored on, or the maps do not match the test split.
    """
    run_dir = Path(run_dir)
    maps_dir = run_dir / MAPS_DIR
    record, cfg = _finished_run(run_dir)
    if cache_dir is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=cache_dir))
    test_set = _run_test_set(run_dir, record, cfg, progress)
    thresholds = record_thresholds(record)
    t_start = time.perf_counter()
    ev = _score_saved_maps(test_set, maps_dir, read_labels(run_dir / TEST_LABELS), cfg.eval, progress)
    out = Path(out) if out is not None else run_dir / "evaluate"
    metrics, intervals, files, boot_seconds = score_stats(ev.stats(), thresholds, cfg.eval, out)
    new = ScoreRecord(
        record_type="evaluate",
        run_id=record.run_id,
        method=record.method,
        inputs={"run": str(run_dir), "maps": str(maps_dir), "labels": str(run_dir / TEST_LABELS)},
        dataset_info=record.dataset_info,
        # The maps are the run's: computed in the run's evaluation precision.
        evaluation=evaluation_settings(cfg.eval, "breast mask", precision=evaluation_precision(record)),
        thresholds={"rule": "the run's thresholds (calibrated on its validation split)", **thresholds},
        metrics=metrics,
        intervals=intervals,
        per_image=files,
        timings={"total": time.perf_counter() - t_start, "bootstrap": boot_seconds},
    )
    write_record(out / "record.json", new)
    return new.to_json()


# ---------------------------------------------------------------------------------------------------------------
