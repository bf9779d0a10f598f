"""The ``wsseg`` command line (typer). Method names and choices come from the registry."""

from __future__ import annotations

import math
import os
import shlex
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from tabulate import tabulate

if TYPE_CHECKING:
    pass

# Heavy modules (torch, timm, pandas, matplotlib, scipy via the phantom) are imported inside the commands that
# use them, so that `wsseg --help` and `wsseg --version` start in a fraction of a second (tests/test_cli.py checks
# that importing this module leaves torch unloaded).

app = typer.Typer(
    name="wsseg",
    help="Benchmark weakly-supervised segmentation of high-resolution mammograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
list_app = typer.Typer(help="List registered methods, backbones and datasets.", no_args_is_help=True)
data_app = typer.Typer(help="Prepare and look at datasets.", no_args_is_help=True)
app.add_typer(list_app, name="list")
app.add_typer(data_app, name="data")


def _print_version(value: bool) -> None:
    """``--version``: print ``wsseg <version>`` (the installed distribution's) and stop before any command."""
    if value:
        from wsseg import __version__

        typer.echo(f"wsseg {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the installed version and exit."),
    ] = False,
) -> None:
    """Benchmark weakly-supervised segmentation of high-resolution mammograms."""


QUIET_HELP = "No progress bars (there are none when stderr is not a terminal)."
ALLOW_OUTSIDE_ROOT_HELP = (
    "Let the dataset's index (a manifest CSV) list files outside the data root; by default such paths "
    "(../.., absolute ones) are refused."
)

# Errors a user can fix; anything else is a bug and keeps its traceback.
# EOFError: numpy's reply to an empty file, which click would otherwise turn into a bare "Aborted.".
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, ImportError, OSError, EOFError)


