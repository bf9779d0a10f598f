"""Leaderboards generated from run folders only: comparable runs grouped, one row per method, byte-stable output.

Runs are comparable when they share the dataset and its version, the test split (its hash), the profile, the
evaluation protocol (the record's ``evaluation`` block), the training budget (:func:`training_budget`: epochs x
training images per epoch) and the initialisation (:func:`initialisation_label`: random, ImageNet weights or a
weights file; a pretrained run answers another question than a randomly initialised one). Incomparable runs are
never put in one table: each group gets its own table, and :func:`describe_difference` names what separates two
groups. Maps that learn nothing (budget ``none``) are shown in every budget's and initialisation's table of their
dataset, as the floor and priors every trained method is read against. Different budgets get separate tables rather
than a mark, like profiles: a method trained twice as long is another experiment, and the "best weakly supervised
row" that the rank groups compare against must not be the one that trained longest.

Each group gets two tables. The main one, per class: the headline Dice (mean and standard deviation over seeds, and
the mean of the seeds' 95% patient-bootstrap intervals); its rank group against the best weakly supervised row of the
class, with the difference and its 95% paired-bootstrap interval (:mod:`wsseg.report.significance`); IoU, PxAP, the
pointing-game hit rate at 10 mm, the FROC score, the false-positive area on lesion-free images, AUROC and the oracle
Dice (threshold chosen on the test split itself: an upper bound, never a headline or a ranking key); then a table of
the training budget and compute (parameters, training seconds, evaluation images per second, device), and a line on
the ranking's stability over seeds (Kendall's tau). The second table gives Dice and the pointing game by lesion size
and type (:mod:`wsseg.report.breakdown`).

Rows: the weakly supervised methods, ranked by the mean over classes of the seed-mean headline Dice; then the fully
supervised ceiling; then the reference maps (``reference`` supervision: uniform, random, intensity), which learn
nothing and are never "best weakly supervised"; last the chance-level row, which carries each metric's chance level
(:func:`wsseg.evaluation.summary.chance_levels`). A row's supervision is the registry's for a registered method (so
records written before ``reference`` existed, which call the reference maps ``weak``, are shown right) and the
record's otherwise.

Runs of a k-fold cross-validation (``dataset_info.folds`` in the record) are comparable when they share the whole
fold assignment (the "test split" of the key is ``<k>-fold <assignment hash>``), never with single-split runs; their
budget key is the epochs alone, since the assignment fixes each fold's training images. A row aggregates the folds:
each value is averaged over seeds within a fold, then the mean and the standard deviation are taken over the folds
(a ``folds`` column counts the folds present of k); the Dice interval is the 95% patient bootstrap of the test folds
pooled (every patient of the dataset, each tested once, each fold's images at its own thresholds;
:func:`wsseg.evaluation.bootstrap.pooled_intervals`), averaged over seeds, from each fold's ``per_image_stats.npz``.
The rank groups compare the rows on the union of the test folds (:func:`wsseg.report.significance.pool_folds`), the
lesion breakdown bins the lesion images of the union (:func:`wsseg.report.breakdown.pool_curves`), the chance row is
each fold's chance level averaged over the folds (like the methods' columns), and the rank stability compares the
seeds' rankings by their Dice averaged over the folds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsseg._io import atomic_write_text
from wsseg.core import CLASSES, PER_IMAGE_STATS
from wsseg.evaluation.bootstrap import pooled_intervals
from wsseg.evaluation.stats import SplitStats
from wsseg.report.breakdown import BINS, Cell, chance_cells, pool_curves, row_cells
from wsseg.report.html import RunFiles, report_files
from wsseg.report.records import curves_for_run, evaluation_precision, method_label, read_record_json, record_thresholds
from wsseg.report.significance import (
    BEST,
    UNKNOWN,
    Comparison,
    PerImage,
    compare_with_best,
    pool_folds,
    rank_stability,
    read_per_image,
    stability_line,
)
from wsseg.report.tables import Table, csv_text, latex, markdown

# Per-class columns after the headline Dice and its rank group: (record key, column title).
CLASS_COLUMNS = (
    ("iou", "IoU"),
    ("pxap", "PxAP"),
    ("pointing_game_10mm", "hit@10mm"),
    ("froc", "FROC"),
    ("fp_area_fraction", "FP area"),
    ("auroc", "AUROC"),
    # Marked as such: its threshold is chosen on the test split itself, so it is an upper bound, never a headline.
    ("dice_oracle", "Dice (oracle)"),
)
# The chance levels that equal the uniform-breast reference's scores by definition (the whole breast predicted):
# records written before the chance block get these from it, and n/a for the others.
CHANCE_FROM_UNIFORM = ("dice", "iou", "pxap", "fp_area_fraction", "auroc", "dice_oracle")
FORMATS = ("md", "csv", "tex", "html")
CHANCE = "chance level"
UNTRAINED = "none"


@dataclass
class Row:
    """One leaderboard row: a method aggregated over its seeds (and folds), or the chance-level row.

    ``dice`` and ``values`` hold one entry per run (per fold for the chance row of a cross-validation); ``run_seeds``
    and ``folds`` the seed and fold (None for a single split) of each entry; ``seeds`` the distinct seeds; ``k`` the
    fold count of a cross-validation group.
    """

    method: str
    supervision: str
    seeds: list[int]
    dice: dict[str, list[float]]
    intervals: dict[str, list[tuple[float, float]]]
    values: dict[str, dict[str, list[float]]]
    n_parameters: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    eval_images_per_s: list[float] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    budgets: set[str] = field(default_factory=set)
    precisions: set[str] = field(default_factory=set)  # the evaluation precisions of its runs
    marker: str = ""  # PRECISION_MARK when its precision differs from the other rows' (mark_precisions)
    runs: list[RunFiles] = field(default_factory=list)
    chance: bool = False
    comparisons: dict[str, Comparison] = field(default_factory=dict)
    run_seeds: list[int] = field(default_factory=list)
    folds: list[int | None] = field(default_factory=list)
    k: int | None = None

    def per_fold(self, values: Sequence[float]) -> list[float]:
        """One value per fold (the mean over its seeds) for a cross-validation row; the values as they are else."""
        if self.k is None:
            return list(values)
        by_fold: dict[int | None, list[float]] = {}
        for f, v in zip(self.folds, values, strict=True):
            by_fold.setdefault(f, []).append(v)
        return [_mean(v) for _, v in sorted(by_fold.items(), key=lambda kv: -1 if kv[0] is None else kv[0])]

    def score(self) -> float:
        """The ranking score: the mean over classes of the seed- (and fold-) mean headline Dice; -inf if undefined.

        A class whose Dice is undefined (no test image with a lesion of it, for every method alike) is left out.
        """
        means = [m for c in CLASSES if math.isfinite(m := _mean(self.per_fold(self.dice[c])))]
        return sum(means) / len(means) if means else -math.inf

    def seed_scores(self) -> dict[int, float]:
        """Per seed, the mean over classes of that seed's headline Dice (the ranking score of one seed).

        In a cross-validation, a seed's Dice of a class is its mean over the folds; a seed missing a fold is left out.
        """
        out = {}
        for s in self.seeds:
            entries = [i for i, x in enumerate(self.run_seeds) if x == s]
            if self.k is not None and len({self.folds[i] for i in entries}) < self.k:
                continue
            out[s] = _mean([_mean([self.dice[c][i] for i in entries]) for c in CLASSES])
        return out


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _std(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return math.nan
    m = sum(finite) / len(finite)
    return math.sqrt(sum((v - m) ** 2 for v in finite) / (len(finite) - 1))


def find_records(paths: Iterable[str | Path]) -> list[Path]:
    """``record.json`` files named directly, inside run folders, or anywhere below folders of runs (sorted).

    Raises:
        FileNotFoundError: a path does not exist or holds no record.
    """
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file():
            found.add(p)
        elif (p / "record.json").exists() or (p / "record.json").is_symlink():
            found.add(p / "record.json")  # read_record_json names it if it is no regular file
        elif p.is_dir():
            # os.walk sees every entry named record.json, broken links too (Path.rglob skips those silently).
            below = sorted(Path(d) / "record.json" for d, dirs, names in os.walk(p) if "record.json" in names + dirs)
            if not below:
                raise FileNotFoundError(f"{p} holds no record.json; pass run folders made by `wsseg run`")
            found.update(below)
        else:
            raise FileNotFoundError(f"{p} does not exist; pass run folders or record.json files")
    return sorted(found)


def load_record(path: Path) -> dict[str, Any]:
    """Read one run record, with an error that names the file when it is not one.

    Raises:
        ValueError: unreadable JSON or not a ``wsseg run`` record.
    """
    record = read_record_json(path)  # checks the types of every key the tables and the report read
    if "metrics" not in record or "method" not in record:
        raise ValueError(f"{path} is not a wsseg run record (no 'method'/'metrics'); pass `wsseg run` output")
    return record


def supervision_of(record: dict[str, Any]) -> str:
    """``weak``, ``full`` or ``reference``: the registry's for a registered method, else the record's."""
    from wsseg.registry import get_method_spec, list_methods

    method = str(record["method"])
    if method in list_methods():
        return get_method_spec(method).supervision
    return str(record.get("supervision", "weak"))


def training_budget(record: dict[str, Any]) -> str:
    """The run's training budget: ``<epochs> x <training images per epoch>``, ``none`` or ``weights file``.

    Epochs are the epochs trained (the history's length); a post-hoc run reusing another run's classifier
    (``--from-run``) has that classifier's budget (its config's epochs, the same data); a run evaluating a weights
    file has an unknown one; a map that learns nothing has none. A staged method whose config names its stages'
    epochs (GLAM's ``stage_epochs``) shows them in brackets; the stages split the same epochs, so they are shown, not
    compared.
    """
    training = record.get("training") or {}
    if training.get("weights"):
        return "weights file"
    config = record.get("config") or {}
    if training.get("from_run"):
        epochs = int((config.get("train") or {}).get("epochs", 0))
    else:
        epochs = len(training.get("history") or [])
    if epochs <= 0:
        return UNTRAINED
    images = (record.get("dataset_info") or {}).get("counts", {}).get("train")
    label = f"{epochs} x {int(images):,}" if images is not None else f"{epochs} x ?"
    stages = (config.get("method_config") or {}).get("stage_epochs")
    if isinstance(stages, list) and stages:
        label += f" ({'+'.join(str(s) for s in stages)})"
    return label


FOLD_IMAGES = "each fold's training images"


def _budget_key(record: dict[str, Any]) -> str:
    # Stages in brackets are shown, not compared: they split the same number of epochs.
    label = training_budget(record).split(" (")[0]
    if fold_info(record) is not None and " x " in label:
        # Each fold trains on other patients, so the image counts differ between folds; the fold assignment (part of
        # the key) fixes them for every method, which leaves the epochs as what can differ.
        return f"{label.split(' x ')[0]} x {FOLD_IMAGES}"
    return label


# "test split" is the test split's hash, or "<k>-fold <assignment hash>" for the runs of a cross-validation.
COMPARABILITY = (
    "dataset",
    "dataset version",
    "test split",
    "profile",
    "evaluation protocol",
    "training budget",
    "initialisation",
)
BUDGET, INITIALISATION = 5, 6  # their places in the key


def fold_info(record: dict[str, Any]) -> dict[str, Any] | None:
    """The record's ``dataset_info.folds`` block (a run of one cross-validation fold), or None."""
    folds = record.get("dataset_info", {}).get("folds")
    return folds if isinstance(folds, dict) else None


def initialisation_label(record: dict[str, Any]) -> str:
    """How a run's networks started: ``random``, or its non-random initialisations joined.

    ``imagenet:<timm tag>`` or ``file:<sha256>`` from the record's ``initialisation``; a record made before that
    key is ``random``, or ``file:<path>`` when its config names a backbone weights file.
    """
    if "initialisation" not in record:
        weights = (record.get("config", {}).get("method_config") or {}).get("backbone_weights")
        return f"file:{weights}" if weights else "random"
    used = sorted({str(v) for v in (record.get("initialisation") or {}).values() if v != "random"})
    return "+".join(used) if used else "random"


def comparability_key(record: dict[str, Any]) -> tuple[str, ...]:
    """What must be equal for two trained runs to share a table (see :data:`COMPARABILITY`)."""
    info = record.get("dataset_info", {})
    folds = fold_info(record)
    # The folds of a cross-validation test different patients: they share the assignment, not a test split.
    split = f"{folds['k']}-fold {folds['assignment']}" if folds else str(info.get("split_hashes", {}).get("test"))
    return (
        str(record.get("dataset")),
        str(info.get("version")),
        split,
        str(record.get("profile")),
        # The precision is not part of the protocol: rows computed in another precision are marked, not split off.
        json.dumps({k: v for k, v in record.get("evaluation", {}).items() if k != "precision"}, sort_keys=True),
        _budget_key(record),
        # Pretrained and randomly initialised runs answer different questions: never ranked in one table.
        initialisation_label(record),
    )


def describe_difference(a: tuple[str, ...], b: tuple[str, ...]) -> str:
    """Name the fields in which two comparability keys differ, e.g. ``profile ('quick' vs 'paper')``."""
    parts = []
    for name, x, y in zip(COMPARABILITY, a, b, strict=True):
        if x != y:
            parts.append(f"{name} (settings differ)" if name == "evaluation protocol" else f"{name} ({x!r} vs {y!r})")
    return ", ".join(parts) or "nothing"


def group_records(records: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Comparable records grouped by :func:`comparability_key`, groups in key order.

    Untrained runs (budget ``none``) join every budget's and initialisation's group of their dataset, version,
    split, profile and protocol (they have no weights to initialise); they form a group of their own only where no
    run was trained.
    """
    by_key: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in records:
        by_key.setdefault(comparability_key(record), []).append(record)
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for key, members in by_key.items():
        base = key[:BUDGET]
        trained = [k for k in by_key if k[:BUDGET] == base and k[BUDGET] != UNTRAINED]
        if key[BUDGET] == UNTRAINED and trained:
            for k in trained:
                groups.setdefault(k, []).extend(members)
        else:
            groups.setdefault(key, []).extend(members)
    return dict(sorted(groups.items()))


def _new_row(record: dict[str, Any]) -> Row:
    return Row(
        method_label(record),
        supervision_of(record),
        [],
        {c: [] for c in CLASSES},
        {c: [] for c in CLASSES},
        {c: {k: [] for k, _ in CLASS_COLUMNS} for c in CLASSES},
    )


BLOCKS = ("weak", "full", "reference")  # row order: competitors, the ceiling, the maps that learn nothing


def _record_order(r: dict[str, Any]) -> tuple[str, int, int, str]:
    folds = fold_info(r)
    return (method_label(r), int(r.get("seed", 0)), int(folds["fold"]) if folds else -1, r.get("run_id", ""))


def build_rows(records: Sequence[dict[str, Any]], folders: Sequence[Path] | None = None) -> list[Row]:
    """Aggregate comparable records into rows (one per method) in table order, then the chance-level row.

    Args:
        records: the group's run records.
        folders: each record's run folder (for the per-image results and curves, and a cross-validation's pooled
            intervals); none: no rank groups, and no intervals for a cross-validation.

    Raises:
        ValueError: two records of the same method, seed (and fold): a duplicate run.
    """
    rows: dict[str, Row] = {}
    seen: set[tuple[str, int, int | None]] = set()
    paired = list(zip(records, folders if folders is not None else [None] * len(records), strict=True))
    for r, folder in sorted(paired, key=lambda x: _record_order(x[0])):
        folds = fold_info(r)
        row = rows.setdefault(method_label(r), _new_row(r))
        seed, fold = int(r.get("seed", 0)), int(folds["fold"]) if folds else None
        if (method_label(r), seed, fold) in seen:
            where = f"seed {seed}" + (f" and fold {fold}" if fold is not None else "")
            raise ValueError(
                f"two runs of {method_label(r)} with {where} ({r.get('run_id')}); keep one per seed in the inputs"
            )
        seen.add((method_label(r), seed, fold))
        if seed not in row.seeds:
            row.seeds.append(seed)
        row.run_seeds.append(seed)
        row.folds.append(fold)
        row.k = int(folds["k"]) if folds else None
        for c in CLASSES:
            m = r["metrics"].get(c, {})
            row.dice[c].append(float(m.get("dice", math.nan)))
            interval = r.get("intervals", {}).get(c, {}).get("dice")
            if interval and folds is None:  # a fold's own interval covers its few patients: the pooled one replaces it
                row.intervals[c].append((float(interval[0]), float(interval[1])))
            for key, _ in CLASS_COLUMNS:
                row.values[c][key].append(float(m.get(key, math.nan)))
        if r.get("n_parameters") is not None:
            row.n_parameters.append(float(r["n_parameters"]))
        row.train_seconds.append(float(r.get("timings", {}).get("train", math.nan)))
        row.eval_images_per_s.append(float(r.get("throughput", {}).get("eval_images_per_s", math.nan)))
        row.devices.add(str(r.get("device", "")))
        row.budgets.add(training_budget(r))
        row.precisions.add(str(evaluation_precision(r)))
        if folder is not None:
            row.runs.append(RunFiles(r, folder))
    if folders is not None:
        for (method, _seed), by_class in sorted(fold_intervals(records, folders).items()):
            for c, interval in by_class.items():
                rows[method].intervals[c].append(interval)

    def order(row: Row) -> tuple[int, float, str]:
        block = BLOCKS.index(row.supervision) if row.supervision in BLOCKS else len(BLOCKS)
        return (block, -row.score(), row.method)

    ranked = sorted(rows.values(), key=order)
    chance = _chance_row(records)
    return ranked + ([chance] if chance is not None else [])


PRECISION_MARK = " †"


def mark_precisions(rows: Sequence[Row]) -> str | None:
    """Mark the rows whose evaluation precision differs from the others'; return the footnote, None when all agree.

    The others' precision is the one most rows were evaluated in (fp32 on a tie). A row whose seeds were evaluated
    in several precisions is marked too.
    """
    methods = [row for row in rows if not row.chance]
    counts = Counter(p for row in methods if len(row.precisions) == 1 for p in row.precisions)
    if len({p for row in methods for p in row.precisions}) <= 1:
        return None
    common = max(sorted(counts), key=lambda p: (counts[p], p == "fp32")) if counts else "fp32"
    for row in methods:
        row.marker = PRECISION_MARK if row.precisions != {common} else ""
    return (
        f"†: maps computed in another precision than the other rows' ({common}): "
        + "; ".join(f"{row.method} in {' and '.join(sorted(row.precisions))}" for row in methods if row.marker)
        + ". bf16 autocast (the CUDA default for training runs) changes the maps slightly; an evaluation of a weights "
        "file runs in fp32 unless train.precision=bf16 is set."
    )


def _chance_levels(ordered: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    # Chance levels depend on the test masks only, so every run of one test split records the same ones: the first.
    refs = [r.get("references", {}) for r in ordered]
    chance = next((x["chance"] for x in refs if x.get("chance")), None)
    if chance is None:
        uniform = next((x["uniform_breast"] for x in refs if x.get("uniform_breast")), None)
        if uniform is None:
            return None
        chance = {c: {k: uniform.get(c, {}).get(k, math.nan) for k in CHANCE_FROM_UNIFORM} for c in CLASSES}
    return dict(chance)


def _chance_row(records: Sequence[dict[str, Any]]) -> Row | None:
    # One entry per test fold (a single split is one "fold"): a cross-validation's row averages them over the folds.
    by_fold: dict[int | None, list[dict[str, Any]]] = {}
    for r in sorted(records, key=_record_order):
        folds = fold_info(r)
        by_fold.setdefault(int(folds["fold"]) if folds else None, []).append(r)
    levels = {f: chance for f, members in by_fold.items() if (chance := _chance_levels(members)) is not None}
    if not levels:
        return None
    first = fold_info(records[0])
    return Row(
        CHANCE,
        "reference",
        [],
        {c: [float(x.get(c, {}).get("dice", math.nan)) for x in levels.values()] for c in CLASSES},
        {c: [] for c in CLASSES},
        {
            c: {k: [float(x.get(c, {}).get(k, math.nan)) for x in levels.values()] for k, _ in CLASS_COLUMNS}
            for c in CLASSES
        },
        chance=True,
        folds=list(levels),
        k=int(first["k"]) if first else None,
    )


def fold_intervals(
    records: Sequence[dict[str, Any]], folders: Sequence[Path]
) -> dict[tuple[str, int], dict[str, tuple[float, float]]]:
    """Per (method, seed) of a cross-validation, the Dice interval of the pooled test folds per class.

    Only complete cross-validations whose every fold has its ``per_image_stats.npz`` beside its record get one;
    the bootstrap's resamples, seed and level are the runs' own (their ``intervals`` block).
    """
    by_run: dict[tuple[str, int], list[tuple[dict[str, Any], Path]]] = {}
    for r, folder in sorted(zip(records, folders, strict=True), key=lambda x: _record_order(x[0])):
        if fold_info(r) is not None:
            by_run.setdefault((r["method"], int(r.get("seed", 0))), []).append((r, folder))
    out: dict[tuple[str, int], dict[str, tuple[float, float]]] = {}
    for key, runs in sorted(by_run.items()):
        first = runs[0][0]
        k = int(first["dataset_info"]["folds"]["k"])
        files = [folder / str(r.get("per_image", {}).get("stats") or PER_IMAGE_STATS) for r, folder in runs]
        if [int(r["dataset_info"]["folds"]["fold"]) for r, _ in runs] != list(range(k)):
            continue  # an incomplete cross-validation has no pooled interval
        boot = first.get("intervals", {})
        if not all(f.is_file() for f in files) or int(boot.get("n_resamples", 1000)) <= 0:
            continue
        parts = [(SplitStats.load(f), record_thresholds(r)) for (r, _), f in zip(runs, files, strict=True)]
        fixed = float(first.get("evaluation", {}).get("fixed_threshold", 0.5))
        pooled = pooled_intervals(
            parts, fixed, int(boot.get("n_resamples", 1000)), int(boot.get("seed", 0)), float(boot.get("level", 0.95))
        )
        out[key] = {c: (float(pooled[c]["dice"][0]), float(pooled[c]["dice"][1])) for c in CLASSES if c in pooled}
    return out


def add_rank_groups(rows: Sequence[Row]) -> None:
    """Compare every row with the best weakly supervised row of each class (sets ``row.comparisons``).

    Raises:
        ValueError: a run's ``per_image.csv`` exists but cannot be read.
    """
    per_image = {row.method: _seed_values(row) for row in rows if not row.chance}
    for c in CLASSES:
        weak = [r for r in rows if r.supervision == "weak" and not r.chance and math.isfinite(_mean(r.dice[c]))]
        if not weak:
            for row in rows:
                row.comparisons[c] = UNKNOWN
            continue
        best = min(weak, key=lambda r: (-_mean(r.dice[c]), r.method))  # ties: the first name
        best_data = per_image.get(best.method)
        best_seeds = [s[c] for s in best_data if c in s] if best_data else []
        for row in rows:
            if row is best:
                row.comparisons[c] = BEST
                continue
            data = None if row.chance else per_image.get(row.method)
            other = [s[c] for s in data if c in s] if data else None
            row.comparisons[c] = compare_with_best(best_seeds, other, chance=row.chance)


def _by_seed(row: Row) -> dict[int, list[RunFiles]] | None:
    """The row's runs per seed (a cross-validation's in fold order); None when a seed lacks a run or a fold."""
    out: dict[int, list[RunFiles]] = {}
    for run in row.runs:  # in seed (and fold) order
        out.setdefault(int(run.record.get("seed", 0)), []).append(run)
    expected = list(range(row.k)) if row.k is not None else [None]
    for runs in out.values():
        if [int(f["fold"]) if (f := fold_info(run.record)) else None for run in runs] != expected:
            return None
    return out if out and sorted(out) == sorted(row.seeds) else None


def _seed_values(row: Row) -> list[dict[str, PerImage]] | None:
    """Per seed, the row's per-image values (a cross-validation's test folds joined); None when any is missing."""
    by_seed = _by_seed(row)
    if by_seed is None:
        return None
    out = []
    for runs in by_seed.values():
        folds = [read_per_image(run.folder, run.record) for run in runs]
        if any(f is None for f in folds):
            return None
        values = [f for f in folds if f is not None]
        out.append(values[0] if row.k is None else pool_folds(values))
    return out


def _f(value: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.{digits}f}"


def _signed(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:+.3f}"


def _dice_cells(row: Row, c: str) -> list[str]:
    dice = row.per_fold(row.dice[c])  # per fold for a cross-validation row, per seed else
    mean, std = _mean(dice), _std(dice)
    lows, highs = [i[0] for i in row.intervals[c]], [i[1] for i in row.intervals[c]]
    low, high = _mean(lows), _mean(highs)
    ci = f"[{_f(low)}, {_f(high)}]" if math.isfinite(low) and math.isfinite(high) else "n/a"
    return [_f(mean), _f(std), ci]


def _group_cells(row: Row, c: str) -> list[str]:
    cmp = row.comparisons.get(c, UNKNOWN)
    if cmp.mark == "best":
        return ["best", "", ""]
    ci = f"[{_signed(cmp.low)}, {_signed(cmp.high)}]" if math.isfinite(cmp.low) else "n/a"
    return [cmp.mark, _signed(cmp.diff), ci]


def _ranks(rows: Sequence[Row]) -> list[str]:
    # Only the weakly supervised rows compete; the ceiling, the reference maps and the chance level are not ranked.
    out, rank = [], 0
    for row in rows:
        competes = row.supervision == "weak" and not row.chance
        rank += competes
        out.append(str(rank) if competes else "")
    return out


def _ident(row: Row, rank: str, folded: bool = False) -> list[str]:
    cells = [rank, row.method + row.marker, row.supervision, str(len(row.seeds)) if row.seeds else "n/a"]
    # A cross-validation's folds present of k (5/5).
    return cells + ([f"{len(set(row.folds))}/{row.k}" if row.k else "n/a"] if folded else [])


def _ident_header(folded: bool) -> list[str]:
    return ["rank", "method", "supervision", "seeds", *(["folds"] if folded else [])]


def _folded(rows: Sequence[Row]) -> bool:
    return any(row.k is not None for row in rows)


CLASS_HEADER = ["Dice", "Dice std", "Dice 95% CI", "group", "diff vs best", "diff 95% CI"] + [
    t for _, t in CLASS_COLUMNS
]
COMPUTE_HEADER = ["budget", "parameters", "train s", "eval img/s", "device"]


def _class_cells(row: Row, c: str) -> list[str]:
    values = [_f(_mean(row.per_fold(row.values[c][k]))) for k, _ in CLASS_COLUMNS]
    return _dice_cells(row, c) + _group_cells(row, c) + values


def _budget_text(row: Row) -> str:
    """The row's budgets; a cross-validation's as ``<epochs> x <fewest>-<most>`` training images over its folds."""
    if row.k is None:
        return " / ".join(sorted(row.budgets)) or "n/a"
    ranges: dict[tuple[str, str], list[int]] = {}
    other = set()
    for label in row.budgets:
        match = re.fullmatch(r"(\d+) x ([\d,]+)( \(.*\))?", label)
        if match is None:
            other.add(label)
            continue
        ranges.setdefault((match[1], match[3] or ""), []).append(int(match[2].replace(",", "")))
    for (epochs, stages), images in ranges.items():
        low, high = min(images), max(images)
        other.add(f"{epochs} x {low:,}{stages}" if low == high else f"{epochs} x {low:,}-{high:,}{stages}")
    return " / ".join(sorted(other)) or "n/a"


def _compute_cells(row: Row) -> list[str]:
    if row.chance:
        return ["n/a"] * len(COMPUTE_HEADER)
    params = _mean(row.n_parameters)
    return [
        _budget_text(row),
        f"{params / 1e6:.2f}M" if math.isfinite(params) else "n/a",
        _f(_mean(row.train_seconds), 0),
        _f(_mean(row.eval_images_per_s), 1),
        ", ".join(sorted(d for d in row.devices if d)) or "n/a",
    ]


def _kind(row: Row) -> str:
    return "chance" if row.chance else row.supervision


def main_tables(rows: Sequence[Row]) -> list[Table]:
    """The main leaderboard as tables: one per class, then the budget and compute of every method."""
    ranks, folded = _ranks(rows), _folded(rows)
    tables = [
        Table(
            f"{c}: Dice, rank group against the best weakly supervised row, localisation",
            [*_ident_header(folded), *CLASS_HEADER],
            [_ident(row, rank, folded) + _class_cells(row, c) for row, rank in zip(rows, ranks, strict=True)],
            [_kind(row) for row in rows],
        )
        for c in CLASSES
    ]
    methods = [(row, rank) for row, rank in zip(rows, ranks, strict=True) if not row.chance]
    tables.append(
        Table(
            "training budget and compute",
            [*_ident_header(folded), *COMPUTE_HEADER],
            [_ident(row, rank, folded) + _compute_cells(row) for row, rank in methods],
            [_kind(row) for row, _ in methods],
            text_columns=len(_ident_header(folded)) + 1,  # the budget is text too
        )
    )
    return tables


def main_csv(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """The main leaderboard as one wide table (one line per row, every class's columns, then budget and compute)."""
    folded = _folded(rows)
    header = _ident_header(folded)
    for c in CLASSES:
        header += [f"{c} {t}" for t in CLASS_HEADER]
    header += COMPUTE_HEADER
    cells = []
    for row, rank in zip(rows, _ranks(rows), strict=True):
        line = _ident(row, rank, folded)
        for c in CLASSES:
            line += _class_cells(row, c)
        cells.append(line + _compute_cells(row))
    return header, cells


def _lesion_data(rows: Sequence[Row]) -> tuple[dict[str, dict[str, dict[str, Cell]]], dict[str, dict[str, Cell]]]:
    """Per row and class, the breakdown cells; and per class the chance cells (from every run's curves)."""
    curves = {row.method: _row_curves(row) for row in rows}
    every = [cv for row in rows for cv in curves.get(row.method, [])]
    cells = {row.method: {c: row_cells(curves.get(row.method, []), c) for c in CLASSES} for row in rows}
    return cells, {c: chance_cells(every, c) for c in CLASSES}


def _row_curves(row: Row) -> list[dict[str, Any]]:
    """Per seed, the row's curves; a cross-validation's test folds joined, seeds lacking a fold's curves left out."""
    if row.k is None:
        return [cv for run in row.runs if (cv := curves_for_run(run.folder, run.record)) is not None]
    out = []
    for runs in (_by_seed(row) or {}).values():
        folds = [curves_for_run(run.folder, run.record) for run in runs]
        if all(f is not None for f in folds):
            out.append(pool_curves([f for f in folds if f is not None]))
    return out


def _n(n: int | None) -> str:
    return "n/a" if n is None else str(n)


def lesion_tables(rows: Sequence[Row]) -> tuple[list[Table], tuple[list[str], list[list[str]]]]:
    """The breakdown by lesion size and type: one table per class (first row: images per bin), and the CSV."""
    data, chance = _lesion_data(rows)
    ranks, folded = _ranks(rows), _folded(rows)
    ident = _ident_header(folded)
    tables = []
    for c in CLASSES:
        header = ident + [f"{b} {m}" for b in BINS for m in ("Dice", "hit@10mm")]
        counts = next((data[r.method][c] for r in rows if any(x.n is not None for x in data[r.method][c].values())), {})
        first = ["", "lesion images"] + [""] * (len(ident) - 2)
        first += [v for b in BINS for v in (_n(counts[b].n) if counts else "n/a", "")]
        cells, kinds = [first], ["count"]
        for row, rank in zip(rows, ranks, strict=True):
            source = chance[c] if row.chance else data[row.method][c]
            values = [v for b in BINS for v in (_f(source[b].dice), _f(source[b].hit))]
            cells.append(_ident(row, rank, folded) + values)
            kinds.append(_kind(row))
        tables.append(Table(f"{c}: Dice and hit@10mm by lesion size and type", header, cells, kinds))
    csv_header = list(ident)
    for c in CLASSES:
        csv_header += [f"{c} {b} {m}" for b in BINS for m in ("n", "Dice", "hit@10mm")]
    csv_cells = []
    for row, rank in zip(rows, ranks, strict=True):
        line = _ident(row, rank, folded)
        for c in CLASSES:
            source = chance[c] if row.chance else data[row.method][c]
            line += [v for b in BINS for v in (_n(source[b].n), _f(source[b].dice), _f(source[b].hit))]
        csv_cells.append(line)
    return tables, (csv_header, csv_cells)


MAIN_NOTES = (
    "Rows: the weakly supervised methods ranked by the mean over both classes of the headline Dice (seed mean), then "
    "the fully supervised ceiling (`full`), the `reference` maps that learn nothing (uniform, random, intensity) and "
    "the chance level. Dice: test split, at the threshold calibrated on validation, averaged over the images with a "
    "lesion of the class; mean and standard deviation over seeds, and the mean of the seeds' 95% patient-bootstrap "
    "intervals. Other columns are means over seeds.",
    "group: each row against the best weakly supervised row of the class (`best`) by the paired patient bootstrap of "
    "`wsseg compare` on the Dice difference (row - best; each side the mean over its seeds, every resample drawing "
    "the test patients once for all seeds of both sides; 1,000 resamples): `= best` when the 95% interval of the "
    "difference contains 0 (the row shares the best row's rank group), `below` or `above` when it excludes 0; `diff "
    "vs best` and `diff 95% CI` are that difference and interval; n/a where a run's per_image.csv is missing.",
    "chance level: what a prediction that ignores the image scores. Dice, IoU and Dice (oracle): the whole breast "
    "predicted (no image-independent mask does better); PxAP: the lesion-pixel prevalence in the breast; hit@10mm: "
    "the probability that a peak drawn uniformly in the breast lies within 10 mm of a lesion, exact per image, "
    "averaged over the lesion images; FROC: a detector that places detections uniformly at random in the breast; FP "
    "area: 1 (the whole breast); AUROC: 0.5. n/a for records written before wsseg recorded them. The `uniform` row "
    "is the constant map scored as a method: its peak is the breast's first pixel, so it misses the pointing game.",
    "Dice (oracle) uses the threshold that is best on the test split itself: an upper bound, not a result. budget: "
    "epochs x training images per epoch (a post-hoc method's is its classifier's; none for maps that learn nothing); "
    "runs trained with different budgets get separate tables.",
)

LESION_NOTES = (
    "Dice and pointing game (hit@10mm) by lesion size and type, per class. A test image with a lesion of the class is "
    "binned by the equivalent diameter of its largest lesion component (2 sqrt(area / pi), from the mask and the pixel "
    "spacing; an image with two or more lesions of the class is binned by the largest) and by the type of its lesions "
    "(mass, calcification, other: the dataset's own names mapped by wsseg.evaluation.lesions.lesion_type_group; an "
    "image with lesions of several types is other). Cells: the mean over the bin's images, then over seeds. `lesion "
    "images`: the images per bin. n/a: an empty bin, or runs whose curves.json predates the breakdown (their images "
    "are binned by the equivalent diameter of the class's whole lesion area; they have no hits or types). chance "
    "level: the whole-breast Dice and the uniform-peak hit probability of the bin's images.",
)


FOLD_MAIN_NOTES = (
    "k-fold cross-validation by patient. Rows: the weakly supervised methods ranked by the mean over both classes of "
    "the headline Dice (the mean over folds of each fold's seed mean), then the fully supervised ceiling (`full`), "
    "the `reference` maps that learn nothing (uniform, random, intensity) and the chance level. Dice: each fold's test "
    "patients, at the threshold calibrated on that fold's validation patients, averaged over the images with a lesion "
    "of the class; each fold averaged over seeds, then the mean and standard deviation over the folds; the 95% "
    "interval is a patient bootstrap of all test folds pooled (every patient of the dataset once, each fold's images "
    "at its own threshold), averaged over seeds (n/a without every fold's per_image_stats.npz). Other columns are "
    "means over folds of the seed means. folds: the folds present of k. The rank stability compares the seeds' "
    "rankings by their Dice averaged over the folds (a seed missing a fold is left out).",
    "group: each row against the best weakly supervised row of the class (`best`) by the paired patient bootstrap of "
    "`wsseg compare` on the union of the test folds: a seed's per-image Dice of all k folds joined (each image at its "
    "own fold's threshold), each side the mean over its seeds of the image-averaged Dice, every resample drawing each "
    "patient of the dataset once for all seeds of both sides (1,000 resamples): `= best` when the 95% interval of the "
    "difference (row - best) contains 0, `below` or `above` when it excludes 0; `diff vs best` and `diff 95% CI` are "
    "that difference over the pooled images (which weighs each fold by its lesion images, unlike the Dice column's "
    "mean over folds) and its interval; n/a where a seed lacks a fold or a run's per_image.csv.",
    "chance level (per fold on its test images, then the mean over the folds, like the methods' columns; its group "
    "compares the whole-breast Dice of the pooled images): " + MAIN_NOTES[2].removeprefix("chance level: "),
    "Dice (oracle) uses the threshold that is best on each test fold itself: an upper bound, not a result. budget: "
    "epochs x training images per epoch, the fewest-most over the folds (each fold trains on other patients; a "
    "post-hoc method's is its classifier's; none for maps that learn nothing); runs trained for different numbers of "
    "epochs get separate tables.",
)
# The report's gallery and curves show one run per method: which one, for a cross-validation.
FOLD_HTML_NOTE = "The gallery and the precision-recall and FROC curves show each method's lowest seed's first fold."

FOLD_LESION_NOTES = (
    *LESION_NOTES,
    "Cross-validation: a seed's bins hold the lesion images of all k test folds joined (each at its own fold's "
    "threshold), so `lesion images` counts the whole dataset's; then the mean over seeds (a seed missing a fold's "
    "curves is left out). chance level: over the same joined images.",
)


def _file_part(text: str, limit: int = 48) -> str:
    """``text`` as part of a file name: itself when short and made of ``[A-Za-z0-9._-]``, else cleaned and hashed.

    Records are data: a dataset called ``../../x`` must not become a path. The hash of the original keeps two
    names that clean to the same text apart.
    """
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    if safe == text and len(text) <= limit and not text.startswith("."):
        return text
    return f"{safe.lstrip('.')[:limit]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def group_name(key: tuple[str, ...], keys: Sequence[tuple[str, ...]] = ()) -> str:
    """A file-name stem for a comparable group: dataset, profile and the test split hash (``<k>fold-<assignment>``).

    When another of ``keys`` shares that stem (another dataset version, evaluation protocol or training budget on the
    same test split), a short hash of the whole key is appended, so that no group's table overwrites another's.
    Characters outside ``[A-Za-z0-9._-]`` never reach the file name (:func:`_file_part`).
    """

    def stem_of(k: tuple[str, ...]) -> str:
        # A cross-validation's "test split" is "<k>-fold <assignment>": "<k>fold-<assignment>" in the name.
        return "leaderboard-" + "-".join(_file_part(x) for x in (k[0], k[3], k[2].replace("-fold ", "fold-")))

    stem = stem_of(key)
    if any(k != key and stem_of(k) == stem for k in keys):
        stem += "-" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:8]
    return stem


