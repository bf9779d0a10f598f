"""The method registry: one name per method, discovered lazily through entry points.

Built-in methods (the top-level ``methods/`` folder, installed as ``wsseg_methods``) and third-party
plugins are found the same way: through the ``wsseg.methods`` entry-point group. Loading an entry
point imports the method's module, whose ``@register_method("name")`` decorator records a
:class:`MethodSpec`. The registry is the only list of methods: CLI choices, tests and leaderboard rows
all come from it.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from wsseg._entry_points import load_entry_points
from wsseg.catalog import ENTRY_POINT_GROUP as ENTRY_POINT_GROUP  # re-exported: the group plugins declare
from wsseg.catalog import method_entry_points
from wsseg.method import MethodConfig, Profile, WSSegMethod

M = TypeVar("M", bound=type[WSSegMethod])


@dataclass(frozen=True)
class MethodSpec:
    """A registered method.

    Attributes:
        name: registry name = file stem = CLI name.
        cls: the method class.
        source: where it came from: ``built-in``, ``plugin <distribution>`` or ``file <path>``.
    """

    name: str
    cls: type[WSSegMethod]
    source: str

    @property
    def description(self) -> str:
        """First line of the class docstring."""
        return (self.cls.__doc__ or "").strip().splitlines()[0] if self.cls.__doc__ else ""

    @property
    def supervision(self) -> str:
        """``weak`` (image labels only), ``full`` (trains on masks: an upper bound), ``reference`` (learns nothing)."""
        return self.cls.supervision


_REGISTRY: dict[str, MethodSpec] = {}
_BROKEN: dict[str, str] = {}
_discovered = False
_loading_source: str | None = None
# Plugin files imported with --plugin: module name -> (resolved path, the names it registered).
_PLUGIN_FILES: dict[str, tuple[Path, list[str]]] = {}
# Method names end up in run folder names and CLI choices: one path component of plain characters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")


def _module_file(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    return str(getattr(module, "__file__", None) or cls.__module__)


def _module_source(cls: type) -> str:
    return f"file {_module_file(cls)}"


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator that registers a method under ``name``.

    Raises:
        ValueError: a name that is not one word of letters, digits, ``_`` and ``-``, or a name already taken by
            another class (the message names both files).
        TypeError: the class is not a :class:`~wsseg.method.WSSegMethod`.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"method name {name!r}: use letters, digits, '_' and '-' only (it names run folders)")

    def decorator(cls: M) -> M:
        source = _loading_source or _module_source(cls)
        if not (isinstance(cls, type) and issubclass(cls, WSSegMethod)):
            raise TypeError(f"@register_method({name!r}) decorates {cls!r}, not a subclass of wsseg.WSSegMethod")
        old = _REGISTRY.get(name)
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"method name {name!r} is registered twice: by {old.cls.__qualname__} in {_module_file(old.cls)} "
                f"({old.source}) and by {cls.__qualname__} in {_module_file(cls)} ({source}); rename one of them"
            )
        cls.name = name
        cls.source = source
        _REGISTRY[name] = MethodSpec(name=name, cls=cls, source=source)
        return cls

    return decorator


@contextmanager
def _source(source: str) -> Iterator[None]:
    global _loading_source
    previous, _loading_source = _loading_source, source
    try:
        yield
    finally:
        _loading_source = previous


def _discover() -> None:
    """Load every entry point of the ``wsseg.methods`` group once; a failing plugin is recorded, not raised."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    load_entry_points(method_entry_points(), _REGISTRY, _BROKEN, _source, "method")


def refresh() -> None:
    """Rescan the entry points (after installing a plugin into a running interpreter).

    Methods already imported stay registered; broken entries are retried.
    """
    global _discovered
    _discovered = False
    _BROKEN.clear()
    _discover()


