"""Atomic file writes: a run never leaves a half-written file behind.

Every file wsseg writes goes to a temporary file in the destination folder, is flushed and fsynced,
and is then renamed over the destination (a rename within one filesystem is atomic on POSIX).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

# mkstemp creates files readable by their owner only; results are meant to be shared, so written files get the
# permissions a plain open() would give them (0666 less the process umask). Read once: os.umask can only be read
# by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    Args:
        path: the final destination.
        mode: ``"wb"`` or ``"w"``.

    Raises:
        OSError: re-raised with the destination named, e.g. when the disk is full or not writable.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}. Check the folder exists and is writable.") from e
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise OSError(
                f"cannot write {path}: {e.strerror or e}. Earlier files are intact; free space or fix permissions."
            ) from e
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically and return the path."""
    with atomic_open(path, "w") as f:
        f.write(text)
    return Path(path)


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented, key-sorted JSON (byte-stable for equal inputs)."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=True) + "\n")


def atomic_save(path: str | Path, writer: Callable[[IO[bytes]], None]) -> Path:
    """Call ``writer(file)`` on a temporary binary file and move it to ``path`` atomically."""
    with atomic_open(path, "wb") as f:
        writer(f)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_open(path, "wb") as f:
        f.write(data)
    return Path(path)
