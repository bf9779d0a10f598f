"""CPUs a process may use (affinity, cgroup v1/v2 quotas read from real files) and torch's thread count from them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from wsseg import _threads
from wsseg._threads import available_cpus, cgroup_cpu_limit, configure_threads, loader_workers

HOST = set(range(16))  # a 16-core host, as os.sched_getaffinity would report it


def cgroup_files(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A /proc/self/cgroup file and a cgroup mount holding ``files`` (paths relative to the mount)."""
    proc, mount = tmp_path / "cgroup", tmp_path / "sys-fs-cgroup"
    proc.write_text(membership)
    mount.mkdir()
    for rel, text in files.items():
        (mount / rel).parent.mkdir(parents=True, exist_ok=True)
        (mount / rel).write_text(text + "\n")
    return proc, mount


def test_cgroup_v2_quota_and_the_tightest_ancestor(tmp_path: Path) -> None:
    proc, mount = cgroup_files(
        tmp_path,
        "0::/user.slice/job-7\n",
        {"user.slice/job-7/cpu.max": "250000 100000", "user.slice/cpu.max": "max 100000", "cpu.max": "max 100000"},
    )
    assert cgroup_cpu_limit(proc, mount) == 2.5
    assert available_cpus(HOST, proc, mount) == 2  # rounded down: never more busy threads than the quota
    (mount / "user.slice/cpu.max").write_text("150000 100000\n")  # the parent's quota binds the job
    assert cgroup_cpu_limit(proc, mount) == 1.5 and available_cpus(HOST, proc, mount) == 1
    assert available_cpus({0}, proc, mount) == 1  # the affinity mask binds too


def test_cgroup_v2_without_a_quota_leaves_the_affinity(tmp_path: Path) -> None:
    proc, mount = cgroup_files(tmp_path, "0::/\n", {"cpu.max": "max 100000"})
    assert cgroup_cpu_limit(proc, mount) is None
    assert available_cpus(HOST, proc, mount) == 16 and available_cpus({2, 3, 5}, proc, mount) == 3


def test_cgroup_v1_cfs_quota(tmp_path: Path) -> None:
    membership = "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/abc\n"
    files = {"cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "300000", "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000"}
    proc, mount = cgroup_files(tmp_path, membership, files)
    assert cgroup_cpu_limit(proc, mount) == 3.0 and available_cpus(HOST, proc, mount) == 3
    (mount / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")  # no quota
    assert cgroup_cpu_limit(proc, mount) is None and available_cpus(HOST, proc, mount) == 16
    (mount / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("50000\n")  # half a CPU: still one thread
    assert available_cpus(HOST, proc, mount) == 1


@pytest.mark.parametrize("text", ["", "garbage", "100000", "max", "1 0", "x y"])
def test_unreadable_quota_files_mean_no_quota(tmp_path: Path, text: str) -> None:
    proc, mount = cgroup_files(tmp_path, "0::/a\n", {"a/cpu.max": text})
    assert cgroup_cpu_limit(proc, mount) is None
    assert cgroup_cpu_limit(tmp_path / "missing", mount) is None  # no /proc: no limit known


def test_loader_workers_leave_a_cpu_to_the_main_process() -> None:
    assert loader_workers(3, cuda=True, cpus=16) == 3  # the user's choice
    assert loader_workers(None, cuda=False, cpus=16) == 0
    assert [loader_workers(None, cuda=True, cpus=c) for c in (1, 2, 4, 16)] == [0, 1, 3, 8]


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    # Start from torch's own default, as a fresh process does (an earlier test may have set another count).
    torch.set_num_threads(_threads._TORCH_DEFAULT)
    _threads._set_here.clear()
    yield
    torch.set_num_threads(before)
    _threads._set_here.clear()


@pytest.mark.skipif(_threads._TORCH_DEFAULT < 2, reason="needs torch to start with 2 threads or more")
@pytest.mark.usefixtures("restore_threads")
def test_torch_threads_are_what_the_loader_workers_leave_unless_the_user_chose() -> None:
    default = _threads._TORCH_DEFAULT
    assert configure_threads(workers=1, cpus=2, env={}) == 1 and torch.get_num_threads() == 1
    assert configure_threads(workers=0, cpus=2, env={}) == min(default, 2)  # its own earlier choice is redone
    assert configure_threads(workers=0, cpus=64, env={}) == default  # never more than torch's own default
    assert configure_threads(workers=5, cpus=2, env={}) == 1  # at least one
    # The user's choices are kept: OMP_NUM_THREADS, or torch.set_num_threads called before.
    torch.set_num_threads(default)
    assert configure_threads(workers=1, cpus=2, env={"OMP_NUM_THREADS": "2"}) == default
    assert torch.get_num_threads() == default
    torch.set_num_threads(default - 1 if default > 2 else 2 * default)
    chosen = torch.get_num_threads()
    assert configure_threads(workers=1, cpus=2, env={}) == chosen and torch.get_num_threads() == chosen
