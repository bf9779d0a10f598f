"""Loading one entry-point group into a registry.

Shared by the methods (``wsseg.methods``) and the data sources (``wsseg.sources``), so both treat a broken plugin
the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, MutableMapping
from contextlib import AbstractContextManager
from importlib.metadata import EntryPoint
from typing import Any


def entry_point_source(ep: EntryPoint) -> str:
    """``built-in`` for wsseg's own entry points, ``plugin <distribution>`` for the others."""
    dist = ep.dist.name if ep.dist is not None else "unknown"
    return "built-in" if dist == "wsseg" else f"plugin {dist}"


def load_entry_points(
    eps: Iterable[EntryPoint],
    registry: MutableMapping[str, Any],
    broken: MutableMapping[str, str],
    loading: Callable[[str], AbstractContextManager[None]],
    kind: str,
) -> None:
    """Import every entry point whose name is not registered yet; its decorator fills ``registry``.

    A plugin that fails (even by exiting) is recorded in ``broken`` with the reason and never breaks the others;
    what its module registered before failing is dropped, so a name is never listed both working and broken. An
    entry point that registers no ``kind`` of its own name is recorded too.

    Args:
        eps: the group's entry points, in the order to load them.
        registry: name -> registered entry, filled by the decorators the imports run.
        broken: name -> why it could not be used.
        loading: a context manager that tells the decorators where the import comes from (for their messages).
        kind: what the group registers ("method", "dataset"), for the message.
    """
    for ep in eps:
        source = entry_point_source(ep)
        if ep.name in registry:
            continue
        before = set(registry)
        try:
            with loading(source):
                ep.load()
        except (Exception, SystemExit) as e:  # a broken plugin (even one that exits) must never break the others
            for name in set(registry) - before:  # a module that fails after its decorator ran registers nothing
                del registry[name]
            broken[ep.name] = f"{source}: {type(e).__name__}: {e}"
            continue
        if ep.name not in registry:
            broken[ep.name] = f"{source}: entry point {ep.value} registered no {kind} named {ep.name!r}"
