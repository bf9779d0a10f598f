"""Which differences in a leaderboard are real: rank groups by the paired patient bootstrap, rank stability over seeds.

Rank groups (per class). The best weakly supervised row is the one with the highest seed-mean headline Dice. Every
other row (weak, fully supervised, reference and the chance level) is compared with it by the paired patient bootstrap
of ``wsseg compare`` (:func:`wsseg.evaluation.bootstrap.paired_seed_bootstrap`): each side's statistic is the mean
over its seeds of the image-averaged Dice, and every resample draws the test patients once for all seeds of both
sides (1,000 resamples, seed 0). The row's mark is ``= best`` when the 95% interval of the difference (row - best)
contains 0, so the row shares the best row's rank group; ``below`` or ``above`` when the interval excludes 0. The
per-image Dice comes from each run's ``per_image.csv`` (at the run's validation-calibrated threshold, the headline);
a row with a seed lacking it is ``n/a``. The chance row's per-image Dice is the whole-breast Dice ``2|G| / (|R| +
|G|)`` of the same images.

A k-fold cross-validation is compared on the union of its test folds (:func:`pool_folds`): a seed of a method is
its k runs' per-image values joined (every patient is tested in exactly one fold, at that fold's own threshold), so
the images pair one to one across methods and the same bootstrap resamples every patient of the dataset once (the
draws of :func:`wsseg.evaluation.bootstrap.pooled_intervals`, which gives the rows' Dice intervals). The difference
is then the image-averaged Dice over the union, which weighs each fold by its lesion images, whereas the table's
Dice is the mean over folds.

Rank stability. Each seed ranks the methods present in every seed by the mean over classes of that seed's headline
Dice; Kendall's tau (``scipy.stats.kendalltau``, tau-b, which handles ties) between the rankings of every pair of
seeds gives the mean and the minimum over pairs, for all those methods and for the weakly supervised ones alone.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import kendalltau

from wsseg.evaluation.bootstrap import paired_seed_bootstrap, pooled_patients

PER_IMAGE_CSV = "per_image.csv"
N_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class PerImage:
    """One run's per-image values of one class, in the file's image order.

    Attributes:
        image_ids, patient_ids: (N,) the test images and their patients.
        dice: (N,) headline Dice, NaN on images without a lesion of the class.
        gt, area: (N,) lesion and evaluated-region (breast) pixels.
    """

    image_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    dice: np.ndarray
    gt: np.ndarray
    area: np.ndarray

    def aligned(self, image_ids: Sequence[str]) -> PerImage | None:
        """The same values in the order ``image_ids``; None when the image sets differ."""
        if len(image_ids) != len(self.image_ids) or set(image_ids) != set(self.image_ids):
            return None
        pos = {i: k for k, i in enumerate(self.image_ids)}
        index = np.array([pos[i] for i in image_ids], dtype=np.int64)
        return PerImage(
            tuple(image_ids),
            tuple(self.patient_ids[k] for k in index),
            self.dice[index],
            self.gt[index],
            self.area[index],
        )


def read_per_image(folder: Path, record: Mapping[str, Any]) -> dict[str, PerImage] | None:
    """Per class, a run's per-image Dice from its ``per_image.csv``; None when the run folder has no such file.

    Raises:
        ValueError: the file exists but is not a wsseg per-image table (names the file and the fix).
    """
    path = folder / str((record.get("per_image") or {}).get("csv") or PER_IMAGE_CSV)
    if not path.is_file():
        return None
    columns: dict[str, dict[str, list[Any]]] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                c = columns.setdefault(row["class"], {k: [] for k in ("id", "patient", "dice", "gt", "area")})
                c["id"].append(row["image_id"])
                c["patient"].append(row["patient_id"])
                c["dice"].append(float(row["dice"]))
                c["gt"].append(float(row["lesion_pixels"]))
                c["area"].append(float(row["region_pixels"]))
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, ValueError, TypeError) as e:
        raise ValueError(
            f"cannot read per-image results {path} ({type(e).__name__}: {e}); delete it or re-run the evaluation"
        ) from e
    return {
        name: PerImage(
            tuple(c["id"]),
            tuple(c["patient"]),
            np.asarray(c["dice"], dtype=np.float64),
            np.asarray(c["gt"], dtype=np.float64),
            np.asarray(c["area"], dtype=np.float64),
        )
        for name, c in columns.items()
    }


def pool_folds(folds: Sequence[Mapping[str, PerImage]]) -> dict[str, PerImage]:
    """The per-image values of one seed's test folds joined, per class, in fold order (see the module docstring).

    Args:
        folds: per fold (in fold order), :func:`read_per_image` of its run.

    Returns:
        Per class present in every fold, its values over the union of the test folds.

    Raises:
        ValueError: a patient is tested in two folds (the runs do not share one fold assignment).
    """
    names = [c for c in folds[0] if all(c in f for f in folds)] if folds else []
    out = {}
    for c in names:
        parts = [f[c] for f in folds]
        out[c] = PerImage(
            tuple(i for p in parts for i in p.image_ids),
            tuple(pooled_patients([p.patient_ids for p in parts])),
            np.concatenate([p.dice for p in parts]),
            np.concatenate([p.gt for p in parts]),
            np.concatenate([p.area for p in parts]),
        )
    return out


@dataclass(frozen=True)
class Comparison:
    """A row against the best weakly supervised row of a class.

    Attributes:
        mark: ``best``, ``= best`` (the 95% interval of the difference contains 0), ``below``, ``above`` or ``n/a``.
        diff, low, high: the Dice difference row - best and its interval (NaN for the best row itself and n/a).
    """

    mark: str
    diff: float = math.nan
    low: float = math.nan
    high: float = math.nan


BEST = Comparison("best")
UNKNOWN = Comparison("n/a")


def _align(seeds: Sequence[PerImage], best: PerImage) -> list[PerImage] | None:
    """Every seed's values in the best run's image order; None when images, patients or masks differ."""
    out = []
    for s in seeds:
        a = s.aligned(best.image_ids)
        if a is None or a.patient_ids != best.patient_ids or not np.array_equal(a.gt > 0, best.gt > 0):
            return None
        out.append(a)
    return out


def compare_with_best(best: Sequence[PerImage], other: Sequence[PerImage] | None, chance: bool = False) -> Comparison:
    """The paired patient bootstrap of ``other`` - ``best`` (module docstring); ``n/a`` without per-image data.

    Args:
        best: the best row's per-seed values of one class.
        other: the compared row's per-seed values; ignored for the chance row.
        chance: compare the whole-breast Dice of the best row's images instead of ``other``.
    """
    if not best:
        return UNKNOWN
    ref = best[0]
    mask = ref.gt > 0
    if not mask.any():
        return UNKNOWN
    a = _align(best, ref)
    if chance:
        with np.errstate(invalid="ignore", divide="ignore"):
            b: list[np.ndarray] | None = [np.where(mask, 2 * ref.gt / (ref.area + ref.gt), np.nan)]
    else:
        aligned = _align(other, ref) if other else None
        b = [s.dice for s in aligned] if aligned else None
    if a is None or b is None:
        return UNKNOWN
    r = paired_seed_bootstrap(b, [s.dice for s in a], mask, ref.patient_ids, N_RESAMPLES, BOOTSTRAP_SEED, LEVEL)
    low, high = r["low"], r["high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return Comparison("n/a", r["diff"])
    mark = "= best" if low <= 0.0 <= high else ("below" if high < 0.0 else "above")
    return Comparison(mark, r["diff"], low, high)


@dataclass(frozen=True)
class Stability:
    """Kendall's tau between the seeds' method rankings (NaN where undefined).

    Attributes:
        seeds: the seeds compared; n_methods: the methods present in every seed.
        mean, min: over the pairs of seeds, all those methods.
        n_weak, weak_mean, weak_min: the same for the weakly supervised methods alone.
    """

    seeds: tuple[int, ...]
    n_methods: int
    mean: float
    min: float
    n_weak: int
    weak_mean: float
    weak_min: float


def _taus(scores: Mapping[str, Mapping[int, float]], methods: Sequence[str], seeds: Sequence[int]) -> list[float]:
    taus = []
    for s, t in itertools.combinations(seeds, 2):
        x = [scores[m][s] for m in methods]
        y = [scores[m][t] for m in methods]
        if len(methods) < 2 or not all(math.isfinite(v) for v in x + y):
            continue
        tau = float(kendalltau(x, y).statistic)
        if math.isfinite(tau):  # NaN when a seed's scores are all equal: no ranking to compare
            taus.append(tau)
    return taus


def rank_stability(scores: Mapping[str, Mapping[int, float]], weak: set[str]) -> Stability:
    """Kendall's tau of the ranking between every pair of seeds, over the methods present in every seed.

    Args:
        scores: per method, per seed, the ranking score (the mean over classes of that seed's headline Dice).
        weak: the weakly supervised methods.
    """
    seeds = tuple(sorted({s for per_seed in scores.values() for s in per_seed}))
    methods = sorted(m for m, per_seed in scores.items() if set(per_seed) == set(seeds))
    weak_methods = [m for m in methods if m in weak]
    every, only_weak = _taus(scores, methods, seeds), _taus(scores, weak_methods, seeds)
    return Stability(
        seeds,
        len(methods),
        float(np.mean(every)) if every else math.nan,
        min(every) if every else math.nan,
        len(weak_methods),
        float(np.mean(only_weak)) if only_weak else math.nan,
        min(only_weak) if only_weak else math.nan,
    )


def stability_line(st: Stability) -> str:
    """One sentence for the tables: the mean and minimum tau, or why there is none."""
    pairs = len(st.seeds) * (len(st.seeds) - 1) // 2
    if not math.isfinite(st.mean):
        return (
            "Rank stability between seeds (Kendall's tau): n/a; it needs two or more seeds, and two or more methods "
            "run with every seed whose Dice is defined for every class "
            f"(here {len(st.seeds)} seed(s), {st.n_methods} method(s) run with every seed)."
        )
    weak = (
        f"; the {st.n_weak} weakly supervised methods alone: mean {st.weak_mean:.2f}, min {st.weak_min:.2f}"
        if math.isfinite(st.weak_mean)
        else ""
    )
    return (
        f"Rank stability between seeds (Kendall's tau of the ranking by mean Dice, {pairs} pair(s) of seeds "
        f"{', '.join(map(str, st.seeds))}, the {st.n_methods} methods run with every seed): mean {st.mean:.2f}, "
        f"min {st.min:.2f}{weak}."
    )