def _fail(e: BaseException | str) -> NoReturn:
    from wsseg._io import describe_os_error

    msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
    if "\nOriginal Traceback" in msg:
        # Re-raised by a DataLoader from a worker process: the worker's traceback follows; its last line is the error.
        msg = msg.strip().splitlines()[-1].split(": ", 1)[-1]
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        # A system error straight from the OS ("[Errno 13] Permission denied: 'x'"): name the path and the fix.
        msg = describe_os_error(e.filename, e, action="access")
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _progress(quiet: bool) -> bool:
    """Whether to draw progress bars: not with ``-q``, and only when stderr is a terminal.

    In a log file or a pipe a bar is a stream of carriage-return updates; there the training loop's one summary line
    per epoch (printed in every case) is the progress report.
    """
    return not quiet and sys.stderr.isatty()


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM (``kill``, a scheduler's stop) ends a command the way Ctrl-C does."""

    def stop(signum: int, frame: Any) -> None:  # noqa: ARG001
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (an embedding program): leave its handlers alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(saved: str, again: list[str] | None, resumable: bool, run_dir: Path | None) -> NoReturn:
    """Say what an interrupted command saved and how to continue it; exit 130 (the shell's code for Ctrl-C)."""
    from wsseg.pipelines.run import holds_run_files

    typer.secho(f"\ninterrupted: {saved}", fg=typer.colors.YELLOW, err=True)
    if again is not None and resumable:
        typer.echo(f"continue it with:\n  {shlex.join([*again, '--resume'])}", err=True)
    elif again is not None:
        # A new start reuses a folder that holds nothing but config.json (wsseg.pipelines.run.check_run_folder).
        stale = run_dir is not None and holds_run_files(run_dir)
        prefix = f"rm -r {shlex.quote(str(run_dir))} && " if stale else ""
        typer.echo(f"start it again with:\n  {prefix}{shlex.join(again)}", err=True)
    raise typer.Exit(130)


def _given_run_flags(given: dict[str, Any], run_id: str) -> list[str]:
    """The flags of a `wsseg run` call (its parameters in ``given``) with ``--run-id`` set and without ``--resume``."""
    flags = ["--method", given["method"]]
    # --dataset and --device default to None (not given: --set decides), the others to their value.
    defaults = {"dataset": None, "profile": "quick", "seed": 0, "device": None}
    for name, default in defaults.items():
        if given[name] is not None and given[name] != default:
            flags += [f"--{name}", str(given[name])]
    for name in ("data_root", "folds", "fold", "epochs", "batch_size", "cache_dir", "from_run", "weights"):
        if given[name] is not None:
            flags += [f"--{name.replace('_', '-')}", str(given[name])]
    flags += ["--out", str(given["out"]), "--run-id", run_id]
    for item in given["set_"] or []:
        flags += ["--set", item]
    for path in given["plugin"] or []:
        flags += ["--plugin", str(path)]
    for name in ("allow_outside_root", "save_maps"):
        if given[name]:
            flags.append(f"--{name.replace('_', '-')}")
    return [*flags, "-q"] if given["quiet"] else flags


def _benchmark_again(file: Path, given: dict[str, Any]) -> list[str]:
    """The `wsseg benchmark` command line that continues a run with the same flags (without ``--resume``)."""
    again = ["wsseg", "benchmark", str(file)]
    if given["launcher"] != "local":
        again += ["--launcher", given["launcher"]]
    names = {"data_root": "--data-root", "profile": "--profile", "methods": "--methods", "seeds": "--seeds"}
    names |= {"out": "--out", "leaderboard_dir": "--leaderboard"}
    for name, flag in names.items():
        if given[name] is not None:
            again += [flag, str(given[name])]
    for item in given["set_"] or []:
        again += ["--set", item]
    for line in given["setup"] or []:
        again += ["--setup", line]
    return [*again, "-q"] if given["quiet"] else again


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "n/a" if math.isnan(x) else f"{x:.3f}"
    return str(x)


def results_table(record: dict[str, Any]) -> str:
    """The per-class table printed at the end of a run."""
    from wsseg.core import CLASSES

    rows = []
    for name in CLASSES:
        m = record["metrics"][name]
        ref = record["references"]["uniform_breast"][name]
        rows.append(
            [
                name,
                m["dice"],
                m["iou"],
                m["threshold"],
                m["dice_at_0.5"],
                m["iou_at_0.5"],
                m["auroc"],
                int(m["n_images"]),
                ref["dice"],
            ]
        )
    headers = ["class", "Dice", "IoU", "threshold", "Dice@0.5", "IoU@0.5", "AUROC", "test lesions", "uniform Dice"]
    table: str = tabulate([[_fmt(v) for v in r] for r in rows], headers=headers, disable_numparse=True)
    return table


def _with_interval(record: dict[str, Any], name: str, key: str) -> str:
    value = record["metrics"][name].get(key, math.nan)
    low, high = (record.get("intervals", {}).get(name, {}) or {}).get(key, [math.nan, math.nan])
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if math.isnan(low) or math.isnan(high):
        return _fmt(value)
    return f"{value:.3f} [{low:.3f}, {high:.3f}]"


def metrics_table(record: dict[str, Any]) -> str:
    """The full metric suite per class, with 95% patient-bootstrap intervals where computed."""
    from wsseg.core import CLASSES

    keys = [
        ("Dice", "dice"),
        ("IoU", "iou"),
        ("Dice pooled", "dice_pooled"),
        ("Dice@0.5", "dice_at_0.5"),
        ("soft Dice", "soft_dice"),
        ("PxAP", "pxap"),
        ("PG 0/5/10 mm", None),
        ("FROC", "froc"),
        ("FP area (lesion-free)", "fp_area_fraction"),
        ("AUROC", "auroc"),
        ("AUPRC", "auprc"),
        ("oracle Dice (test tau)", "dice_oracle"),
    ]
    rows = []
    for label, key in keys:
        row = [label]
        for name in CLASSES:
            if key is None:
                m = record["metrics"][name]
                row.append(" / ".join(_fmt(m.get(f"pointing_game_{r}mm", math.nan)) for r in (0, 5, 10)))
            else:
                row.append(_with_interval(record, name, key))
        rows.append(row)
    counts = ["images with a lesion / lesion-free / lesions"]
    for name in CLASSES:
        m = record["metrics"][name]
        counts.append(
            " / ".join(
                _fmt(int(v)) if not math.isnan(v) else "n/a"
                for v in (m["n_images"], m.get("n_lesion_free", math.nan), m.get("n_lesions", math.nan))
            )
        )
    rows.append(counts)
    rows.append(["threshold", *(_fmt(record["metrics"][n]["threshold"]) for n in CLASSES)])
    rule = record.get("thresholds", {}).get("rule", "")
    return str(tabulate(rows, headers=["metric", *CLASSES], disable_numparse=True)) + f"\nthreshold: {rule}"


# The longer help texts of `wsseg run`.
RUN_HELP = {
    "dataset": "phantom (the default) or a data source (see `wsseg list datasets`); overrides --set data.dataset.",
    "data_root": "The downloaded dataset (folder or index file); prepared on first use.",
    "profile": "quick (CPU minutes, 736x480), paper (GPU, 2944x1920) or tiny (tests).",
    "run_id": "Run folder name (default: method-dataset-profile-seed-time).",
    "device": "auto (the default), cpu or cuda; overrides --set train.device.",
    "resume": "Continue the latest matching run from its last checkpoint.",
    "cache_dir": "Dataset cache folder (default: $WSSEG_CACHE_DIR or the XDG cache).",
    "set": "Override a config field: section.field=value (data, train, eval, method).",
    "from_run": "Reuse the classifier of a finished run (post-hoc methods) instead of training.",
    "weights": "Evaluate these weights instead of training: a wsseg checkpoint, a state dict, or an official GMIC "
    "sample_model_N.p / GLAM model_sep.ckpt or model_joint.ckpt (with --profile paper).",
    "plugin": "A single-file method to import first (repeatable); see CONTRIBUTING.md.",
    "save_maps": "Also store the test maps as float16 <image_id>_<class>.npy in DIR/<run_id>/maps/ (2 bytes per pixel: "
    "11 MB per map at 2944x1920) and the image-level scores in test_labels.csv, for `wsseg evaluate` and "
    "`wsseg score`.",
}


@app.command()
def run(
    method: Annotated[str, typer.Option("--method", "-m", help="Registered method name (see `wsseg list methods`).")],
    dataset: Annotated[str | None, typer.Option(help=RUN_HELP["dataset"])] = None,
    data_root: Annotated[Path | None, typer.Option(help=RUN_HELP["data_root"])] = None,
    profile: Annotated[str, typer.Option(help=RUN_HELP["profile"])] = "quick",
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    folds: Annotated[int | None, typer.Option(help="k of a k-fold cross-validation by patient (with --fold).")] = None,
    fold: Annotated[int | None, typer.Option(help="The fold tested by this run, 0 .. folds-1 (with --folds).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Override the profile's epoch count.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Override the profile's batch size.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Parent folder of run folders.")] = Path("runs"),
    run_id: Annotated[str | None, typer.Option(help=RUN_HELP["run_id"])] = None,
    device: Annotated[str | None, typer.Option(help=RUN_HELP["device"])] = None,
    resume: Annotated[bool, typer.Option("--resume", help=RUN_HELP["resume"])] = False,
    cache_dir: Annotated[Path | None, typer.Option(help=RUN_HELP["cache_dir"])] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help=RUN_HELP["set"])] = None,
    from_run: Annotated[Path | None, typer.Option(help=RUN_HELP["from_run"])] = None,
    weights: Annotated[Path | None, typer.Option(help=RUN_HELP["weights"])] = None,
    plugin: Annotated[list[Path] | None, typer.Option(help=RUN_HELP["plugin"])] = None,
    allow_outside_root: Annotated[bool, typer.Option("--allow-outside-root", help=ALLOW_OUTSIDE_ROOT_HELP)] = False,
    save_maps: Annotated[bool, typer.Option("--save-maps", help=RUN_HELP["save_maps"])] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
) -> None:
    """Train a method (or load --weights), evaluate it on the test split and write DIR/<run_id>/record.json.

    Beside the record: per_image.csv and per_image_stats.npz (what `wsseg compare` resamples).
    """
    from wsseg.pipelines.run import RunInterrupted, run_from_options
    from wsseg.report.records import method_label

    # Flags override --set items only when given (they come after it): a default must not silently undo
    # `--set data.dataset=...`.
    flags = {
        "data.dataset": dataset,
        "train.device": device,
        "data.folds": folds,
        "data.fold": fold,
        "train.epochs": epochs,
        "train.batch_size": batch_size,
        "data.cache_dir": cache_dir,
        "data.root": data_root,
        "eval.save_maps": "true" if save_maps else None,
        "data.allow_outside_root": "true" if allow_outside_root else None,
    }
    overrides = [*(set_ or []), *(f"{key}={value}" for key, value in flags.items() if value is not None)]
    try:
        with _sigterm_as_interrupt():
            record = run_from_options(
                method,
                profile,
                seed,
                overrides,
                list(plugin or []),
                out,
                run_id,
                resume,
                from_run,
                weights,
                progress=_progress(quiet),
                log=typer.echo,
            )
    except RunInterrupted as e:
        # The same command with the run's folder named, so it continues this run and no other.
        again = ["wsseg", "run", *_given_run_flags(locals(), e.run_dir.name)]
        _interrupted(e.saved, again, e.resumable, e.run_dir)
    except KeyboardInterrupt:
        if os.environ.get("RANK", "0") != "0":
            raise typer.Exit(130) from None  # another torchrun rank: rank 0 says what was saved
        _interrupted("nothing was saved yet (stopped before the run folder was made)", None, False, None)
    except USER_ERRORS as e:
        _fail(e)
    if not record:
        return  # a torchrun rank other than 0: rank 0 prints the results
    t = record["timings"]
    typer.echo(
        f"\n{method_label(record)} on {record['dataset']} ({record['profile']}), seed {record['seed']}, "
        f"device {record['device']}: best epoch {record['training']['best_epoch']}, "
        f"{t['total']:.0f} s total ({t['data']:.0f} data, {t['train']:.0f} train, {t['eval']:.0f} eval)"
    )
    typer.echo("test split; Dice/IoU at the threshold calibrated on validation, averaged over images with a lesion\n")
    typer.echo(results_table(record))
    typer.echo("\nthe full metric suite on test, with 95% patient-bootstrap intervals:\n")
    typer.echo(metrics_table(record))
    typer.echo(f"\nrecord: {out / record['run_id'] / 'record.json'}")


