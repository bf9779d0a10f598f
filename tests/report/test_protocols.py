"""The protocol files under benchmarks/ run end to end on their dataset's fixture (tiny profile, cheap methods)."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from md_tables import header_of, row_of
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.data import fixtures
from wsseg.evaluation.lesions import SIZE_BINS_MM
from wsseg.pipelines.benchmark import BenchmarkOverrides, load_benchmark

runner = CliRunner()
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def run_protocol(
    name: str, data: Path, tmp_path: Path, cache_dir: Path, methods: str, extra: tuple[str, ...] = ()
) -> tuple[Path, Path, Any]:
    """``wsseg benchmark benchmarks/<name>.toml --data-root DATA`` at the tiny profile, 1 seed, into ``tmp_path``."""
    runs, board = tmp_path / "runs", tmp_path / "lb"
    args = ["benchmark", str(BENCHMARKS / f"{name}.toml"), "--data-root", str(data), "--profile", "tiny"]
    args += ["--methods", methods, "--seeds", "0", "--out", str(runs), "--leaderboard", str(board), "-q"]
    args += ["--set", f"data.cache_dir={cache_dir}", "--set", "train.epochs=1", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return runs, board, result


def per_image_ids(folder: Path) -> list[str]:
    with open(folder / "per_image.csv", newline="") as f:
        return sorted({row["image_id"] for row in csv.DictReader(f)})


def test_mini_mias_5fold_runs_every_fold_and_writes_one_aggregated_leaderboard(tmp_path: Path, cache_dir: Path) -> None:
    fixtures.write_mias(tmp_path / "dl", n_pairs=10)  # 20 images of 10 patients
    runs, board, result = run_protocol("mini-mias-5fold", tmp_path / "dl", tmp_path, cache_dir, "cam,uniform")
    assert "1 seeds x 5 folds" in result.output
    names = sorted(p.name for p in runs.iterdir() if p.name not in ("submitit", ".wsseg.lock"))  # lock: the benchmark's
    assert names == sorted(f"{m}-mini-mias-tiny-s0-fold{f}of5" for m in ("cam", "uniform") for f in range(5))
    # Every image is tested by exactly one fold; all folds used the same assignment, the one `data split` writes.
    tested = Counter(i for f in range(5) for i in per_image_ids(runs / f"cam-mini-mias-tiny-s0-fold{f}of5"))
    assert len(tested) == 20 and set(tested.values()) == {1}
    assignments = {(runs / n / "folds.csv").read_bytes() for n in names}
    assert len(assignments) == 1
    split = runner.invoke(
        app,
        ["data", "split", "mini-mias", "--root", str(tmp_path / "dl"), "--folds", "5", "--out", str(tmp_path / "f")],
    )
    assert split.exit_code == 0 and (tmp_path / "f").read_bytes() in assignments
    record = json.loads((runs / "cam-mini-mias-tiny-s0-fold3of5" / "record.json").read_text())
    assert record["dataset_info"]["folds"]["fold"] == 3 and record["config"]["data"]["folds"] == 5
    # One leaderboard for the whole cross-validation: the folds aggregated, the interval from the pooled folds.
    (md,) = (p for p in board.glob("*.md") if not p.stem.endswith("-lesions"))
    text = md.read_text()
    assert md.name.startswith("leaderboard-mini-mias-tiny-5fold-") and ": 10 runs" in text
    cells = row_of(text, "cam", after="benign: Dice")
    assert cells[3:5] == ["1", "5/5"] and cells[7].startswith("[")  # benign Dice 95% CI from the pooled folds
    check_fold_rank_groups_and_lesions(text, (board / md.name.replace(".md", "-lesions.md")).read_text(), runs)
    # The published folder holds what regenerates the tables, the per-image statistics of every fold included.
    again = runner.invoke(app, ["leaderboard", str(board / "runs"), "--out", str(tmp_path / "again"), "--format", "md"])
    assert again.exit_code == 0 and (tmp_path / "again" / md.name).read_bytes() == md.read_bytes()


def union_of_folds(runs: Path, method: str) -> dict[str, dict[str, tuple[float, float]]]:
    """Per class, per image of all five test folds: (lesion pixels, Dice), read from each fold's per_image.csv."""
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for f in range(5):
        with open(runs / f"{method}-mini-mias-tiny-s0-fold{f}of5" / "per_image.csv", newline="") as file:
            for row in csv.DictReader(file):
                out.setdefault(row["class"], {})[row["image_id"]] = (float(row["lesion_pixels"]), float(row["dice"]))
    return out


