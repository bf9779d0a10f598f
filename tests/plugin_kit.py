"""A plugin as pip installs it, for the method and data-source plugin tests."""

from __future__ import annotations

from pathlib import Path


def fake_distribution(site: Path, group: str, name: str, entry_points: str, module: str, source: str) -> None:
    """An installed distribution as pip leaves it: a module plus a dist-info folder with entry_points.txt.

    Args:
        site: a folder the test puts on ``sys.path``.
        group: the entry-point group (``wsseg.methods`` or ``wsseg.sources``).
        name: the distribution's name.
        entry_points: the group's lines (``name = module:Class``).
        module: the module file's name, without ``.py``.
        source: the module's code.
    """
    (site / f"{module}.py").write_text(source)
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{entry_points}\n")