@app.command()
def score(
    maps: Annotated[
        Path,
        typer.Option(help="Folder of maps <image_id>_<class>.npy (float32/float16, HxW, in [0,1]) or .png (16-bit)."),
    ],
    masks: Annotated[
        Path, typer.Option(help="Folder of masks <image_id>_<class>.png (non-zero = lesion; no file = no lesion).")
    ],
    out: Annotated[Path, typer.Option(help="Output folder: record.json, per_image.csv, per_image_stats.npz.")],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="CSV with image_id,benign,malignant (0/1) and optionally patient_id and benign_score,malignant_score "
            "(image-level predictions; else each map's maximum). Its rows are the images scored; gives AUROC/AUPRC."
        ),
    ] = None,
    spacing_mm: Annotated[
        float | None,
        typer.Option(
            help="Pixel spacing (mm) at the mask resolution; needed for the pointing game at 5/10 mm and FROC."
        ),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option(
            help="Operating threshold for the headline Dice/IoU, e.g. calibrated on your validation split: 0.3, or "
            "benign=0.3 and malignant=0.4 (repeat). Default: 0.5 (recorded as such)."
        ),
    ] = None,
    region: Annotated[
        Path | None,
        typer.Option(help="Folder of <image_id>.png evaluated regions (e.g. breast masks); default: whole image."),
    ] = None,
    image_size: Annotated[
        str | None, typer.Option(help="HxW of images without any mask (default: the masks' common size).")
    ] = None,
    normalize: Annotated[
        str,
        typer.Option(
            help="none (maps must lie in [0,1]) or minmax (per map, after upsampling; declared in the record)."
        ),
    ] = "none",
    upsample: Annotated[str, typer.Option(help="bilinear (the benchmark's rule), nearest or bicubic.")] = "bilinear",
    bootstrap: Annotated[int, typer.Option(help="Patient-bootstrap resamples for the 95% intervals (0: none).")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    skip_invalid: Annotated[
        bool,
        typer.Option(
            "--skip-invalid",
            help="Skip images with a bad or missing file instead of stopping; each skip is listed in the record.",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
) -> None:
    """Score saliency maps produced by any program against masks; write OUT/record.json (same metric keys as `run`).

    Maps smaller than the masks (same aspect ratio) are upsampled by the harness. Bad files stop with an error
    naming the file and the fix (or are skipped and counted with --skip-invalid).
    """
    from wsseg.config import EvalConfig, check_seed
    from wsseg.pipelines.score import parse_size, parse_thresholds, score_folders

    try:
        if upsample not in ("bilinear", "nearest", "bicubic"):
            raise ValueError(f"--upsample {upsample!r}: choose bilinear, nearest or bicubic")
        if not 0 <= bootstrap <= 1_000_000:
            raise ValueError(f"--bootstrap must be in [0, 1000000], got {bootstrap}")
        check_seed(seed, "--seed")
        cfg = EvalConfig(upsample=upsample, bootstrap_resamples=bootstrap, bootstrap_seed=seed)  # type: ignore[arg-type]
        record = score_folders(
            maps,
            masks,
            out,
            labels=labels,
            region=region,
            spacing_mm=spacing_mm,
            thresholds=parse_thresholds(threshold),
            image_size=parse_size(image_size),
            normalization=normalize,
            cfg=cfg,
            skip_invalid=skip_invalid,
            progress=_progress(quiet),
            log=typer.echo,
        )
    except USER_ERRORS as e:
        _fail(e)
    info = record["dataset_info"]
    typer.echo(f"\n{info['n_images']} images ({info['n_patients']} patients), {record['n_skipped']} skipped\n")
    typer.echo(metrics_table(record))
    typer.echo(f"\nrecord: {out / 'record.json'}")


@app.command()
def evaluate(
    run_dir: Annotated[Path, typer.Option("--run", help="A run folder made with `wsseg run --save-maps`.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default: RUN/evaluate).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Dataset cache folder (default: the run's).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
) -> None:
    """Re-score the test maps a run saved (--save-maps) with the current evaluator; the run's record is kept.

    Masks and breast regions come from the run's dataset, thresholds and image-level scores from the run.
    The numbers equal the run's up to the float16 rounding of the stored maps.
    """
    from wsseg.core import CLASSES
    from wsseg.pipelines.evaluate import evaluate_run
    from wsseg.report.records import read_record_json

    try:
        record = evaluate_run(
            run_dir, out, str(cache_dir) if cache_dir is not None else None, progress=_progress(quiet)
        )
        original = read_record_json(run_dir / "record.json")
    except USER_ERRORS as e:
        _fail(e)
    typer.echo(metrics_table(record))
    diffs = [
        abs(record["metrics"][n][k] - original["metrics"][n][k])
        for n in CLASSES
        for k in ("dice", "iou", "dice_at_0.5", "iou_at_0.5")
        if k in original["metrics"][n] and not math.isnan(original["metrics"][n][k])
    ]
    if diffs:
        typer.echo(f"\nlargest difference from the run's record (Dice/IoU): {max(diffs):.2g}")
    typer.echo(f"record: {(out or run_dir / 'evaluate') / 'record.json'}")


@app.command()
def gallery(
    run_dir: Annotated[list[Path], typer.Option("--run", help="A finished run folder (repeatable).")],
    cache_dir: Annotated[Path | None, typer.Option(help="Dataset cache folder (default: the run's).")] = None,
) -> None:
    """(Re)make a run's gallery.npz (its maps on the report's fixed test images) from its best checkpoint.

    Runs write it themselves; this is for runs made before galleries existed, so the HTML report can show them.
    """
    from wsseg.pipelines.run import gallery_for_run

    for folder in run_dir:
        try:
            path = gallery_for_run(folder, str(cache_dir) if cache_dir is not None else None)
        except USER_ERRORS as e:
            _fail(e)
        typer.echo(f"wrote {path}")


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="Run (or `wsseg score --out`) folder A.")],
    run_b: Annotated[Path, typer.Argument(help="Folder B, scored on the same test images.")],
    metric: Annotated[
        list[str] | None,
        typer.Option(help="Metric key to show (repeatable; 'all' for every one). Default: the main ones."),
    ] = None,
    n_resamples: Annotated[int, typer.Option(help="Paired bootstrap resamples.")] = 1000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Also write the full comparison to this JSON file.")] = None,
) -> None:
    """Paired patient bootstrap of A - B on the same test set: difference, 95% interval and two-sided p.

    Refuses runs whose test images, patients or ground truth differ.
    """
    from wsseg.config import check_seed
    from wsseg.pipelines.compare import compare_and_write

    try:
        if not 1 <= n_resamples <= 1_000_000:
            raise ValueError(f"--n-resamples must be in [1, 1000000], got {n_resamples}")
        check_seed(seed, "--seed")
        result, keys = compare_and_write(run_a, run_b, n_resamples, seed, metric, out)
    except USER_ERRORS as e:
        _fail(e)
    rows = []
    for name, per_metric in result["classes"].items():
        for k in keys:
            r = per_metric[k]
            ci = "n/a" if math.isnan(r["low"]) else f"[{r['low']:+.3f}, {r['high']:+.3f}]"
            rows.append(
                [
                    name,
                    k,
                    _fmt(r["a"]),
                    _fmt(r["b"]),
                    "n/a" if math.isnan(r["diff"]) else f"{r['diff']:+.3f}",
                    ci,
                    _fmt(r["p"]),
                ]
            )
    typer.echo(
        f"A = {run_a}\nB = {run_b}\n{result['n_images']} test images, {result['n_patients']} patients, "
        f"{n_resamples} paired resamples (seed {seed})\n"
    )
    typer.echo(tabulate(rows, headers=["class", "metric", "A", "B", "A - B", "95% CI", "p"], disable_numparse=True))
    for note in result["notes"]:
        typer.echo(f"\nnote: {note}")
    if out is not None:
        typer.echo(f"\nwritten: {out}")


# The longer help texts of `wsseg bench`.
BENCH_HELP = {
    "mode": "wsseg (batched crops) and/or reference (GMIC/GLAM crops and paste-back in the official code's per-image "
    "host loops); repeatable or comma-separated, e.g. wsseg,reference: both are measured in this process and the "
    "speedup is printed. Default: wsseg.",
    "compile": "Run the method under torch.compile (mode column: wsseg+compile, ...); compilation happens in the "
    "untimed warm-up. Measure without the flag in another call for the eager figures.",
    "loader": "Measure the data pipeline instead of a method: a prepared phantom at --profile read through a "
    "DataLoader with --workers processes (pinned memory on CUDA) to the device, in images/s.",
    "raw": "--loader: ship uint16 pixels and standardise on the device (default on CUDA, as wsseg run does) or "
    "standardise in the workers (default on CPU).",
    "augment": "--loader: also measure with the training loop's window noise applied on the device "
    "(train.augment=window); rows with mode workers<N>+window.",
    "kernels": "Also profile two steps of each configuration and write its most expensive operators and CUDA kernels "
    "(torch.profiler) to DIR/<method>-<phase>-<precision>-batch-<n>-<mode>.txt.",
}


@app.command()
def bench(
    method: Annotated[
        list[str] | None, typer.Option("--method", "-m", help="Method to measure (repeatable; not with --loader).")
    ] = None,
    profile: Annotated[str, typer.Option(help="Preset and image size: paper (2944x1920), quick or tiny.")] = "paper",
    batch: Annotated[list[int] | None, typer.Option(help="Images per step (repeatable; default 1).")] = None,
    precision: Annotated[
        list[str] | None, typer.Option(help="bf16 (CUDA autocast) or fp32 (repeatable; default bf16 on CUDA).")
    ] = None,
    phase: Annotated[list[str] | None, typer.Option(help="inference and/or train (repeatable; default both).")] = None,
    mode: Annotated[list[str] | None, typer.Option(help=BENCH_HELP["mode"])] = None,
    compile_: Annotated[bool, typer.Option("--compile", help=BENCH_HELP["compile"])] = False,
    compile_mode: Annotated[
        str | None,
        typer.Option(help="torch.compile mode, e.g. max-autotune-no-cudagraphs (slow to compile); default: torch's."),
    ] = None,
    loader: Annotated[bool, typer.Option("--loader", help=BENCH_HELP["loader"])] = False,
    workers: Annotated[
        list[int] | None, typer.Option(help="--loader: loader processes (repeatable; default: all cores).")
    ] = None,
    images: Annotated[int, typer.Option(help="--loader: phantom images to generate and read (multiple of 4).")] = 64,
    raw: Annotated[bool | None, typer.Option("--raw/--no-raw", help=BENCH_HELP["raw"])] = None,
    augment: Annotated[bool, typer.Option("--augment", help=BENCH_HELP["augment"])] = False,
    cache_dir: Annotated[
        Path | None, typer.Option(help="--loader: dataset cache folder (default: $WSSEG_CACHE_DIR or the XDG cache).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    seconds: Annotated[float, typer.Option(help="Minimum timed seconds per configuration.")] = 3.0,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a method config field: field=value.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Append the rows to this CSV file.")] = None,
    kernels: Annotated[Path | None, typer.Option(help=BENCH_HELP["kernels"])] = None,
) -> None:
    """Measure images/s, peak GPU memory and TFLOP/s of forward passes and training steps on synthetic images.

    With --loader, measure the data pipeline's images/s instead.
    """
    from wsseg.pipelines.bench import COLUMNS, BenchPlan, append_rows, run_plan, speedups

    plan = BenchPlan(
        methods=list(method or []),
        profile=profile,
        batches=batch,
        precisions=precision,
        phases=phase,
        modes=[m.strip() for item in mode or ["wsseg"] for m in item.split(",") if m.strip()],
        compile=compile_,
        compile_mode=compile_mode,
        loader=loader,
        workers=workers,
        images=images,
        raw=raw,
        augment=augment,
        cache_dir=cache_dir,
        device=device,
        seconds=seconds,
        set_items=list(set_ or []),
        kernels=kernels,
    )
    try:
        rows = run_plan(plan, log=typer.echo, warn=lambda line: typer.echo(line, err=True))
    except USER_ERRORS as e:
        _fail(e)
    if rows:
        typer.echo(tabulate([[r[c] for c in COLUMNS] for r in rows], headers=COLUMNS))
    for what, ratio in speedups(rows):
        typer.echo(f"speedup over the reference mode, {what}: {ratio:.2f}x")
    if out is not None and rows:
        append_rows(out, rows)
        typer.echo(f"appended {len(rows)} rows to {out}")


def _csv_ints(text: str | None, flag: str) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        _fail(f"{flag} takes comma-separated integers, e.g. 0,1,2; got {text!r}")


# The longer help texts of `wsseg benchmark`.
BENCHMARK_HELP = {
    "resume": "Continue an interrupted benchmark. This is also what happens without the flag: finished runs are "
    "always skipped and interrupted ones resumed from their last checkpoint.",
    "launcher": "local: run here, one run after the other; submitit: each unfinished run as one cluster job (Slurm, or "
    "local processes) with the resources of the file's launcher table; needs the submitit package (the slurm extra "
    "of wsseg).",
    "wait": "submitit: wait for the jobs, then write the leaderboard; or return after submitting (run the same command "
    "again later: it skips finished runs and writes the leaderboard when every record exists).",
    "setup": "submitit on Slurm: a shell line run before each job, e.g. 'source ~/wsseg/.venv/bin/activate' "
    "(repeatable). Only from the command line: a benchmark file never runs commands.",
}


@app.command()
def benchmark(
    file: Annotated[Path, typer.Argument(help="A benchmark TOML file (see benchmarks/README.md).")],
    resume: Annotated[bool, typer.Option("--resume", help=BENCHMARK_HELP["resume"])] = False,
    launcher: Annotated[str, typer.Option(help=BENCHMARK_HELP["launcher"])] = "local",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help=BENCHMARK_HELP["wait"])] = True,
    data_root: Annotated[
        str | None, typer.Option(help="The downloaded dataset (replaces the file's data_root).")
    ] = None,
    profile: Annotated[str | None, typer.Option(help="Replace the file's profile: tiny, quick or paper.")] = None,
    methods: Annotated[
        str | None, typer.Option(help="Replace the file's methods: comma-separated names, or all.")
    ] = None,
    seeds: Annotated[str | None, typer.Option(help="Replace the file's seeds: comma-separated integers.")] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Add a config override to every run: section.field=value (repeatable)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Replace the file's run folder (out).")] = None,
    leaderboard_dir: Annotated[
        Path | None, typer.Option("--leaderboard", help="Replace the file's leaderboard folder.")
    ] = None,
    setup: Annotated[list[str] | None, typer.Option("--setup", help=BENCHMARK_HELP["setup"])] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET_HELP)] = False,
) -> None:
    """Run every (dataset, method, seed[, fold]) of a benchmark file that is not finished, then write its leaderboard.

    Finished runs are skipped and interrupted ones resumed, so the command can be stopped (even killed) and
    restarted at any time, with or without --resume; the result equals an uninterrupted benchmark's. Post-hoc
    methods reuse the CAM run of the same seed (and fold). `folds = K` in the file runs a K-fold cross-validation
    by patient and aggregates the folds in the leaderboard. The file format is documented in
    wsseg/pipelines/benchmark.py and benchmarks/README.md; the flags replace the file's values (e.g. --profile
    tiny for a smoke test).
    """
    given = dict(locals())  # the flags, for the command that continues an interrupted benchmark
    from wsseg.pipelines.benchmark import BenchmarkOverrides, count_finished, load_benchmark, run_benchmark
    from wsseg.pipelines.run import RunInterrupted

    if launcher not in ("local", "submitit"):
        _fail(f"--launcher must be local or submitit, got {launcher!r}")
    overrides = BenchmarkOverrides(
        data_root=data_root,
        profile=profile,
        methods=[m.strip() for m in methods.split(",") if m.strip()] if methods is not None else None,
        seeds=_csv_ints(seeds, "--seeds"),
        extra_set=list(set_ or []),
        out=out,
        leaderboard=leaderboard_dir,
    )
    bench = None
    try:
        bench = load_benchmark(file, overrides)
        folds = f" x {bench.folds} folds" if bench.folds is not None else ""
        typer.echo(
            f"{'resuming ' if resume else ''}benchmark {bench.name}: {len(bench.methods)} methods x "
            f"{len(bench.seeds)} seeds{folds} x {len(bench.datasets)} datasets, profile {bench.profile}, "
            f"runs in {bench.out}"
        )
        if launcher == "local":
            with _sigterm_as_interrupt():
                _, result = run_benchmark(bench, progress=_progress(quiet), log=typer.echo)
        else:
            bench.launcher.setup = list(setup or [])
            result = _submit_benchmark(bench, wait, file)
            if result is None:
                return
    except KeyboardInterrupt as e:
        if bench is None:
            _interrupted("nothing was run yet", None, False, None)
        done, total = count_finished(bench)
        saved = f"{done} of {total} runs are finished"
        if isinstance(e, RunInterrupted):
            saved += f"; {e.run_dir.name} was stopped: {e.saved}"
        _interrupted(saved, _benchmark_again(file, given), True, None)
    except USER_ERRORS as e:
        _fail(e)
    for line in result.differences:
        typer.echo(f"not comparable: {line}")
    for path in result.files:
        typer.echo(f"wrote {path}")


