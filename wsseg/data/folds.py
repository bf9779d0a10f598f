"""k-fold cross-validation by patient: a deterministic, label-stratified fold assignment and its split file.

Small public sets (INbreast 410 images, mini-MIAS 322) leave too few lesion images in one 15% test split for a
result, so published work on them reports k-fold patient cross-validation. wsseg's rule:

1. Each patient gets one label, the worst of its images: ``malignant`` > ``benign`` > ``normal``.
2. Within each label, patients are ordered by ``sha256("<seed>:<patient_id>")``; the labels' lists are joined in
   that label order and dealt round robin: the i-th patient is tested in fold ``i mod k``. Every label is spread
   over the folds as evenly as it can be (counts differ by at most one), and fold sizes differ by at most one.
3. Fold f trains on the other folds' patients, less a validation set carved from them: ordered by label, then by
   ``sha256("<seed>:val:<f>:<patient_id>")``, every ``1 / fraction``-th patient (systematic sampling, so each label
   gives its share), with fraction 0.15 of the training patients, the rule the official splits' carve-out uses.

The order depends on the patient ids and labels only: not on file order, the platform or Python's hash seed
(``hashlib`` is not salted), so the assignment is reproduced exactly from the same download anywhere.

The assignment is written as a split file in the format of ``benchmarks/splits/``, one column per fold:
``patient_id,fold0,...,fold{k-1}`` with each cell ``train``, ``val`` or ``test``, sorted by patient id. Each
column on its own is a ``patient_id,split`` file of that fold.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsseg._io import atomic_write_text
from wsseg.data.dataset import SPLITS

# Patient labels from worst to mildest: the stratification order.
STRATA = ("malignant", "benign", "normal")
# Validation patients carved from the training folds: the fraction the official splits' carve-out uses.
VAL_FRACTION = 0.15
FOLDS_RULE = (
    "patients stratified by their worst image label (malignant > benign > normal), ordered by sha256(seed:patient) "
    "within a label and dealt round robin into the folds; validation: 15% of the training folds' patients, "
    "stratified, by sha256(seed:val:fold:patient)"
)


def patient_labels(items: Iterable[tuple[str, Sequence[float]]]) -> dict[str, str]:
    """patient_id -> its stratum (``malignant``, ``benign`` or ``normal``) from ``(patient_id, (benign, malignant))``.

    A patient is as bad as its worst image.
    """
    worst: dict[str, int] = {}
    for patient, (benign, malignant) in items:
        rank = 0 if malignant > 0 else 1 if benign > 0 else 2
        worst[patient] = min(worst.get(patient, 2), rank)
    return {p: STRATA[r] for p, r in worst.items()}


def _ordered(labels: dict[str, str], salt: str) -> list[str]:
    """Patients by stratum, then by ``sha256(salt + patient_id)``: a fixed order that depends on nothing else."""
    return sorted(labels, key=lambda p: (STRATA.index(labels[p]), hashlib.sha256(f"{salt}{p}".encode()).hexdigest()))


def check_folds(k: int, fold: int | None = None) -> None:
    """Refuse a fold count below 2 or a fold outside ``0 .. k-1``.

    Raises:
        ValueError: naming the option and its valid range.
    """
    if k < 2:
        raise ValueError(f"--folds must be at least 2 (cross-validation needs two folds), got {k}")
    if fold is not None and not 0 <= fold < k:
        raise ValueError(f"--fold must be in 0..{k - 1} for --folds {k} (folds count from 0), got {fold}")


def assign_folds(labels: dict[str, str], k: int, seed: int) -> dict[str, list[str]]:
    """patient_id -> its split in each of the ``k`` folds (``train``, ``val`` or ``test``); see the module docstring.

    Raises:
        ValueError: ``k`` below 2, or fewer patients than a fold needs (each fold needs test, val and train).
    """
    check_folds(k)
    n = len(labels)
    # Every fold needs a test patient, and the largest test fold must leave a validation and a training patient.
    if n < k or n - -(-n // k) < 2:
        raise ValueError(
            f"{len(labels)} patients cannot make {k} folds (each fold needs a test, a validation and a training "
            "patient); use fewer --folds or a single split"
        )
    test_fold = {p: i % k for i, p in enumerate(_ordered(labels, f"{seed}:"))}
    table = {p: ["train"] * k for p in labels}
    for f in range(k):
        train = [p for p in _ordered(labels, f"{seed}:val:{f}:") if test_fold[p] != f]
        n, n_val = len(train), max(1, round(len(train) * VAL_FRACTION))
        for i, p in enumerate(train):
            if (i + 1) * n_val // n > i * n_val // n:  # systematic sampling: n_val patients spread over the strata
                table[p][f] = "val"
        for p, t in test_fold.items():
            if t == f:
                table[p][f] = "test"
    return table


def folds_csv_text(table: dict[str, list[str]]) -> str:
    """The assignment as ``patient_id,fold0,...`` CSV text, sorted by patient id (the ``benchmarks/splits`` style)."""
    k = len(next(iter(table.values()))) if table else 0
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["patient_id", *(f"fold{f}" for f in range(k))])
    writer.writerows([p, *splits] for p, splits in sorted(table.items()))
    return buf.getvalue()


def assignment_hash(table: dict[str, list[str]]) -> str:
    """A short hash of the whole assignment (every fold's split of every patient): the folds' comparability key."""
    return hashlib.sha256(folds_csv_text(table).encode()).hexdigest()[:16]


def read_folds_file(path: Path, k: int) -> dict[str, list[str]]:
    """patient_id -> splits per fold from a file written by :func:`folds_csv_text`.

    Raises:
        ValueError: another number of folds, an unknown split value, or a patient not tested exactly once; the
            message names the file and line.
    """
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    want = ["patient_id", *(f"fold{f}" for f in range(k))]
    if not rows or rows[0] != want:
        raise ValueError(
            f"{path}: expected the header {','.join(want)} (a {k}-fold file written by `wsseg data split --folds {k}`)"
        )
    table = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != k + 1 or any(s not in SPLITS for s in row[1:]) or row[1:].count("test") != 1:
            raise ValueError(
                f"{path}:{line}: expected a patient id and {k} splits (train, val or test) with exactly one test; "
                "regenerate the file with `wsseg data split --folds`"
            )
        table[row[0]] = row[1:]
    return table


def fold_counts(table: dict[str, list[str]], labels: dict[str, str]) -> list[dict[str, dict[str, int]]]:
    """Per fold, per split, patients per stratum (what ``wsseg data split --folds`` prints)."""
    k = len(next(iter(table.values()))) if table else 0
    out = []
    for f in range(k):
        counts = {s: dict.fromkeys(STRATA, 0) for s in SPLITS}
        for p, splits in table.items():
            counts[splits[f]][labels.get(p, "normal")] += 1
        out.append(counts)
    return out


@dataclass
class FoldAssignment:
    """A k-fold assignment of a dataset's patients and where it came from.

    Attributes:
        table: patient_id -> split in each fold.
        labels: patient_id -> stratum.
        seed: the seed of the rule (the dataset seed, ``data.seed``).
        source: ``derived`` (by the rule, from the download's index) or the split file it was read from.
    """

    table: dict[str, list[str]]
    labels: dict[str, str]
    seed: int
    source: str

    @property
    def k(self) -> int:
        """The number of folds."""
        return len(next(iter(self.table.values())))

    def splits(self, fold: int) -> dict[str, str]:
        """patient_id -> ``train``/``val``/``test`` in ``fold``."""
        return {p: s[fold] for p, s in self.table.items()}

    def info(self, fold: int) -> dict[str, Any]:
        """The run record's ``dataset_info.folds`` block."""
        return {
            "k": self.k,
            "fold": fold,
            "seed": self.seed,
            "assignment": assignment_hash(self.table),
            "source": self.source,
            "file": FOLDS_FILE,
            "rule": FOLDS_RULE,
            "patients": {s: sum(v == s for v in self.splits(fold).values()) for s in SPLITS},
        }


# The assignment a folded run used, written into its run folder.
FOLDS_FILE = "folds.csv"


def dataset_patient_labels(dataset: str, root: str | Path | None, cache_root: Path | None = None) -> dict[str, str]:
    """patient_id -> stratum of a dataset, as its source reads them (a download's index, or the phantom's cache).

    A data source reads its download's index (no image decoded); the phantom reads its prepared cache's manifest.

    Raises:
        KeyError: an unknown dataset.
        ValueError: a data source without ``root``, or the phantom without its prepared ``cache_root``.
    """
    from wsseg.data.sources import get_source

    return patient_labels(get_source(dataset).patient_labels(root, cache_root))


def committed_folds_file(dataset: str, k: int) -> Path | None:
    """The committed ``benchmarks/splits/<dataset>-<k>fold.csv`` when it exists."""
    from wsseg.data.prepare import SPLITS_DIR

    path = SPLITS_DIR / f"{dataset}-{k}fold.csv"
    return path if path.is_file() else None


def load_assignment(dataset: str, labels: dict[str, str], k: int, seed: int) -> FoldAssignment:
    """The committed ``<dataset>-<k>fold.csv`` when there is one (pinned), else the rule's assignment.

    A committed file must name every patient of the download (patients it names that the download lacks are
    dropped, e.g. for a partial download or a fixture).

    Raises:
        ValueError: too few patients for ``k`` folds, or a committed file that is malformed or lacks patients.
    """
    path = committed_folds_file(dataset, k)
    if path is None:
        return FoldAssignment(assign_folds(labels, k, seed), labels, seed, "derived")
    table = read_folds_file(path, k)
    missing = sorted(set(labels) - set(table))
    if missing:
        raise ValueError(
            f"{path} lacks {len(missing)} patient(s) of this download ({', '.join(missing[:5])}); regenerate it with "
            f"`wsseg data split {dataset} --root DOWNLOAD --folds {k} --out {path}` or remove it"
        )
    return FoldAssignment({p: table[p] for p in labels}, labels, seed, str(path.name))


def make_folds_file(dataset: str, root: str | Path, k: int, seed: int, out: str | Path) -> FoldAssignment:
    """Write the k-fold assignment of a download to ``out`` by the rule, without decoding any image.

    Run on a complete download, it is the file to commit as ``benchmarks/splits/<dataset>-<k>fold.csv``.

    Raises:
        FileNotFoundError: ``root`` does not exist.
        ValueError: the index is unusable or has too few patients for ``k`` folds.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"--root {root} does not exist; point it at the downloaded {dataset} folder")
    labels = dataset_patient_labels(dataset, root)
    folds = FoldAssignment(assign_folds(labels, k, seed), labels, seed, "derived")
    atomic_write_text(Path(out), folds_csv_text(folds.table))
    return folds
