"""Loading weights files into methods: strictly, without running code, with errors that list the differences.

A weights file is either a wsseg checkpoint (a dict with a ``"model"`` state dict) or a flat state dict of
tensors, such as the official GMIC ``sample_model_N.p`` and GLAM ``model_sep.ckpt``/``model_joint.ckpt`` files
(PyTorch 1.1 legacy serialisation; ``torch.load`` reads it). Methods that can read another code base's layout
declare a prefix table (``WSSegMethod.official_prefixes``) that renames its keys to wsseg's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from wsseg.core import short_list

# How many differing keys an error message lists before it says "and N more".
_SHOWN = 12


def weights_file_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be a weights file, from its first bytes (None when it can be); nothing is loaded.

    torch.save writes a zip archive (``PK``) or, in the legacy format of PyTorch < 1.6 and the official GMIC/GLAM
    files, a pickle (``0x80``); a safetensors file starts with the little-endian length of its JSON header, then
    ``{``.
    """
    p = Path(path).expanduser()
    if not p.exists():
        return "no such file"
    if not p.is_file():
        return "not a regular file"
    try:
        with open(p, "rb") as f:
            head = f.read(9)
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80" or (len(head) == 9 and head[8:9] == b"{"):
        return None
    return "not a weights file (empty, text or another format)" if head else "an empty file"


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a state dict from ``path`` with ``torch.load(weights_only=True)``: no code in the file can run.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is unreadable, refused by the safe loader, or holds no state dict.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; pass the path of a local weights file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(
            f"cannot read weights file {path} safely (torch.load with weights_only=True): {e}. "
            "wsseg only reads files that hold tensors and plain containers; re-save the state dict with torch.save"
        ) from e
    if isinstance(obj, Mapping) and isinstance(obj.get("model"), Mapping):
        obj = obj["model"]  # a wsseg checkpoint
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # a Lightning-style wrapper
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict (a mapping of parameter names to tensors)")
    return {str(k): v for k, v in obj.items()}


def rename_prefixes(state: Mapping[str, Tensor], table: Mapping[str, str]) -> dict[str, Tensor]:
    """Rename keys by the longest matching prefix of ``table`` (old prefix -> new prefix); others are kept."""
    ordered = sorted(table.items(), key=lambda kv: -len(kv[0]))
    out = {}
    for key, value in state.items():
        for old, new in ordered:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        out[key] = value
    return out


def load_strict(module: nn.Module, state: Mapping[str, Tensor], source: str) -> None:
    """Load ``state`` into ``module``: every key mapped, every shape equal, nothing missing or left over.

    ``num_batches_tracked`` counters absent from old files are filled with zeros (they do not change any output).

    Raises:
        ValueError: naming ``source`` and listing the missing keys, the unexpected keys and the shape mismatches.
    """
    expected = module.state_dict()
    state = dict(state)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros_like(value)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {short_list(missing, _SHOWN)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {short_list(unexpected, _SHOWN)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches (file vs model): {short_list(shapes, _SHOWN)}")
        raise ValueError(
            f"the weights in {source} do not fit {type(module).__name__} ({len(expected)} keys): "
            + "; ".join(parts)
            + ". Check the method, its profile (--profile paper for the official files) and its config."
        )
    module.load_state_dict(state, strict=True)
