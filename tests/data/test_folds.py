"""k-fold cross-validation by patient: disjoint folds that test every patient once, stratified, and reproducible."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.data.dataset import SPLITS, MammogramDataset, read_manifest
from wsseg.data.folds import (
    STRATA,
    assign_folds,
    dataset_patient_labels,
    folds_csv_text,
    load_assignment,
    read_folds_file,
)

runner = CliRunner()
EXPECTED = Path(__file__).parent / "folds_expected.csv"


def fixed_labels() -> dict[str, str]:
    """The 40 patients of the committed expected assignment: 8 malignant, 11 benign, 21 normal."""
    return {f"case-{i:02d}": "malignant" if i % 5 == 0 else "benign" if i % 3 == 0 else "normal" for i in range(40)}


def test_every_patient_is_tested_in_exactly_one_fold_and_the_folds_are_stratified() -> None:
    rng = random.Random(3)
    labels = {f"p{i:03d}": rng.choice(STRATA) for i in range(161)}
    table = assign_folds(labels, 5, seed=0)
    assert set(table) == set(labels)
    assert all(splits.count("test") == 1 for splits in table.values())  # each patient tested once
    sizes = Counter(splits.index("test") for splits in table.values())
    assert sorted(sizes) == [0, 1, 2, 3, 4] and max(sizes.values()) - min(sizes.values()) <= 1
    for f in range(5):
        train = [p for p, s in table.items() if s[f] == "train"]
        val = [p for p, s in table.items() if s[f] == "val"]
        # Validation is 15% of the training folds' patients, never a test patient of the fold.
        assert len(val) == round(0.15 * (len(train) + len(val)))
        for label in STRATA:
            n = sum(v == label for v in labels.values())
            tested = sum(labels[p] == label for p, s in table.items() if s[f] == "test")
            assert abs(tested - n / 5) < 1  # each label spread over the folds as evenly as it can be
            in_val = sum(labels[p] == label for p in val)
            assert abs(in_val - len(val) * n / len(labels)) <= 2  # the carve-out is stratified too


def test_the_assignment_is_the_committed_one_whatever_the_order_of_the_input() -> None:
    labels = fixed_labels()
    items = list(labels.items())
    random.Random(7).shuffle(items)
    assert folds_csv_text(assign_folds(dict(items), 5, seed=0)) == EXPECTED.read_text()
    assert read_folds_file(EXPECTED, 5) == assign_folds(labels, 5, seed=0)
    assert assign_folds(labels, 5, seed=1) != assign_folds(labels, 5, seed=0)  # the seed matters


SCRIPT = """
import random, sys
from wsseg.data.folds import assign_folds, folds_csv_text
labels = {f"case-{i:02d}": "malignant" if i % 5 == 0 else "benign" if i % 3 == 0 else "normal" for i in range(40)}
items = list(labels.items())
random.Random(int(sys.argv[1])).shuffle(items)
sys.stdout.write(folds_csv_text(assign_folds(dict(items), 5, seed=0)))
"""


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_the_assignment_does_not_depend_on_the_python_hash_seed(hash_seed: str) -> None:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, hash_seed], env=env, capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout == EXPECTED.read_text()


def test_folds_of_a_prepared_dataset_are_disjoint_by_patient_and_cover_it(tiny_root: Path) -> None:
    labels = dataset_patient_labels("phantom", None, tiny_root)
    folds = load_assignment("phantom", labels, 4, seed=0)
    all_patients = {r["patient_id"] for r in read_manifest(tiny_root)}
    tested: list[str] = []
    for f in range(4):
        sets = {
            s: {m["patient_id"] for m in MammogramDataset(tiny_root, s, False, patient_splits=folds.splits(f)).rows}
            for s in SPLITS
        }
        assert (
            not (sets["train"] & sets["val"])
            and not (sets["train"] & sets["test"])
            and not (sets["val"] & sets["test"])
        )
        assert sets["train"] | sets["val"] | sets["test"] == all_patients
        tested += sorted(sets["test"])
    assert sorted(tested) == sorted(all_patients)  # every patient tested in exactly one fold


def test_bad_fold_options_are_one_line_errors(tmp_path: Path, cache_dir: Path) -> None:
    base = ["run", "-m", "uniform", "--profile", "tiny", "--cache-dir", str(cache_dir), "--out", str(tmp_path), "-q"]
    for extra, message in (
        (["--fold", "1"], "--folds K and --fold F go together"),
        (["--folds", "5"], "--folds K and --fold F go together"),
        (["--folds", "1", "--fold", "0"], "--folds must be at least 2"),
        (["--folds", "5", "--fold", "5"], "--fold must be in 0..4"),
        (["--folds", "40", "--fold", "0"], "8 patients cannot make 40 folds"),
    ):
        result = runner.invoke(app, base + extra)
        # One error line holding the message (a run that got as far as its data has logged its CPU line before).
        errors = [line for line in result.output.splitlines() if line.startswith("error:")]
        assert result.exit_code == 2 and len(errors) == 1 and message in errors[0], (extra, result.output)
        assert "Traceback" not in result.output


def test_a_folded_phantom_run_records_its_fold_and_writes_the_assignment(tmp_path: Path, cache_dir: Path) -> None:
    args = ["run", "-m", "uniform", "--profile", "tiny", "--cache-dir", str(cache_dir), "--out", str(tmp_path)]
    result = runner.invoke(app, [*args, "--folds", "4", "--fold", "1", "--save-maps", "-q"])
    assert result.exit_code == 0, result.output
    (folder,) = tmp_path.iterdir()
    assert folder.name.startswith("uniform-phantom-tiny-s0-fold1of4-")
    record = json.loads((folder / "record.json").read_text())
    info = record["dataset_info"]["folds"]
    assert (info["k"], info["fold"], info["source"]) == (4, 1, "derived")
    assert record["config"]["data"]["folds"] == 4 and record["config"]["data"]["fold"] == 1
    table = read_folds_file(folder / "folds.csv", 4)
    test_patients = {p for p, s in table.items() if s[1] == "test"}
    ids = [line.split(",")[0] for line in (folder / "per_image.csv").read_text().splitlines()[1:]]
    assert len(ids) == 2 * record["dataset_info"]["counts"]["test"]  # one row per image and class
    assert info["patients"]["test"] == len(test_patients) == record["dataset_info"]["counts"]["test"] // 4
    # `wsseg evaluate` re-scores the fold's own test images.
    evaluated = runner.invoke(app, ["evaluate", "--run", str(folder), "--cache-dir", str(cache_dir), "-q"])
    assert evaluated.exit_code == 0, evaluated.output
    again = json.loads((folder / "evaluate" / "record.json").read_text())
    assert again["metrics"]["benign"]["dice"] == pytest.approx(
        record["metrics"]["benign"]["dice"], abs=1e-3, nan_ok=True
    )


def test_data_split_folds_writes_what_a_run_uses_and_a_committed_file_pins_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsseg.data import prepare
    from wsseg.data.fixtures import write_mias

    write_mias(tmp_path / "dl", n_pairs=12)
    out = tmp_path / "mini-mias-5fold.csv"
    result = runner.invoke(
        app, ["data", "split", "mini-mias", "--root", str(tmp_path / "dl"), "--folds", "5", "--out", str(out)]
    )
    assert result.exit_code == 0 and "12 patients in 5 folds" in result.output, result.output
    assert result.output.count("  fold ") == 5
    labels = dataset_patient_labels("mini-mias", tmp_path / "dl")
    assert out.read_text() == folds_csv_text(load_assignment("mini-mias", labels, 5, 0).table)
    # A committed benchmarks/splits/<dataset>-<k>fold.csv is read instead of the rule (here: a rotated copy).
    table = read_folds_file(out, 5)
    rotated = {p: s[1:] + s[:1] for p, s in table.items()}
    monkeypatch.setattr(prepare, "SPLITS_DIR", tmp_path / "splits")
    (tmp_path / "splits").mkdir()
    (tmp_path / "splits" / "mini-mias-5fold.csv").write_text(folds_csv_text(rotated))
    pinned = load_assignment("mini-mias", labels, 5, 0)
    assert pinned.table == rotated and pinned.source == "mini-mias-5fold.csv"
    # One that lacks a patient of the download is refused with the command that rewrites it.
    del rotated[sorted(rotated)[0]]
    (tmp_path / "splits" / "mini-mias-5fold.csv").write_text(folds_csv_text(rotated))
    with pytest.raises(ValueError, match="lacks 1 patient.*wsseg data split mini-mias"):
        load_assignment("mini-mias", labels, 5, 0)
    (tmp_path / "splits" / "mini-mias-5fold.csv").write_text("patient_id,split\np,test\n")
    with pytest.raises(ValueError, match="expected the header patient_id,fold0"):
        load_assignment("mini-mias", labels, 5, 0)
