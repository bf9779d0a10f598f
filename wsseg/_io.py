"""Atomic file writes: a run never leaves a half-written file behind.

Every file wsseg writes goes to a temporary file in the destination folder, is flushed and fsynced,
and is then renamed over the destination (a rename within one filesystem is atomic on POSIX); the folder is
fsynced too, so the rename itself survives a power cut. A failed write (disk full, no permission) removes its
temporary file, leaves the previous version of the destination untouched and raises an ``OSError`` whose
one-line message names the path and the fix (:func:`describe_os_error`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

TMP_SUFFIX = ".tmp"
# The names mkstemp gives in atomic_open: "." + the destination's name + "." + random letters + ".tmp".
_TMP_NAME = re.compile(r"\.(.+)\.[A-Za-z0-9_]+\.tmp")
# mkstemp creates files readable by their owner only; results are meant to be shared, so written files get the
# permissions a plain open() would give them (0666 less the process umask). Read once: os.umask can only be read
# by setting it.
_UMASK = os.umask(0o022)
os.umask(_UMASK)


# errno -> what the user can do about it; earlier files are always intact (nothing is written in place).
_FIXES = {
    errno.ENOSPC: "the disk is full: free space there or write elsewhere",
    errno.EDQUOT: "the disk quota is exhausted: free space there or write elsewhere",
    errno.EACCES: "no permission to write there: make the folder writable or write elsewhere",
    errno.EPERM: "no permission to write there: make the folder writable or write elsewhere",
    errno.EROFS: "the filesystem is read-only: write elsewhere",
    errno.EISDIR: "a folder is in the way: move it or write elsewhere",
    errno.ENOTDIR: "a file is in the way of a folder on that path: move it or write elsewhere",
    errno.EEXIST: "a file is in the way of a folder on that path: move it or write elsewhere",
    errno.ENAMETOOLONG: "the path is too long: write to a shorter path",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f, or the filesystem's limit): raise the "
    "limit or write elsewhere",
    errno.EIO: "the disk reported an I/O error: check it, or write elsewhere",
}


def describe_os_error(path: str | Path, e: OSError, action: str = "write") -> str:
    """One line naming ``path``, the system's reason and the fix, e.g. for a full disk.

    Args:
        path: the file or folder that could not be written (or read).
        e: the error the system raised.
        action: what failed (``write``, ``read``, ``access``), for the message.
    """
    reason = e.strerror or str(e)
    fix = _FIXES.get(e.errno or -1, "check the path and its permissions")
    tail = "; earlier files are intact" if action == "write" else ""
    return f"cannot {action} {path}: {reason} ({fix}{tail})"


def _fsync_dir(folder: Path) -> None:
    """Persist a rename in ``folder`` (best effort: some filesystems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success it replaces ``path`` atomically.

    Args:
        path: the final destination.
        mode: ``"wb"`` or ``"w"``.

    Raises:
        OSError: re-raised with a one-line message naming the destination and the fix, e.g. when the disk is
            full or the folder is not writable (:func:`describe_os_error`); the destination is unchanged.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise OSError(describe_os_error(path, e)) from e
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass  # the original error is the one to report
        if isinstance(e, OSError):
            raise OSError(describe_os_error(path, e)) from e
        raise
    _fsync_dir(path.parent)


def temporary_of(name: str) -> str | None:
    """The destination's name when ``name`` is a temporary file of :func:`atomic_open` (``.<name>.<random>.tmp``)."""
    match = _TMP_NAME.fullmatch(name)
    return match.group(1) if match else None


def remove_stale_temporaries(folder: str | Path, names: Iterable[str] = (), suffixes: Iterable[str] = ()) -> int:
    """Delete the temporary files that writes killed mid-way left for the files a command owns; return how many.

    Only the temporaries :func:`atomic_open` makes (``.<name>.<random>.tmp``) of the files named here are touched:
    ``folder/<name>`` for each of ``names``, or any file in ``folder`` whose name ends with one of ``suffixes``
    (e.g. ``.npz``). Nothing below ``folder`` and nothing else is deleted, so a run folder pointed at the wrong
    place cannot lose another program's ``*.tmp`` files. Call it while holding the folder's lock
    (:func:`wsseg._lock.folder_lock`), when no other process writes there.
    """
    folder = Path(folder)
    exact = set(names)
    ends = tuple(suffixes)
    n = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0  # no folder yet: nothing was left
    for entry in entries:
        target = temporary_of(entry.name)
        if target is None or not entry.is_file(follow_symlinks=False):
            continue
        if target in exact or (ends and target.endswith(ends)):
            Path(entry.path).unlink(missing_ok=True)
            n += 1
    return n


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
