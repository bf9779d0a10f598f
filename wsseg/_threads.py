"""How many CPUs this process may really use, and torch's thread count sized to them.

``os.cpu_count()`` counts the machine's cores, not the ones a process may run on: a container limited to 2 CPUs by
its cgroup quota on a 64-core host, or a job pinned to 4 cores by ``taskset``/Slurm, would start one torch thread
per host core. Threads beyond the CPUs a process gets make torch's parallel regions wait for descheduled threads
at every barrier; on a busy machine that costs far more than the lost parallelism (measured on the 2-core
development machine at a load average of 15: a CAM training step took 0.27 s with 1 thread and 1.6-3.1 s with 2).

:func:`available_cpus` takes the smallest of the affinity mask (``os.sched_getaffinity``) and the cgroup CPU quota
(v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``, of the process's cgroup and its ancestors).
:func:`configure_threads` gives torch's intra-op pool what the data-loading processes leave (each of them runs one
torch thread: PyTorch's worker loop calls ``torch.set_num_threads(1)``), unless the user chose: an
``OMP_NUM_THREADS`` in the environment, or a ``torch.set_num_threads`` call made before, is kept as it is.
The count depends on the machine only, never on its load, so a resumed run computes in the same order as before.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

# torch's own choice, read when wsseg is imported: a different count later, not set here, is the user's.
_TORCH_DEFAULT = torch.get_num_threads()
_set_here: list[int] = []  # the counts configure_threads set in this process


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _quota_v2(folder: Path) -> float | None:
    """CPUs allowed by ``cpu.max`` (``"<quota> <period>"`` or ``"max <period>"``) in ``folder``."""
    text = _read(folder / "cpu.max")
    if not text:
        return None
    parts = text.split()
    try:
        return None if parts[0] == "max" else int(parts[0]) / int(parts[1])
    except (IndexError, ValueError, ZeroDivisionError):
        return None


def _quota_v1(folder: Path) -> float | None:
    """CPUs allowed by ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in ``folder`` (a quota of -1: none)."""
    quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
    try:
        return int(quota) / int(period) if quota and period and int(quota) > 0 else None
    except (ValueError, ZeroDivisionError):
        return None


def cgroup_cpu_limit(
    proc_cgroup: Path = Path("/proc/self/cgroup"), mount: Path = Path("/sys/fs/cgroup")
) -> float | None:
    """The CPUs this process's cgroup may use (quota / period), the tightest along its hierarchy; None if unlimited.

    Args:
        proc_cgroup: the process's cgroup membership (lines ``id:controllers:path``; ``0::path`` for cgroup v2).
        mount: where the cgroup filesystems are mounted (v2: the unified tree; v1: one folder per controller, e.g.
            ``cpu,cpuacct``).
    """
    text = _read(proc_cgroup)
    if text is None:
        return None
    limits: list[float] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, rel = parts
        if controllers == "":  # cgroup v2
            roots, reader = [mount], _quota_v2
        elif "cpu" in controllers.split(","):  # cgroup v1, the cpu controller (often mounted as cpu,cpuacct)
            roots, reader = [mount / controllers, mount / "cpu", mount / "cpu,cpuacct"], _quota_v1
        else:
            continue
        for root in roots:
            if not root.is_dir():
                continue
            folder = root / rel.lstrip("/")
            # The process's own cgroup, then each ancestor up to the mount: a parent's quota binds its children.
            for level in [folder, *folder.parents]:
                found = reader(level)
                if found is not None:
                    limits.append(found)
                if level == root:
                    break
            break
    return min(limits) if limits else None


def available_cpus(
    affinity: set[int] | None = None,
    proc_cgroup: Path = Path("/proc/self/cgroup"),
    mount: Path = Path("/sys/fs/cgroup"),
) -> int:
    """The CPUs this process can really use: its affinity mask, capped by its cgroup quota (rounded down, >= 1).

    Args:
        affinity: the CPUs the process may run on (default: ``os.sched_getaffinity(0)``, or ``os.cpu_count()``
            where the platform has no affinity call).
        proc_cgroup: see :func:`cgroup_cpu_limit`.
        mount: see :func:`cgroup_cpu_limit`.
    """
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    cpus = max(len(affinity), 1)
    quota = cgroup_cpu_limit(proc_cgroup, mount)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))  # never more busy threads than the quota's CPUs
    return cpus


def loader_workers(requested: int | None, cuda: bool, cpus: int | None = None) -> int:
    """Data-loading processes: ``requested`` when given, else a default from the available CPUs.

    None on CPU (the cores compute); on CUDA one per available CPU but one (the main process feeds the GPU), at most 8.
    """
    if requested is not None:
        return requested
    return min(8, max(0, (cpus or available_cpus()) - 1)) if cuda else 0


def configure_threads(workers: int, cpus: int | None = None, env: Mapping[str, str] | None = None) -> int:
    """Size torch's intra-op (and inter-op) threads to the CPUs the loader ``workers`` leave; return the count.

    The main process gets ``available_cpus() - workers`` threads (at least 1), never more than torch's own default.
    Nothing changes when the user chose: ``OMP_NUM_THREADS`` is set, or ``torch.set_num_threads`` was called.
    """
    env = os.environ if env is None else env
    current = torch.get_num_threads()
    if env.get("OMP_NUM_THREADS") or current not in (_TORCH_DEFAULT, *_set_here[-1:]):
        return current
    n = max(1, min(_TORCH_DEFAULT, (cpus or available_cpus()) - workers))
    if n != current:
        torch.set_num_threads(n)
    _set_here.append(n)
    try:
        if torch.get_num_interop_threads() > n:
            torch.set_num_interop_threads(n)
    except RuntimeError:  # only possible before the first inter-op work; the intra-op count is what matters
        pass
    return n