@dataclass
class LeaderboardResult:
    """What :func:`write_leaderboards` wrote, and the differences between the groups it found."""

    files: list[Path]
    groups: list[tuple[str, int]]
    differences: list[str]


def render_group(out: Path, stem: str, title: str, rows: Sequence[Row], formats: Sequence[str]) -> dict[Path, str]:
    """One group's main table (``<stem>.<fmt>``) and lesion breakdown (``<stem>-lesions.<fmt>``), not yet written."""
    add_rank_groups(rows)
    precision_note = mark_precisions(rows)  # before the tables: they show the marks
    stability = stability_line(
        rank_stability(
            {r.method: r.seed_scores() for r in rows if not r.chance},
            {r.method for r in rows if r.supervision == "weak"},
        )
    )
    tables = main_tables(rows)
    lesions, (lesion_csv_header, lesion_csv_cells) = lesion_tables(rows)
    folded = _folded(rows)
    main_paragraphs = [stability, *(FOLD_MAIN_NOTES if folded else MAIN_NOTES)]
    if precision_note is not None:
        main_paragraphs.append(precision_note)
    lesion_notes = list(FOLD_LESION_NOTES if folded else LESION_NOTES)
    files: dict[Path, str] = {}
    for fmt in formats:
        path, lesion_path = out / f"{stem}.{fmt}", out / f"{stem}-lesions.{fmt}"
        if fmt == "md":
            files[path] = markdown(title, tables, main_paragraphs)
            files[lesion_path] = markdown(f"{title}: by lesion size and type", lesions, lesion_notes)
        elif fmt == "tex":
            files[path] = latex(title, tables, main_paragraphs)
            files[lesion_path] = latex(f"{title}: by lesion size and type", lesions, lesion_notes)
        elif fmt == "csv":
            files[path] = csv_text(*main_csv(rows))
            files[lesion_path] = csv_text(lesion_csv_header, lesion_csv_cells)
        else:
            runs = [run for row in rows for run in row.runs]
            order = [r.method for r in rows if not r.chance]
            paragraphs = main_paragraphs + ([FOLD_HTML_NOTE] if folded else [])
            files.update(report_files(path, title, tables, paragraphs, lesions, lesion_notes, runs, order))
    return files


