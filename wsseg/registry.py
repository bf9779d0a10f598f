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
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

from wsseg.method import MethodConfig, Profile, WSSegMethod

ENTRY_POINT_GROUP = "wsseg.methods"

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


def _module_source(cls: type) -> str:
    module = sys.modules.get(cls.__module__)
    return f"file {getattr(module, '__file__', cls.__module__)}"


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator that registers a method under ``name``.

    Raises:
        ValueError: when ``name`` is already taken by another class (the message names both sources).
    """

    def decorator(cls: M) -> M:
        source = _loading_source or _module_source(cls)
        old = _REGISTRY.get(name)
        if old is not None and (old.cls.__module__, old.cls.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(
                f"method name {name!r} is registered twice: by {old.cls.__module__}.{old.cls.__qualname__} "
                f"({old.source}) and by {cls.__module__}.{cls.__qualname__} ({source}); rename one of them"
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
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = ep.dist.name if ep.dist is not None else "unknown"
        source = "built-in" if dist == "wsseg" else f"plugin {dist}"
        if ep.name in _REGISTRY:
            continue
        try:
            with _source(source):
                ep.load()
        except Exception as e:  # a broken plugin must never break the other methods
            _BROKEN[ep.name] = f"{source}: {type(e).__name__}: {e}"
            continue
        if ep.name not in _REGISTRY:
            _BROKEN[ep.name] = f"{source}: entry point {ep.value} registered no method named {ep.name!r}"


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

    Raises:
        FileNotFoundError: the file does not exist.
        ImportError: the file raised while importing (the original error is chained).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise FileNotFoundError(f"plugin file {path} does not exist")
    _discover()
    before = set(_REGISTRY)
    module_name = f"wsseg_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        with _source(f"file {path}"):
            spec.loader.exec_module(module)
    except Exception as e:
        sys.modules.pop(module_name, None)
        raise ImportError(f"plugin file {path} failed to import: {type(e).__name__}: {e}") from e
    return sorted(set(_REGISTRY) - before)


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
