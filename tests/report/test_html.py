"""The HTML report: curves and gallery written by real runs, and the page rendered by headless Chromium.

Chromium is Debian's `chromium` package (`.ci/run` installs it). Without it the browser test is skipped, unless
WSSEG_REQUIRE_CHROMIUM=1 (set by CI), where its absence fails the test.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from wsseg.benchmark import load_benchmark, run_benchmark
from wsseg.evaluation.curves import CURVES_JSON, curves_for_run
from wsseg.report.gallery import GALLERY_NPZ, Gallery
from wsseg.report.leaderboard import write_leaderboards

METHODS = ("cam", "gradcam", "uniform")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> list[Path]:
    """Three real tiny runs (CAM trained for one epoch, Grad-CAM on its classifier, the uniform baseline)."""
    base = tmp_path_factory.mktemp("bench")
    path = base / "b.toml"
    path.write_text(
        '[benchmark]\nname = "h"\nprofile = "tiny"\nseeds = [0]\nmethods = ["cam", "gradcam", "uniform"]\n'
        f'set = ["data.cache_dir={cache_dir}", "train.epochs=1"]\nout = "runs"\nleaderboard = "lb"\n'
    )
    folders, _ = run_benchmark(load_benchmark(path), progress=False, log=lambda _: None)
    return folders


def _record(folder: Path) -> dict:
    return json.loads((folder / "record.json").read_text())


def test_curves_agree_with_the_record(runs: list[Path]) -> None:
    for folder in runs:
        record = _record(folder)
        curves = json.loads((folder / CURVES_JSON).read_text())
        for c in ("benign", "malignant"):
            m = record["metrics"][c]
            dice = [math.nan if d is None else d for d in curves[c]["lesion_size"]["dice"]]
            assert len(dice) == m["n_images"]
            if m["n_images"]:
                assert np.nanmean(dice) == pytest.approx(m["dice"], abs=1e-4)  # 5 significant digits stored
            areas = curves[c]["lesion_size"]["area_mm2"]
            assert areas == sorted(areas) and all(a > 0 for a in areas)
            pr = curves[c]["pr"]
            if pr["recall"]:
                assert pr["recall"][0] == 1.0 and all(np.diff(pr["recall"]) <= 0)  # recall falls as thresholds rise
            froc = curves[c]["froc"]
            assert all(np.diff(froc["fppi"]) >= 0) and all(np.diff(froc["sensitivity"]) >= 0)


def test_curves_carry_each_lesion_images_size_type_hits_and_chance(runs: list[Path]) -> None:
    for folder in runs:
        record = _record(folder)
        curves = json.loads((folder / CURVES_JSON).read_text())
        for c in ("benign", "malignant"):
            block, m = curves[c]["lesion_size"], record["metrics"][c]
            n = int(m["n_images"])
            keys = ("diameter_mm", "n_components", "type", "hit_10mm", "chance_dice", "chance_hit_10mm")
            assert all(len(block[k]) == n for k in keys)
            if not n:
                continue
            assert all(d > 0 for d in block["diameter_mm"]) and set(block["type"]) <= {"mass", "calcification"}
            assert np.mean(block["hit_10mm"]) == pytest.approx(m["pointing_game_10mm"])
            chance = record["references"]["chance"][c]
            assert np.mean(block["chance_hit_10mm"]) == pytest.approx(chance["pointing_game_10mm"], rel=1e-4)
            assert np.mean(block["chance_dice"]) == pytest.approx(chance["dice"], rel=1e-4)
            # The floor row's Dice is the uniform-breast map's, scored by the same evaluator.
            assert chance["dice"] == pytest.approx(record["references"]["uniform_breast"][c]["dice"])


def test_rank_groups_give_the_numbers_of_wsseg_compare(runs: list[Path]) -> None:
    from wsseg.evaluation.scoring import compare_folders
    from wsseg.report.significance import compare_with_best, read_per_image

    cam, gradcam = (next(f for f in runs if f.name.startswith(m + "-")) for m in ("cam", "gradcam"))
    expected = compare_folders(gradcam, cam)["classes"]["malignant"]["dice"]  # gradcam - cam, from the histograms
    per_image = [read_per_image(f, _record(f)) for f in (cam, gradcam)]
    got = compare_with_best([per_image[0]["malignant"]], [per_image[1]["malignant"]])
    assert (got.diff, got.low, got.high) == pytest.approx((expected["diff"], expected["low"], expected["high"]))


def test_curves_are_rebuilt_from_the_statistics_when_the_file_is_missing(runs: list[Path], tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(runs[0], folder)
    written = json.loads((folder / CURVES_JSON).read_text())
    (folder / CURVES_JSON).unlink()
    assert curves_for_run(folder, _record(folder)) == written


def test_every_method_shows_the_same_gallery_images(runs: list[Path]) -> None:
    galleries = [Gallery.load(folder / GALLERY_NPZ) for folder in runs]
    first = galleries[0]
    assert first.image_ids and all(g.image_ids == first.image_ids for g in galleries)
    for g in galleries:
        assert g.maps.dtype == np.uint8 and g.maps.shape == g.masks.shape
        for i, c in enumerate(g.lesion_class):
            k = ("benign", "malignant").index(c)
            assert g.masks[i, k].any() and not g.masks[i, 1 - k].any()  # chosen for one class's lesion only


def _chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("WSSEG_REQUIRE_CHROMIUM") == "1":
        pytest.fail("WSSEG_REQUIRE_CHROMIUM=1 but no chromium on PATH; install Debian's chromium package")
    return found


def test_report_renders_in_headless_chromium_without_console_errors(runs: list[Path], tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    result = write_leaderboards(runs, tmp_path, ["html"])
    (page,) = [p for p in result.files if p.suffix == ".html"]
    assert len([p for p in result.files if p.suffix == ".svg"]) == 6  # three plots per class
    proc = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The page's script writes what it found once everything loaded; a script error would leave no attribute.
    rendered = re.search(r'data-rendered="rows=(\d+) images=(\d+) broken=(\d+) svgs=(\d+)"', proc.stdout)
    assert rendered, proc.stdout[:2000]
    rows, images, broken, svgs = map(int, rendered.groups())
    n_gallery = len(Gallery.load(runs[0] / GALLERY_NPZ).image_ids)
    assert rows == len(METHODS) + 1  # the methods and the uniform-breast floor
    assert images == n_gallery * (len(METHODS) + 1) and broken == 0  # every map and each ground truth
    assert svgs == 6
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console


def test_report_is_deterministic(runs: list[Path], tmp_path: Path) -> None:
    a = write_leaderboards(runs, tmp_path / "a", ["html"])
    b = write_leaderboards(runs, tmp_path / "b", ["html"])
    assert [p.read_bytes() for p in a.files] == [p.read_bytes() for p in b.files]


def test_gallery_command_remakes_a_runs_gallery_from_its_checkpoint(runs: list[Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from wsseg.cli import app

    folder = tmp_path / "cam"
    shutil.copytree(runs[0], folder)
    original = Gallery.load(folder / GALLERY_NPZ)
    (folder / GALLERY_NPZ).unlink()
    result = CliRunner().invoke(app, ["gallery", "--run", str(folder)])
    assert result.exit_code == 0, result.output
    remade = Gallery.load(folder / GALLERY_NPZ)
    assert remade.image_ids == original.image_ids
    assert np.abs(remade.maps.astype(int) - original.maps.astype(int)).max() <= 1  # same weights, same maps
