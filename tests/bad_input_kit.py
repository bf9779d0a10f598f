"""Building blocks of the generated bad-input suite (tests/test_bad_inputs.py): file mutations and the case guard.

A *mutation* changes one file (or folder entry) in place: truncates it, empties it, fills it with garbage, swaps
it for a folder, a FIFO or a dangling link, adds a byte-order mark, flips one byte inside a zip member... The
suite applies every mutation of a table to every target of a table (pytest parametrisation over generated lists).

The *guard* runs each case in its own folder (also the working directory, the temporary-file folder and the
default cache) and checks that nothing outside that folder changed: the shared, read-only inputs of the module,
the top level of pytest's temporary folder and of the repository. It also turns a hang (a FIFO read, a huge
allocation loop) into a failure after :data:`CASE_TIMEOUT` seconds instead of a stuck suite.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import struct
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

Mutation = Callable[[Path], None]
REPO = Path(__file__).resolve().parents[1]
CASE_TIMEOUT = 60  # seconds; the slowest case (a tiny run) takes a few


# ---------------------------------------------------------------------------------------------------------------
# Mutations of one file


def empty(path: Path) -> None:
    """A 0-byte file."""
    path.write_bytes(b"")


def truncate_to(fraction: float) -> Mutation:
    """Keep the first ``fraction`` of the bytes."""

    def change(path: Path) -> None:
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return change


def garbage(path: Path) -> None:
    """Random bytes of the same length (at least 64)."""
    n = max(64, path.stat().st_size if path.exists() else 64)
    path.write_bytes(np.random.default_rng(7).integers(0, 256, n, dtype=np.uint8).tobytes())


def text(path: Path) -> None:
    """A short line of text."""
    path.write_text("this is not what you expected\n")


def to_folder(path: Path) -> None:
    """The file replaced by an empty folder of the same name."""
    path.unlink()
    path.mkdir()


def delete(path: Path) -> None:
    """The file removed."""
    path.unlink()


def dangling_link(path: Path) -> None:
    """The file replaced by a symbolic link to a path that does not exist."""
    path.unlink()
    path.symlink_to(path.parent / "no-such-target.bin")


def fifo(path: Path) -> None:
    """The file replaced by a named pipe (opening it for reading would block forever)."""
    path.unlink()
    os.mkfifo(path)


def add_bom(path: Path) -> None:
    """A UTF-8 byte-order mark in front (Excel writes one)."""
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())


def crlf(path: Path) -> None:
    """Windows line endings."""
    path.write_bytes(path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))


def latin1_byte(path: Path) -> None:
    """One byte that is not UTF-8 in the second line."""
    data = path.read_bytes()
    at = data.index(b"\n") + 2
    path.write_bytes(data[:at] + b"\xe9" + data[at + 1 :])


def header_only(path: Path) -> None:
    """The first line only."""
    path.write_bytes(path.read_bytes().split(b"\n", 1)[0] + b"\n")


def cut_mid_line(path: Path) -> None:
    """Cut in the middle of the second data line: the last row ends early, as a download cut short does."""
    data = path.read_bytes()
    first = data.index(b"\n")
    second = data.index(b"\n", first + 1)
    path.write_bytes(data[: second + 1 + max(3, (data.find(b"\n", second + 1) - second) // 3)])


def rewrite_text(transform: Callable[[str], str], encoding: str = "utf-8") -> Mutation:
    """Rewrite a text file through ``transform``."""

    def change(path: Path) -> None:
        path.write_text(transform(path.read_text(encoding=encoding)), encoding=encoding)

    return change


# ---------------------------------------------------------------------------------------------------------------
# Mutations of .npz / .npy files


def zip_member_span(path: Path, member: str) -> tuple[int, int]:
    """(offset, length) of a stored member's bytes (its ``.npy`` header and data) in a zip file."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(member)
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
    return info.header_offset + 30 + name_len + extra_len, info.compress_size