def check_fold_rank_groups_and_lesions(text: str, lesions: str, runs: Path) -> None:
    """A folded leaderboard's rank groups and lesion table cover the union of the test folds, paired by image."""
    cam, uniform = union_of_folds(runs, "cam"), union_of_folds(runs, "uniform")
    for c in ("benign", "malignant"):
        header, row = header_of(text, f"{c}: Dice"), row_of(text, "uniform", after=f"{c}: Dice")
        lesion = sorted(i for i, (gt, _) in cam[c].items() if gt > 0)
        assert len(lesion) > 0 and sorted(uniform[c]) == sorted(cam[c])  # one image set: the union of the folds
        assert row_of(text, "cam", after=f"{c}: Dice")[header.index("group")] == "best"  # the only weak row
        # The difference is the image-averaged Dice over the union, the same images on both sides.
        diff = sum(uniform[c][i][1] - cam[c][i][1] for i in lesion) / len(lesion)
        assert float(row[header.index("diff vs best")]) == pytest.approx(diff, abs=6e-4)
        low, high = (float(v) for v in row[header.index("diff 95% CI")].strip("[]").split(","))
        mark = "= best" if low <= 0 <= high else ("below" if high < 0 else "above")
        assert row[header.index("group")] == mark
        # Lesion table: the size bins partition the union's lesion images, and their Dice averages back to the
        # union's mean.
        lesion_header = header_of(lesions, f"{c}: Dice and hit@10mm")
        counts, by_size = row_of(lesions, "lesion images", f"{c}: Dice"), row_of(lesions, "cam", f"{c}: Dice")
        sizes = [f"{label} Dice" for _, _, label in SIZE_BINS_MM]
        n = {b: int(counts[lesion_header.index(b)]) for b in sizes}
        assert sum(n.values()) == len(lesion) and lesion_header[4] == "folds"
        mean = sum(n[b] * float(by_size[lesion_header.index(b)]) for b in sizes if n[b]) / len(lesion)
        assert mean == pytest.approx(sum(cam[c][i][1] for i in lesion) / len(lesion), abs=1e-3)
    stability = next(line for line in text.splitlines() if line.startswith("Rank stability"))
    assert "1 seed(s)" in stability  # one seed: no tau to compute, said so


PROTOCOLS: dict[str, tuple[str, Callable[[Path], Any], str]] = {
    # protocol file: (dataset, fixture writer, methods)
    "inbreast-5fold": ("inbreast", fixtures.write_inbreast, "uniform"),
    "cbis-ddsm": ("cbis-ddsm", fixtures.write_cbis, "cam,uniform"),
    "vindr-mammo": ("vindr-mammo", fixtures.write_vindr, "cam,uniform"),
    "nyu": ("nyu", fixtures.write_nyu, "cam,uniform"),
}


@pytest.mark.parametrize("name", sorted(PROTOCOLS))
def test_each_protocol_file_runs_on_its_fixture(name: str, tmp_path: Path, cache_dir: Path) -> None:
    dataset, write, methods = PROTOCOLS[name]
    write(tmp_path / "dl")
    bench = load_benchmark(BENCHMARKS / f"{name}.toml", BenchmarkOverrides(data_root=str(tmp_path / "dl")))
    every = load_benchmark(BENCHMARKS / "phantom-quick.toml").methods
    assert bench.datasets == [dataset] and bench.seeds == [0, 1, 2] and bench.methods == every
    runs, board, _ = run_protocol(name, tmp_path / "dl", tmp_path, cache_dir, methods)
    records = [json.loads(p.read_text()) for p in sorted(runs.glob("*/record.json"))]
    folds = bench.folds or 1
    assert len(records) == folds * len(methods.split(","))
    assert all(r["dataset"] == dataset for r in records)
    (md,) = (p for p in board.glob("*.md") if not p.stem.endswith("-lesions"))  # the main table, not the lesion one
    assert (f"{bench.folds}-fold cross-validation" in md.read_text()) == (bench.folds is not None)


def test_protocol_files_document_themselves_and_need_a_download() -> None:
    for name in ("mini-mias-5fold", "inbreast-5fold", "cbis-ddsm", "vindr-mammo", "nyu"):
        text = (BENCHMARKS / f"{name}.toml").read_text()
        header = text.split("[benchmark]")[0]
        assert "# Protocol:" in header and "# Data:" in header and "--data-root" in header, name
        with pytest.raises(ValueError, match="needs data_root"):
            load_benchmark(BENCHMARKS / f"{name}.toml")
        assert load_benchmark(BENCHMARKS / f"{name}.toml", BenchmarkOverrides(data_root="/data")).data_root == "/data"
