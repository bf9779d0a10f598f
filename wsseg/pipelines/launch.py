"""``wsseg benchmark --launcher submitit``: each unfinished run of a benchmark as one cluster job.

A 5-fold x methods x seeds benchmark is hundreds of GPU runs; research clusters schedule them with Slurm, and
submitit (Meta's Slurm client, `pip install "wsseg[slurm]"`) is the usual way to send Python functions there. Each
unfinished (method, seed, fold) becomes one job that calls :func:`wsseg.pipelines.benchmark.run_one`, the very function
the local launcher calls, so a job's record equals a local run's. The jobs ask for the resources of the benchmark file's
``[launcher]`` table.

Order: post-hoc methods reuse their CAM run's classifier. On Slurm the post-hoc jobs are submitted at once with a
dependency on the CAM jobs (``afterany``: a post-hoc job whose own CAM run failed stops at once with a clear
error, the others run). submitit's local executor has no dependencies, so the launcher waits for the
CAM jobs first (two waves); with ``--no-wait`` it submits the first wave and says to run the command again.

Jobs in flight are remembered in ``<folder>/wsseg-jobs.json``: running the command again never submits a second
job for a run whose job is still pending or running; it waits for it (``--wait``) or says so (``--no-wait``).
A job that ends without its run's record is reported with its log files.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsseg._io import atomic_write_json
from wsseg.pipelines.benchmark import (
    Benchmark,
    LauncherConfig,
    RunSpec,
    cam_spec,
    is_done,
    is_posthoc,
    plan,
    run_id,
    run_one,
    write_benchmark_leaderboard,
)
from wsseg.report.leaderboard import LeaderboardResult
from wsseg.report.records import utc_now

JOBS_FILE = "wsseg-jobs.json"
# Seconds between status checks while waiting: Slurm's accounting is asked sparingly, local processes often.
POLL_S = {"slurm": 30.0, "local": 1.0}


class JobsFailed(RuntimeError):
    """Some jobs ended without their run's record; ``lines`` names each run, its error and its log files."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__(f"{len(lines)} job(s) failed:\n" + "\n".join(lines))


def import_submitit() -> Any:
    """The submitit module.

    Raises:
        ImportError: submitit is not installed; the message says how to install it.
    """
    try:
        import submitit
    except ImportError:
        raise ImportError(
            "--launcher submitit needs the submitit package: pip install 'wsseg[slurm]' (or pip install submitit)"
        ) from None
    return submitit


def make_executor(cfg: LauncherConfig, name: str) -> Any:
    """A submitit ``AutoExecutor`` asking for the ``[launcher]`` table's resources (unset keys are left out)."""
    submitit = import_submitit()
    assert cfg.folder is not None  # load_benchmark sets <out>/submitit
    try:
        executor = submitit.AutoExecutor(folder=cfg.folder, cluster=None if cfg.cluster == "auto" else cfg.cluster)
    except RuntimeError as e:  # e.g. cluster = "slurm" where there is no srun
        raise ValueError(
            f'[launcher] cluster = "{cfg.cluster}": {e}; submit from a machine of the cluster, or set cluster = "local"'
        ) from None
    params = {
        "name": name,
        "timeout_min": cfg.timeout_min,
        "gpus_per_node": cfg.gpus_per_node,
        "cpus_per_task": cfg.cpus_per_task,
        "mem_gb": cfg.mem_gb,
        "slurm_partition": cfg.partition,
        "slurm_array_parallelism": cfg.slurm_array_parallelism,
        "slurm_account": cfg.account,
        "slurm_qos": cfg.qos,
        "slurm_constraint": cfg.constraint,
        "slurm_setup": cfg.setup or None,
    }
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor


@dataclass
class Tracked:
    """A job of an earlier invocation, read back from the jobs file."""

    job_id: str
    cluster: str
    submitted: str


