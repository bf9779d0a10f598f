"""One writer per folder: an OS file lock (``flock``) held by a run, a benchmark or a prepare for its whole life.

Two ``wsseg run`` processes given the same run folder would interleave their checkpoints and records (a record
with one seed's history and another's test metrics); two prepares of the same cache would delete each other's
temporary files. The lock is ``fcntl.flock`` on the file ``.wsseg.lock`` in the folder: the second process fails
at once (or, for a cache, waits) with a message naming the folder and the holder (pid, host, start time), which the
holder writes into the lock file. The operating system drops the lock when the holder exits, however it exits:
after a SIGKILL or a power cut the next command, ``--resume`` included, takes the lock at once. The file itself is
left in place (deleting a lock file while another process waits on it would let two processes hold "the" lock).

On systems without ``fcntl`` (Windows) no lock is taken.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl

    _HAVE_FCNTL = True
except ImportError:  # pragma: no cover - Windows
    _HAVE_FCNTL = False

LOCK_NAME = ".wsseg.lock"


class FolderLockedError(OSError):
    """Another process holds the folder's lock; the message names the folder, the holder and the fix."""


def _holder(fd: int) -> str:
    """What the holder wrote into the lock file, as ``pid N on HOST since TIME (COMMAND)``."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"pid {info['pid']} on {info['host']} since {info['started']} ({info['command']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


@contextmanager
def folder_lock(
    folder: str | Path,
    command: str,
    fix: str,
    wait: bool = False,
    log: Callable[[str], None] | None = None,
    lock_file: Path | None = None,
) -> Iterator[Path]:
    """Hold the lock of ``folder`` (created if needed) for the ``with`` block.

    Args:
        folder: the folder to own.
        command: what holds it, for the other process's message (e.g. ``wsseg run``).
        fix: what the other process's user can do, appended to its error message.
        wait: block until the holder is done instead of failing (caches: the second process then finds the work
            done); a line is logged while waiting.
        log: where the waiting line goes.
        lock_file: the lock file, when it must not be inside the folder (a cache whose files are its content);
            default ``folder/.wsseg.lock``.

    Raises:
        FolderLockedError: (``wait`` False) another process holds the lock.
        OSError: the folder or the lock file cannot be created (the message names it).
    """
    folder = Path(folder)
    path = lock_file if lock_file is not None else folder / LOCK_NAME
    if not _HAVE_FCNTL:  # pragma: no cover - Windows
        yield path
        return
    folder.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if not wait:
                raise FolderLockedError(f"{folder} is in use by another {command}: {holder}; {fix}") from None
            if log is not None:
                log(f"waiting for {folder}: in use by another {command}, {holder}")
            fcntl.flock(fd, fcntl.LOCK_EX)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "command": command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode("utf-8"), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock (the file stays: see the module docstring)