def _submit_benchmark(bench: Any, wait: bool, file: Path) -> Any:
    """``--launcher submitit``: submit, wait or not, and write the leaderboard once every record exists."""
    from wsseg.pipelines.launch import JobsFailed, launch_benchmark

    try:
        sub, result = launch_benchmark(bench, wait, typer.echo)
    except JobsFailed as e:
        typer.secho(f"error: {len(e.lines)} run(s) have no record; fix the cause and run the command again:", err=True)
        for line in e.lines:
            typer.secho(f"  {line}", err=True)
        raise typer.Exit(1) from None
    if result is not None:
        return result
    if sub.held:
        typer.echo(
            f"{len(sub.held)} post-hoc run(s) wait for their CAM jobs (the local executor has no job dependencies)"
        )
    typer.echo(
        f"{len(sub.jobs)} job(s) submitted, {len(sub.earlier)} still in flight from before. When they have finished, "
        f"run `wsseg benchmark {file} --launcher submitit` again (with the same flags): it skips finished runs, "
        "submits what is left and writes the leaderboard once every run has its record."
    )
    return None


@app.command()
def leaderboard(
    runs: Annotated[list[Path], typer.Argument(help="Run folders, record.json files, or folders of runs.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the tables.")] = Path("leaderboard"),
    format_: Annotated[
        str,
        typer.Option(
            "--format",
            help="Comma-separated formats: md, csv, tex, html (a self-contained report: sortable table, saliency "
            "gallery, plots; its SVG figures go to figures/ beside it).",
        ),
    ] = "md,csv,tex,html",
) -> None:
    """Write comparison tables from run folders: one per group of comparable runs, one row per method.

    Comparable: the same dataset, version, test split (or k-fold assignment: the folds are aggregated), profile,
    evaluation protocol, training budget and initialisation (random or pretrained). Per class, each row is tested
    against the best weakly supervised row by a paired patient bootstrap (from each run's per_image.csv); a second
    table (<name>-lesions.*) gives Dice and the pointing game by lesion size and type.
    """
    from wsseg.report.leaderboard import write_leaderboards

    formats = [f.strip() for f in format_.split(",") if f.strip()]
    try:
        result = write_leaderboards(runs, out, formats)
    except USER_ERRORS as e:
        _fail(e)
    for name, n in result.groups:
        typer.echo(f"{name}: {n} runs")
    if result.differences:
        typer.echo("these runs are not comparable, so they got separate tables:")
        for line in result.differences:
            typer.echo(f"  {line}")
    for path in result.files:
        typer.echo(f"wrote {path}")


