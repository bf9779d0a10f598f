"""`wsseg benchmark`: a TOML file of runs; finished runs are skipped, post-hoc methods reuse CAM, bad files refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from md_tables import row_of
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.pipelines.benchmark import is_posthoc, load_benchmark, source_method

runner = CliRunner()


def _file(tmp_path: Path, cache_dir: Path, body: str) -> Path:
    path = tmp_path / "bench.toml"
    path.write_text(f'[benchmark]\nname = "t"\nprofile = "tiny"\nset = ["data.cache_dir={cache_dir}"]\n' + body)
    return path


def test_benchmark_runs_what_is_missing_then_writes_the_leaderboard(tmp_path: Path, cache_dir: Path) -> None:
    path = _file(tmp_path, cache_dir, 'methods = ["gradcam", "cam", "uniform"]\nseeds = [0]\n')
    first = runner.invoke(app, ["benchmark", str(path), "-q"])
    assert first.exit_code == 0, first.output
    runs = tmp_path / "runs" / "t"
    assert (runs / ".wsseg.lock").is_file()  # the benchmark's lock (see tests/test_crash_safety.py)
    assert sorted(p.name for p in runs.iterdir() if p.name != ".wsseg.lock") == [
        "cam-phantom-tiny-s0",
        "gradcam-phantom-tiny-s0",
        "uniform-phantom-tiny-s0",
    ]
    gradcam = json.loads((runs / "gradcam-phantom-tiny-s0" / "record.json").read_text())
    assert gradcam["training"]["from_run"] == str(runs / "cam-phantom-tiny-s0")  # reused CAM, no training
    md = next(p for p in (tmp_path / "leaderboards" / "t").glob("*.md") if not p.stem.endswith("-lesions"))
    table = md.read_text()
    assert row_of(table, "cam")[2:4] == row_of(table, "gradcam")[2:4] == ["weak", "1"]
    assert row_of(table, "uniform")[2:4] == ["reference", "1"]  # a map that learns nothing is not ranked as weak
    # The leaderboard folder is self-contained: the published records, per-image results (the rank groups'
    # bootstrap), curves and galleries regenerate its tables, rank groups included.
    published = tmp_path / "leaderboards" / "t" / "runs"
    assert sorted(p.name for p in (published / "cam-phantom-tiny-s0").iterdir()) == [
        "curves.json",
        "gallery.npz",
        "per_image.csv",
        "record.json",
    ]
    again = runner.invoke(app, ["leaderboard", str(published), "--out", str(tmp_path / "again"), "--format", "md"])
    assert again.exit_code == 0
    for made in sorted((tmp_path / "leaderboards" / "t").glob("*.md")):
        assert (tmp_path / "again" / made.name).read_bytes() == made.read_bytes()
    # The best weakly supervised row of a class is a weak row, never the uniform reference (the tiny test split's
    # lesions are malignant).
    assert "best" in [row_of(table, m, after="### malignant")[7] for m in ("cam", "gradcam")]
    before = md.read_bytes()
    second = runner.invoke(app, ["benchmark", str(path), "-q"])
    assert second.exit_code == 0 and second.output.count("done, skipped") == 3
    assert md.read_bytes() == before  # byte-stable when nothing changed
    # Other settings into the same folders: the finished runs are not passed off as the new setting's.
    epochs = json.loads((runs / "cam-phantom-tiny-s0" / "record.json").read_text())["config"]["train"]["epochs"]
    for flag, named in (
        (f"train.epochs={epochs + 1}", "cam-phantom-tiny-s0 was made with other settings than this benchmark's"),
        ("train.lr=0.5", f"train.lr: {gradcam['config']['train']['lr']!r} -> 0.5"),
    ):
        third = runner.invoke(app, ["benchmark", str(path), "-q", "--set", flag])
        assert third.exit_code == 2 and named in third.output and "--out" in third.output, third.output
    assert md.read_bytes() == before
    # Nor is a run of an older phantom generator, trained or not (phantom 1's maps scored other images).
    for run in ("cam", "uniform"):
        record_path = runs / f"{run}-phantom-tiny-s0" / "record.json"
        record = json.loads(record_path.read_text())
        version = record["dataset_info"]["version"]
        record["dataset_info"]["version"] = "phantom-0.1"
        record_path.write_text(json.dumps(record))
        stale = runner.invoke(app, ["benchmark", str(path), "-q"])
        assert stale.exit_code == 2, stale.output
        assert f"{run}-phantom-tiny-s0 was made with other settings" in stale.output
        assert f"data version: 'phantom-0.1' -> {version!r}" in stale.output
        record["dataset_info"]["version"] = version
        record_path.write_text(json.dumps(record))


def test_post_hoc_methods_reuse_the_run_of_the_classifier_they_read_and_the_others_train(
    tmp_path: Path, cache_dir: Path
) -> None:
    assert [is_posthoc(m) for m in ("eigencam", "fullgrad", "cutmix", "cam", "gmic")] == [
        True,
        True,
        False,
        False,
        False,
    ]
    assert source_method("scorecam") == "cam"  # the first method it reads, not a name written in the pipeline
    path = _file(tmp_path, cache_dir, 'methods = ["eigencam", "cutmix", "cam"]\nseeds = [0]\n')
    result = runner.invoke(app, ["benchmark", str(path), "-q"])
    assert result.exit_code == 0, result.output
    runs = tmp_path / "runs" / "t"
    eigencam = json.loads((runs / "eigencam-phantom-tiny-s0" / "record.json").read_text())
    cutmix = json.loads((runs / "cutmix-phantom-tiny-s0" / "record.json").read_text())
    assert eigencam["training"]["from_run"] == str(runs / "cam-phantom-tiny-s0") and eigencam["explains"] is None
    assert cutmix["training"]["from_run"] is None and len(cutmix["training"]["history"]) == 2
    (md,) = (p for p in (tmp_path / "leaderboards" / "t").glob("*.md") if not p.stem.endswith("-lesions"))
    table = md.read_text()
    assert all(row_of(table, m)[2:4] == ["weak", "1"] for m in ("cam", "eigencam", "cutmix"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('methods = ["nope"]\nseeds = [0]\n', "unknown methods ['nope']"),
        ('methods = ["cam"]\nseeds = []\n', "seeds must be a non-empty list"),
        ('methods = ["cam"]\nseeds = [0]\nepochs = 3\n', "unknown keys ['epochs']"),
        ('methods = "cam"\nseeds = [0]\n', "methods must be a list"),
        ('methods = ["cam"]\nseeds = [0]\nprofile2 = 1\n', "unknown keys ['profile2']"),
        ("methods = [\n", "is not valid TOML"),
    ],
)
def test_bad_benchmark_files_are_clear_errors(tmp_path: Path, cache_dir: Path, body: str, message: str) -> None:
    path = _file(tmp_path, cache_dir, body)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_benchmark(path)
    result = runner.invoke(app, ["benchmark", str(path)])
    assert result.exit_code == 2 and "error:" in result.output, result.output


def test_the_shipped_benchmark_files_parse() -> None:
    root = Path(__file__).resolve().parents[2] / "benchmarks"
    quick = load_benchmark(root / "phantom-quick.toml")
    assert quick.profile == "quick" and quick.seeds == [0, 1, 2] and "glam" in quick.methods
    zoo = ("xgradcam", "scorecam", "ablationcam", "eigencam", "eigengradcam", "fullgrad", "smoothgradcampp")
    assert set(zoo) | {"has", "acol", "spg", "adl", "cutmix"} <= set(quick.methods)
    assert load_benchmark(root / "phantom-paper.toml").profile == "paper"
