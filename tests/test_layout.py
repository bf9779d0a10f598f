"""The house rules of the package layout, read from the source with ``ast`` (nothing is imported).

Floors, lowest first: the core names and helpers, ``runtime/`` (device, precision, distributed, inference), the
stage libraries (data, nn, evaluation, method + registry, config, training, report), ``pipelines/`` (the only
code that wires stages together), and the CLI on top. A module may import from its own floor or a lower one;
imports under ``if TYPE_CHECKING:`` are for the type checker only and are not counted.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "wsseg"

# (floor, module prefixes); the stage libraries are ordered among themselves too, so no two of them import each
# other (no circles between packages).
FLOORS: list[tuple[str, tuple[str, ...]]] = [
    ("core", ("wsseg.core", "wsseg._io", "wsseg._lock", "wsseg._threads", "wsseg._entry_points", "wsseg.weights")),
    ("runtime", ("wsseg.runtime",)),
    ("data", ("wsseg.data",)),
    ("nn", ("wsseg.nn",)),
    ("evaluation", ("wsseg.evaluation",)),
    ("method", ("wsseg.method", "wsseg.registry", "wsseg.catalog")),
    ("config", ("wsseg.config",)),
    ("training", ("wsseg.training",)),
    ("report", ("wsseg.report",)),
    ("pipelines", ("wsseg.pipelines",)),
    ("cli", ("wsseg.cli", "wsseg.__main__", "wsseg")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor_of(module: str) -> int:
    """The index of the floor a wsseg module belongs to (the longest matching prefix decides)."""
    best, length = -1, -1
    for i, (_, prefixes) in enumerate(FLOORS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > length:
                best, length = i, len(p)
    assert best >= 0, f"{module} is on no floor; add it to FLOORS in tests/test_layout.py"
    return best


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path, package: str | None = None) -> list[tuple[str, int, bool]]:
    """(imported wsseg module, line, at module level) for every runtime import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if package is None:
        package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, top: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, top)
                continue
            if isinstance(child, ast.Import):
                found.extend((a.name, child.lineno, top) for a in child.names if a.name.split(".")[0] == "wsseg")
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base.split(".")[0] == "wsseg":
                    for a in child.names:  # `from wsseg.x import y` may name the module wsseg.x.y
                        sub = f"{base}.{a.name}"
                        is_module = (ROOT / Path(*sub.split("."))).is_dir() or (
                            ROOT / f"{sub.replace('.', '/')}.py"
                        ).is_file()
                        found.append((sub if is_module else base, child.lineno, top))
            inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, inner)

    visit(tree, True)
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_is_on_a_floor() -> None:
    for path in MODULES:
        floor_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_imports_from_a_higher_floor(path: Path) -> None:
    me = module_name(path)
    mine = floor_of(me)
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {target} ({FLOORS[floor_of(target)][0]}, above {FLOORS[mine][0]})"
        for target, line, _ in imports(path)
        if floor_of(target) > mine
    ]
    assert not upward, "\n".join(upward)


def test_evaluation_imports_no_training_report_pipelines_or_methods() -> None:
    banned = ("wsseg.training", "wsseg.report", "wsseg.pipelines", "wsseg.method", "wsseg.registry", "wsseg.cli")
    bad = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for path in sorted((PACKAGE / "evaluation").rglob("*.py"))
        for target, line, _ in imports(path)
        if target.startswith(banned)
    ]
    assert not bad, "\n".join(bad)


def test_no_import_circles_at_module_level() -> None:
    graph: dict[str, set[str]] = {}
    for path in MODULES:
        me = module_name(path)
        # A package's __init__ runs before its modules, so a module importing its own package is no circle.
        graph[me] = {t for t, _, top in imports(path) if top and t != me and not me.startswith(t + ".")}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        pytest.fail(f"import circle: {' -> '.join(e.args[1])}")


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    """The rules above would pass vacuously if ``imports`` missed lazy or relative imports: it must not."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from wsseg.report import records\n"
        "from ..training import loop\n\ndef f():\n    from wsseg.pipelines.run import run\n    return run\n"
    )
    assert [(t, top) for t, _, top in imports(probe, "wsseg.evaluation")] == [
        ("wsseg.training.loop", True),
        ("wsseg.pipelines.run", False),
    ]
    assert floor_of("wsseg.pipelines.run") > floor_of("wsseg.evaluation.metrics")


def test_every_package_is_declared_and_has_an_init() -> None:
    """A folder of modules missing from pyproject's package list would be left out of a wheel (pip install wsseg)."""
    import tomllib

    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {module_name(p.parent / "__init__.py") for p in MODULES if p.name != "__init__.py"}
    assert folders <= declared, f"add {sorted(folders - declared)} to [tool.setuptools] packages in pyproject.toml"
    missing = sorted(str(p.relative_to(ROOT)) for p in {m.parent for m in MODULES} if not (p / "__init__.py").is_file())
    assert not missing, f"{missing} have no __init__.py"


MAX_FUNCTION_LINES = 100


def test_no_function_is_longer_than_a_screenful() -> None:
    """Every function outside tests stays under 100 lines (def line to last line, docstring included)."""
    long = []
    for folder in ("wsseg", "methods", "examples", "benchmarks"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = (node.end_lineno or node.lineno) - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} is {n} lines")
    assert not long, "split these into well-named helpers:\n" + "\n".join(long)
