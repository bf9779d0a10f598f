"""Checkpoints that hold the whole run state, written atomically and read with ``weights_only=True``."""

from __future__ import annotations

import errno
from pathlib import Path
from typing import IO, Any

import torch

from wsseg._io import atomic_save


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists and dicts only) to ``path`` atomically.

    Raises:
        OSError: the write failed (disk full, file size limit, no permission): one line naming ``path`` and the fix;
            the previous checkpoint at ``path`` is intact.
    """

    def write(f: IO[bytes]) -> None:
        try:
            torch.save(state, f)
        except RuntimeError as e:
            # torch's zip writer turns a failed write into "[enforce fail at inline_container.cc] unexpected pos";
            # the OSError it met (ENOSPC, EFBIG...) is the exception's context: report that one, with its errno.
            cause = e.__context__
            if isinstance(cause, OSError):
                raise cause from None
            if "inline_container" in str(e) or "PytorchStreamWriter" in str(e):
                raise OSError(errno.EIO, f"the checkpoint writer failed ({' '.join(str(e).split())})") from None
            raise

    return atomic_save(path, write)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without executing code from it (``weights_only=True``).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a readable wsseg checkpoint (truncated, or not made by wsseg).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read checkpoint {path}: {e}. Delete it and rerun without --resume.") from e
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a wsseg checkpoint (no 'model' entry)")
    return state
