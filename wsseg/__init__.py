"""wsseg: a benchmark suite for weakly-supervised segmentation of high-resolution mammograms.

The public API is re-exported here; everything else is internal machinery. The re-exports are resolved on first
use (PEP 562), so that ``import wsseg.cli`` (``wsseg --help``, ``wsseg --version``) does not import torch and
timm, which take seconds to load.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from wsseg.method import MethodConfig, MethodOutput, WSSegMethod
    from wsseg.registry import create_method, is_method, list_methods, register_method

from wsseg.core import VERSION as __version__

# Public name -> the module that defines it.
_EXPORTS = {
    "MethodConfig": "wsseg.method",
    "MethodOutput": "wsseg.method",
    "WSSegMethod": "wsseg.method",
    "create_method": "wsseg.registry",
    "is_method": "wsseg.registry",
    "list_methods": "wsseg.registry",
    "register_method": "wsseg.registry",
}

__all__ = [
    "MethodConfig",
    "MethodOutput",
    "WSSegMethod",
    "__version__",
    "create_method",
    "is_method",
    "list_methods",
    "register_method",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (``wsseg.WSSegMethod`` imports torch then, not before)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'wsseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