def flip_member_byte(member: str, where: float = 0.75) -> Mutation:
    """Flip the bits of one byte inside a member's data (its CRC no longer matches; the zip stays well formed)."""

    def change(path: Path) -> None:
        start, length = zip_member_span(path, member)
        data = bytearray(path.read_bytes())
        data[start + int(length * where)] ^= 0xFF
        path.write_bytes(bytes(data))

    return change


def rewrite_npz(**changes: object) -> Mutation:
    """Re-save an ``.npz`` with members replaced (a value) or removed (None), as a valid archive."""

    def change(path: Path) -> None:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        for key, value in changes.items():
            if value is None:
                arrays.pop(key, None)
            else:
                arrays[key] = value(arrays) if callable(value) else value  # type: ignore[assignment]
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]
        path.write_bytes(buf.getvalue())

    return change


def npy_bytes(arr: np.ndarray, allow_pickle: bool = False) -> bytes:
    """The bytes ``np.save`` writes for ``arr``."""
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=allow_pickle)
    return buf.getvalue()


def save_npy(arr: np.ndarray | Callable[[np.ndarray], np.ndarray], allow_pickle: bool = False) -> Mutation:
    """Overwrite an ``.npy`` with ``arr`` (or ``arr(old)``)."""

    def change(path: Path) -> None:
        value = arr(np.load(path)) if callable(arr) else arr
        path.write_bytes(npy_bytes(value, allow_pickle))

    return change


# ---------------------------------------------------------------------------------------------------------------
# The guard


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry below ``folder`` (not following links): relative path -> (size, mtime in ns)."""
    out: dict[str, tuple[int, int]] = {}
    if not folder.exists():
        return out
    for base, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(base, name)
            st = p.lstat()
            out[str(p.relative_to(folder))] = (st.st_size if name in files else 0, st.st_mtime_ns)
    return out


def listing(folder: Path) -> set[str]:
    """Names directly in ``folder``."""
    return set(os.listdir(folder)) if folder.is_dir() else set()


# Folders of shared, read-only inputs (module fixtures register theirs): a case must never change them.
SHARED: list[Path] = []


class CaseTimeout(BaseException):  # noqa: N818 - a BaseException, so that no `except Exception` or OSError handler hides it
    """A case ran past :data:`CASE_TIMEOUT` (a hang: the command never returned)."""


@contextmanager
def guarded(case_dir: Path, basetemp: Path) -> Iterator[None]:
    """Run a case in ``case_dir`` and fail if anything outside it changed (see the module docstring)."""
    cwd = os.getcwd()
    old_tmp = tempfile.tempdir
    old_cache = os.environ.get("WSSEG_CACHE_DIR")
    own_tmp = case_dir / "tmp"
    own_tmp.mkdir(exist_ok=True)
    watched = {p: snapshot(p) for p in SHARED}
    tops = {p: listing(p) for p in (basetemp, REPO, REPO / "tests", Path(tempfile.gettempdir()) / "wsseg")}

    def on_alarm(signum: int, frame: object) -> None:
        raise CaseTimeout(f"the case ran past {CASE_TIMEOUT} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(CASE_TIMEOUT)
    os.chdir(case_dir)
    tempfile.tempdir = str(own_tmp)
    os.environ["WSSEG_CACHE_DIR"] = str(case_dir / "default-cache")
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        os.chdir(cwd)
        tempfile.tempdir = old_tmp
        if old_cache is None:
            os.environ.pop("WSSEG_CACHE_DIR", None)
        else:
            os.environ["WSSEG_CACHE_DIR"] = old_cache
    for p, before in watched.items():
        after = snapshot(p)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        assert not changed, f"the case changed shared inputs in {p}: {changed[:10]}"
    for p, before in tops.items():
        new = sorted(listing(p) - before - {case_dir.name})
        assert not new, f"the case wrote outside its folder, in {p}: {new}"


def copy_tree(src: Path, dst: Path) -> Path:
    """Copy a folder (links kept as links)."""
    shutil.copytree(src, dst, symlinks=True)
    return dst
