"""`wsseg run`: prepare the data, train, evaluate and write the run record.

Kept apart from the CLI so that tests and scripts call the same function the command does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import resource
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset
from tqdm.auto import tqdm

from wsseg._io import atomic_write_json, atomic_write_text, remove_stale_temporaries, temporary_of
from wsseg._lock import LOCK_NAME, folder_lock
from wsseg._threads import available_cpus, configure_threads, loader_workers
from wsseg.config import DataConfig, EvalConfig, RunConfig
from wsseg.core import CLASSES, PER_IMAGE_CSV, PER_IMAGE_STATS, PROFILE_GEOMETRY, short_list
from wsseg.data.dataset import MammogramDataset, split_hash
from wsseg.data.folds import FOLDS_FILE, FoldAssignment, dataset_patient_labels, folds_csv_text, load_assignment
from wsseg.data.prepare import prepare_dataset
from wsseg.data.sources import PrepareOptions
from wsseg.evaluation.curves import CURVES_JSON
from wsseg.evaluation.evaluator import SegmentationEvaluator
from wsseg.evaluation.lesions import image_lesion_type
from wsseg.evaluation.summary import chance_levels
from wsseg.method import ClassifierConfig, PostHocCAMMethod, WSSegMethod
from wsseg.pipelines.scored import (
    MAPS_DIR,
    TEST_LABELS,
    evaluation_settings,
    make_evaluator,
    save_map,
    score_stats,
    write_test_labels,
)
from wsseg.registry import get_method_spec
from wsseg.report.gallery import GALLERY_NPZ, make_gallery
from wsseg.report.records import RunRecord, read_record, record_thresholds, write_record
from wsseg.runtime.device import resolve_device
from wsseg.runtime.distributed import init_from_env, rank_and_world, shard, unshard
from wsseg.runtime.inference import predict_batches
from wsseg.runtime.precision import use_bf16
from wsseg.training.checkpoint import load_checkpoint, save_checkpoint
from wsseg.training.loop import BEST, LAST, TrainResult, train

REFERENCE_MAPS: dict[str, Callable[[dict[str, Any]], torch.Tensor]] = {
    # A constant map inside the breast: predicts the whole breast at any threshold. The floor to beat.
    "uniform_breast": lambda batch: batch["breast_mask"][:, None].float().expand(-1, len(CLASSES), -1, -1),
}


@dataclass
class SplitEvaluation:
    """Everything the evaluator gathered on one split."""

    evaluator: SegmentationEvaluator
    references: dict[str, SegmentationEvaluator]
    logits: np.ndarray
    labels: np.ndarray
    image_ids: list[str] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0


def evaluate_split(
    method: WSSegMethod,
    dataset: MammogramDataset,
    batch_size: int,
    device: torch.device,
    bf16: bool,
    eval_cfg: EvalConfig,
    num_workers: int = 0,
    progress: bool = True,
    maps_dir: Path | None = None,
    part: tuple[int, int] = (0, 1),
) -> SplitEvaluation:
    """Run ``method`` over a split and accumulate its maps (and the reference maps) in evaluators.

    Each image's maps are reduced to per-image statistics as soon as they are computed; with ``maps_dir``
    they are also stored there as float16 ``<image_id>_<class>.npy`` files (``--save-maps``). ``part`` =
    ``(r, n)`` evaluates images r, r + n, r + 2n, ... only (one ``torchrun`` rank's share; see
    :func:`gather_split`).
    """
    t0 = time.perf_counter()
    ev = make_evaluator(eval_cfg)
    refs = {name: make_evaluator(eval_cfg) for name in REFERENCE_MAPS}
    logits, labels, ids, patients = [], [], [], []
    rank, world = part
    items = Subset(dataset, shard(range(len(dataset)), rank, world)) if world > 1 else dataset
    bar = tqdm(total=len(items), desc=f"evaluate {dataset.split}", unit="img", disable=not progress)
    for batch, out in predict_batches(method, items, batch_size, device, bf16, num_workers):
        refs_batch = {name: make_map(batch) for name, make_map in REFERENCE_MAPS.items()}  # (B, K, H, W) each
        for i, meta in enumerate(batch["meta"]):
            image_id = meta["image_id"]
            common = {
                "patient_id": meta["patient_id"],
                "spacing_mm": float(meta["pixel_spacing_mm"]),
                "image_labels": batch["labels"][i],
                # Box ground truth (VinDr, box manifests): the mask is the union of the boxes; adds MaxBoxAccV2.
                "boxes": meta.get("annotation") == "box",
                # For the leaderboard's breakdown by lesion type (the dataset's own names, mapped to groups).
                "lesion_types": [image_lesion_type(meta.get("lesions", []), c) for c in CLASSES],
                # Per class, False for a label-only image (labelled, lesion not located): AUROC only, no localisation.
                "located": meta.get("localized"),
            }
            masks, breast = batch["masks"][i], batch["breast_mask"][i]
            ev.add(image_id, out.saliency[i], masks, breast, image_scores=out.logits[i], **common)
            for name, ref in refs_batch.items():
                # A reference map has no classifier: its image-level score is the map's maximum in the breast.
                refs[name].add(image_id, ref[i], masks, breast, **common)
            if maps_dir is not None:
                for k, name in enumerate(CLASSES):
                    save_map(maps_dir, image_id, name, out.saliency[i, k])
            ids.append(image_id)
            patients.append(meta["patient_id"])
        logits.append(out.logits.cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
        bar.update(len(batch["meta"]))
    bar.close()
    k = len(CLASSES)
    return SplitEvaluation(
        ev,
        refs,
        np.concatenate(logits) if logits else np.zeros((0, k), np.float32),  # a rank may get no image
        np.concatenate(labels) if labels else np.zeros((0, k), np.float32),
        ids,
        patients,
        time.perf_counter() - t0,
    )


def gather_split(part: SplitEvaluation, world: int) -> SplitEvaluation | None:
    """Every rank's ``part`` put together on rank 0, in the order one process evaluates the split.

    A collective: every rank calls it. Returns the whole split's evaluation on rank 0 and None on the others.
    """
    parts: list[Any] | None = [None] * world if torch.distributed.get_rank() == 0 else None
    torch.distributed.gather_object(part, parts, dst=0)
    if parts is None:
        return None

    k = len(CLASSES)
    return SplitEvaluation(
        SegmentationEvaluator.interleave([p.evaluator for p in parts]),
        {name: SegmentationEvaluator.interleave([p.references[name] for p in parts]) for name in parts[0].references},
        np.asarray(unshard([p.logits for p in parts]), dtype=np.float32).reshape(-1, k),  # (N, K)
        np.asarray(unshard([p.labels for p in parts]), dtype=np.float32).reshape(-1, k),
        unshard([p.image_ids for p in parts]),
        unshard([p.patient_ids for p in parts]),
        max(p.seconds for p in parts),  # the ranks ran side by side
    )


def find_resumable(out_dir: Path, prefix: str) -> Path | None:
    """The most recent run folder in ``out_dir`` named ``prefix*`` that holds a checkpoint."""
    candidates = sorted(p for p in out_dir.glob(f"{prefix}*") if (p / "last.pt").exists())
    return candidates[-1] if candidates else None


# Settings that must agree for a run's classifier to be reused by another method.
REUSE_KEYS = ("backbone", "backbone_weights", "pretrained", "output_stride", "input_downsample", "input_pool")


def _reads_own_classifier(method: str, source: str) -> bool:
    """Whether ``method`` loads a ``source`` run's weights into its own modules rather than explaining them.

    True for a method reading its own runs, for a post-hoc method reading a run of the classifier it trains itself
    (the first of its ``reads``: CAM), and for one reading a post-hoc run that trained that classifier.
    """
    reads = get_method_spec(method).cls.reads
    if source == method or not reads or source == reads[0]:
        return True
    try:
        return bool(get_method_spec(source).cls.reads)  # a post-hoc run trained its own CAM classifier
    except KeyError:
        return False  # not registered here (a plugin not installed): not a post-hoc method


def source_config(cfg: RunConfig, source: Path) -> RunConfig:
    """``cfg`` for a run that reuses the finished run ``source`` (``--from-run``), after checking that it can.

    A post-hoc method reading a run of another trained method it :attr:`~wsseg.method.WSSegMethod.reads` (GMIC,
    GLAM, HaS, ...) explains that method's classifier: the returned config names it in ``explains``. Otherwise the
    source's weights load into the method itself. Either way the returned config's training settings are the
    source's (they made the weights, and leaderboards compare training budgets), but for where this run computes
    (device, precision, deterministic kernels).

    Raises:
        FileNotFoundError: ``source`` has no ``best.pt`` or ``config.json``.
        ValueError: the source run used other data, another profile or another backbone, is a post-hoc run on
            another method's classifier, or is a method this one cannot read.
    """
    for name in ("best.pt", "config.json"):
        if not (source / name).is_file():
            raise FileNotFoundError(f"--from-run {source} has no {name}; point it at a finished wsseg run folder")
    src = RunConfig.read(source / "config.json")

    def data(c: RunConfig) -> DataConfig:
        # Where the cache lives, how many loader processes ran and the path policy do not change the images.
        return dataclasses.replace(c.data, cache_dir=None, num_workers=None, allow_outside_root=False)

    same_data = data(src) == data(cfg)
    if not same_data or src.profile != cfg.profile:
        raise ValueError(
            f"--from-run {source} was trained on other data or another profile; rerun it or drop --from-run"
        )
    if src.explains is not None:
        raise ValueError(
            f"--from-run {source} is a {src.method} run on a {src.explains['method']} classifier; "
            f"pass the {src.explains['method']} run itself"
        )
    # The training that made the weights is the source's (epochs, batch, schedule: the leaderboards' training budget);
    # where this run computes is its own.
    train = dataclasses.replace(
        src.train, device=cfg.train.device, precision=cfg.train.precision, deterministic=cfg.train.deterministic
    )
    if not _reads_own_classifier(cfg.method, src.method):
        reads = get_method_spec(cfg.method).cls.reads
        if src.method not in reads:
            raise ValueError(
                f"--from-run {source} is a {src.method} run; {cfg.method} explains runs of {', '.join(reads)}"
            )
        explains = {"method": src.method, "method_config": dict(src.method_config)}
        return dataclasses.replace(cfg, train=train, explains=explains)
    for key in REUSE_KEYS:
        if key in cfg.method_config and src.method_config.get(key) != cfg.method_config[key]:
            raise ValueError(
                f"--from-run {source} used {key}={src.method_config.get(key)!r} but {cfg.method} is configured with "
                f"{cfg.method_config[key]!r}; pass --set method.{key}=... to match"
            )
    return dataclasses.replace(cfg, train=train)


def reuse_weights(method: WSSegMethod, cfg: RunConfig, source: Path, run_dir: Path) -> TrainResult:
    """Load the best weights of the finished run ``source`` and save them to ``run_dir/best.pt``.

    They load strictly into ``method``, or into the network it explains when ``cfg.explains`` is set
    (:func:`source_config` checked the source).

    Raises:
        ValueError: the weights do not fit.
    """
    ckpt = load_checkpoint(source / "best.pt")
    target = method.network if isinstance(method, PostHocCAMMethod) and method.network is not None else method
    try:
        target.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise ValueError(f"the weights of {source} do not fit {cfg.method}: {e}") from e
    best = save_checkpoint(run_dir / BEST, {**ckpt, "model": method.state_dict(), "from_run": str(source)})
    epoch = int(ckpt.get("epoch", 0))
    return TrainResult(best_checkpoint=best, last_checkpoint=best, best_epoch=epoch, best_val_auroc=math.nan)


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory on GPU runs, peak resident host memory otherwise."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10  # bytes on macOS, KiB on Linux


def fold_tag(cfg: RunConfig) -> str:
    """``fold<f>of<k>-`` for a run of one fold of a k-fold cross-validation, else empty (part of run ids)."""
    return f"fold{cfg.data.fold}of{cfg.data.folds}-" if cfg.data.folds is not None else ""


def fold_assignment(cfg: RunConfig, root: Path) -> FoldAssignment | None:
    """The k-fold assignment of a run's dataset (None for a single-split run).

    It is made from the download's index (a data source) or the prepared phantom's manifest (``root``), with the
    dataset seed ``data.seed``, unless ``benchmarks/splits/<dataset>-<k>fold.csv`` pins it
    (:func:`wsseg.data.folds.load_assignment`).
    """
    if cfg.data.folds is None:
        return None
    labels = dataset_patient_labels(cfg.data.dataset, cfg.data.root, root)
    return load_assignment(cfg.data.dataset, labels, cfg.data.folds, cfg.data.seed)


def fold_splits(
    cfg: RunConfig,
    root: Path,
    dataset_info: dict[str, Any],
    run_dir: Path | None = None,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, str] | None:
    """patient_id -> split of the run's fold (None for a single-split run); adds ``folds`` to ``dataset_info``.

    With ``run_dir``, the whole assignment is written there as ``folds.csv`` (the ``benchmarks/splits`` format).
    """
    folds = fold_assignment(cfg, root)
    if folds is None or cfg.data.fold is None:
        return None
    dataset_info["folds"] = folds.info(cfg.data.fold)
    if run_dir is not None:
        atomic_write_text(run_dir / FOLDS_FILE, folds_csv_text(folds.table))
    log(f"data: fold {cfg.data.fold} of {folds.k}, {folds.source} assignment {dataset_info['folds']['assignment']}")
    return folds.splits(cfg.data.fold)


def build_method(cfg: RunConfig) -> WSSegMethod:
    """The run's method with freshly initialised weights (seed the RNG first for reproducible ones).

    A post-hoc run that explains another method's classifier (``cfg.explains``) gets that network built inside it.
    """
    spec = get_method_spec(cfg.method)
    method_cfg = spec.cls.Config(**cfg.method_config)
    if cfg.explains is None:
        return spec.cls(method_cfg, num_classes=len(CLASSES), in_chans=1)
    explained = get_method_spec(cfg.explains["method"])
    # A post-hoc method's Config is a ClassifierConfig (PostHocCAMMethod.Config); the isinstance only narrows the type.
    if not issubclass(spec.cls, PostHocCAMMethod) or not isinstance(method_cfg, ClassifierConfig):
        raise ValueError(f"{cfg.method} is not a post-hoc method and cannot explain a {explained.name} classifier")
    network = explained.cls(explained.cls.Config(**cfg.explains["method_config"]), num_classes=len(CLASSES), in_chans=1)
    return spec.cls(method_cfg, num_classes=len(CLASSES), in_chans=1, network=network)


def gallery_for_run(run_dir: str | Path, cache_dir: str | None = None, progress: bool = False) -> Path:
    """(Re)make ``gallery.npz`` of a finished run from its best checkpoint, for runs made before galleries existed.

    Raises:
        FileNotFoundError: the folder lacks ``config.json``, ``record.json`` or ``best.pt``.
    """
    run_dir = Path(run_dir)
    for name in ("config.json", "record.json", BEST):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir} has no {name}; pass a finished `wsseg run` folder")
    cfg = RunConfig.read(run_dir / "config.json")
    if cache_dir is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, cache_dir=cache_dir))
    record = read_record(run_dir / "record.json")
    prepared = prepare_dataset(cfg.data, cfg.profile, PrepareOptions(progress=progress, log=lambda _: None))
    root, info = prepared.root, prepared.info
    patient_splits = fold_splits(cfg, root, info)
    test_set = MammogramDataset(root, "test", with_masks=True, dataset=cfg.data.dataset, patient_splits=patient_splits)
    method = build_method(cfg)
    method.load_state_dict(load_checkpoint(run_dir / BEST)["model"])
    shown = make_gallery(method, test_set, record_thresholds(record), torch.device("cpu"))
    if shown is None:
        raise ValueError(f"{run_dir}: its test split has no image with a lesion of one class only; no gallery to make")
    return shown.save(run_dir / GALLERY_NPZ)


# One folder name: letters, digits, '.', '_' and '-', not starting with '.' (no '..', no hidden folder), bounded.
RUN_ID_PATTERN = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
# The files a run writes in its folder (beside maps/ with --save-maps and the lock file).
RUN_FILES = (
    "config.json",
    LAST,
    BEST,
    "record.json",
    PER_IMAGE_CSV,
    PER_IMAGE_STATS,
    CURVES_JSON,
    GALLERY_NPZ,
    TEST_LABELS,
)
LOCKED_FIX = "wait for it to finish, or stop it (its checkpoint is kept: then --resume), or choose another --run-id"


def run_from_options(
    method: str,
    profile: str,
    seed: int,
    overrides: list[str],
    plugins: list[Path],
    out_dir: Path,
    run_id: str | None = None,
    resume: bool = False,
    from_run: Path | None = None,
    weights: Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """``wsseg run``: import the ``--plugin`` files, build the run config from the options and :func:`run` it.

    ``overrides`` are ``section.field=value`` items (``--set`` first, then the flags that were given). The torchrun
    process group that :func:`run` joins is closed afterwards, however the run ended.

    Returns:
        The record; empty on a torchrun rank other than 0.
    """
    from wsseg.config import make_run_config
    from wsseg.registry import load_plugin_file

    try:
        for path in plugins:
            load_plugin_file(path)
        cfg = make_run_config(method, profile, seed, overrides)  # type: ignore[arg-type]
        return run(cfg, out_dir, run_id, resume, from_run, weights=weights, progress=progress, log=log)
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def holds_run_files(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds more than a new start reuses: its lock and config.json (see check_run_folder)."""
    return any(p.name not in (LOCK_NAME, "config.json") for p in run_dir.iterdir())


