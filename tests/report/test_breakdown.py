"""The breakdown by lesion size and type, from hand-made curves.json blocks (new and older files)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from wsseg.report.breakdown import BINS, chance_cells, row_cells


def _curves(points: list[tuple[float, str, float, float]], **extra: list[Any]) -> dict[str, Any]:
    """A curves.json with benign lesion images given as (diameter mm, type, Dice, hit at 10 mm)."""
    block: dict[str, Any] = {
        "area_mm2": [math.pi * (d / 2) ** 2 for d, *_ in points],
        "dice": [p[2] for p in points],
        "diameter_mm": [p[0] for p in points],
        "type": [p[1] for p in points],
        "hit_10mm": [p[3] for p in points],
        **extra,
    }
    return {"benign": {"lesion_size": block}}


POINTS = [
    (3.0, "calcification", 0.0, 0.0),
    (4.9, "calcification", 0.2, 1.0),
    (5.0, "mass", 0.4, 1.0),
    (12.0, "mass", 0.6, 1.0),
    (19.9, "other", 0.5, 0.0),
    (31.0, "mass", 0.9, 1.0),
    (8.0, "", 0.3, 0.0),  # no type name: in its size bin only
]


def test_images_are_binned_by_size_and_type_and_averaged() -> None:
    cells = row_cells([_curves(POINTS)], "benign")
    assert list(cells) == list(BINS)
    expected = {  # bin: (n, mean Dice, mean hit)
        "<5 mm": (2, 0.1, 0.5),
        "5-10 mm": (2, 0.35, 0.5),
        "10-20 mm": (2, 0.55, 0.5),
        ">=20 mm": (1, 0.9, 1.0),
        "mass": (3, (0.4 + 0.6 + 0.9) / 3, 1.0),
        "calcification": (2, 0.1, 0.5),
        "other": (1, 0.5, 0.0),
    }
    for label, (n, dice, hit) in expected.items():
        assert (
            cells[label].n == n and cells[label].dice == pytest.approx(dice) and cells[label].hit == pytest.approx(hit)
        )


def test_seeds_are_averaged_bin_by_bin_and_empty_bins_are_unknown() -> None:
    second = [(d, t, dice + 0.1, 1.0) for d, t, dice, _ in POINTS]
    cells = row_cells([_curves(POINTS), _curves(second)], "benign")
    assert cells["<5 mm"].dice == pytest.approx(0.15) and cells["<5 mm"].hit == pytest.approx(0.75)
    small = row_cells([_curves(POINTS[2:4])], "benign")
    assert small["<5 mm"].n == 0 and math.isnan(small["<5 mm"].dice) and math.isnan(small["<5 mm"].hit)
    assert row_cells([], "benign")["mass"].n is None  # no curves at all


def test_older_curves_are_binned_by_their_whole_lesion_area_without_hits_or_types() -> None:
    old = {"benign": {"lesion_size": {"area_mm2": [math.pi * 4.0, math.pi * 36.0], "dice": [0.1, 0.5]}}}
    cells = row_cells([old], "benign")
    assert cells["<5 mm"].n == 1 and cells["<5 mm"].dice == pytest.approx(0.1)  # a 4 mm disc
    assert cells["10-20 mm"].n == 1 and cells["10-20 mm"].dice == pytest.approx(0.5)  # a 12 mm disc
    assert math.isnan(cells["10-20 mm"].hit)
    assert cells["mass"].n is None and math.isnan(cells["mass"].dice)  # types unknown, not absent


def test_the_chance_row_uses_the_recorded_per_image_chance() -> None:
    curves = _curves(POINTS[:3], chance_dice=[0.01, 0.02, 0.03], chance_hit_10mm=[0.1, 0.2, 0.3])
    cells = chance_cells([{"benign": {"lesion_size": {"dice": []}}}, curves], "benign")
    assert cells["<5 mm"].dice == pytest.approx(0.015) and cells["<5 mm"].hit == pytest.approx(0.15)
    assert cells["mass"].n == 1 and cells["mass"].hit == pytest.approx(0.3)
