"""Data sources are plugins like methods: found through the ``wsseg.sources`` entry points, broken ones listed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import wsseg.data.sources as sources
from tests.plugin_kit import fake_distribution
from wsseg.cli import app

runner = CliRunner()

# A third-party source: the manifest reader under another name, with a fixture writer of its own.
TOY = """
from pathlib import Path
from typing import Any

from wsseg.data.sources import register_source
from wsseg.data.sources.manifest import ManifestSource, write_fixture


@register_source("toy")
class Toy(ManifestSource):
    '''A toy dataset installed as a plugin.'''

    licence = "toy licence"

    def write_fixture(self, root: Path) -> dict[str, Any]:
        return write_fixture(root, n_patients=3)
"""
# Registers a built-in source's name with another class: refused, never replacing mini-mias.
TWIN = """
from wsseg.data.sources import DataSource, register_source


@register_source("mini-mias")
class Twin(DataSource):
    '''Not mini-MIAS.'''
"""


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site folder of source plugins on sys.path; afterwards the registry is as it was."""
    folder = tmp_path / "site"
    folder.mkdir()
    fake_distribution(folder, "wsseg.sources", "wsseg-toy", "toy = wsseg_toy:Toy", "wsseg_toy", TOY)
    fake_distribution(
        folder,
        "wsseg.sources",
        "wsseg-broken",
        "broken = wsseg_broken:Broken",
        "wsseg_broken",
        "raise ImportError('boom')\n",
    )
    fake_distribution(folder, "wsseg.sources", "wsseg-twin", "twin = wsseg_twin:Twin", "wsseg_twin", TWIN)
    fake_distribution(
        folder, "wsseg.sources", "wsseg-empty", "empty = wsseg_empty:Nothing", "wsseg_empty", "Nothing = None\n"
    )
    monkeypatch.syspath_prepend(str(folder))
    sources.refresh()
    try:
        yield folder
    finally:
        monkeypatch.undo()
        sources._REGISTRY.pop("toy", None)
        for module in ("wsseg_toy", "wsseg_broken", "wsseg_twin", "wsseg_empty"):
            sys.modules.pop(module, None)
        sources.refresh()
    assert "toy" not in sources.list_sources() and not sources.broken_sources()


def test_an_installed_source_plugin_prepares_lists_and_writes_its_fixture(
    site: Path, tmp_path: Path, cache_dir: Path
) -> None:
    assert "toy" in sources.list_sources() and type(sources.get_source("toy")).__name__ == "Toy"
    listing = runner.invoke(app, ["list", "datasets"])
    assert listing.exit_code == 0 and "toy licence" in listing.output
    assert listing.output.splitlines()[2].startswith("phantom")  # the default dataset first
    download = tmp_path / "toy"
    result = runner.invoke(app, ["data", "fixture", "toy", "--out", str(download)])
    assert result.exit_code == 0 and "fixture of 6 images" in result.output, result.output
    prepared = runner.invoke(
        app, ["data", "prepare", "toy", "--root", str(download), "--profile", "tiny", "--cache-dir", str(cache_dir)]
    )
    assert prepared.exit_code == 0, prepared.output
    assert "toy: 6 usable images" in prepared.output and str(cache_dir / "toy") in prepared.output


def test_broken_twin_and_empty_plugins_are_listed_and_never_break_the_others(site: Path) -> None:
    broken = sources.broken_sources()
    assert "ImportError: boom" in broken["broken"] and "plugin wsseg-broken" in broken["broken"]
    assert "registered twice" in broken["twin"] and "rename one of them" in broken["twin"]
    assert "registered no dataset named 'empty'" in broken["empty"]
    assert type(sources.get_source("mini-mias")).__name__ == "MiniMIAS"  # the built-in keeps its name
    with pytest.raises(KeyError, match="installed but broken: .*boom"):
        sources.get_source("broken")
    listing = runner.invoke(app, ["list", "datasets"])
    assert listing.exit_code == 0 and "BROKEN" in listing.output and "mini-mias" in listing.output
    result = runner.invoke(app, ["data", "prepare", "broken", "--root", "."])
    assert result.exit_code == 2 and "boom" in result.output


def test_a_source_registered_in_code_is_found_by_name(tmp_path: Path) -> None:
    @sources.register_source("in-code")
    class InCode(sources.DataSource):
        """Registered programmatically."""

    try:
        assert "in-code" in sources.list_sources() and isinstance(sources.get_source("in-code"), InCode)
        with pytest.raises(ValueError, match="registered twice"):

            @sources.register_source("in-code")
            class Other(sources.DataSource):
                """Another class, same name."""

        with pytest.raises(ValueError, match="letters, digits"):
            sources.register_source("../up")
        result = runner.invoke(app, ["data", "fixture", "in-code", "--out", str(tmp_path)])
        assert result.exit_code == 2 and "no fixture writer for 'in-code'" in result.output
    finally:
        sources._REGISTRY.pop("in-code", None)


def test_the_phantom_is_a_source_without_a_download(tmp_path: Path) -> None:
    phantom = sources.get_source("phantom")
    assert not phantom.needs_root and "phantom" in sources.list_sources()
    result = runner.invoke(app, ["data", "check", "phantom", "--root", str(tmp_path)])
    assert result.exit_code == 2 and "wsseg data prepare phantom" in result.output
    result = runner.invoke(app, ["data", "fixture", "phantom", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no fixture writer for 'phantom'" in result.output
