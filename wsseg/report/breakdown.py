"""The leaderboards' second table: Dice and pointing game by lesion size and by lesion type, per class.

Input: each run's ``curves.json`` block ``lesion_size`` (one point per test image with a lesion of the class; see
:mod:`wsseg.evaluation.curves`). An image is binned by the equivalent diameter of its largest lesion component and by
the type group of its lesions (:mod:`wsseg.evaluation.lesions`). A cell is the mean over the bin's images of the
headline Dice, or of the pointing-game hit at 10 mm, then the mean over the row's seeds; ``n`` counts the bin's
images (the same in every seed: one test split). Files written before the diameters, types and hits existed still
give a size breakdown of Dice: their images are binned by the equivalent diameter of the class's whole lesion area on
the image (``area_mm2``), and their hits and types are unknown (n/a).

A k-fold cross-validation is broken down over the union of its test folds: a seed's ``lesion_size`` points are those
of its k runs joined (:func:`pool_curves`), so a bin holds every lesion image of the dataset that falls in it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wsseg.evaluation.lesions import SIZE_BINS_MM, TYPE_GROUPS, size_bin

BINS: tuple[str, ...] = tuple(label for _, _, label in SIZE_BINS_MM) + TYPE_GROUPS
HIT_KEY = "hit_10mm"
CHANCE_HIT_KEY = "chance_hit_10mm"


@dataclass(frozen=True)
class Cell:
    """One bin of one row: images in it (None when unknown), mean Dice and mean hit (NaN when unknown or empty)."""

    n: int | None
    dice: float
    hit: float


def _floats(values: Sequence[Any] | None, n: int) -> np.ndarray:
    if values is None:
        return np.full(n, np.nan)
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def _points(block: Mapping[str, Any]) -> tuple[list[set[str]], dict[str, np.ndarray]]:
    """Per lesion image, the bins it falls in, and its values (Dice, hit, chance Dice, chance hit)."""
    dice = _floats(block.get("dice"), 0)
    n = len(dice)
    if "diameter_mm" in block:
        diameter = _floats(block["diameter_mm"], n)
    else:  # an older curves.json: the class's whole lesion area on the image
        diameter = 2.0 * np.sqrt(_floats(block.get("area_mm2"), n) / math.pi)
    types = [str(t) for t in block.get("type", [""] * n)]
    bins = []
    for d, t in zip(diameter, types, strict=True):
        member = {t} if t in TYPE_GROUPS else set()
        label = size_bin(float(d))
        if label is not None:
            member.add(label)
        bins.append(member)
    values = {
        "dice": dice,
        "hit": _floats(block.get(HIT_KEY), n),
        "chance_dice": _floats(block.get("chance_dice"), n),
        "chance_hit": _floats(block.get(CHANCE_HIT_KEY), n),
    }
    return bins, values


def _mean(values: np.ndarray) -> float:
    # A bin with any unknown value (an older file) has an unknown mean, never the mean of the rest.
    return float(values.mean()) if len(values) and not np.isnan(values).any() else math.nan


def _cells(block: Mapping[str, Any], dice_key: str, hit_key: str) -> dict[str, Cell]:
    bins, values = _points(block)
    has_types = "type" in block  # older files have no types: their type bins are unknown, not empty
    out = {}
    for label in BINS:
        inside = np.array([label in b for b in bins], dtype=bool).reshape(len(bins))
        n = None if label in TYPE_GROUPS and not has_types else int(inside.sum())
        out[label] = Cell(n, _mean(values[dice_key][inside]), _mean(values[hit_key][inside]))
    return out


def row_cells(seed_curves: Sequence[Mapping[str, Any]], cls: str) -> dict[str, Cell]:
    """A method's cells for one class: each seed's bin means, averaged over the seeds (n from the first seed)."""
    per_seed = [_cells(c[cls]["lesion_size"], "dice", "hit") for c in seed_curves if cls in c]
    if not per_seed:
        return {label: Cell(None, math.nan, math.nan) for label in BINS}
    out = {}
    for label in BINS:
        cells = [s[label] for s in per_seed]
        dice = [c.dice for c in cells]
        hits = [c.hit for c in cells]
        out[label] = Cell(
            cells[0].n,
            float(np.mean(dice)) if all(math.isfinite(d) for d in dice) else math.nan,
            float(np.mean(hits)) if all(math.isfinite(h) for h in hits) else math.nan,
        )
    return out


def pool_curves(folds: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One seed's test folds as one run's curves, for the breakdown: per class, the ``lesion_size`` points joined.

    A key is kept only where every fold has it (files written before a key existed leave it out, so the cells it
    feeds are n/a, never the mean of the other folds).
    """
    out: dict[str, Any] = {}
    for c in [c for c in folds[0] if all(c in f for f in folds)] if folds else []:
        blocks = [f[c].get("lesion_size", {}) for f in folds]
        keys = [k for k in blocks[0] if all(k in b for b in blocks)]
        out[c] = {"lesion_size": {k: [v for b in blocks for v in b[k]] for k in keys}}
    return out


def chance_cells(seed_curves: Sequence[Mapping[str, Any]], cls: str) -> dict[str, Cell]:
    """The chance level of each bin (whole-breast Dice, uniform-peak hit), from the first run that recorded it."""
    for c in seed_curves:
        block = c.get(cls, {}).get("lesion_size", {})
        if "chance_dice" in block:
            return _cells(block, "chance_dice", "chance_hit")
    return {label: Cell(None, math.nan, math.nan) for label in BINS}