def write_leaderboards(
    paths: Iterable[str | Path], out_dir: str | Path, formats: Sequence[str] = FORMATS
) -> LeaderboardResult:
    """Write one leaderboard per comparable group of the runs under ``paths`` into ``out_dir`` (atomically).

    Raises:
        FileNotFoundError: a path holds no record.
        ValueError: an unreadable record or per-image file, a duplicate (method, seed) in a group, or an unknown
            format.
    """
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown leaderboard format {fmt!r}; choose from {', '.join(FORMATS)}")
    found = find_records(paths)
    records = [load_record(p) for p in found]
    folders = {id(r): p.parent for r, p in zip(records, found, strict=True)}
    groups = group_records(records)
    keys = list(groups)
    differences = [
        f"{group_name(a, keys)} vs {group_name(b, keys)}: {describe_difference(a, b)}"
        for i, a in enumerate(keys)
        for b in keys[i + 1 :]
    ]
    out = Path(out_dir)
    # Everything is rendered before anything is written: a damaged curves or gallery file met while rendering the
    # report stops the command without leaving half a leaderboard behind.
    pages: dict[Path, str] = {}
    for key, members in groups.items():
        rows = build_rows(members, [folders[id(r)] for r in members])
        budget = f", training budget {key[BUDGET]}" if key[BUDGET] != UNTRAINED else ""
        split = f"test split {key[2]}"
        if "-fold " in key[2]:
            k, assignment = key[2].split("-fold ")
            split = f"{k}-fold cross-validation by patient (assignment {assignment})"
        title = f"{key[0]} ({key[1]}), profile {key[3]}, {split}{budget}: {len(members)} runs"
        if key[INITIALISATION] != "random":
            title += f", initialised {key[INITIALISATION]}"
        pages.update(render_group(out, group_name(key, keys), title, rows, formats))
    out.mkdir(parents=True, exist_ok=True)
    files = [atomic_write_text(path, text) for path, text in pages.items()]
    return LeaderboardResult(files, [(group_name(k, keys), len(v)) for k, v in groups.items()], differences)
