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

Runs are named ``<method>-<dataset>-<profile>-s<seed>``: a finished run (``record.json``) is skipped, an
interrupted one (``last.pt``) is resumed, so the command can be killed and started again at any time. Post-hoc
methods (Grad-CAM and relatives: methods that declare ``reads``) reuse the run of the same seed of the classifier
they train themselves, the first of their ``reads`` (CAM), instead of training; trained methods run first.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsseg._io import atomic_write_bytes
from wsseg.config import MAX_SEED, make_run_config, seed_ok
from wsseg.evaluation.curves import CURVES_JSON
from wsseg.evaluation.scoring import PER_IMAGE_CSV
from wsseg.registry import get_method_spec, list_methods
from wsseg.report.gallery import GALLERY_NPZ
from wsseg.report.leaderboard import LeaderboardResult, write_leaderboards

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

KEYS = {"name", "profile", "datasets", "methods", "seeds", "out", "leaderboard", "set", "device", "data_root"}
# The name names the default run and leaderboard folders: one plain path component.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


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


def load_benchmark(path: str | Path) -> Benchmark:
    """Parse and check a benchmark file.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: not TOML, no ``[benchmark]`` table, an unknown key, a value of the wrong type, or an
            unknown method; the message names the file and the fix.
    """
    path = Path(path)
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
    unknown = sorted(set(table) - KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown keys {unknown} in [benchmark]; valid keys: {', '.join(sorted(KEYS))}")

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
    name = get("name", str, path.stem)
    if not NAME.fullmatch(name):
        raise ValueError(f"{path}: [benchmark] name {name!r} names folders: use letters, digits, '.', '_' and '-' only")
    device = get("device", str, "auto")
    overrides = [str(s) for s in get("set", list, [])]
    # Check every run's config now: a bad override must stop the benchmark before its first run, not hours in.
    for method in methods:
        for dataset in datasets:
            try:
                make_run_config(method, profile, seeds[0], run_overrides(overrides, dataset, device, data_root))
            except ValueError as e:
                raise ValueError(f"{path}: [benchmark] set/device for {method} on {dataset}: {e}") from None
    base = path.parent
    return Benchmark(
        name=name,
        profile=profile,
        datasets=[str(d) for d in datasets],
        methods=methods,
        seeds=[int(s) for s in seeds],
        out=base / get("out", str, f"runs/{name}"),
        leaderboard=base / get("leaderboard", str, f"leaderboards/{name}"),
        overrides=overrides,
        device=device,
        data_root=data_root,
    )


def _check_datasets(path: Path, datasets: list[Any], data_root: str | None) -> None:
    from wsseg.data.sources import list_sources

    known = ["phantom", *list_sources()]
    if not datasets:
        raise ValueError(f'{path}: [benchmark] datasets is empty; write datasets = ["phantom"] or a data source')
    if len(set(map(str, datasets))) < len(datasets):
        raise ValueError(f"{path}: [benchmark] datasets lists a dataset twice: {datasets}")
    for d in datasets:
        if d not in known:
            raise ValueError(f"{path}: [benchmark] datasets: unknown dataset {d!r}; available: {', '.join(known)}")
        if d != "phantom" and data_root is None:
            raise ValueError(f"{path}: [benchmark] dataset {d!r} needs data_root = PATH (the downloaded dataset)")


def run_overrides(overrides: list[str], dataset: str, device: str, data_root: str | None) -> list[str]:
    """The ``--set`` items of one run of a benchmark: the file's own, then its dataset, device and data root."""
    out = [*overrides, f"data.dataset={dataset}", f"train.device={device}"]
    return out if data_root is None else [*out, f"data.root={data_root}"]


def is_posthoc(method: str) -> bool:
    """Methods that explain a trained classifier (Grad-CAM and relatives) and reuse its run instead of training."""
    return bool(get_method_spec(method).cls.reads)


def source_method(method: str) -> str:
    """The trained method whose run of the same seed a post-hoc ``method`` reuses: the first it reads (CAM)."""
    return get_method_spec(method).cls.reads[0]


def run_benchmark(
    bench: Benchmark, progress: bool = True, log: Callable[[str], None] = print
) -> tuple[list[Path], LeaderboardResult]:
    """Run what is missing, in order (trained methods before the post-hoc methods), then write the leaderboard.

    Returns:
        The run folders of the benchmark and what the leaderboard wrote.
    """
    from wsseg._lock import folder_lock
    from wsseg.run import run

    folders = []
    # One benchmark process per run folder parent: a second one on the same file fails at once (each run folder is
    # locked by its run too).
    with folder_lock(bench.out, "wsseg benchmark", "wait for it to finish, or stop it and pass --resume"):
        for dataset, seed, method in run_order(bench):
            run_id = f"{method}-{dataset}-{bench.profile}-s{seed}"
            folder = bench.out / run_id
            folders.append(folder)
            if (folder / "record.json").is_file():
                log(f"{run_id}: done, skipped")
                continue
            overrides = run_overrides(bench.overrides, dataset, bench.device, bench.data_root)
            cfg = make_run_config(method, bench.profile, seed, overrides)  # type: ignore[arg-type]
            resume = (folder / "last.pt").is_file()
            from_run = None
            if is_posthoc(method) and not resume:
                source = bench.out / f"{source_method(method)}-{dataset}-{bench.profile}-s{seed}"
                from_run = source if (source / "record.json").is_file() else None
            log(f"{run_id}: {'resuming' if resume else 'reusing ' + str(from_run) if from_run else 'running'}")
            # restart: a run without a checkpoint (reference methods, reused weights) that was stopped before its
            # record is simply made again.
            run(cfg, bench.out, run_id, resume=resume, from_run=from_run, progress=progress, log=log, restart=True)
    return folders, write_leaderboards(publish_runs(folders, bench.leaderboard / "runs"), bench.leaderboard)


def run_order(bench: Benchmark) -> list[tuple[str, int, str]]:
    """(dataset, seed, method) in run order: trained methods (CAM first) before the post-hoc methods reusing them."""
    order = sorted(bench.methods, key=lambda m: (is_posthoc(m), m != "cam"))
    return [(dataset, seed, method) for dataset in bench.datasets for seed in bench.seeds for method in order]


def run_folders(bench: Benchmark) -> list[Path]:
    """The run folders of a benchmark, in run order."""
    return [bench.out / f"{m}-{d}-{bench.profile}-s{s}" for d, s, m in run_order(bench)]


# What a published run keeps: the record, the per-image results (the rank groups' paired bootstrap resamples them),
# the curves and the gallery; tens to a few hundred kilobytes, not checkpoints or the histogram statistics.
PUBLISHED_FILES = ("record.json", PER_IMAGE_CSV, CURVES_JSON, GALLERY_NPZ)


def publish_runs(folders: list[Path], dest: Path) -> list[Path]:
    """Copy each run's record, per-image results, curves and gallery to ``dest/<run_id>/`` (atomically).

    The leaderboard folder then holds everything its tables, report and figures are made from, so it can be
    committed or shared on its own and regenerated with ``wsseg leaderboard DEST --out FOLDER``. Returns the copies.
    """
    copies = []
    for folder in folders:
        target = dest / folder.name
        for name in PUBLISHED_FILES:
            if (folder / name).is_file():
                atomic_write_bytes(target / name, (folder / name).read_bytes())
        copies.append(target)
    return copies