def check_run_id(run_id: str, what: str = "--run-id") -> str:
    """Return ``run_id`` when it is one safe folder name; else raise naming the rule.

    Raises:
        ValueError: empty, ``.``/``..``, a path (``a/b``, ``/abs``, ``../victim``), a leading ``.``, another
            character than letters, digits, ``.``, ``_``, ``-``, or longer than 128 characters.
    """
    if not RUN_ID_PATTERN.fullmatch(run_id):
        raise ValueError(
            f"{what} {run_id!r} is not a valid run folder name: use 1 to 128 letters, digits, '.', '_' or '-', not "
            "starting with '.' (one folder inside --out, never a path)"
        )
    return run_id


def check_run_folder(run_dir: Path, resume: bool, restart: bool = False) -> None:
    """Refuse a run folder that already holds a run (or anything else), unless ``resume`` continues it.

    A folder that holds only the lock file and a ``config.json`` (a run stopped before it computed anything) is
    reused. With ``restart``, a folder without ``last.pt`` and without ``record.json`` is reused too.

    Raises:
        FileExistsError: naming the folder, what it holds and what to pass.
    """
    if resume or not run_dir.is_dir():
        return
    # The record first: it is what says a run finished. Temporaries of the run's own writes count as nothing.
    found = sorted(
        (p.name for p in run_dir.iterdir() if p.name != LOCK_NAME and temporary_of(p.name) not in RUN_FILES),
        key=lambda name: (name != "record.json", name),
    )
    if not found or (restart and not {LAST, "record.json"} & set(found)):
        return
    if found == ["config.json"]:
        try:
            RunConfig.read(run_dir / "config.json")
            return  # a run stopped before its first checkpoint: nothing to lose
        except (OSError, ValueError, TypeError, KeyError):
            pass  # not a wsseg config: someone else's file, refused below
    shown = short_list(found)
    if "record.json" in found:
        what = "a finished run"
    else:
        what = "files of another run" if set(found) & set(RUN_FILES) else "files"
    if (run_dir / LAST).is_file():
        fix = "pass --resume to continue it, or choose another --run-id"
    else:
        fix = f"choose another --run-id, or delete {run_dir} to run it again"
    raise FileExistsError(f"{run_dir} already holds {what} ({shown}); {fix}")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a run; ``saved`` says what its folder holds and whether it can be resumed.

    Attributes:
        run_dir: the run folder.
        saved: one sentence about what was saved (the last checkpoint's epoch and step, or nothing).
        resumable: the folder holds a checkpoint that ``--resume`` continues.
    """

    def __init__(self, run_dir: Path, saved: tuple[str, bool]) -> None:
        super().__init__(saved[0])
        self.run_dir = run_dir
        self.saved, self.resumable = saved


def describe_saved(run_dir: Path) -> tuple[str, bool]:
    """What an interrupted run left in ``run_dir``: a sentence, and whether ``--resume`` can continue it."""
    last = run_dir / LAST
    if last.is_file():
        try:
            # mmap: the numbers are read without loading the tensors.
            ckpt = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
            epoch, micro, step = int(ckpt["epoch"]), int(ckpt["micro"]), int(ckpt["step"])
        except Exception:  # a damaged checkpoint is reported by --resume itself
            return f"the last checkpoint is {last}", True
        epochs = int(ckpt.get("config", {}).get("train", {}).get("epochs", 0)) or "?"
        where = f"epoch {epoch + 1} of {epochs}, {micro} batches in" if micro else f"{epoch} of {epochs} epochs done"
        return f"the last checkpoint {last} holds {where} ({step} optimizer steps)", True
    if (run_dir / BEST).is_file():
        return f"{run_dir} holds {BEST} but no checkpoint to resume (this run only evaluates weights)", False
    return "nothing was saved yet (no checkpoint)", False


def run(
    cfg: RunConfig,
    out_dir: str | Path = "runs",
    run_id: str | None = None,
    resume: bool = False,
    from_run: str | Path | None = None,
    weights: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    restart: bool = False,
) -> dict[str, Any]:
    """Train and evaluate one method; write ``out_dir/<run_id>/record.json`` and return the record.

    Args:
        cfg: the resolved run config.
        out_dir: parent folder of run folders.
        run_id: the run folder's name; by default ``<method>-<dataset>-<profile>-s<seed>-<UTC time>``, with
            ``fold<f>of<k>-`` before the time for a run of one cross-validation fold.
        resume: continue the run ``run_id`` or, without one, the latest run of the same method,
            dataset, profile and seed that has a checkpoint; its saved config is used.
        from_run: a finished run whose best classifier weights this method reuses instead of training
            (post-hoc methods share CAM's classifier, or explain the classifier of another method they read:
            ``cfg.explains`` is then set, see :func:`source_config`); its data settings must match.
        weights: a weights file to evaluate instead of training (:meth:`WSSegMethod.load_weights`: a wsseg
            checkpoint, a state dict, or an official GMIC/GLAM file).
        progress: show progress bars.
        log: where one-line status messages go.
        restart: start again in a folder that holds an unfinished run with nothing to resume (no ``last.pt``
            and no ``record.json``: an evaluation-only run that was interrupted); ``wsseg benchmark`` uses it.

    The run folder is locked for the run's life (:func:`wsseg._lock.folder_lock`): a second process given the
    same folder fails at once. A folder that already holds a run is refused unless ``resume`` continues it.

    Raises:
        ValueError: a bad ``run_id`` (one folder name of letters, digits, ``.``, ``_``, ``-``) or exclusive options.
        FileExistsError: the folder holds another run (:func:`check_run_folder`).
        FolderLockedError: another process holds the folder.
        RunInterrupted: Ctrl-C (SIGINT, or SIGTERM where the CLI maps it): what was saved, for the message.

    Started by ``torchrun --nproc-per-node N -m wsseg run ...`` (``WORLD_SIZE`` > 1), the N processes train
    together (:mod:`wsseg.runtime.distributed`): rank 0 names the run folder and prepares the data first, the
    ranks share the evaluation, and only rank 0 logs, writes checkpoints and writes the record; the other ranks
    return an empty dict. With ``--from-run`` or ``--weights`` rank 0 evaluates alone.
    """
    t_total = time.perf_counter()
    distributed = init_from_env()
    rank, world = rank_and_world()
    if rank != 0:
        progress, log = False, lambda _: None
    if sum((from_run is not None, weights is not None, bool(resume))) > 1:
        raise ValueError("--from-run, --weights and --resume exclude each other; pass one of them")
    if run_id is not None:
        check_run_id(run_id)
    if from_run is not None:
        cfg = source_config(cfg, Path(from_run))
    elif cfg.explains is not None and not resume:
        raise ValueError(f"{cfg.method} explains a {cfg.explains['method']} classifier only with --from-run <its run>")
    out_dir = Path(out_dir)
    prefix = f"{cfg.method}-{cfg.data.dataset}-{cfg.profile}-s{cfg.seed}-{fold_tag(cfg)}"
    run_dir: Path | None = out_dir / run_id if run_id else None
    if resume:
        run_dir = run_dir if run_dir is not None else find_resumable(out_dir, prefix)
        if run_dir is None or not (run_dir / "last.pt").exists():
            where = f"in {run_dir}" if run_dir else f"for {prefix}* in {out_dir}"
            raise FileNotFoundError(
                f"--resume found no checkpoint (last.pt) {where}; run without --resume to start a new run"
            )
        saved = RunConfig.read(run_dir / "config.json")
        if saved.to_dict() != cfg.to_dict():
            warnings.warn(f"resuming {run_dir.name} with its saved config; the flags given now differ", stacklevel=2)
        cfg = saved
        log(f"resuming {run_dir}")
    if run_dir is None:
        run_dir = out_dir / check_run_id(prefix + time.strftime("%Y%m%d-%H%M%S", time.gmtime()), "the run folder name")
    if distributed:
        # The ranks' clocks may name different folders: rank 0's name is the run's.
        names = [run_dir]
        torch.distributed.broadcast_object_list(names, src=0)
        run_dir = Path(names[0])
    # Rank 0 owns the folder for the run's life (a second `wsseg run` on it fails at once); the other ranks of a
    # torchrun group share it.
    with folder_lock(run_dir, "wsseg run", LOCKED_FIX) if rank == 0 else contextlib.nullcontext():
        check_run_folder(run_dir, resume, restart)
        if distributed:
            torch.distributed.barrier()  # every rank checked for an earlier run before rank 0 writes anything
        try:
            return _run_in_folder(cfg, run_dir, resume, from_run, weights, progress, log, t_total)
        except KeyboardInterrupt as e:
            if rank != 0:
                raise
            raise RunInterrupted(run_dir, describe_saved(run_dir)) from e


@dataclass
class RunData:
    """A run's prepared dataset: its folder, the record's ``dataset_info`` and the three splits."""

    root: Path
    dataset_info: dict[str, Any]
    train_set: MammogramDataset
    val_set: MammogramDataset
    test_set: MammogramDataset
    seconds: float


def open_run_data(
    cfg: RunConfig, run_dir: Path, device: torch.device, progress: bool, log: Callable[[str], None]
) -> RunData:
    """Prepare (or find in the cache) the run's data and open its splits; in a process group rank 0 prepares first.

    The phantom is generated, a real dataset read from a download and preprocessed once; the cache serves every
    later run with the same settings.
    """
    t0 = time.perf_counter()
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, _ = rank_and_world()
    geometry = PROFILE_GEOMETRY[cfg.profile]
    if distributed and rank != 0:
        torch.distributed.barrier()  # rank 0 prepares (or finds) the cache first; the others then open it
    prepared = prepare_dataset(cfg.data, cfg.profile, PrepareOptions(progress=progress, log=log))
    root, dataset_info = prepared.root, prepared.info
    if distributed and rank == 0:
        torch.distributed.barrier()
    spec = get_method_spec(cfg.method)
    # k-fold cross-validation: the fold's patients replace the cache's split (one cache serves every fold).
    patient_splits = fold_splits(cfg, root, dataset_info, run_dir if rank == 0 else None, log)
    name = cfg.data.dataset
    # On CUDA the loaders ship the cache's uint16 pixels and the GPU standardises them (half the bytes through the
    # workers and pinned memory); on CPU the workers standardise, as the published CPU results were made.
    std = device.type != "cuda"
    hw = (geometry.height, geometry.width)

    def open_split(split: str, with_masks: bool) -> MammogramDataset:
        return MammogramDataset(
            root, split, with_masks, name, standardize=std, patient_splits=patient_splits, image_hw=hw
        )

    # Only fully supervised reference methods may see training masks.
    train_set = open_split("train", spec.supervision == "full")
    val_set, test_set = open_split("val", True), open_split("test", True)
    data = RunData(root, dataset_info, train_set, val_set, test_set, time.perf_counter() - t0)
    sizes = f"{len(train_set)}/{len(val_set)}/{len(test_set)}"
    log(f"data: {sizes} train/val/test images from {root} ({data.seconds:.1f} s)")
    return data


def obtain_weights(
    method: WSSegMethod,
    cfg: RunConfig,
    run_dir: Path,
    data: RunData,
    *,
    resume: bool,
    from_run: str | Path | None,
    weights: str | Path | None,
    workers: int,
    progress: bool,
    log: Callable[[str], None],
) -> TrainResult:
    """Train ``method``, or load the classifier of a finished run (``from_run``) or a weights file (``weights``)."""
    if from_run is not None:
        result = reuse_weights(method, cfg, Path(from_run), run_dir)
        what = f"explaining the {cfg.explains['method']} classifier of" if cfg.explains else "reusing the weights of"
        log(f"{what} {from_run} (epoch {result.best_epoch}); no training")
        return result
    if weights is not None:
        method.load_weights(weights)
        best = save_checkpoint(
            run_dir / BEST, {"model": method.state_dict(), "epoch": 0, "config": cfg.to_dict(), "weights": str(weights)}
        )
        log(f"evaluating the weights in {weights}; no training")
        return TrainResult(best_checkpoint=best, last_checkpoint=best, best_epoch=0, best_val_auroc=math.nan)
    return train(
        method,
        data.train_set,
        data.val_set,
        cfg.train,
        run_dir,
        seed=cfg.seed,
        run_config=cfg.to_dict(),
        resume=resume,
        num_workers=workers,
        eval_batch_size=cfg.eval.batch_size,
        progress=progress,
    )


def evaluation_bf16(cfg: RunConfig, device: torch.device, weights: str | Path | None) -> bool:
    """Whether the evaluation computes its maps under bf16 autocast.

    The training's precision, except that a weights file (``--weights``: the released GMIC and GLAM weights, made and
    published in fp32) is evaluated in fp32 under ``train.precision=auto`` even on CUDA, so that its numbers can be
    set beside the published ones; ``train.precision=bf16`` still asks for bf16. CPU runs are always fp32.
    """
    if weights is not None and cfg.train.precision == "auto":
        return False
    return use_bf16(cfg.train.precision, device)


@dataclass
class RunScores:
    """What the evaluation of a run's best weights measured (rank 0's, the whole split's)."""

    val: SplitEvaluation
    test: SplitEvaluation
    thresholds: dict[str, float]
    metrics: dict[str, dict[str, float]]
    intervals: dict[str, Any]
    per_image: dict[str, str]
    references: dict[str, Any]
    bootstrap_seconds: float
    maps_saved: bool
    gallery_saved: bool


