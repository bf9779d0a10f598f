"""`wsseg benchmark FILE.toml`: run what a benchmark file lists and is not done yet, then write the leaderboard.

A benchmark file is data (TOML), never code::

    [benchmark]
    name = "phantom-quick"
    profile = "quick"                 # tiny, quick or paper
    datasets = ["phantom"]
    methods = ["all"]                 # or a list of registered names; "all" = every registered method
    seeds = [0, 1, 2]
    out = "runs/phantom-quick"        # run folders, relative to the benchmark file
    leaderboard = "results"           # tables, HTML report, figures and a copy of the runs' small files (runs/)
    set = ["train.epochs=8"]          # optional --set overrides for every run
    device = "auto"
    data_root = "/data/mini-MIAS"     # a data source's download (or --data-root)
    folds = 5                         # optional: k-fold cross-validation by patient, every fold is run

    [launcher]                        # optional: resources of each job with --launcher submitit
    cluster = "auto"                  # auto (Slurm when found, else local processes), slurm or local
    partition = "gpu"
    gpus_per_node = 1
    cpus_per_task = 8
    mem_gb = 64
    timeout_min = 1440                # per run; submitit's own default (5 minutes on Slurm) would kill every run
    slurm_array_parallelism = 16      # jobs of one array running at once
    account = "..."                   # account, qos and constraint are passed to sbatch as they are
    folder = "runs/submitit"          # submitit's logs and job files (default: <out>/submitit)

Runs are named ``<method>-<dataset>-<profile>-s<seed>`` (``-fold<f>of<k>`` added for cross-validation): a finished
run (``record.json``) is skipped, an interrupted one (``last.pt``) is resumed, so the command can be killed and
started again at any time. Post-hoc methods (Grad-CAM and relatives: methods that declare ``reads``) reuse the run
of the same seed (and fold) of the classifier they explain, the first of their ``reads`` (CAM), instead of training;
trained methods run first. :mod:`wsseg.pipelines.launch` sends each unfinished run to a cluster as one job.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsseg._io import atomic_write_bytes
from wsseg.config import MAX_SEED, RunConfig, make_run_config, seed_ok
from wsseg.core import PER_IMAGE_CSV, PER_IMAGE_STATS
from wsseg.data.folds import FOLDS_FILE
from wsseg.evaluation.curves import CURVES_JSON
from wsseg.registry import get_method_spec, list_methods
from wsseg.report.gallery import GALLERY_NPZ
from wsseg.report.leaderboard import LeaderboardResult, write_leaderboards

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

KEYS = {"name", "profile", "datasets", "methods", "seeds", "out", "leaderboard", "set", "device", "data_root", "folds"}
# The name names the default run and leaderboard folders: one plain path component.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# [launcher] keys and their TOML types (wsseg.pipelines.launch maps them to submitit's parameters).
LAUNCHER_KEYS: dict[str, type | tuple[type, ...]] = {
    "cluster": str,
    "partition": str,
    "gpus_per_node": int,
    "cpus_per_task": int,
    "mem_gb": (int, float),
    "timeout_min": int,
    "slurm_array_parallelism": int,
    "account": str,
    "qos": str,
    "constraint": str,
    "folder": str,
}
CLUSTERS = ("auto", "slurm", "local")


@dataclass
class LauncherConfig:
    """The ``[launcher]`` table: what each job of ``--launcher submitit`` asks for (None: the cluster's default).

    Attributes:
        cluster: ``auto`` (Slurm when submitit finds it, else local processes), ``slurm`` or ``local`` (one
            process per job on this machine, all at once).
        partition, account, qos, constraint: passed to sbatch as they are.
        gpus_per_node, cpus_per_task, mem_gb: resources of one job (one run).
        timeout_min: the time limit of one run, in minutes.
        slurm_array_parallelism: jobs of one array that run at once.
        setup: shell lines run before each Slurm job (``module load ...``, activating an environment). They come
            from ``wsseg benchmark --setup LINE`` only, never from the file: a benchmark file is data, and a file
            written by somebody else must not run commands on your cluster account.
        folder: submitit's job files and logs (absolute, or relative to the benchmark file); None: ``<out>/submitit``.
    """

    cluster: str = "auto"
    partition: str | None = None
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 1440
    slurm_array_parallelism: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    setup: list[str] = field(default_factory=list)
    folder: Path | None = None


@dataclass
class Benchmark:
    """A parsed benchmark file (paths resolved against the file's folder)."""

    name: str
    profile: str
    datasets: list[str]
    methods: list[str]
    seeds: list[int]
    out: Path
    leaderboard: Path
    overrides: list[str] = field(default_factory=list)
    device: str = "auto"
    data_root: str | None = None
    folds: int | None = None
    launcher: LauncherConfig = field(default_factory=LauncherConfig)


@dataclass(frozen=True)
class RunSpec:
    """One run of a benchmark: a method on a dataset with a training seed, on one fold (or the single split)."""

    method: str
    dataset: str
    seed: int
    fold: int | None = None


def run_id(bench: Benchmark, spec: RunSpec) -> str:
    """``<method>-<dataset>-<profile>-s<seed>``, plus ``-fold<f>of<k>`` for a cross-validation fold."""
    base = f"{spec.method}-{spec.dataset}-{bench.profile}-s{spec.seed}"
    return base if spec.fold is None else f"{base}-fold{spec.fold}of{bench.folds}"


@dataclass
class BenchmarkOverrides:
    """Command-line replacements for a benchmark file's values (``wsseg benchmark --data-root ... --profile ...``).

    None leaves the file's value; ``extra_set`` is appended to the file's ``set``.
    """

    data_root: str | None = None
    profile: str | None = None
    methods: list[str] | None = None
    seeds: list[int] | None = None
    extra_set: list[str] = field(default_factory=list)
    out: Path | None = None
    leaderboard: Path | None = None


def _read_tables(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``[benchmark]`` and ``[launcher]`` tables of a file (the second may be empty)."""
    if not path.is_file():
        if path.exists() or path.is_symlink():  # a FIFO would block the read forever
            raise ValueError(f"benchmark file {path} is not a regular file; pass a .toml file")
        raise FileNotFoundError(f"benchmark file {path} does not exist")
    try:
        # utf-8-sig: an editor may have saved a byte-order mark, which TOML itself does not allow.
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid TOML: {e}") from None
    table = data.get("benchmark")
    if not isinstance(table, dict):
        raise ValueError(f"{path} has no [benchmark] table; see `wsseg benchmark --help` for the format")
    unknown_tables = sorted(set(data) - {"benchmark", "launcher"})
    if unknown_tables:
        raise ValueError(f"{path}: unknown tables {unknown_tables}; a benchmark file has [benchmark] and [launcher]")
    launcher = data.get("launcher", {})
    if not isinstance(launcher, dict):
        raise ValueError(f"{path}: [launcher] must be a table of job resources; see `wsseg benchmark --help`")
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown} in [benchmark]; valid keys: {', '.join(sorted(KEYS))}")
    return table, launcher


def load_launcher(path: Path, table: dict[str, Any]) -> LauncherConfig:
    """Check and parse the ``[launcher]`` table.

    Raises:
        ValueError: an unknown key, a value of the wrong type or range; the message names the file.
    """
    if "setup" in table:
        raise ValueError(
            f"{path}: [launcher] setup runs shell lines, and a benchmark file is data that never runs commands; pass "
            "them on the command line instead: wsseg benchmark FILE --launcher submitit --setup 'LINE' (repeatable)"
        )
    unknown = sorted(set(table) - set(LAUNCHER_KEYS))
    if unknown:
        raise ValueError(
            f"{path}: unknown keys {unknown} in [launcher]; valid keys: {', '.join(sorted(LAUNCHER_KEYS))}"
        )
    for key, value in table.items():
        kind = LAUNCHER_KEYS[key]
        ok = isinstance(value, kind) and not isinstance(value, bool)
        if ok and not isinstance(value, str) and value <= 0:
            ok = False
        if not ok:
            what = "a str" if kind is str else "a positive number"
            raise ValueError(f"{path}: [launcher] {key} must be {what}, got {value!r}")
    if table.get("cluster", "auto") not in CLUSTERS:
        raise ValueError(f"{path}: [launcher] cluster must be one of {', '.join(CLUSTERS)}, got {table['cluster']!r}")
    values = {k: v for k, v in table.items() if k != "folder"}
    folder = path.parent / table["folder"] if "folder" in table else None
    return LauncherConfig(**values, folder=folder)


def load_benchmark(path: str | Path, overrides: BenchmarkOverrides | None = None) -> Benchmark:
    """Parse and check a benchmark file, with command-line ``overrides`` applied.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not TOML, no ``[benchmark]`` table, an unknown key, a value of the wrong type, or an
            unknown method; the message names the file and the fix.
    """
    path = Path(path)
    table, launcher_table = _read_tables(path)
    over = overrides or BenchmarkOverrides()
    given = {
        "data_root": over.data_root,
        "profile": over.profile,
        "methods": over.methods,
        "seeds": over.seeds,
    }
    table = {**table, **{k: v for k, v in given.items() if v is not None}}

    def get(key: str, kind: type, default: Any = None) -> Any:
        value = table.get(key, default)
        if value is None:
            raise ValueError(f"{path}: [benchmark] needs {key!r}")
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is list:
            ok = ok and all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value)
        if not ok:
            raise ValueError(f"{path}: [benchmark] {key} must be a {kind.__name__}, got {value!r}")
        return value

    methods = [str(m) for m in get("methods", list)]
    if methods == ["all"]:
        methods = list_methods()
    unknown_methods = [m for m in methods if m not in list_methods()]
    if unknown_methods:
        raise ValueError(
            f'{path}: unknown methods {unknown_methods}; registered: {", ".join(list_methods())} (or ["all"])'
        )
    if not methods:
        raise ValueError(f'{path}: [benchmark] methods is empty; list registered names or write ["all"]')
    if len(set(methods)) < len(methods):
        raise ValueError(f"{path}: [benchmark] methods lists a method twice: {methods}")
    seeds = get("seeds", list)
    if not seeds or not all(seed_ok(s) for s in seeds):
        raise ValueError(
            f"{path}: [benchmark] seeds must be a non-empty list of integers >= 0 and <= {MAX_SEED}, got {seeds!r}"
        )
    if len(set(seeds)) < len(seeds):
        raise ValueError(f"{path}: [benchmark] seeds lists a seed twice: {seeds}")
    profile = get("profile", str, "quick")
    if profile not in ("tiny", "quick", "paper"):
        raise ValueError(f"{path}: [benchmark] profile must be tiny, quick or paper, got {profile!r}")
    datasets = get("datasets", list, ["phantom"])
    data_root = table.get("data_root")
    if data_root is not None and not isinstance(data_root, str):
        raise ValueError(f"{path}: [benchmark] data_root must be a str (a path), got {data_root!r}")
    _check_datasets(path, datasets, data_root)
    folds = table.get("folds")
    if folds is not None and (not isinstance(folds, int) or isinstance(folds, bool) or folds < 2):
        raise ValueError(f"{path}: [benchmark] folds must be an integer >= 2 (k-fold cross-validation), got {folds!r}")
    name = get("name", str, path.stem)
    if not NAME.fullmatch(name):
        raise ValueError(f"{path}: [benchmark] name {name!r} names folders: use letters, digits, '.', '_' and '-' only")
    device = get("device", str, "auto")
    overrides_set = [str(s) for s in get("set", list, [])] + list(over.extra_set)
    # Check every run's config now: a bad override must stop the benchmark before its first run, not hours in.
    probe = None if folds is None else 0
    for method in methods:
        for dataset in datasets:
            try:
                items = run_overrides(overrides_set, dataset, device, data_root, folds, probe)
                make_run_config(method, profile, seeds[0], items)
            except ValueError as e:
                raise ValueError(f"{path}: [benchmark] set/device for {method} on {dataset}: {e}") from None
    base = path.parent
    out = over.out if over.out is not None else base / get("out", str, f"runs/{name}")
    board = over.leaderboard if over.leaderboard is not None else base / get("leaderboard", str, f"leaderboards/{name}")
    launcher = load_launcher(path, launcher_table)
    if launcher.folder is None:
        launcher.folder = out / "submitit"
    return Benchmark(
        name=name,
        profile=profile,
        datasets=[str(d) for d in datasets],
        methods=methods,
        seeds=[int(s) for s in seeds],
        out=out,
        leaderboard=board,
        overrides=overrides_set,
        device=device,
        data_root=data_root,
        folds=folds,
        launcher=launcher,
    )


def _check_datasets(path: Path, datasets: list[Any], data_root: str | None) -> None:
    from wsseg.data.sources import get_source, list_sources

    known = list_sources()
    if not datasets:
        raise ValueError(f'{path}: [benchmark] datasets is empty; write datasets = ["phantom"] or a data source')
    if len(set(map(str, datasets))) < len(datasets):
        raise ValueError(f"{path}: [benchmark] datasets lists a dataset twice: {datasets}")
    for d in datasets:
        if d not in known:
            raise ValueError(f"{path}: [benchmark] datasets: unknown dataset {d!r}; available: {', '.join(known)}")
        if get_source(d).needs_root and data_root is None:
            raise ValueError(
                f"{path}: [benchmark] dataset {d!r} needs data_root = PATH (the downloaded dataset) in the file, or "
                "`wsseg benchmark FILE --data-root PATH`"
            )


def run_overrides(
    overrides: list[str],
    dataset: str,
    device: str,
    data_root: str | None,
    folds: int | None = None,
    fold: int | None = None,
) -> list[str]:
    """The ``--set`` items of one run of a benchmark: the file's own, then its dataset, device, data root and fold."""
    out = [*overrides, f"data.dataset={dataset}", f"train.device={device}"]
    if data_root is not None:
        out.append(f"data.root={data_root}")
    if folds is not None:
        out += [f"data.folds={folds}", f"data.fold={fold}"]
    return out


def is_posthoc(method: str) -> bool:
    """Methods that explain a trained classifier (Grad-CAM and relatives) and reuse its run instead of training."""
    return bool(get_method_spec(method).cls.reads)


def source_method(method: str) -> str:
    """The trained method whose run of the same seed a post-hoc ``method`` reuses: the first it reads (CAM)."""
    return get_method_spec(method).cls.reads[0]


def plan(bench: Benchmark) -> list[RunSpec]:
    """Every run of the benchmark in the order they run: by dataset, seed and fold, CAM before post-hoc methods."""
    order = sorted(bench.methods, key=lambda m: (is_posthoc(m), m != "cam"))
    folds: list[int | None] = list(range(bench.folds)) if bench.folds is not None else [None]
    return [
        RunSpec(method, dataset, seed, fold)
        for dataset in bench.datasets
        for seed in bench.seeds
        for fold in folds
        for method in order
    ]


def run_folder(bench: Benchmark, spec: RunSpec) -> Path:
    """Where a run of the benchmark lives."""
    return bench.out / run_id(bench, spec)


def is_done(bench: Benchmark, spec: RunSpec) -> bool:
    """Whether the run has its record (a finished run)."""
    return (run_folder(bench, spec) / "record.json").is_file()


def cam_spec(spec: RunSpec) -> RunSpec:
    """The trained run whose classifier a post-hoc run reuses: its source method (CAM), same dataset, seed and fold."""
    return RunSpec(source_method(spec.method), spec.dataset, spec.seed, spec.fold)


def run_one(bench: Benchmark, spec: RunSpec, progress: bool = False, log: Callable[[str], None] = print) -> Path:
    """Run one run of the benchmark unless it is finished: resume it from its checkpoint, or start it.

    A post-hoc method reuses the finished CAM run of its seed and fold. This is the whole of a cluster job
    (:mod:`wsseg.pipelines.launch`), so a run made by a job equals one made by ``--launcher local``.

    Raises:
        FileNotFoundError: a post-hoc run whose CAM run (listed in the benchmark) has not finished.
    """
    from wsseg.pipelines.run import run

    folder = run_folder(bench, spec)
    overrides = run_overrides(bench.overrides, spec.dataset, bench.device, bench.data_root, bench.folds, spec.fold)
    cfg = make_run_config(spec.method, bench.profile, spec.seed, overrides)  # type: ignore[arg-type]
    if (folder / "record.json").is_file():
        check_finished_run(
            folder, cfg, is_posthoc(spec.method) or get_method_spec(spec.method).supervision == "reference"
        )
        log(f"{folder.name}: done, skipped")
        return folder
    resume = (folder / "last.pt").is_file()
    from_run = None
    if is_posthoc(spec.method) and not resume:
        cam = run_folder(bench, cam_spec(spec))
        if (cam / "record.json").is_file():
            from_run = cam
        elif cam_spec(spec).method in bench.methods:
            raise FileNotFoundError(
                f"{folder.name} reuses the classifier of {cam.name}, which has not finished; run it first"
            )
    log(f"{folder.name}: {'resuming' if resume else 'reusing ' + str(from_run) if from_run else 'running'}")
    # restart: a run without a checkpoint (reference methods, reused weights) that was stopped before its record is
    # simply made again.
    run(cfg, bench.out, folder.name, resume=resume, from_run=from_run, progress=progress, log=log, restart=True)
    return folder


def check_finished_run(folder: Path, cfg: RunConfig, untrained: bool) -> None:
    """Refuse to reuse a finished run made with other settings than the benchmark's now.

    Run ids name the method, dataset, profile, seed and fold, not the settings: a benchmark re-run into the same
    folder with, say, ``--set method.pretrained=imagenet`` or another ``train.epochs`` would otherwise skip the old
    runs and publish them as the new setting's. Compared: the method's config and (for trained methods; post-hoc runs
    take their classifier's, reference maps learn nothing) the training length and learning rate, and the data's
    version (a run of an older phantom generator or reading of a download scored other images).

    Raises:
        ValueError: naming the run, the settings that differ and the fix.
    """
    from wsseg.data.sources import get_source
    from wsseg.report.records import read_record_json

    record = read_record_json(folder / "record.json")
    saved = record.get("config")
    if not isinstance(saved, dict):
        return  # a record without its config (written by hand or by an old wsseg): nothing to compare
    now = json.loads(json.dumps(cfg.to_dict()))  # tuples as lists, as the record stores them
    differ = []
    was, wants = saved.get("method_config"), now["method_config"]
    if isinstance(was, dict):
        changed = sorted(k for k in set(was) | set(wants) if was.get(k) != wants.get(k))
        differ += [f"method.{k}: {was.get(k)!r} -> {wants.get(k)!r}" for k in changed]
    trained = saved.get("train") if not untrained else None
    if isinstance(trained, dict):
        changed = [k for k in ("epochs", "lr") if trained.get(k) is not None and trained[k] != now["train"][k]]
        differ += [f"train.{k}: {trained[k]!r} -> {now['train'][k]!r}" for k in changed]
    info = record.get("dataset_info")
    was_version = info.get("version") if isinstance(info, dict) else None
    version = get_source(cfg.data.dataset).data_version(cfg.data)
    if was_version is not None and was_version != version:
        differ.append(f"data version: {was_version!r} -> {version!r}")
    if differ:
        raise ValueError(
            f"{folder} was made with other settings than this benchmark's ({'; '.join(differ)}); give the benchmark "
            "another out folder (--out) and leaderboard (--leaderboard), or remove that run to make it again"
        )


def write_benchmark_leaderboard(bench: Benchmark) -> LeaderboardResult:
    """Publish every run's files under the leaderboard folder and write its tables (all runs must be finished)."""
    folders = [run_folder(bench, spec) for spec in plan(bench)]
    return write_leaderboards(publish_runs(folders, bench.leaderboard / "runs"), bench.leaderboard)


def run_benchmark(
    bench: Benchmark, progress: bool = True, log: Callable[[str], None] = print
) -> tuple[list[Path], LeaderboardResult]:
    """Run what is missing in this process (trained methods before post-hoc ones), then write the leaderboard.

    Returns:
        The run folders of the benchmark and what the leaderboard wrote.
    """
    from wsseg._lock import folder_lock

    # One benchmark process per run folder parent: a second one on the same file fails at once (each run folder is
    # locked by its run too).
    with folder_lock(bench.out, "wsseg benchmark", "wait for it to finish, or stop it and pass --resume"):
        folders = [run_one(bench, spec, progress, log) for spec in plan(bench)]
    return folders, write_benchmark_leaderboard(bench)


def run_folders(bench: Benchmark) -> list[Path]:
    """The run folders of a benchmark, in run order."""
    return [run_folder(bench, spec) for spec in plan(bench)]


def count_finished(bench: Benchmark) -> tuple[int, int]:
    """(runs with a record, runs in the benchmark): what an interrupted benchmark has saved."""
    folders = run_folders(bench)
    return sum((f / "record.json").is_file() for f in folders), len(folders)


# What a published run keeps: the record, the per-image results (the rank groups' paired bootstrap resamples them),
# the curves and the gallery; tens to a few hundred kilobytes, not checkpoints or the histogram statistics.
PUBLISHED_FILES = ("record.json", PER_IMAGE_CSV, CURVES_JSON, GALLERY_NPZ)


def publish_runs(folders: list[Path], dest: Path) -> list[Path]:
    """Copy each run's record, per-image results, curves and gallery to ``dest/<run_id>/`` (atomically).

    The leaderboard folder then holds everything its tables, report and figures are made from, so it can be
    committed or shared on its own and regenerated with ``wsseg leaderboard DEST --out FOLDER``. Runs of a
    cross-validation fold also keep ``per_image_stats.npz``: the leaderboard's interval resamples the patients of
    all folds pooled from them. Returns the copies.
    """
    copies = []
    for folder in folders:
        target = dest / folder.name
        names = PUBLISHED_FILES + ((PER_IMAGE_STATS,) if (folder / FOLDS_FILE).is_file() else ())
        for name in names:
            if (folder / name).is_file():
                atomic_write_bytes(target / name, (folder / name).read_bytes())
        copies.append(target)
    return copies