@list_app.command("methods")
def list_methods_cmd(
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Import every method (this loads torch) and list the plugins that fail to import as BROKEN. Without "
            "it the list is read from the methods' source files, and a plugin is imported only when its source "
            "cannot be read.",
        ),
    ] = False,
) -> None:
    """List registered methods: name, supervision, source and description; broken plugins last."""
    from wsseg.catalog import read_catalog

    catalog = None if check else read_catalog()
    if catalog is not None:
        rows = [[e.name, e.supervision, e.source, e.description] for e in catalog]
    else:
        from wsseg.registry import broken_methods, get_method_spec, list_methods

        rows = []
        for name in list_methods():
            spec = get_method_spec(name)
            rows.append([name, spec.supervision, spec.source, spec.description])
        for name, err in sorted(broken_methods().items()):
            rows.append([name, "BROKEN", err.split(":")[0], err.split(": ", 1)[-1]])
    typer.echo(tabulate(rows, headers=["method", "supervision", "source", "description"]))


@list_app.command("backbones")
def list_backbones_cmd() -> None:
    """List wsseg's backbone aliases and the weights method.pretrained=imagenet loads (any timm name works too)."""
    from wsseg.nn.backbones import ALIASES, pretrained_tag

    rows = [
        [k, v, "none (narrow)" if "channels" in v else pretrained_tag(v["model_name"]) or "none"]
        for k, v in ALIASES.items()
    ]
    typer.echo(tabulate(rows, headers=["backbone", "timm spec", "imagenet weights"]))