def score_run(
    method: WSSegMethod,
    cfg: RunConfig,
    run_dir: Path,
    data: RunData,
    device: torch.device,
    bf16: bool,
    *,
    shared: bool,
    workers: int,
    progress: bool,
) -> RunScores | None:
    """Evaluate the loaded weights: thresholds calibrated on validation and frozen for test, metrics, intervals, files.

    With ``shared``, the ranks that trained together share the evaluation (each takes every world-th image; rank 0
    gathers the statistics and writes the files); the other ranks return None.
    """
    rank, world = rank_and_world()
    part = (rank, world) if shared else (0, 1)
    args = (cfg.eval.batch_size, device, bf16, cfg.eval, workers, progress)
    maps_dir = run_dir / MAPS_DIR if cfg.eval.save_maps else None
    val = evaluate_split(method, data.val_set, *args, part=part)
    test = evaluate_split(method, data.test_set, *args, maps_dir=maps_dir, part=part)
    if shared:
        val_all, test_all = gather_split(val, world), gather_split(test, world)
        if val_all is None or test_all is None:
            return None  # rank 0 writes the record
        val, test = val_all, test_all
    thresholds = val.evaluator.calibrated_thresholds()
    # Metrics, patient-bootstrap intervals and the per-image files behind them (for `wsseg compare`).
    test_stats = test.evaluator.stats()
    metrics, intervals, per_image, boot_seconds = score_stats(test_stats, thresholds, cfg.eval, run_dir)
    if maps_dir is not None:
        located = np.stack([test_stats.classes[c].located for c in CLASSES], axis=1)  # (N, K)
        write_test_labels(run_dir / TEST_LABELS, test.image_ids, test.patient_ids, test.labels, test.logits, located)
    references = {
        ref: ev.summary(val.references[ref].calibrated_thresholds(), cfg.eval.fixed_threshold)
        for ref, ev in test.references.items()
    }
    # Each metric's chance level, exactly from the test masks and breasts: the leaderboard's floor row.
    references["chance"] = chance_levels(test_stats, cfg.eval.fixed_threshold)
    # The same few test images for every method, for the report's side-by-side gallery.
    shown = make_gallery(method, data.test_set, thresholds, device, bf16)
    if shown is not None:
        shown.save(run_dir / GALLERY_NPZ)
    return RunScores(
        val,
        test,
        thresholds,
        metrics,
        intervals,
        per_image,
        references,
        boot_seconds,
        maps_dir is not None,
        shown is not None,
    )


