"""The method catalogue read from the methods' source files, without importing them.

Registering a method imports its module, and every method module imports torch (well over a second on a small
machine). ``wsseg list methods`` only needs each method's name, supervision, source and one-line description,
and all four can be read from the ``wsseg.methods`` entry points and the methods' source code: the entry point
names the module and class; the class's ``@register_method("name")`` decorator, docstring and ``supervision``
attribute (its own or a base class's, followed through the imports) are plain literals. Nothing here imports a
method, torch or a plugin: modules are located with :func:`importlib.util.find_spec` (top-level names only, which
runs no code) and the path finder, then parsed with :mod:`ast`.

When any entry point cannot be read this way (a module that is not a plain ``.py`` file, a class that is built
at import time, a base class the reader cannot follow, a decorator naming another method),
:func:`read_catalog` returns ``None`` and the caller imports the methods through :mod:`wsseg.registry`, which is
also the only way to find a plugin that parses but fails to import (``wsseg list methods --check``).
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from wsseg._entry_points import entry_point_source

ENTRY_POINT_GROUP = "wsseg.methods"
# How far the reader follows base classes and re-exports before giving up (and letting the caller import).
MAX_DEPTH = 12


@dataclass(frozen=True)
class CatalogEntry:
    """One method as ``wsseg list methods`` shows it (the fields of :class:`wsseg.registry.MethodSpec`)."""

    name: str
    supervision: str
    source: str
    description: str


class Unreadable(Exception):
    """The source does not say it with literals; the method has to be imported to know."""


def method_entry_points() -> list[EntryPoint]:
    """The ``wsseg.methods`` entry points, sorted by name."""
    return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)


def read_catalog() -> list[CatalogEntry] | None:
    """Every method's name, supervision, source and description, sorted by name; ``None`` if one is unreadable.

    ``None`` too when two entry points share a name (the registry decides which one wins, or reports the clash).
    """
    eps = method_entry_points()
    if len({ep.name for ep in eps}) != len(eps):
        return None
    reader = _SourceReader()
    try:
        return [reader.entry(ep) for ep in eps]
    except (Unreadable, ImportError, OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


class _SourceReader:
    """Finds modules and classes by name and reads them with ``ast``; each module is parsed once."""

    def __init__(self) -> None:
        self._trees: dict[str, tuple[ast.Module, str]] = {}  # module -> (tree, its package)

    def entry(self, ep: EntryPoint) -> CatalogEntry:
        module, _, attr = ep.value.partition(":")
        attr = attr.strip()
        if not attr or "." in attr or "[" in attr:
            raise Unreadable(f"entry point {ep.value} does not name a module-level class")
        where, node = self._find_class(module.strip(), attr, 0)
        if _registered_name(node) != ep.name:
            raise Unreadable(f"{where}.{attr} is not decorated with @register_method({ep.name!r})")
        doc = ast.get_docstring(node, clean=False)
        description = doc.strip().splitlines()[0] if doc and doc.strip() else ""
        supervision = self._supervision(where, node, 0)
        if supervision is None:
            raise Unreadable(f"{where}.{attr} and its bases set no supervision")
        return CatalogEntry(ep.name, supervision, entry_point_source(ep), description)

    def _module(self, module: str) -> tuple[ast.Module, str]:
        if module not in self._trees:
            path = _module_file(module)
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            self._trees[module] = (ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), package)
        return self._trees[module]

    def _find_class(self, module: str, name: str, depth: int) -> tuple[str, ast.ClassDef]:
        """The module that defines class ``name`` as seen from ``module`` (following imports), and its node."""
        if depth > MAX_DEPTH:
            raise Unreadable(f"{module}.{name}: too many imports to follow")
        tree, package = self._module(module)
        for node in tree.body:
            if isinstance(node, ast.ClassDef) and node.name == name:
                return module, node
        target = _imported_names(tree, package).get(name)
        if target is None or "." not in target:
            raise Unreadable(f"{module} defines no class {name} that can be read from its source")
        owner, _, attr = target.rpartition(".")
        return self._find_class(owner, attr, depth + 1)

    def _resolve_base(self, module: str, base: ast.expr, depth: int) -> tuple[str, ast.ClassDef]:
        dotted = _dotted(base)
        if dotted is None:
            raise Unreadable(f"a base class of a method in {module} is not a plain name")
        head, _, rest = dotted.partition(".")
        if not rest:
            return self._find_class(module, head, depth + 1)
        tree, package = self._module(module)
        target = _imported_names(tree, package).get(head)  # `nn.Module` with `from torch import nn`, ...
        if target is None:
            raise Unreadable(f"{module}: cannot follow the base class {dotted}")
        owner, _, attr = f"{target}.{rest}".rpartition(".")
        return self._find_class(owner, attr, depth + 1)

    def _supervision(self, module: str, node: ast.ClassDef, depth: int) -> str | None:
        """The class's ``supervision`` literal, else the first base's that sets one (left to right, depth first)."""
        for stmt in node.body:
            value = None
            if isinstance(stmt, ast.Assign) and any(_dotted(t) == "supervision" for t in stmt.targets):
                value = stmt.value
            elif isinstance(stmt, ast.AnnAssign) and _dotted(stmt.target) == "supervision":
                value = stmt.value
            else:
                continue
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                return value.value
            raise Unreadable(f"{module}.{node.name} sets supervision to an expression, not a string")
        if depth > MAX_DEPTH:
            raise Unreadable(f"{module}.{node.name}: too many base classes to follow")
        for base in node.bases:
            owner, base_node = self._resolve_base(module, base, depth)
            found = self._supervision(owner, base_node, depth + 1)
            if found is not None:
                return found
        return None


def _module_file(module: str) -> Path:
    """The ``.py`` file of ``module``, found without running any code (no parent package is imported)."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)  # a top-level name: finders only, nothing is executed
    for part in rest:
        if spec is None or not spec.submodule_search_locations:
            break
        spec = importlib.machinery.PathFinder.find_spec(part, list(spec.submodule_search_locations))
    if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
        raise Unreadable(f"no Python source file for module {module}")
    return Path(spec.origin)


