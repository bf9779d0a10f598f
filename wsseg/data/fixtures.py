"""Tiny native-layout fixtures of every data source (``wsseg data fixture``), gathered from the sources.

Each source writes its own fixture beside its reader (``write_fixture`` in its module of :mod:`wsseg.data.sources`,
also :meth:`~wsseg.data.sources.DataSource.write_fixture`); the shared phantom breast and file writers are in
:mod:`wsseg.data.fixture_kit`. This module keeps the names the tests and benchmarks import.

They let the loaders be tested, and ``wsseg data check``/``prepare``/``run`` be tried, without a download.
Each known trap of docs/datasets.md is built in (CBIS-DDSM's swapped crop/mask columns and wrong-size mask,
VinDr's list-valued categories, overhanging boxes and BI-RADS-only findings, INbreast's ``ML`` views and off-by-one
ROI counts, mini-MIAS's bottom-left origin, lines without a location and a circle outside the breast, the NYU
``horizontal_flip``), some as switches.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsseg.data.fixture_kit import H, Phantom, W, phantom, save_dicom, save_mask, save_png16, scaled_phantom, write_csv
from wsseg.data.sources import DataSource, get_source, list_sources
from wsseg.data.sources.cbis_ddsm import CBIS_HEADER_CALC, CBIS_HEADER_MASS
from wsseg.data.sources.cbis_ddsm import write_fixture as write_cbis
from wsseg.data.sources.inbreast import PECTORAL_IMAGE
from wsseg.data.sources.inbreast import write_fixture as write_inbreast
from wsseg.data.sources.manifest import MANIFEST_HEADER, write_phantom_manifest
from wsseg.data.sources.manifest import write_fixture as write_manifest
from wsseg.data.sources.mini_mias import (
    MIAS,
    MIAS_OUTSIDE_BREAST,
    MIAS_OUTSIDE_RC,
    MIAS_PAIRS,
    MIAS_SPECIAL_PAIRS,
    MIAS_UNLOCATED_LINES,
    mias_line,
    mias_pairs,
)
from wsseg.data.sources.mini_mias import write_fixture as write_mias
from wsseg.data.sources.nyu import GMIC_SIZE, NYU_WINDOW
from wsseg.data.sources.nyu import write_fixture as write_nyu
from wsseg.data.sources.vindr_mammo import VINDR_BREAST, VINDR_FINDING, VINDR_WINDOW
from wsseg.data.sources.vindr_mammo import write_fixture as write_vindr

__all__ = [
    "CBIS_HEADER_CALC",
    "CBIS_HEADER_MASS",
    "GMIC_SIZE",
    "MANIFEST_HEADER",
    "MIAS",
    "MIAS_OUTSIDE_BREAST",
    "MIAS_OUTSIDE_RC",
    "MIAS_PAIRS",
    "MIAS_SPECIAL_PAIRS",
    "MIAS_UNLOCATED_LINES",
    "NYU_WINDOW",
    "PECTORAL_IMAGE",
    "VINDR_BREAST",
    "VINDR_FINDING",
    "VINDR_WINDOW",
    "WRITERS",
    "H",
    "Phantom",
    "W",
    "fixture_writers",
    "mias_line",
    "mias_pairs",
    "phantom",
    "save_dicom",
    "save_mask",
    "save_png16",
    "scaled_phantom",
    "write_cbis",
    "write_csv",
    "write_inbreast",
    "write_manifest",
    "write_mias",
    "write_nyu",
    "write_phantom_manifest",
    "write_vindr",
]


def fixture_writers() -> dict[str, Callable[[Path], dict[str, Any]]]:
    """Dataset name -> its fixture writer, for every registered source that has one (plugins included).

    Each writer takes the folder to write into and returns image id -> what was drawn there.
    """
    sources = {name: get_source(name) for name in list_sources()}
    return {
        name: s.write_fixture for name, s in sources.items() if type(s).write_fixture is not DataSource.write_fixture
    }


# The built-in sources' writers, by dataset name (the phantom is generated and has none).
WRITERS: dict[str, Callable[[Path], dict[str, Any]]] = fixture_writers()
