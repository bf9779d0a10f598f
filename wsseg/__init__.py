"""wsseg: a benchmark suite for weakly-supervised segmentation of high-resolution mammograms.

The public API is re-exported here; everything else is internal machinery.
"""

from wsseg.method import MethodConfig, MethodOutput, WSSegMethod
from wsseg.registry import create_method, is_method, list_methods, register_method

__version__ = "0.1.0"

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
