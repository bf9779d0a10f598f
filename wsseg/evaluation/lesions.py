"""Lesion size and type of a lesion image, for the leaderboards' breakdown by size and type.

Size (from the mask, so it works for every source, whatever its annotations say):
    The lesions of one class on one image are the 8-connected components of that class's mask inside the evaluated
    region. Each has an *equivalent diameter*, the diameter of the disc of the same area:
    ``d = 2 sqrt(n_pixels / pi) * pixel_spacing_mm``. An image with two or more lesions of one class is binned by
    its largest one: the image's Dice and pointing hit are per image (over the union of its lesions), and the largest
    component holds most of the pixels that Dice counts. A calcification cluster drawn as one outline (CBIS-DDSM, the
    phantom) is one component; a dataset that draws each speck separately is binned by its largest speck.

Type (from the dataset's own lesion names, kept in each sample's ``meta["lesions"]``):
    :func:`lesion_type_group` maps every source's names to ``mass``, ``calcification`` or ``other``: the phantom's
    ``mass`` / ``calcification``; CBIS-DDSM's ``mass`` / ``calcification``; mini-MIAS's ``CIRC``, ``SPIC``, ``MISC``
    (masses), ``CALC`` and ``ARCH``, ``ASYM`` (other); INbreast's ROI names (mass, spiculated region, calcification,
    cluster; distortion, asymmetry: other); VinDr-Mammo's finding categories (``Mass``, ``Suspicious
    Calcification``; the rest, e.g. ``Architectural Distortion``, other; a finding listing several categories of
    different groups is other). An image whose lesions of one class fall into different groups is ``other``; an
    image whose lesions carry no name (NYU, manifests, ``wsseg score``) has the empty type and enters no type bin.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

# Equivalent-diameter bins, mm: [low, high). Small lesions are where high-resolution maps should help most.
SIZE_BINS_MM: tuple[tuple[float, float, str], ...] = (
    (0.0, 5.0, "<5 mm"),
    (5.0, 10.0, "5-10 mm"),
    (10.0, 20.0, "10-20 mm"),
    (20.0, math.inf, ">=20 mm"),
)
TYPE_GROUPS: tuple[str, ...] = ("mass", "calcification", "other")

# Whole names (lower case) that name a mass without the word: mini-MIAS's circumscribed, spiculated and ill-defined.
_MASS_NAMES = frozenset({"circ", "spic", "misc", "spiculated region", "espiculated region"})


def lesion_type_group(name: str) -> str:
    """``mass``, ``calcification`` or ``other`` for a dataset's own lesion name; ``""`` for an empty name.

    A name may list several categories separated by ``|`` (VinDr-Mammo): all in one group give that group, a mix
    gives ``other``.
    """
    parts = [p.strip().lower() for p in str(name).split("|") if p.strip()]
    if not parts:
        return ""
    groups = set()
    for p in parts:
        if "calc" in p or p in ("cluster", "calcification cluster"):
            groups.add("calcification")
        elif "mass" in p or p in _MASS_NAMES:
            groups.add("mass")
        else:
            groups.add("other")
    return groups.pop() if len(groups) == 1 else "other"


def image_lesion_type(lesions: Iterable[Mapping[str, Any]], cls: str) -> str:
    """The type group of an image's lesions of class ``cls`` (see the module docstring); ``""`` when none is named."""
    groups = {lesion_type_group(str(les.get("type", ""))) for les in lesions if les.get("class") == cls}
    groups.discard("")
    if not groups:
        return ""
    return groups.pop() if len(groups) == 1 else "other"


def equivalent_diameter_mm(pixels: np.ndarray | float, spacing_mm: np.ndarray | float) -> np.ndarray:
    """Diameter of the disc with the area of ``pixels`` pixels of side ``spacing_mm``: ``2 sqrt(n / pi) s``."""
    return np.asarray(2.0 * np.sqrt(np.asarray(pixels, dtype=np.float64) / math.pi) * spacing_mm, dtype=np.float64)


def size_bin(diameter_mm: float) -> str | None:
    """The label of the size bin holding ``diameter_mm``; None for NaN (unknown size)."""
    if math.isnan(diameter_mm):
        return None
    for low, high, label in SIZE_BINS_MM:
        if low <= diameter_mm < high:
            return label
    return None