@list_app.command("datasets")
def list_datasets_cmd() -> None:
    """List datasets: the built-in phantom and every data source, with annotation, label source and licence."""
    from wsseg.config import DataConfig
    from wsseg.data.sources import broken_sources, get_source, list_sources

    default = DataConfig().dataset
    rows = []
    for name in sorted(list_sources(), key=lambda n: (n != default, n)):  # the default first
        src = get_source(name)
        rows.append([name, src.annotation, src.label_source, src.licence, src.description()])
    rows += [[name, "BROKEN", "", "", error] for name, error in broken_sources().items()]
    typer.echo(tabulate(rows, headers=["dataset", "annotation", "labels", "licence", "description"]))


def _profile_hw(profile: str) -> tuple[int, int]:
    from wsseg.core import PROFILE_GEOMETRY

    if profile not in PROFILE_GEOMETRY:
        _fail(f"unknown profile {profile!r}; choose quick, paper or tiny")
    return PROFILE_GEOMETRY[profile].height, PROFILE_GEOMETRY[profile].width


def _data_config(dataset: str, root: Path | None, command: str, **fields: Any) -> Any:
    """The :class:`~wsseg.config.DataConfig` of a `wsseg data` command; exits when the source needs a --root."""
    from wsseg.config import DataConfig
    from wsseg.data.sources import get_source

    try:
        source = get_source(dataset)
    except KeyError as e:
        _fail(e)
    if source.needs_root and root is None:
        _fail(f"`wsseg data {command} {dataset}` needs --root PATH (the downloaded dataset)")
    return DataConfig(dataset=dataset, root=None if root is None else str(root), **fields)