def _registered_name(node: ast.ClassDef) -> str | None:
    """``name`` of a ``@register_method("name")`` decorator (or ``@wsseg.register_method(...)``), else None."""
    for deco in node.decorator_list:
        if isinstance(deco, ast.Call) and (_dotted(deco.func) or "").rpartition(".")[2] == "register_method":
            if len(deco.args) == 1 and isinstance(deco.args[0], ast.Constant) and isinstance(deco.args[0].value, str):
                return deco.args[0].value
    return None


def _dotted(expr: ast.expr) -> str | None:
    """``a.b.c`` for a chain of attribute accesses on a name, else None."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        inner = _dotted(expr.value)
        return None if inner is None else f"{inner}.{expr.attr}"
    return None


def _imported_names(tree: ast.Module, package: str) -> dict[str, str]:
    """Local name -> the dotted name it was imported as, for the module-level imports (``if``/``try`` blocks included).

    ``if TYPE_CHECKING:`` imports count: they name where a lazily re-exported class really lives (``wsseg``'s
    ``WSSegMethod``). A later import of a name wins, as at run time; a ``try`` block's imports win over its
    ``except`` fallbacks.
    """
    names: dict[str, str] = {}

    def visit(statements: list[ast.stmt]) -> None:
        for stmt in statements:
            if isinstance(stmt, ast.If):
                visit([*stmt.body, *stmt.orelse])
            elif isinstance(stmt, ast.Try):
                visit([*(s for h in stmt.handlers for s in h.body), *stmt.body, *stmt.orelse, *stmt.finalbody])
            elif isinstance(stmt, ast.Import):
                for a in stmt.names:
                    top = a.name.split(".")[0]
                    names[a.asname or top] = a.name if a.asname else top
            elif isinstance(stmt, ast.ImportFrom):
                base = stmt.module or ""
                if stmt.level:
                    anchor = package.split(".")[: len(package.split(".")) - stmt.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                for a in stmt.names:
                    if a.name != "*":
                        names[a.asname or a.name] = f"{base}.{a.name}"

    visit(tree.body)
    return names