def read_jobs(folder: Path) -> dict[str, Tracked]:
    """run_id -> the last job submitted for it (an unreadable file counts as none: jobs are then resubmitted)."""
    try:
        data = json.loads((folder / JOBS_FILE).read_text(encoding="utf-8"))
        return {k: Tracked(**v) for k, v in data.items()}
    except (OSError, ValueError, TypeError):
        return {}


def write_jobs(folder: Path, jobs: dict[str, Tracked]) -> None:
    """Write the jobs file atomically."""
    atomic_write_json(folder / JOBS_FILE, {k: dataclasses.asdict(v) for k, v in sorted(jobs.items())})


def is_active(folder: Path, job: Tracked) -> bool:
    """Whether a job of an earlier invocation is still pending or running."""
    if job.cluster == "slurm":
        return not bool(import_submitit().SlurmJob(folder, job.job_id).done(force_check=True))
    if job.cluster == "local":  # the job id is the process id of submitit's controller
        return local_alive(folder, job.job_id)
    return False


def local_alive(folder: Path, job_id: str) -> bool:
    """Whether a local job's controller process still runs (its result file not written yet)."""
    from submitit.core.utils import JobPaths

    if JobPaths(folder, job_id=job_id, task_id=0).result_pickle.exists():
        return False
    try:
        pid = int(job_id)
        # A child of this process that has ended stays a zombie until reaped, and a zombie still "exists".
        ended, _ = os.waitpid(pid, os.WNOHANG)
        return ended != pid
    except ChildProcessError:  # not our child: it exists or not
        pass
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def log_paths(folder: Path, job_id: str) -> str:
    """The stderr and stdout files of a job (task 0), as submitit names them."""
    from submitit.core.utils import JobPaths

    paths = JobPaths(folder, job_id=job_id, task_id=0)
    return f"{paths.stderr} and {paths.stdout}"


@dataclass
class Submission:
    """What one invocation of the launcher submitted and found in flight."""

    jobs: dict[str, Any] = field(default_factory=dict)  # run_id -> submitit Job (this invocation)
    earlier: dict[str, Tracked] = field(default_factory=dict)  # run_id -> still active job of an earlier one
    held: list[RunSpec] = field(default_factory=list)  # post-hoc runs waiting for a CAM job (local executors)


def submit(
    executor: Any, bench: Benchmark, specs: list[RunSpec], dependency: list[str] | None = None
) -> dict[str, Any]:
    """Submit ``specs`` as one job array (each job runs :func:`run_one`); run_id -> job."""
    if not specs:
        return {}
    if dependency:
        # Slurm array ids look like 1234_5: depending on the array (1234) waits for all of its tasks.
        ids = sorted({d.split("_")[0] for d in dependency})
        executor.update_parameters(slurm_dependency="afterany:" + ":".join(ids))
    with executor.batch():
        jobs = [executor.submit(run_one, bench, spec) for spec in specs]
    return {run_id(bench, spec): job for spec, job in zip(specs, jobs, strict=True)}


def absolute(bench: Benchmark) -> Benchmark:
    """The benchmark with absolute paths: jobs may start in another working directory."""
    root = str(Path(bench.data_root).expanduser().resolve()) if bench.data_root is not None else None
    return dataclasses.replace(bench, out=bench.out.resolve(), leaderboard=bench.leaderboard.resolve(), data_root=root)