def build_run_record(
    cfg: RunConfig,
    run_dir: Path,
    data: RunData,
    method: WSSegMethod,
    initialisation: dict[str, str],
    result: TrainResult,
    scores: RunScores,
    device: torch.device,
    precision: tuple[bool, bool],
    sources: tuple[str | Path | None, str | Path | None],
    t_total: float,
) -> RunRecord:
    """The run's record, from what the run computed: the one place a run record is made.

    ``precision`` says whether training and evaluation ran under bf16 autocast; ``sources`` are the run's
    ``from_run`` and ``weights`` (None when it trained).
    """
    spec = get_method_spec(cfg.method)
    geometry = PROFILE_GEOMETRY[cfg.profile]
    splits = (("train", data.train_set), ("val", data.val_set), ("test", data.test_set))
    eval_seconds = scores.val.seconds + scores.test.seconds
    n_eval = len(data.val_set) + len(data.test_set)
    (train_bf16, eval_bf16), (from_run, weights) = precision, sources
    return RunRecord(
        run_id=run_dir.name,
        method=cfg.method,
        # The trained method whose classifier a post-hoc run explains, when not its own (leaderboard: gradcam@gmic).
        explains=cfg.explains["method"] if cfg.explains is not None else None,
        supervision=spec.supervision,
        method_source=spec.source,
        dataset=cfg.data.dataset,
        dataset_info={
            **data.dataset_info,
            "image_size": [geometry.height, geometry.width],
            "counts": {s: len(d) for s, d in splits},
            "split_hashes": {s: split_hash(d.image_ids) for s, d in splits},
        },
        profile=cfg.profile,
        seed=cfg.seed,
        config=cfg.to_dict(),
        device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        precision="bf16" if train_bf16 else "fp32",
        timings={
            "data": data.seconds,
            "train": result.train_seconds,
            "eval": eval_seconds,
            "bootstrap": scores.bootstrap_seconds,
            "total": time.perf_counter() - t_total,
        },
        throughput={
            "train_images_per_s": result.images_per_second,
            "eval_images_per_s": n_eval / eval_seconds if eval_seconds > 0 else math.nan,
        },
        peak_memory_mb=peak_memory_mb(device),
        n_parameters=sum(p.numel() for p in method.parameters()),
        initialisation=initialisation,
        training={
            "best_epoch": result.best_epoch,
            "best_val_auroc": result.best_val_auroc,
            "history": result.history,
            "from_run": str(from_run) if from_run is not None else None,
            "weights": str(weights) if weights is not None else None,
        },
        thresholds={"rule": "argmax of image-averaged validation Dice on the grid k/n_bins", **scores.thresholds},
        evaluation=evaluation_settings(cfg.eval, "breast mask", precision="bf16" if eval_bf16 else "fp32"),
        metrics=scores.metrics,
        intervals=scores.intervals,
        per_image=scores.per_image,
        maps=MAPS_DIR if scores.maps_saved else None,
        gallery=GALLERY_NPZ if scores.gallery_saved else None,
        references=scores.references,
    )