VOI_HELP = "Apply each DICOM's VOI LUT or window (first of several) instead of keeping raw linear values."
SPLIT_FILE_HELP = "A patient_id,split CSV (default: benchmarks/splits/DATASET.csv if present)."


@data_app.command("check")
def data_check(
    dataset: Annotated[str, typer.Argument(help="Data source name (see `wsseg list datasets`).")],
    root: Annotated[Path, typer.Option(help="The downloaded dataset (folder or index file).")],
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Exit with an error on any bad file.")] = False,
    allow_outside_root: Annotated[bool, typer.Option("--allow-outside-root", help=ALLOW_OUTSIDE_ROOT_HELP)] = False,
    voi_lut: Annotated[bool, typer.Option("--voi-lut", help=VOI_HELP)] = False,
    split_file: Annotated[Path | None, typer.Option(help=SPLIT_FILE_HELP)] = None,
) -> None:
    """Validate a download without writing: counts, labels per split, label-only images, every bad file.

    Reports "N images, M with located lesions, K labelled without location", the benign/malignant/normal counts
    per split (the split prepare would use), the label-only images by name (labelled, no lesion location: they
    train and count for AUROC, never for localisation), annotations lying mostly outside the detected breast
    (kept; the evaluated region is grown to include them), then every skipped file with its reason.
    """
    from wsseg.data.prepare import check_source

    try:
        report = check_source(
            dataset,
            root,
            workers=workers,
            strict=strict,
            progress=False,
            voi_lut=voi_lut,
            allow_outside_root=allow_outside_root,
            split_file=split_file,
        )
    except USER_ERRORS as e:
        _fail(e)
    typer.echo(report.summary())


@data_app.command("prepare")
def data_prepare(
    dataset: Annotated[str, typer.Argument(help="Dataset name.")] = "phantom",
    root: Annotated[Path | None, typer.Option(help="The downloaded dataset (data sources only).")] = None,
    profile: Annotated[str, typer.Option(help="quick, paper or tiny.")] = "quick",
    cache_dir: Annotated[Path | None, typer.Option(help="Cache folder.")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes (default: all cores).")] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Fail on any bad file instead of skipping it.")] = False,
    seed: Annotated[
        int,
        typer.Option(
            help="Dataset seed: the phantom's generator seed, a download's split seed where it has no official one."
        ),
    ] = 0,
    split_file: Annotated[
        Path | None, typer.Option(help="A patient_id,split CSV (default: benchmarks/splits/DATASET.csv if present).")
    ] = None,
    voi_lut: Annotated[bool, typer.Option("--voi-lut", help=VOI_HELP)] = False,
    allow_outside_root: Annotated[bool, typer.Option("--allow-outside-root", help=ALLOW_OUTSIDE_ROOT_HELP)] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue an interrupted prepare. This is also what happens without the flag: images already "
            "cached (and intact) are always reused.",
        ),
    ] = False,
) -> None:
    """Generate the phantom, or read, preprocess and cache a downloaded dataset (uint16, the profile's size).

    Every file is written atomically, so the command can be stopped (even killed) and run again, with or without
    --resume: it reuses the images already cached and gives the same cache as an uninterrupted prepare.
    """
    from wsseg.config import PROFILES, check_seed
    from wsseg.data.prepare import prepare_dataset
    from wsseg.data.sources import PrepareOptions

    try:
        check_seed(seed, "--seed")
    except ValueError as e:
        _fail(e)
    _profile_hw(profile)  # an unknown profile exits here
    counts = PROFILES[profile].get("data", {})  # the phantom's split sizes of the profile, as a run uses them
    data = _data_config(
        dataset,
        root,
        "prepare",
        seed=seed,
        cache_dir=None if cache_dir is None else str(cache_dir),
        voi_lut=voi_lut,
        allow_outside_root=allow_outside_root,
        **{k: v for k, v in counts.items() if k.startswith("n_")},
    )
    if resume:
        typer.echo(f"resuming the {dataset} prepare: images already cached are reused")
    options = PrepareOptions(workers, strict, split_file, verify=True, progress=_progress(False), log=lambda _: None)
    try:
        prepared = prepare_dataset(data, profile, options)
    except USER_ERRORS as e:
        _fail(e)
    typer.echo(prepared.summary)


