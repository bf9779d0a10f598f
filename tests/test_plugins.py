"""Plugins through real entry-point metadata: installed with pip, broken ones, and single files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import wsseg.registry as registry
from tests.plugin_kit import fake_distribution
from wsseg.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "wsseg-example-plugin"


@pytest.fixture
def broken_site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    site.mkdir()
    fake_distribution(
        site,
        "wsseg.methods",
        "wsseg-broken",
        "broken = wsseg_broken:Broken",
        "wsseg_broken",
        "raise ImportError('boom')\n",
    )
    return site


def test_broken_plugin_is_listed_and_never_breaks_the_others(
    broken_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(broken_site))
    registry.refresh()
    try:
        assert "cam" in registry.list_methods()
        assert "broken" not in registry.list_methods()
        assert "boom" in registry.broken_methods()["broken"]
        assert "plugin wsseg-broken" in registry.broken_methods()["broken"]
        with pytest.raises(KeyError, match="broken: .*boom"):
            registry.get_method_spec("broken")
        result = CliRunner().invoke(app, ["list", "methods"])
        assert result.exit_code == 0 and "BROKEN" in result.output and "cam" in result.output
    finally:
        monkeypatch.undo()
        registry.refresh()
    assert "broken" not in registry.broken_methods()


def test_list_methods_reads_the_sources_and_agrees_with_the_imported_registry() -> None:
    # The fast listing (ast on the methods' files) and --check (every method imported) print the same table.
    fast = CliRunner().invoke(app, ["list", "methods"])
    checked = CliRunner().invoke(app, ["list", "methods", "--check"])
    assert fast.exit_code == checked.exit_code == 0
    assert fast.output == checked.output and len(fast.output.splitlines()) == 2 + len(registry.list_methods())


def test_list_methods_imports_no_method_and_not_torch() -> None:
    child = (
        "import sys\nfrom wsseg.cli import main\nsys.argv = ['wsseg', 'list', 'methods']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('loaded:', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'wsseg_methods') "
        "or m in ('wsseg.method', 'wsseg.registry')))\n"
    )
    out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout
    assert "gmic " in out.stdout and "Reference ceiling" in out.stdout  # the table itself is printed


def _plugin_source(name: str, cls: str, body: str, after: str = "") -> str:
    """A one-method plugin module on the parameter-free base (supervision ``reference`` unless ``body`` sets it)."""
    return (
        "from wsseg.method import ParameterFreeMethod\nfrom wsseg.registry import register_method\n"
        f"@register_method({name!r})\nclass {cls}(ParameterFreeMethod):\n    {body}\n{after}"
    )


def test_plugin_that_parses_but_fails_to_import_is_broken_with_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    late = _plugin_source("late", "Late", '"""A plugin whose module fails last."""', "raise ImportError('no dep')\n")
    fake_distribution(tmp_path, "wsseg.methods", "wsseg-late", "late = wsseg_late:Late", "wsseg_late", late)
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    try:
        fast = CliRunner().invoke(app, ["list", "methods"])
        # Read from the source: the base class gives its supervision; only importing can show the failure.
        (row,) = [line.split(None, 4) for line in fast.output.splitlines() if line.startswith("late ")]
        assert row == ["late", "reference", "plugin", "wsseg-late", "A plugin whose module fails last."]
        checked = CliRunner().invoke(app, ["list", "methods", "--check"])
        assert checked.exit_code == 0 and "cam " in checked.output
        (row,) = [line for line in checked.output.splitlines() if line.startswith("late ")]
        assert row.split()[1:4] == ["BROKEN", "plugin", "wsseg-late"] and "no dep" in row
    finally:
        monkeypatch.undo()
        registry.refresh()


def test_a_source_the_catalog_cannot_read_falls_back_to_importing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsseg.catalog import read_catalog

    computed = _plugin_source("computed", "Computed", "supervision = 'f' + 'ull'")
    assert read_catalog() is not None
    fake_distribution(
        tmp_path, "wsseg.methods", "wsseg-computed", "computed = wsseg_computed:Computed", "wsseg_computed", computed
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    try:
        assert read_catalog() is None  # an expression, not a literal: only the import knows the value
        listing = CliRunner().invoke(app, ["list", "methods"])
        assert listing.exit_code == 0
        (row,) = [line for line in listing.output.splitlines() if line.startswith("computed ")]
        assert row.split() == ["computed", "full", "plugin", "wsseg-computed"]
    finally:
        monkeypatch.undo()
        registry.refresh()


def test_catalog_follows_relative_imports_and_base_classes_like_the_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A plugin package: the method's base class sets the supervision in another module, imported relatively.
    fake_distribution(
        tmp_path, "wsseg.methods", "wsseg-pkg", "pkgm = wsseg_pkg.method:PkgMethod", "wsseg_pkg_unused", ""
    )
    package = tmp_path / "wsseg_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('the catalog must not run this')\n")
    (package / "base.py").write_text(
        "from wsseg.method import ParameterFreeMethod\nclass Base(ParameterFreeMethod):\n    supervision = 'full'\n"
    )
    (package / "method.py").write_text(
        "try:\n    from .base import Base as Parent\nexcept ImportError:\n    Parent = object\n"
        "import wsseg.registry as reg\n@reg.register_method('pkgm')\nclass PkgMethod(Parent):\n"
        "    '''A packaged method.\n\n    More text.\n    '''\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry.refresh()
    try:
        fast = CliRunner().invoke(app, ["list", "methods"])
        (row,) = [line.split(None, 4) for line in fast.output.splitlines() if line.startswith("pkgm ")]
        assert row == ["pkgm", "full", "plugin", "wsseg-pkg", "A packaged method."]
        # Importing it runs the package's __init__, which refuses: only --check finds that out.
        checked = CliRunner().invoke(app, ["list", "methods", "--check"])
        (row,) = [line.split(None, 4) for line in checked.output.splitlines() if line.startswith("pkgm ")]
        assert row[1] == "BROKEN" and "the catalog must not run this" in row[4]
    finally:
        monkeypatch.undo()
        registry.refresh()


def test_cam_still_runs_beside_a_broken_plugin(broken_site: Path, tmp_path: Path, cache_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(broken_site), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "wsseg", "run", "--method", "cam", "--profile", "tiny", "--epochs", "1", "-q"]
    cmd += ["--out", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "wsseg", "list", "methods"], capture_output=True, text=True, env=env
    )
    assert "broken" in listing.stdout and "BROKEN" in listing.stdout


def test_pip_installed_example_plugin_runs_with_no_change_to_wsseg(tmp_path: Path, cache_dir: Path) -> None:
    target = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    installed = subprocess.run([*pip, "--target", str(target), str(EXAMPLE)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr
    assert list(target.glob("wsseg_example_plugin-*.dist-info/entry_points.txt"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    listing = subprocess.run(
        [sys.executable, "-m", "wsseg", "list", "methods"], capture_output=True, text=True, env=env
    )
    assert "lsecam" in listing.stdout and "plugin wsseg-example-plugin" in listing.stdout
    cmd = [sys.executable, "-m", "wsseg", "run", "--method", "lsecam", "--profile", "tiny", "--epochs", "1", "-q"]
    cmd += ["--out", str(tmp_path / "runs"), "--cache-dir", str(cache_dir)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (record,) = (tmp_path / "runs").glob("*/record.json")
    data = json.loads(record.read_text())
    assert data["method"] == "lsecam" and data["method_source"] == "plugin wsseg-example-plugin"


def test_single_file_plugin_runs(tmp_path: Path, cache_dir: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["run", "--plugin", str(EXAMPLE / "wsseg_lsecam.py"), "--method", "lsecam", "--profile", "tiny"]
        + ["--epochs", "1", "-q", "--out", str(tmp_path), "--cache-dir", str(cache_dir)],
    )
    assert result.exit_code == 0, result.output
    (record,) = tmp_path.glob("*/record.json")
    assert json.loads(record.read_text())["method_source"].startswith("file ")


def test_missing_plugin_file_is_a_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", "--plugin", str(tmp_path / "nope.py"), "--method", "nope"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_duplicate_name_names_both_sources(tmp_path: Path) -> None:
    clash = tmp_path / "clash.py"
    clash.write_text(
        "from wsseg_methods.cam import CAM\nfrom wsseg.registry import register_method\n"
        "@register_method('cam')\nclass Other(CAM):\n    '''x'''\n"
    )
    # The message names both classes and both files.
    both = r"registered twice: by CAM in \S*cam\.py \(built-in\) and by Other in \S*clash\.py"
    with pytest.raises(ImportError, match=both):
        registry.load_plugin_file(clash)
    assert registry.get_method_spec("cam").cls.__module__ == "wsseg_methods.cam"
