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
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from wsseg.evaluation.curves import CURVES_JSON
from wsseg.pipelines.benchmark import load_benchmark, run_benchmark
from wsseg.report.gallery import GALLERY_NPZ, Gallery
from wsseg.report.leaderboard import write_leaderboards
from wsseg.report.records import curves_for_run

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
    from wsseg.pipelines.compare import compare_folders
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
    rendered = re.search(r'data-rendered="rows=(\d+) images=(\d+) broken=(\d+) svgs=(\d+) ', proc.stdout)
    assert rendered, proc.stdout[:2000]
    rows, images, broken, svgs = map(int, rendered.groups())
    n_gallery = len(Gallery.load(runs[0] / GALLERY_NPZ).image_ids)
    assert rows == len(METHODS) + 1  # the methods and the uniform-breast floor
    assert images == n_gallery * (len(METHODS) + 1) and broken == 0  # every map and each ground truth
    assert svgs == 6
    console = [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, console


def _many_methods(runs: list[Path], folder: Path, n: int) -> list[Path]:
    """The runs plus ``n`` copies of the CAM run under other method names: a board as wide as the full benchmark."""
    copies = list(runs)
    for i in range(n):
        copy = folder / f"copy{i}"
        shutil.copytree(runs[0], copy)
        record = _record(copy)
        record.update(method=f"method-with-a-long-name-{i:02d}", run_id=f"copy{i}")
        (copy / "record.json").write_text(json.dumps(record))
        copies.append(copy)
    return copies


def test_report_fits_a_1440_pixel_screen(runs: list[Path], tmp_path: Path) -> None:
    from wsseg.report.html import STYLE

    n_methods = len(METHODS) + 20
    result = write_leaderboards(_many_methods(runs, tmp_path / "in", 20), tmp_path / "board", ["html"])
    (page,) = [p for p in result.files if p.suffix == ".html"]
    parsed = _Page()
    parsed.feed(page.read_text())
    classes = [dict(attrs).get("class") or "" for _, attrs in parsed.tags]
    # One leaderboard table per class, the budget table, one lesion table per class; the gallery is no table.
    assert classes.count("leaderboard sortable") == 2 + 1 + 2 and "gallery" not in {
        t for t, _ in parsed.tags if t == "table"
    }
    n_images = len(Gallery.load(runs[0] / GALLERY_NPZ).image_ids)
    assert classes.count("tile") == n_images * (n_methods + 1) and classes.count("tiles") == n_images
    # The gallery's tiles and the plots wrap; wide tables scroll in their own box; nothing is wider than the page.
    rules = STYLE.replace("\n", "")
    assert ".tiles{display:flex;flex-wrap:wrap" in rules and ".plots{display:flex;flex-wrap:wrap" in rules
    assert ".scroll{overflow-x:auto" in rules and "max-width:1380px" in rules
    assert max(int(w) for w in re.findall(r"width:(\d+)px", rules)) <= 1380
    browser = _chromium()
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1440,900"]
    proc = subprocess.run([*argv, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rendered = re.search(r'data-rendered="rows=(\d+) .* width=(\d+) hidden=(\d+)"', proc.stdout)
    assert rendered, proc.stdout[:2000]
    rows, width, hidden = map(int, rendered.groups())
    assert rows == n_methods + 1
    # At 1440 px the page does not scroll sideways and no table hides columns in its scroll box (a pixel of
    # slack: the outer half of a collapsed table border).
    assert width <= 1440 and hidden <= 1, (width, hidden)


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


# Strings an attacker can put in a record, a config, a file name or a dataset's ids.
HOSTILE = (
    "<img src=x onerror=alert(1)>",
    '"><script>alert(2)</script>',
    "</style><script>alert(3)</script>",
    "javascript:alert(4)",
    "' onmouseover='alert(5)' x='",
    "&amp; & <b>bold</b> $\\alert{6}$ {~^%#_}",
)


# The CSS classes the report itself uses (a record's value must never become one).
REPORT_CLASSES = {"scroll", "leaderboard", "sortable", "gallery", "rowhead", "note", "plots", "plot", "tiles", "tile"}
REPORT_CLASSES |= {"weak", "full", "reference", "chance", "count", "other", "benign", "malignant"}
SVG_TAGS = {"svg", "g", "path", "text", "defs", "clippath", "use", "rect", "metadata", "style"}


class _Page(HTMLParser):
    """Every element and attribute of a page, and the text of its script and style elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._open = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))
        self._open = tag

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        self._open = ""

    def handle_data(self, data: str) -> None:
        {"script": self.scripts, "style": self.styles}.get(self._open, self.text).append(data)


def _method(i: int) -> str:
    """Run i's hostile method name: without "/", as method names are folder names (the record reader refuses it)."""
    return f"m{i}{HOSTILE[i % len(HOSTILE)]}".replace("/", "")


def _hostile_copies(runs: list[Path], folder: Path) -> list[Path]:
    """The runs with a hostile string in every field the report shows (one comparable group, as before)."""
    copies = []
    for i, run in enumerate(runs):
        copy = folder / f"run{i}"
        shutil.copytree(run, copy)
        record = _record(copy)
        # Method names and run ids are folder names (the record reader refuses a "/" in them): hostile without it.
        record.update(
            method=_method(i),
            run_id=HOSTILE[(i + 1) % len(HOSTILE)].replace("/", ""),
            supervision=HOSTILE[(i + 5) % len(HOSTILE)],  # shown in the tables (the method is not registered)
            device=HOSTILE[(i + 3) % len(HOSTILE)],
            dataset="../../" + HOSTILE[0],  # the same in every run: they stay one comparable group
            profile=HOSTILE[2],
        )
        record["dataset_info"].update(version=HOSTILE[1], split_hashes={"test": "../" + HOSTILE[3]})
        (copy / "record.json").write_text(json.dumps(record))
        gallery = Gallery.load(copy / GALLERY_NPZ)
        gallery.image_ids = [f"{HOSTILE[k % len(HOSTILE)]}{k}" for k in range(len(gallery.image_ids))]
        gallery.save(copy / GALLERY_NPZ)
        copies.append(copy)
    # A run without curves and one without a gallery: their method names go into the notes.
    for name in (CURVES_JSON, "per_image_stats.npz"):
        (copies[1] / name).unlink()
    (copies[2] / GALLERY_NPZ).unlink()
    return copies


def test_report_shows_hostile_record_values_as_text_never_as_markup(runs: list[Path], tmp_path: Path) -> None:
    from wsseg.report.html import SCRIPT, STYLE

    out = tmp_path / "board"
    result = write_leaderboards(_hostile_copies(runs, tmp_path / "in"), out)
    assert all(p.resolve().is_relative_to(out.resolve()) for p in result.files)  # no file name from the record
    assert {p.name for p in out.iterdir()} == {"figures", *(p.name for p in result.files if p.parent == out)}
    (page,) = [p for p in result.files if p.suffix == ".html"]
    parsed = _Page()
    parsed.feed(page.read_text())
    clean = _Page()  # the same runs as they are: what the report's own markup looks like
    clean.feed(next(p for p in write_leaderboards(runs, tmp_path / "clean", ["html"]).files).read_text())
    # Markup: the elements and attributes the report itself writes, nothing more; one script, the report's own.
    assert {tag for tag, _ in parsed.tags} <= {tag for tag, _ in clean.tags}
    names = {(tag, name) for tag, attrs in parsed.tags for name, _ in attrs}
    assert names <= {(tag, name) for tag, attrs in clean.tags for name, _ in attrs}, names
    assert not any(name.startswith("on") for _, name in names)
    assert [tag for tag, _ in parsed.tags].count("script") == 1 and parsed.scripts == [SCRIPT]
    assert set(parsed.styles) <= set(clean.styles) and STYLE in parsed.styles
    for tag, attrs in parsed.tags:
        for name, value in attrs:
            if tag == "img" and name == "src":
                assert (value or "").startswith("data:image/png;base64,")
            elif name == "class" and tag not in SVG_TAGS:
                assert set((value or "").split()) <= REPORT_CLASSES, (tag, value)
            elif name not in ("alt", "id", "d", "transform", "style", "x", "y"):
                assert not any(h in (value or "") for h in HOSTILE), (tag, name, value)
    # The values are shown, as text: in the title, the table, the notes, the gallery and the plots' legends.
    text = "".join(parsed.text)
    for i in range(len(runs)):
        assert _method(i) in text
    assert f"No gallery for: {_method(2)}" in text and f"for: {_method(1)}" in text
    assert f"{HOSTILE[0]}0" in text  # a gallery image id
    # Markdown renders inline HTML: no raw tag survives there either; LaTeX sees every special character escaped.
    (md,) = [p for p in result.files if p.suffix == ".md" and not p.stem.endswith("-lesions")]
    assert "<img" not in md.read_text() and "<script" not in md.read_text() and "&lt;img src=x" in md.read_text()
    (tex,) = [p for p in result.files if p.suffix == ".tex" and not p.stem.endswith("-lesions")]
    escaped = r"\$\textbackslash{}alert\{6\}\$ \{\textasciitilde{}\^{}\%\#\_\}"  # tabulate's LaTeX escapes
    assert escaped in tex.read_text()