@data_app.command("split")
def data_split(
    dataset: Annotated[str, typer.Argument(help="Data source name (see `wsseg list datasets`).")],
    root: Annotated[Path, typer.Option(help="The complete downloaded dataset (folder or index file).")],
    out: Annotated[Path, typer.Option("--out", help="CSV to write (commit it as benchmarks/splits/DATASET.csv).")],
    seed: Annotated[int, typer.Option(help="Seed of the split where the dataset has no official one.")] = 0,
    folds: Annotated[
        int | None,
        typer.Option(
            help="Write a k-fold cross-validation assignment instead (patient_id,fold0,...: train/val/test per "
            "fold), stratified by patient label; commit it as benchmarks/splits/DATASET-<k>fold.csv."
        ),
    ] = None,
) -> None:
    """Write the patient-level split of a download (patient_id,split) without decoding images, for publishing."""
    from wsseg.config import check_seed
    from wsseg.data.folds import fold_counts, make_folds_file
    from wsseg.data.prepare import make_split_file

    try:
        check_seed(seed, "--seed")
        if folds is None:
            counts = make_split_file(dataset, root, seed, out)
        else:
            assignment = make_folds_file(dataset, root, folds, seed, out)
    except USER_ERRORS as e:
        _fail(e)
    if folds is None:
        typer.echo(f"{dataset}: {', '.join(f'{n} {s}' for s, n in counts.items())} patients written to {out}")
        return
    typer.echo(f"{dataset}: {len(assignment.table)} patients in {folds} folds written to {out}")
    for f, by_split in enumerate(fold_counts(assignment.table, assignment.labels)):
        parts = [f"{s} {sum(c.values())} ({', '.join(f'{n} {x}' for x, n in c.items())})" for s, c in by_split.items()]
        typer.echo(f"  fold {f}: {'; '.join(parts)}")


@data_app.command("fixture")
def data_fixture(
    dataset: Annotated[str, typer.Argument(help="Data source name (see `wsseg list datasets`).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the fixture into.")],
) -> None:
    """Write a tiny synthetic download of DATASET in its native layout (with its known traps), for trying wsseg."""
    from wsseg.data.fixtures import fixture_writers

    writers = fixture_writers()
    if dataset not in writers:
        _fail(f"no fixture writer for {dataset!r}; available: {', '.join(sorted(writers))}")
    try:
        truth = writers[dataset](out)
    except OSError as e:
        _fail(e)
    typer.echo(
        f"wrote a {dataset} fixture of {len(truth)} images to {out}; try: wsseg data check {dataset} --root {out}"
    )


@data_app.command("preview")
def data_preview(
    dataset: Annotated[str, typer.Argument(help="Dataset name: phantom or a data source.")] = "phantom",
    root: Annotated[Path | None, typer.Option(help="The downloaded dataset (data sources only).")] = None,
    n: Annotated[int, typer.Option("--n", help="Number of images.")] = 8,
    out: Annotated[Path, typer.Option("--out", help="PNG file to write.")] = Path("preview.png"),
    profile: Annotated[str, typer.Option(help="quick, paper or tiny.")] = "quick",
    split: Annotated[str, typer.Option(help="train, val or test (or all, for a data source).")] = "test",
    seed: Annotated[int, typer.Option(help="Dataset seed.")] = 0,
    lesions_only: Annotated[bool, typer.Option("--lesions-only", help="Show only images with a lesion.")] = False,
    ids: Annotated[
        str | None, typer.Option(help="Comma-separated image ids to draw (data sources), e.g. mdb212,mdb059.")
    ] = None,
    split_file: Annotated[Path | None, typer.Option(help=SPLIT_FILE_HELP)] = None,
    voi_lut: Annotated[bool, typer.Option("--voi-lut", help=VOI_HELP)] = False,
    allow_outside_root: Annotated[bool, typer.Option("--allow-outside-root", help=ALLOW_OUTSIDE_ROOT_HELP)] = False,
) -> None:
    """Draw a grid of images with their annotations as they will be scored.

    Benign green, malignant red: each class's mask after the pipeline (crop, flip, resize), the lesions' boxes and
    circles; the evaluated region in blue (the breast, grown by a lesion outside it); a frame in the class colour
    and "label only" for an image labelled with a class whose lesion has no location. A data source is read from
    --root through the prepare pipeline at the profile's size (nothing is written but the PNG).
    """
    from wsseg.config import check_seed
    from wsseg.core import PROFILE_GEOMETRY
    from wsseg.data.preview import save_preview
    from wsseg.data.sources import get_source

    if not 1 <= n <= 1000:
        _fail(f"--n must be in [1, 1000], got {n}")
    try:
        check_seed(seed, "--seed")
    except ValueError as e:
        _fail(e)
    _profile_hw(profile)  # an unknown profile exits here
    data = _data_config(dataset, root, "preview", seed=seed, voi_lut=voi_lut, allow_outside_root=allow_outside_root)
    picked = [i.strip() for i in ids.split(",") if i.strip()] if ids else None
    try:
        items, problems = get_source(dataset).preview(
            data, PROFILE_GEOMETRY[profile], n, split, picked, lesions_only, split_file
        )
    except USER_ERRORS as e:
        _fail(e)
    for p in problems:
        typer.echo(f"skipped {p}")
    if not items:
        _fail(f"no {dataset} image to draw in split {split!r}; try --split all")
    try:
        path = save_preview(items, out)
    except OSError as e:
        _fail(e)
    label_only = sum(bool(i.label_only) for i in items)
    typer.echo(f"wrote {path} ({len(items)} images" + (f", {label_only} label-only" if label_only else "") + ")")


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