def load_plugin_file(path: str | Path) -> list[str]:
    """Import a single-file method (``--plugin path/to/my_method.py``) and return the names it registered.

    Loading the same file again returns the names it registered the first time.

    Raises:
        FileNotFoundError: the file does not exist.
        ImportError: not a regular ``.py`` file; another plugin file with the same name (stem) was loaded; the file
            raised while importing, exited (``sys.exit``) or was interrupted (the message names the file); or it
            registered no method.
    """
    given = Path(path)
    path = given.resolve()
    if not path.exists():
        raise FileNotFoundError(f"plugin file {given} does not exist")
    if not path.is_file():
        raise ImportError(f"plugin file {given} is not a regular file; pass the .py file that defines the method")
    _discover()
    module_name = f"wsseg_plugin_{path.stem}"
    if module_name in _PLUGIN_FILES:
        first, names = _PLUGIN_FILES[module_name]
        if first == path:
            return names
        raise ImportError(
            f"two plugin files are named {path.name}: {first} and {path}; plugin files need distinct names "
            "(the file stem is the method's module name): rename one of them"
        )
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import plugin file {path}: not a Python (.py) file")
    before = set(_REGISTRY)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with _source(f"file {path}"):
            spec.loader.exec_module(module)
    except BaseException as e:  # SystemExit and KeyboardInterrupt too: a plugin must not end wsseg silently
        sys.modules.pop(module_name, None)
        for name in set(_REGISTRY) - before:  # nothing half-registered stays behind
            del _REGISTRY[name]
        what = "exited" if isinstance(e, SystemExit) else "failed to import"
        raise ImportError(f"plugin file {path} {what}: {type(e).__name__}: {e}") from e
    names = sorted(set(_REGISTRY) - before)
    if not names:
        sys.modules.pop(module_name, None)
        raise ImportError(
            f"plugin file {path} registered no method; decorate its method class with @register_method('name') "
            "(see CONTRIBUTING.md)"
        )
    _PLUGIN_FILES[module_name] = (path, names)
    return names


def list_methods(pattern: str = "*") -> list[str]:
    """Names of the working registered methods matching a shell-style ``pattern``, sorted."""
    _discover()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def broken_methods() -> dict[str, str]:
    """Entry points that failed to load, with their error."""
    _discover()
    return dict(_BROKEN)


def is_method(name: str) -> bool:
    """Whether ``name`` is a registered, working method."""
    _discover()
    return name in _REGISTRY


def get_method_spec(name: str) -> MethodSpec:
    """The spec of ``name``.

    Raises:
        KeyError: unknown or broken method; the message lists the valid names or the import error.
    """
    _discover()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BROKEN:
        raise KeyError(f"method {name!r} is installed but broken: {_BROKEN[name]}")
    raise KeyError(f"unknown method {name!r}; registered methods: {', '.join(list_methods()) or 'none'}")


def make_config(name: str, profile: Profile = "quick", **overrides: Any) -> MethodConfig:
    """The ``profile`` preset of method ``name``'s config with ``overrides`` applied.

    Raises:
        KeyError: unknown method.
        ValueError: an override names a field the config does not have (the message lists the fields).
    """
    cfg_cls = get_method_spec(name).cls.Config
    cfg = cfg_cls.preset(profile)
    fields = {f.name for f in dataclasses.fields(cfg)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"{name} has no config field(s) {unknown}; its fields are {sorted(fields)}")
    return dataclasses.replace(cfg, **overrides)


def create_method(
    name: str,
    profile: Profile = "quick",
    num_classes: int = 2,
    in_chans: int = 1,
    weights: str | Path | None = None,
    **overrides: Any,
) -> WSSegMethod:
    """Build method ``name`` from its ``profile`` preset with config ``overrides`` (``None`` values are dropped).

    ``weights`` loads a weights file strictly (:meth:`WSSegMethod.load_weights`): a wsseg checkpoint, a flat
    state dict, or the official layout of methods that declare one (GMIC's ``sample_model_N.p``, GLAM's
    ``model_sep.ckpt``/``model_joint.ckpt``).
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    cfg = make_config(name, profile, **overrides)
    method = get_method_spec(name).cls(cfg, num_classes=num_classes, in_chans=in_chans)
    if weights is not None:
        method.load_weights(weights)
    return method