def _run_in_folder(
    cfg: RunConfig,
    run_dir: Path,
    resume: bool,
    from_run: str | Path | None,
    weights: str | Path | None,
    progress: bool,
    log: Callable[[str], None],
    t_total: float,
) -> dict[str, Any]:
    """The body of :func:`run` once the run folder is chosen, checked and locked."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, _ = rank_and_world()
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        # Left by writes that a kill of an earlier attempt cut short: only the run's own files' temporaries.
        remove_stale_temporaries(run_dir, RUN_FILES)
        remove_stale_temporaries(run_dir / MAPS_DIR, suffixes=[f"_{c}.npy" for c in CLASSES])
        atomic_write_json(run_dir / "config.json", cfg.to_dict())

    device = resolve_device(cfg.train.device)
    train_bf16, eval_bf16 = use_bf16(cfg.train.precision, device), evaluation_bf16(cfg, device, weights)
    # Loader processes and torch threads from the CPUs this process may use (affinity, cgroup quota), never more
    # busy threads than those CPUs; OMP_NUM_THREADS or an earlier torch.set_num_threads is kept (wsseg._threads).
    cpus = available_cpus()
    workers = loader_workers(cfg.data.num_workers, device.type == "cuda", cpus)
    threads = configure_threads(workers, cpus)
    log(f"cpu: {threads} torch thread(s), {workers} loader worker(s), {cpus} CPU(s) available")

    # 1. Data: generated (phantom) or read from a download and preprocessed once, cached on disk.
    data = open_run_data(cfg, run_dir, device, progress, log)

    # 2. Train, or reuse the classifier of a finished run or a weights file.
    torch.manual_seed(cfg.seed)  # the initial weights are part of what the seed decides
    method = build_method(cfg)
    initialisation = method.initialisation()  # before training: random, imagenet:<timm tag> or file:<sha256>
    if rank != 0 and (from_run is not None or weights is not None):
        return {}  # nothing to train: rank 0 loads the weights and evaluates
    result = obtain_weights(
        method,
        cfg,
        run_dir,
        data,
        resume=resume,
        from_run=from_run,
        weights=weights,
        workers=workers,
        progress=progress,
        log=log,
    )

    # 3. Evaluate the best epoch. Ranks that trained together share the evaluation.
    shared = distributed and from_run is None and weights is None  # else the other ranks have returned
    if shared:
        torch.distributed.barrier()  # rank 0 has written best.pt
    method.load_state_dict(load_checkpoint(result.best_checkpoint, map_location=device)["model"])
    scores = score_run(method, cfg, run_dir, data, device, eval_bf16, shared=shared, workers=workers, progress=progress)
    if scores is None:
        return {}  # rank 0 writes the record

    # 4. The record: what was run, with what, and every number the leaderboards read.
    record = build_run_record(
        cfg,
        run_dir,
        data,
        method,
        initialisation,
        result,
        scores,
        device,
        (train_bf16, eval_bf16),
        (from_run, weights),
        t_total,
    )
    write_record(run_dir / "record.json", record)
    return record.to_json()
