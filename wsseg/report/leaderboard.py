"""Leaderboards generated from run records only: comparable runs grouped, one row per method, byte-stable output.

Runs are comparable when they share the dataset and its version, the test split (its hash), the profile and the
evaluation protocol (the record's ``evaluation`` block). Incomparable runs are never put in one table: each group
gets its own table, and :func:`describe_difference` names what separates two groups.

A row aggregates the seeds of one method: per class the headline Dice (mean and standard deviation over seeds,
and the mean of the seeds' 95% patient-bootstrap intervals), IoU, PxAP, the pointing-game hit rate at 10 mm,
the FROC score, the false-positive area on lesion-free images and AUROC (means over seeds); then the compute
columns (parameters, training seconds, evaluation images per second, device). Rows are ranked by the mean over
classes of the headline Dice. Fully supervised rows are marked and the uniform-breast reference is appended, so a
table always shows its floor. The oracle Dice (threshold chosen on the test split itself) is the last column of
each class, titled "(oracle)": an upper bound, never a headline or a ranking key.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsseg._io import atomic_open, atomic_write_text
from wsseg.data.phantom import CLASSES
from wsseg.report.html import RunFiles, render_report

# Per-class columns after the headline Dice: (record key, column title).
CLASS_COLUMNS = (
    ("iou", "IoU"),
    ("pxap", "PxAP"),
    ("pointing_game_10mm", "hit@10mm"),
    ("froc", "FROC"),
    ("fp_area_fraction", "FP area"),
    ("auroc", "AUROC"),
    # Marked as such: its threshold is chosen on the test split itself, so it is an upper bound, never a headline.
    ("dice_oracle", "Dice (oracle)"),
)
FORMATS = ("md", "csv", "tex", "html")


@dataclass
class Row:
    """One leaderboard row: a method aggregated over its seeds (or the uniform reference)."""

    method: str
    supervision: str
    seeds: list[int]
    dice: dict[str, list[float]]
    intervals: dict[str, list[tuple[float, float]]]
    values: dict[str, dict[str, list[float]]]
    n_parameters: list[float] = field(default_factory=list)
    train_seconds: list[float] = field(default_factory=list)
    eval_images_per_s: list[float] = field(default_factory=list)
    devices: set[str] = field(default_factory=set)
    reference: bool = False

    def score(self) -> float:
        """The ranking score: the mean over classes of the seed-mean headline Dice (NaN last)."""
        means = [_mean(self.dice[c]) for c in CLASSES]
        return sum(means) / len(means) if all(math.isfinite(m) for m in means) else -math.inf


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _std(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if len(finite) < 2:
        return math.nan
    m = sum(finite) / len(finite)
    return math.sqrt(sum((v - m) ** 2 for v in finite) / (len(finite) - 1))


def find_records(paths: Iterable[str | Path]) -> list[Path]:
    """``record.json`` files named directly, inside run folders, or anywhere below folders of runs (sorted).

    Raises:
        FileNotFoundError: a path does not exist or holds no record.
    """
    found: set[Path] = set()
    for p in map(Path, paths):
        if p.is_file():
            found.add(p)
        elif (p / "record.json").is_file():
            found.add(p / "record.json")
        elif p.is_dir():
            below = sorted(p.rglob("record.json"))
            if not below:
                raise FileNotFoundError(f"{p} holds no record.json; pass run folders made by `wsseg run`")
            found.update(below)
        else:
            raise FileNotFoundError(f"{p} does not exist; pass run folders or record.json files")
    return sorted(found)


def load_record(path: Path) -> dict[str, Any]:
    """Read one run record, with an error that names the file when it is not one.

    Raises:
        ValueError: unreadable JSON or not a ``wsseg run`` record.
    """
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read run record {path}: {e}; re-run the evaluation or remove it") from e
    if not isinstance(record, dict) or "metrics" not in record or "method" not in record:
        raise ValueError(f"{path} is not a wsseg run record (no 'method'/'metrics'); pass `wsseg run` output")
    return record


COMPARABILITY = ("dataset", "dataset version", "test split", "profile", "evaluation protocol", "initialisation")


def initialisation_label(record: dict[str, Any]) -> str:
    """How a run's networks started: ``random``, or its non-random initialisations joined.

    ``imagenet:<timm tag>`` or ``file:<sha256>`` from the record's ``initialisation``; a record made before that
    key is ``random``, or ``file:<path>`` when its config names a backbone weights file.
    """
    if "initialisation" not in record:
        weights = (record.get("config", {}).get("method_config") or {}).get("backbone_weights")
        return f"file:{weights}" if weights else "random"
    used = sorted({str(v) for v in (record.get("initialisation") or {}).values() if v != "random"})
    return "+".join(used) if used else "random"


def comparability_key(record: dict[str, Any]) -> tuple[str, ...]:
    """What must be equal for two runs to share a table (see :data:`COMPARABILITY`)."""
    info = record.get("dataset_info", {})
    return (
        str(record.get("dataset")),
        str(info.get("version")),
        str(info.get("split_hashes", {}).get("test")),
        str(record.get("profile")),
        json.dumps(record.get("evaluation", {}), sort_keys=True),
        # Pretrained and randomly initialised runs answer different questions: never ranked in one table.
        initialisation_label(record),
    )


def describe_difference(a: tuple[str, ...], b: tuple[str, ...]) -> str:
    """Name the fields in which two comparability keys differ, e.g. ``profile ('quick' vs 'paper')``."""
    parts = []
    for name, x, y in zip(COMPARABILITY, a, b, strict=True):
        if x != y:
            parts.append(f"{name} (settings differ)" if name == "evaluation protocol" else f"{name} ({x!r} vs {y!r})")
    return ", ".join(parts) or "nothing"


def group_records(records: Sequence[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Comparable records grouped by :func:`comparability_key`, groups in key order."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault(comparability_key(record), []).append(record)
    return dict(sorted(groups.items()))


def build_rows(records: Sequence[dict[str, Any]]) -> list[Row]:
    """Aggregate comparable records into ranked rows (one per method), then the uniform reference row.

    Raises:
        ValueError: two records of the same method and seed (a duplicate run).
    """
    rows: dict[str, Row] = {}
    for r in sorted(records, key=lambda r: (r["method"], r.get("seed", 0), r.get("run_id", ""))):
        row = rows.setdefault(
            r["method"],
            Row(
                r["method"],
                r.get("supervision", "weak"),
                [],
                {c: [] for c in CLASSES},
                {c: [] for c in CLASSES},
                {c: {k: [] for k, _ in CLASS_COLUMNS} for c in CLASSES},
            ),
        )
        seed = int(r.get("seed", 0))
        if seed in row.seeds:
            raise ValueError(
                f"two runs of {r['method']} with seed {seed} ({r.get('run_id')}); keep one per seed in the inputs"
            )
        row.seeds.append(seed)
        for c in CLASSES:
            m = r["metrics"].get(c, {})
            row.dice[c].append(float(m.get("dice", math.nan)))
            interval = r.get("intervals", {}).get(c, {}).get("dice")
            if interval:
                row.intervals[c].append((float(interval[0]), float(interval[1])))
            for key, _ in CLASS_COLUMNS:
                row.values[c][key].append(float(m.get(key, math.nan)))
        if r.get("n_parameters") is not None:
            row.n_parameters.append(float(r["n_parameters"]))
        row.train_seconds.append(float(r.get("timings", {}).get("train", math.nan)))
        row.eval_images_per_s.append(float(r.get("throughput", {}).get("eval_images_per_s", math.nan)))
        row.devices.add(str(r.get("device", "")))
    ranked = sorted(rows.values(), key=lambda row: (-row.score(), row.method))
    ref = _reference_row(records)
    return ranked + ([ref] if ref is not None else [])


def _reference_row(records: Sequence[dict[str, Any]]) -> Row | None:
    # The reference map is data-only (no training), so every comparable run scores it identically: take one.
    for r in sorted(records, key=lambda r: (r["method"], r.get("seed", 0))):
        ref = r.get("references", {}).get("uniform_breast")
        if ref:
            row = Row(
                "uniform (breast)",
                "reference",
                [],
                {c: [float(ref.get(c, {}).get("dice", math.nan))] for c in CLASSES},
                {c: [] for c in CLASSES},
                {c: {k: [float(ref.get(c, {}).get(k, math.nan))] for k, _ in CLASS_COLUMNS} for c in CLASSES},
                reference=True,
            )
            return row
    return None


def _f(value: float, digits: int = 3) -> str:
    return "-" if not math.isfinite(value) else f"{value:.{digits}f}"


def _dice_cell(row: Row, c: str) -> tuple[str, str, str]:
    mean, std = _mean(row.dice[c]), _std(row.dice[c])
    lows, highs = [i[0] for i in row.intervals[c]], [i[1] for i in row.intervals[c]]
    ci = f"[{_f(_mean(lows))}, {_f(_mean(highs))}]" if lows else "-"
    return _f(mean), _f(std), ci


def table(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """Header and string cells of a leaderboard (fixed formatting: the output is byte-stable)."""
    header = ["rank", "method", "supervision", "seeds"]
    for c in CLASSES:
        header += [f"{c} Dice", f"{c} Dice std", f"{c} Dice 95% CI"] + [f"{c} {t}" for _, t in CLASS_COLUMNS]
    header += ["parameters", "train s", "eval img/s", "device"]
    cells = []
    rank = 0
    for row in rows:
        rank += 0 if row.reference else 1
        line = ["" if row.reference else str(rank), row.method, row.supervision, str(len(row.seeds)) or "-"]
        for c in CLASSES:
            line += list(_dice_cell(row, c))
            line += [_f(_mean(row.values[c][k])) for k, _ in CLASS_COLUMNS]
        params = _mean(row.n_parameters)
        line += [
            f"{params / 1e6:.2f}M" if math.isfinite(params) else "-",
            _f(_mean(row.train_seconds), 0),
            _f(_mean(row.eval_images_per_s), 1),
            ", ".join(sorted(d for d in row.devices if d)) or "-",
        ]
        cells.append(line)
    return header, cells


def render(rows: Sequence[Row], fmt: str, title: str) -> str:
    """The leaderboard as Markdown, CSV or LaTeX (booktabs) text."""
    header, cells = table(rows)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(cells)
        return buf.getvalue()
    if fmt == "md":
        lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in cells]
        notes = [
            "",
            "Dice: test split, at the threshold calibrated on validation, averaged over images with a lesion of the "
            "class; mean and standard deviation over seeds, and the mean of the seeds' 95% patient-bootstrap "
            "intervals. Other columns are means over seeds. `full` rows are trained on masks (an upper bound); "
            "`uniform (breast)` is the floor. `Dice (oracle)` uses the threshold that is best on the test split "
            "itself: an upper bound, not a result.",
        ]
        return "\n".join(lines + notes) + "\n"
    if fmt == "tex":

        def esc(s: str) -> str:
            for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("_", "\\_"), ("#", "\\#")):
                s = s.replace(a, b)
            return s

        lines = [
            f"% {esc(title)}",
            "\\begin{tabular}{" + "l" * len(header) + "}",
            "\\toprule",
            " & ".join(esc(h) for h in header) + " \\\\",
            "\\midrule",
        ]
        lines += [" & ".join(esc(c) for c in line) + " \\\\" for line in cells]
        lines += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown leaderboard format {fmt!r}; choose from {', '.join(FORMATS)}")


def write_report(path: Path, rows: Sequence[Row], title: str, runs: Sequence[RunFiles]) -> list[Path]:
    """Write the HTML report of one group to ``path`` and its plots as SVG files under ``figures/`` beside it."""
    header, cells = table(rows)
    supervision = ["reference" if row.reference else row.supervision for row in rows]
    page, figures = render_report(title, header, cells, supervision, runs, [r.method for r in rows if not r.reference])
    written = [atomic_write_text(path, page)]
    for name, svg in sorted(figures.items()):
        target = path.parent / "figures" / f"{path.stem.removeprefix('leaderboard-')}-{name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        written.append(atomic_write_text(target, svg + "\n"))
    return written


def group_name(key: tuple[str, ...], keys: Sequence[tuple[str, ...]] = ()) -> str:
    """A file-name stem for a comparable group: dataset, profile and the test split hash.

    When another of ``keys`` shares that stem (another dataset version or evaluation protocol on the same test
    split), a short hash of the whole key is appended, so that no group's table overwrites another's.
    """
    dataset, _version, split, profile = key[:4]
    stem = f"leaderboard-{dataset}-{profile}-{split}"
    if any(k != key and (k[0], k[2], k[3]) == (dataset, split, profile) for k in keys):
        stem += "-" + hashlib.sha256(json.dumps(key).encode()).hexdigest()[:8]
    return stem


@dataclass
class LeaderboardResult:
    """What :func:`write_leaderboards` wrote, and the differences between the groups it found."""

    files: list[Path]
    groups: list[tuple[str, int]]
    differences: list[str]


def write_leaderboards(
    paths: Iterable[str | Path], out_dir: str | Path, formats: Sequence[str] = FORMATS
) -> LeaderboardResult:
    """Write one leaderboard per comparable group of the runs under ``paths`` into ``out_dir`` (atomically).

    Raises:
        FileNotFoundError: a path holds no record.
        ValueError: an unreadable record, a duplicate (method, seed) in a group, or an unknown format.
    """
    for fmt in formats:
        if fmt not in FORMATS:
            raise ValueError(f"unknown leaderboard format {fmt!r}; choose from {', '.join(FORMATS)}")
    found = find_records(paths)
    records = [load_record(p) for p in found]
    folders = {id(r): p.parent for r, p in zip(records, found, strict=True)}
    groups = group_records(records)
    keys = list(groups)
    differences = [
        f"{group_name(a, keys)} vs {group_name(b, keys)}: {describe_difference(a, b)}"
        for i, a in enumerate(keys)
        for b in keys[i + 1 :]
    ]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for key, members in groups.items():
        rows = build_rows(members)
        title = f"{key[0]} ({key[1]}), profile {key[3]}, test split {key[2]}: {len(members)} runs"
        if key[5] != "random":
            title += f", initialised {key[5]}"
        for fmt in formats:
            path = out / f"{group_name(key, keys)}.{fmt}"
            if fmt == "html":
                files += write_report(path, rows, title, [RunFiles(r, folders[id(r)]) for r in members])
                continue
            with atomic_open(path, "w") as f:
                f.write(render(rows, fmt, title))
            files.append(path)
    return LeaderboardResult(files, [(group_name(k, keys), len(v)) for k, v in groups.items()], differences)
