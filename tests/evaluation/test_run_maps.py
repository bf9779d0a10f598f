"""`wsseg run --save-maps`, `wsseg evaluate --run`, `wsseg score` on the saved maps, and `wsseg compare`."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.data.dataset import MammogramDataset
from wsseg.report.records import RunRecord, read_record

runner = CliRunner()
CLASSES = ("benign", "malignant")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """A tiny CAM run with saved maps, and Grad-CAM on its classifier (no maps)."""
    out = tmp_path_factory.mktemp("runs")
    common = ["--profile", "tiny", "--out", str(out), "--cache-dir", str(cache_dir), "-q"]
    result = runner.invoke(app, ["run", "--method", "cam", "--run-id", "cam", "--save-maps", *common])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["run", "--method", "gradcam", "--run-id", "gradcam", "--from-run", str(out / "cam"), *common]
    )
    assert result.exit_code == 0, result.output
    return out


def _record(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())


def test_run_writes_the_full_suite_per_image_files_and_float16_maps(runs: Path) -> None:
    run = runs / "cam"
    record = _record(run / "record.json")
    assert record["schema_version"] == 3 and record["record_type"] == "run" and record["maps"] == "maps"
    assert record["evaluation"]["precision"] == "fp32" and record["precision"] == "fp32"  # a CPU run
    typed = read_record(run / "record.json")
    assert isinstance(typed, RunRecord) and typed.to_json() == record
    n_test = record["dataset_info"]["counts"]["test"]
    for name in CLASSES:
        m = record["metrics"][name]
        for key in ("dice", "iou", "dice_pooled", "soft_dice", "pxap", "pointing_game_10mm", "froc", "auprc"):
            assert key in m and key in record["intervals"][name]
        assert "dice_oracle" in m and "dice_oracle" not in record["intervals"][name]  # oracles get no interval
    assert record["intervals"]["n_resamples"] == 1000 and record["intervals"]["n_patients"] == n_test // 4
    assert "bilinear" in record["evaluation"]["upsampling"] and record["evaluation"]["froc"]["fppi"][0] == 0.25
    rows = list(csv.DictReader(open(run / "per_image.csv")))
    assert len(rows) == 2 * n_test and (run / "per_image_stats.npz").exists()
    maps = sorted((run / "maps").glob("*.npy"))
    assert len(maps) == 2 * n_test
    arr = np.load(maps[0])
    assert arr.dtype == np.float16 and arr.shape == tuple(record["dataset_info"]["image_size"])
    # The recorded AUROC is scikit-learn's on the saved image-level scores.
    labels = list(csv.DictReader(open(run / "test_labels.csv")))
    y = [int(r["malignant"]) for r in labels]
    s = [float(r["malignant_score"]) for r in labels]
    assert record["metrics"]["malignant"]["auroc"] == pytest.approx(roc_auc_score(y, s))


def test_evaluate_reproduces_the_run_up_to_float16(runs: Path) -> None:
    run = runs / "cam"
    result = runner.invoke(app, ["evaluate", "--run", str(run), "-q"])
    assert result.exit_code == 0, result.output
    original, again = _record(run / "record.json"), _record(run / "evaluate" / "record.json")
    assert again["record_type"] == "evaluate"
    assert again["evaluation"]["precision"] == original["evaluation"]["precision"] == "fp32"  # the run's maps
    for name in CLASSES:
        a, b = original["metrics"][name], again["metrics"][name]
        assert a["threshold"] == b["threshold"] and a["n_images"] == b["n_images"]
        for key in ("dice", "iou", "dice_at_0.5", "soft_dice", "pxap", "dice_pooled", "auroc"):
            assert b[key] == pytest.approx(a[key], abs=0.01, nan_ok=True), (name, key)
    assert "largest difference" in result.output


def _write_ground_truth(dataset: MammogramDataset, root: Path) -> None:
    (root / "masks").mkdir()
    (root / "region").mkdir()
    for i in range(len(dataset)):
        sample = dataset[i]
        image_id = sample["meta"]["image_id"]
        for k, name in enumerate(CLASSES):
            if sample["masks"][k].any():
                Image.fromarray(sample["masks"][k].numpy().astype(np.uint8) * 255).save(
                    root / "masks" / f"{image_id}_{name}.png"
                )
        Image.fromarray(sample["breast_mask"].numpy().astype(np.uint8) * 255).save(root / "region" / f"{image_id}.png")


def test_score_on_the_saved_maps_equals_evaluate(runs: Path, tiny_root: Path, tmp_path: Path) -> None:
    run = runs / "cam"
    if not (run / "evaluate" / "record.json").exists():
        assert runner.invoke(app, ["evaluate", "--run", str(run), "-q"]).exit_code == 0
    evaluated = _record(run / "evaluate" / "record.json")
    _write_ground_truth(MammogramDataset(tiny_root, "test", with_masks=True), tmp_path)
    args = [
        "score",
        "--maps",
        str(run / "maps"),
        "--masks",
        str(tmp_path / "masks"),
        "--region",
        str(tmp_path / "region"),
    ]
    args += ["--labels", str(run / "test_labels.csv"), "--spacing-mm", "1.6", "--out", str(tmp_path / "out"), "-q"]
    args += [x for c in CLASSES for x in ("--threshold", f"{c}={evaluated['thresholds'][c]}")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    scored = _record(tmp_path / "out" / "record.json")
    for name in CLASSES:
        for key, value in evaluated["metrics"][name].items():
            assert scored["metrics"][name][key] == pytest.approx(value, rel=1e-12, nan_ok=True), (name, key)
    # The same folders are comparable with each other, and equal.
    result = runner.invoke(app, ["compare", str(run / "evaluate"), str(tmp_path / "out"), "--n-resamples", "100"])
    assert result.exit_code == 0, result.output
    assert "+0.000" in result.output


def test_compare_two_methods_on_the_same_test_set(runs: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp.json"
    result = runner.invoke(
        app, ["compare", str(runs / "cam"), str(runs / "gradcam"), "--metric", "all", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    cmp = json.loads(out.read_text())
    cam, gradcam = _record(runs / "cam" / "record.json"), _record(runs / "gradcam" / "record.json")
    row = cmp["classes"]["malignant"]["dice"]
    assert row["a"] == pytest.approx(cam["metrics"]["malignant"]["dice"])
    assert row["b"] == pytest.approx(gradcam["metrics"]["malignant"]["dice"])
    assert row["diff"] == pytest.approx(row["a"] - row["b"]) and row["low"] <= row["diff"] <= row["high"]
    assert 0 < row["p"] <= 1 and cmp["n_resamples"] == 1000
    self_cmp = runner.invoke(app, ["compare", str(runs / "cam"), str(runs / "cam"), "--metric", "dice"])
    assert self_cmp.exit_code == 0 and "1.000" in self_cmp.output  # p = 1 for a run against itself


def test_compare_refuses_different_test_sets(runs: Path, tmp_path: Path) -> None:
    maps, masks = tmp_path / "maps", tmp_path / "masks"
    maps.mkdir()
    masks.mkdir()
    for name in CLASSES:
        np.save(maps / f"other-image_{name}.npy", np.zeros((184, 120), np.float32))
    assert (
        runner.invoke(
            app, ["score", "--maps", str(maps), "--masks", str(masks), "--out", str(tmp_path / "o"), "-q"]
        ).exit_code
        == 0
    )
    result = runner.invoke(app, ["compare", str(runs / "cam"), str(tmp_path / "o")])
    assert result.exit_code == 2 and "test sets differ" in result.output, result.output
    result = runner.invoke(app, ["compare", str(runs / "cam"), str(tmp_path)])
    assert result.exit_code == 2 and "no record.json" in result.output
    result = runner.invoke(app, ["compare", str(runs / "cam"), str(runs / "gradcam"), "--metric", "dcie"])
    assert result.exit_code == 2 and "unknown metric 'dcie'" in result.output


def test_compare_refuses_same_ids_with_other_ground_truth(runs: Path, tmp_path: Path) -> None:
    # The saved maps scored against empty masks: same image ids, another ground truth.
    (tmp_path / "masks").mkdir()
    args = [
        "score",
        "--maps",
        str(runs / "cam" / "maps"),
        "--masks",
        str(tmp_path / "masks"),
        "--out",
        str(tmp_path / "o"),
    ]
    # Labels that agree with the empty masks (score refuses a lesion label without a lesion mask).
    labels = pd.read_csv(runs / "cam" / "test_labels.csv")
    labels[["benign", "malignant"]] = 0
    labels.to_csv(tmp_path / "labels.csv", index=False)
    args += ["--labels", str(tmp_path / "labels.csv"), "-q"]
    scored = runner.invoke(app, args)
    assert scored.exit_code == 0, scored.output
    result = runner.invoke(app, ["compare", str(runs / "cam"), str(tmp_path / "o")])
    assert result.exit_code == 2 and "test sets differ" in result.output and "masks" in result.output, result.output


def test_evaluate_needs_saved_maps(runs: Path, tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", "--run", str(runs / "gradcam")])
    assert result.exit_code == 2 and "--save-maps" in result.output
    result = runner.invoke(app, ["evaluate", "--run", str(tmp_path)])
    assert result.exit_code == 2 and "no record.json" in result.output
    record = _record(runs / "gradcam" / "record.json")
    assert record["maps"] is None and not math.isnan(record["metrics"]["malignant"]["dice"])


def test_evaluate_scores_a_real_dataset_run_against_its_own_masks(tmp_path: Path) -> None:
    """A run on Mini-MIAS (a generated fixture): `wsseg evaluate` reads that dataset's cache, not the phantom's."""
    download, cache = tmp_path / "mias", tmp_path / "cache"
    assert runner.invoke(app, ["data", "fixture", "mini-mias", "--out", str(download)]).exit_code == 0
    args = ["run", "-m", "intensity", "--dataset", "mini-mias", "--data-root", str(download), "--profile", "tiny"]
    args += ["--out", str(tmp_path / "runs"), "--run-id", "mias", "--cache-dir", str(cache), "--save-maps", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = tmp_path / "runs" / "mias"
    evaluated = runner.invoke(app, ["evaluate", "--run", str(run), "-q"])
    assert evaluated.exit_code == 0, evaluated.output
    original, again = _record(run / "record.json"), _record(run / "evaluate" / "record.json")
    # The source's release and wsseg's preprocessing, spelled out (not "mini-mias-2-pre2").
    from wsseg.data.prepare import PREPROCESS_VERSION
    from wsseg.data.sources import get_source

    release = get_source("mini-mias").version
    assert again["dataset_info"]["version"] == f"mini-mias-{release}, preprocessing {PREPROCESS_VERSION}"
    assert again["dataset_info"] == original["dataset_info"]
    for name in CLASSES:
        assert again["metrics"][name]["n_images"] == original["metrics"][name]["n_images"]
        for key in ("dice", "iou", "dice_at_0.5", "soft_dice", "auroc"):
            # Equal up to the float16 rounding of the saved maps.
            assert again["metrics"][name][key] == pytest.approx(original["metrics"][name][key], abs=2e-3, nan_ok=True)
    assert not list(cache.glob("phantom*"))  # no phantom was generated for it
    # Every scored image is a Mini-MIAS test image of the run (mdbNNN ids), none a phantom one.
    scored = {r["image_id"] for r in csv.DictReader(open(run / "evaluate" / "per_image.csv"))}
    tested = {r["image_id"] for r in csv.DictReader(open(run / "test_labels.csv"))}
    assert scored == tested and all(i.startswith("mdb") for i in scored)
    # Another download at the run's --data-root (other images): refused, not scored against the wrong masks.
    for path in download.rglob("*"):
        if path.is_file():
            path.unlink()
    assert runner.invoke(app, ["data", "fixture", "mini-mias", "--out", str(download)]).exit_code == 0
    (download / "Info.txt").write_text((download / "Info.txt").read_text().replace("mdb001", "mdb901"))
    (download / "pgm" / "mdb001.pgm").rename(download / "pgm" / "mdb901.pgm")
    for folder in cache.glob("mini-mias/*"):  # the cache is gone: remade from the download
        for path in sorted(folder.rglob("*"), reverse=True):
            path.unlink() if path.is_file() else path.rmdir()
    refused = runner.invoke(app, ["evaluate", "--run", str(run), "-q"])
    assert refused.exit_code == 2 and "is not the one the run was scored on" in refused.output, refused.output


def test_saved_map_names_stay_inside_the_maps_folder(tmp_path: Path) -> None:
    import torch

    from wsseg.pipelines.scored import map_file_stem, save_map

    folder = tmp_path / "run" / "maps"
    for image_id in ("../../evil", "a/b", ".hidden", "..", "x" * 300, "ok id 1"):
        save_map(folder, image_id, "benign", torch.zeros(4, 3))
        stem = map_file_stem(image_id)
        assert (folder / f"{stem}_benign.npy").is_file() and "/" not in stem and not stem.startswith(".")
    assert map_file_stem("ok id 1") == "ok id 1" and map_file_stem("mdb001") == "mdb001"  # plain ids as they are
    assert sorted(p.parent for p in tmp_path.rglob("*.npy")) == [folder] * 6