def launch(bench: Benchmark, wait: bool, log: Callable[[str], None]) -> Submission:
    """Submit every unfinished run of ``bench`` that has no job in flight; wait for all of them when ``wait``.

    Raises:
        ImportError: submitit is missing.
        JobsFailed: (``wait``) some runs have no record after their jobs ended.
    """
    bench = absolute(bench)
    todo = [s for s in plan(bench) if not is_done(bench, s)]
    if not todo:
        return Submission()
    executor = make_executor(bench.launcher, f"wsseg-{bench.name}")
    cluster = executor.cluster
    folder = Path(executor.folder)
    note = " (all jobs start at once on this machine)" if cluster == "local" else ""
    log(f"submitit executor: {cluster}{note}, job files and logs in {folder}")
    tracked = read_jobs(folder)
    sub = Submission(earlier={r: j for s in todo if (j := tracked.get(r := run_id(bench, s))) and is_active(folder, j)})
    for name, job in sub.earlier.items():
        log(f"{name}: job {job.job_id} (submitted {job.submitted}) is still in flight; not submitted again")
    fresh = [s for s in todo if run_id(bench, s) not in sub.earlier]
    first = [s for s in fresh if not is_posthoc(s.method)]
    second = [s for s in fresh if is_posthoc(s.method)]

    def submit_and_track(specs: list[RunSpec], dependency: list[str] | None = None) -> None:
        jobs = submit(executor, bench, specs, dependency)
        tracked.update({r: Tracked(str(j.job_id), cluster, utc_now()) for r, j in jobs.items()})
        write_jobs(folder, tracked)  # at once: a launcher killed while waiting must not resubmit these
        for name, job in jobs.items():
            log(f"{name}: submitted as job {job.job_id}")
        sub.jobs.update(jobs)

    submit_and_track(first)
    # The CAM jobs each post-hoc run waits for: submitted now or in flight from an earlier invocation.
    blocking = {run_id(bench, cam_spec(s)) for s in second} & (set(sub.jobs) | set(sub.earlier))
    blockers = [sub.jobs[r].job_id if r in sub.jobs else sub.earlier[r].job_id for r in sorted(blocking)]
    if second and blockers and cluster != "slurm":
        if wait:
            wait_for(sub, folder, cluster, log)
            submit_and_track(second)
        else:
            sub.held = second
    else:
        submit_and_track(second, blockers if cluster == "slurm" else None)
    if wait:
        wait_for(sub, folder, cluster, log)
        failures = [fail_line(bench, s, sub, folder) for s in todo if not is_done(bench, s)]
        if failures:
            raise JobsFailed(failures)
    return sub


def launch_benchmark(
    bench: Benchmark, wait: bool, log: Callable[[str], None]
) -> tuple[Submission, LeaderboardResult | None]:
    """:func:`launch`, then the leaderboard once every run has its record (else None: jobs are still to finish).

    Raises:
        ImportError: submitit is missing.
        JobsFailed: (``wait``) some runs have no record after their jobs ended.
    """
    sub = launch(bench, wait, log)
    if all(is_done(bench, spec) for spec in plan(bench)):
        return sub, write_benchmark_leaderboard(bench)
    return sub, None


def wait_for(sub: Submission, folder: Path, cluster: str, log: Callable[[str], None]) -> None:
    """Block until every job of ``sub`` (this invocation's and the earlier ones in flight) has ended."""
    pending = len(sub.jobs) + len(sub.earlier)
    if pending:
        log(f"waiting for {pending} job(s)")
    while True:
        running = [r for r, j in sub.jobs.items() if not j.done()]
        running += [r for r, j in sub.earlier.items() if is_active(folder, j)]
        if not running:
            return
        if len(running) != pending:
            pending = len(running)
            log(f"{pending} job(s) still running")
        time.sleep(POLL_S.get(cluster, 5.0))


def fail_line(bench: Benchmark, spec: RunSpec, sub: Submission, folder: Path) -> str:
    """One line about a run that has no record after its job ended: the job's error and its log files."""
    name = run_id(bench, spec)
    job = sub.jobs.get(name)
    if job is None:
        earlier = sub.earlier.get(name)
        where = f"job {earlier.job_id}; logs: {log_paths(folder, earlier.job_id)}" if earlier else "no job"
        return f"{name}: no record ({where})"
    error = job.exception()
    # submitit's message: a header, the job's traceback and the log files, between dashed lines; keep the
    # traceback's last line (the exception).
    text = str(error).split("You can check full logs")[0] if error is not None else ""
    lines = [line.strip() for line in text.splitlines() if line.strip() and set(line.strip()) != {"-"}]
    reason = lines[-1] if lines else "no record"
    return f"{name}: job {job.job_id} failed: {reason}; logs: {log_paths(folder, str(job.job_id))}"
