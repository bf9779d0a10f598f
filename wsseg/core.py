"""Names every floor of wsseg shares: classes, profile geometry, scored-folder files, short lists for messages.

This module imports nothing from wsseg, so the data sources, the metrics, the reports and the pipelines can all
read it without an import running upward.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version

try:
    # One version, declared in pyproject.toml; the installed distribution's metadata carries it.
    VERSION = version("wsseg")
except PackageNotFoundError:  # imported from a source tree that was never installed (pip install -e .)
    VERSION = "0+unknown"

# The image-level labels of the benchmark, in the order of every (B, K) tensor, map file and metric key.
CLASSES: tuple[str, str] = ("benign", "malignant")

# What a scored folder (a run, `wsseg score --out`, `wsseg evaluate`) holds besides record.json.
RECORD_JSON = "record.json"
PER_IMAGE_CSV = "per_image.csv"
PER_IMAGE_STATS = "per_image_stats.npz"


@dataclass(frozen=True)
class Geometry:
    """The image grid of a profile: every source (phantom or real) is prepared to this size and spacing."""

    height: int  # pixels (rows)
    width: int  # pixels (columns)
    pixel_spacing_mm: float  # mm per pixel, isotropic


# tiny: unit-test fixtures; quick: the CPU profile; paper: the published architectures' 2944 x 1920 input.
PROFILE_GEOMETRY: dict[str, Geometry] = {
    "tiny": Geometry(184, 120, 1.6),
    "quick": Geometry(736, 480, 0.4),
    "paper": Geometry(2944, 1920, 0.1),
}


def short_list(paths: Iterable[str], limit: int = 5) -> str:
    """The first ``limit`` names, comma-separated, and how many more: for one-line error messages."""
    items = list(paths)
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
