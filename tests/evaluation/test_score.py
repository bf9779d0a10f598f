"""`wsseg score` on maps written by another program: the same numbers as in-process evaluation; bad input."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.data.dataset import MammogramDataset
from wsseg.evaluation.bootstrap import bootstrap_intervals
from wsseg.evaluation.evaluator import SegmentationEvaluator

CLASSES = ("benign", "malignant")
runner = CliRunner()


def _save_png(path: Path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path)


def _write_labels(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _other_program(
    dataset: MammogramDataset, root: Path
) -> tuple[dict[str, list[np.ndarray]], list[dict[str, object]]]:
    """Write maps, masks, breast regions and labels the way an outside program would, with plain numpy and PIL.

    Maps are at a quarter of the image resolution (the harness upsamples them); images alternate between
    float32 .npy, float16 .npy and 16-bit PNG. Returns the maps exactly as stored, and the labels rows.
    """
    rng = np.random.default_rng(0)
    for sub in ("maps", "masks", "region"):
        (root / sub).mkdir()
    stored: dict[str, list[np.ndarray]] = {}
    rows: list[dict[str, object]] = []
    for i in range(len(dataset)):
        sample = dataset[i]
        image_id = sample["meta"]["image_id"]
        h, w = sample["masks"].shape[-2:]
        maps = []
        for k, name in enumerate(CLASSES):
            low = rng.random((h // 4, w // 4)).astype(np.float32) * 0.6
            mask_low = sample["masks"][k].numpy()[::4, ::4]
            low[mask_low] += 0.4 * rng.random(int(mask_low.sum())).astype(np.float32)  # hotter on the lesion
            if i % 3 == 0:
                q = np.round(low * 65535).astype(np.uint16)
                _save_png(root / "maps" / f"{image_id}_{name}.png", q)
                maps.append(q.astype(np.float32) / 65535)
            elif i % 3 == 1:
                np.save(root / "maps" / f"{image_id}_{name}.npy", low.astype(np.float16))
                maps.append(low.astype(np.float16).astype(np.float32))
            else:
                np.save(root / "maps" / f"{image_id}_{name}.npy", low)
                maps.append(low)
            if sample["masks"][k].any():  # no file = no lesion of that class
                _save_png(root / "masks" / f"{image_id}_{name}.png", sample["masks"][k].numpy().astype(np.uint8) * 255)
        _save_png(root / "region" / f"{image_id}.png", sample["breast_mask"].numpy().astype(np.uint8))
        stored[image_id] = maps
        labels = sample["labels"].numpy()
        rows.append(
            {
                "image_id": image_id,
                "patient_id": sample["meta"]["patient_id"],
                "benign": int(labels[0]),
                "malignant": int(labels[1]),
                "benign_score": float(rng.random()),
                "malignant_score": float(rng.random() + labels[1]),
            }
        )
    _write_labels(root / "labels.csv", rows)
    return stored, rows


def test_score_equals_in_process_evaluation(tiny_root: Path, tmp_path: Path) -> None:
    dataset = MammogramDataset(tiny_root, "train", with_masks=True)  # 16 images, lesions of both classes
    stored, rows = _other_program(dataset, tmp_path)
    thresholds = {"benign": 0.42, "malignant": 0.37}

    ev = SegmentationEvaluator(CLASSES, 1000)
    for i, row in enumerate(rows):
        sample = dataset[i]
        ev.add(
            str(row["image_id"]),
            torch.from_numpy(np.stack(stored[str(row["image_id"])])),
            sample["masks"],
            sample["breast_mask"],
            patient_id=str(row["patient_id"]),
            spacing_mm=1.6,
            image_scores=[float(row["benign_score"]), float(row["malignant_score"])],  # type: ignore[arg-type]
            image_labels=[float(row["benign"]), float(row["malignant"])],  # type: ignore[arg-type]
        )
    expected = ev.summary(thresholds)
    expected_ci = bootstrap_intervals(ev.stats(), thresholds, n_resamples=1000, seed=0)

    args = [
        "score",
        "--maps",
        str(tmp_path / "maps"),
        "--masks",
        str(tmp_path / "masks"),
        "--out",
        str(tmp_path / "out"),
    ]
    args += ["--labels", str(tmp_path / "labels.csv"), "--region", str(tmp_path / "region"), "--spacing-mm", "1.6"]
    args += ["--threshold", "benign=0.42", "--threshold", "malignant=0.37", "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "record.json").read_text())
    assert record["record_type"] == "score" and record["n_skipped"] == 0
    assert record["dataset_info"]["n_images"] == len(dataset)
    for name in CLASSES:
        assert set(record["metrics"][name]) == set(expected[name])
        for key, value in expected[name].items():
            assert record["metrics"][name][key] == pytest.approx(value, rel=1e-12, nan_ok=True), (name, key)
        for key, (low, high) in expected_ci[name].items():
            assert record["intervals"][name][key] == pytest.approx([low, high], rel=1e-12, nan_ok=True), (name, key)
        assert not math.isnan(record["metrics"][name]["dice"]) and not math.isnan(record["metrics"][name]["froc"])
    # The run-record keys every consumer reads are there.
    assert {"dice", "iou", "dice_at_0.5", "iou_at_0.5", "pxap", "auroc", "threshold"} <= set(
        record["metrics"]["benign"]
    )
    assert record["thresholds"]["benign"] == 0.42 and "bilinear" in record["evaluation"]["upsampling"]
    lines = (tmp_path / "out" / "per_image.csv").read_text().strip().splitlines()
    assert len(lines) == 1 + 2 * len(dataset)
    assert "Dice" in result.output and "PxAP" in result.output


# ---------------------------------------------------------------------------------------------------------------
# Bad input: an error naming the file and the fix (exit code 2, no traceback), or a counted skip.


def _small(root: Path) -> dict[str, Path]:
    """Three 20x16 images with masks, float32 maps, labels: a valid input that each case then breaks."""
    paths = {k: root / k for k in ("maps", "masks")}
    for p in paths.values():
        p.mkdir()
    rng = np.random.default_rng(1)
    rows = []
    for i in range(3):
        for name in CLASSES:
            np.save(paths["maps"] / f"img{i}_{name}.npy", rng.random((20, 16)).astype(np.float32))
        g = np.zeros((20, 16), dtype=np.uint8)
        g[5:9, 4:8] = 255
        _save_png(paths["masks"] / f"img{i}_benign.png", g)
        rows.append({"image_id": f"img{i}", "benign": 1, "malignant": 0})
    paths["labels"] = root / "labels.csv"
    _write_labels(paths["labels"], rows)
    return paths


def _npy(name: str, arr: np.ndarray) -> Callable[[dict[str, Path]], None]:
    return lambda p: np.save(p["maps"] / name, arr)


def _replace(name: str, writer: Callable[[Path], None]) -> Callable[[dict[str, Path]], None]:
    def change(p: dict[str, Path]) -> None:
        for f in p["maps"].glob(name.rsplit(".", 1)[0] + ".*"):
            f.unlink()
        writer(p["maps"] / name)

    return change


def _labels(rows: list[dict[str, object]]) -> Callable[[dict[str, Path]], None]:
    return lambda p: _write_labels(p["labels"], rows)


NAN_MAP = np.full((20, 16), np.nan, np.float32)
BAD_INPUTS: dict[str, tuple[Callable[[dict[str, Path]], None], str, str]] = {
    # case: (how the input is broken, the file the message must name, a fragment of the fix)
    "nan": (_npy("img1_benign.npy", NAN_MAP), "img1_benign.npy", "NaN or inf"),
    "inf": (_npy("img1_benign.npy", np.full((20, 16), np.inf, np.float32)), "img1_benign.npy", "NaN or inf"),
    "range": (_npy("img2_malignant.npy", np.full((20, 16), 1.5, np.float32)), "img2_malignant.npy", "--normalize"),
    "3-d": (_npy("img0_benign.npy", np.zeros((1, 20, 16), np.float32)), "img0_benign.npy", "(H, W)"),
    "integer": (_npy("img0_benign.npy", np.zeros((20, 16), np.uint8)), "img0_benign.npy", "float32 or float16"),
    "8-bit png": (
        _replace("img0_benign.png", lambda f: _save_png(f, np.zeros((20, 16), np.uint8))),
        "img0_benign.png",
        "16-bit",
    ),
    "transposed": (_npy("img1_benign.npy", np.zeros((16, 20), np.float32)), "img1_benign.npy", "transposed"),
    "aspect": (_npy("img1_benign.npy", np.zeros((10, 16), np.float32)), "img1_benign.npy", "aspect ratio"),
    "larger": (_npy("img1_benign.npy", np.zeros((40, 32), np.float32)), "img1_benign.npy", "larger than the image"),
    "missing map": (lambda p: (p["maps"] / "img1_malignant.npy").unlink(), "img1_malignant.npy", "no map for class"),
    "misnamed": (_npy("img1_cancer.npy", np.zeros((20, 16), np.float32)), "img1_cancer.npy", "rename"),
    "two files": (
        lambda p: _save_png(p["maps"] / "img0_benign.png", np.zeros((20, 16), np.uint16)),
        "img0_benign",
        "keep one",
    ),
    "mask without map": (
        lambda p: _save_png(p["masks"] / "img9_benign.png", np.zeros((20, 16), np.uint8)),
        "img9_benign.png",
        "no map",
    ),
    "mask sizes differ": (
        lambda p: _save_png(p["masks"] / "img0_malignant.png", np.zeros((10, 8), np.uint8)),
        "img0",
        "different sizes",
    ),
    "rgb mask": (
        lambda p: _save_png(p["masks"] / "img2_benign.png", np.zeros((20, 16, 3), np.uint8)),
        "img2_benign.png",
        "single-channel",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_an_error_naming_the_file(case: str, tmp_path: Path) -> None:
    paths = _small(tmp_path)
    breaking, file, fix = BAD_INPUTS[case]
    breaking(paths)
    args = ["score", "--maps", str(paths["maps"]), "--masks", str(paths["masks"]), "--out", str(tmp_path / "out"), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and file in result.output and fix in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out" / "record.json").exists()


LABEL_CASES = {
    "no column": ([{"image_id": "img0", "benign": 1}], "labels.csv", "no column"),
    "not 0/1": ([{"image_id": f"img{i}", "benign": 2, "malignant": 0} for i in range(3)], "line 2", "0 or 1"),
    "row without maps": (
        [{"image_id": f"img{i}", "benign": 1, "malignant": 0} for i in range(4)],
        "img3_benign.npy",
        "no map",
    ),
    "maps not listed": (
        [{"image_id": f"img{i}", "benign": 1, "malignant": 0} for i in range(2)],
        "img2",
        "does not list",
    ),
    "located not 0/1": (
        [
            {"image_id": f"img{i}", "benign": 1, "malignant": 0, "benign_located": "no", "malignant_located": 1}
            for i in range(3)
        ],
        "line 2",
        "_located must be 0 or 1",
    ),
}


@pytest.mark.parametrize("case", sorted(LABEL_CASES))
def test_bad_labels_are_errors_naming_the_line_or_image(case: str, tmp_path: Path) -> None:
    paths = _small(tmp_path)
    rows, where, fix = LABEL_CASES[case]
    _labels(rows)(paths)
    args = ["score", "--maps", str(paths["maps"]), "--masks", str(paths["masks"]), "--out", str(tmp_path / "out")]
    result = runner.invoke(app, [*args, "--labels", str(paths["labels"]), "-q"])
    assert result.exit_code == 2 and where in result.output and fix in result.output, result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--threshold", "1.5"], "[0, 1]"),
        (["--threshold", "benign=0.3"], "no value for ['malignant']"),
        (["--threshold", "cancer=0.3"], "unknown class"),
        (["--normalize", "softmax"], "choose none or minmax"),
        (["--spacing-mm", "-1"], "in [0.001, 100.0]"),
        (["--image-size", "big"], "HEIGHTxWIDTH"),
    ],
)
def test_bad_flags_are_errors(flags: list[str], message: str, tmp_path: Path) -> None:
    paths = _small(tmp_path)
    args = ["score", "--maps", str(paths["maps"]), "--masks", str(paths["masks"]), "--out", str(tmp_path / "o")]
    result = runner.invoke(app, [*args, *flags, "-q"])
    assert result.exit_code == 2 and message in result.output, result.output


def test_missing_and_empty_folders_are_errors(tmp_path: Path) -> None:
    paths = _small(tmp_path)
    result = runner.invoke(
        app, ["score", "--maps", str(tmp_path / "nope"), "--masks", str(paths["masks"]), "--out", "o"]
    )
    assert result.exit_code == 2 and "is not a folder" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app, ["score", "--maps", str(tmp_path / "empty"), "--masks", str(paths["masks"]), "--out", "o"]
    )
    assert result.exit_code == 2 and "holds no maps" in result.output


def test_skip_invalid_counts_and_lists_the_skipped_images(tmp_path: Path) -> None:
    paths = _small(tmp_path)
    np.save(paths["maps"] / "img1_benign.npy", NAN_MAP)
    (paths["maps"] / "img2_malignant.npy").unlink()
    out = tmp_path / "out"
    args = ["score", "--maps", str(paths["maps"]), "--masks", str(paths["masks"]), "--out", str(out), "--skip-invalid"]
    result = runner.invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert record["n_skipped"] == 2 and record["dataset_info"]["n_images"] == 1
    reasons = {s["image_id"]: s["reason"] for s in record["skipped"]}
    assert "NaN" in reasons["img1"] and "no map for class malignant" in reasons["img2"]
    assert record["metrics"]["benign"]["n_images"] == 1
    assert "skipped 2 image(s)" in result.output


def test_minmax_normalization_accepts_out_of_range_maps_and_is_recorded(tmp_path: Path) -> None:
    paths = _small(tmp_path)
    for f in paths["maps"].glob("*.npy"):
        np.save(f, np.load(f) * 40 - 7)  # logits-like values
    out = tmp_path / "out"
    args = ["score", "--maps", str(paths["maps"]), "--masks", str(paths["masks"]), "--out", str(out)]
    result = runner.invoke(app, [*args, "--normalize", "minmax", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    assert record["evaluation"]["normalization"] == "minmax"
    # Min-max is affine per map, so thresholded results equal those of the original [0, 1] maps' min-max.
    assert 0.0 <= record["metrics"]["benign"]["dice"] <= 1.0


def test_a_missing_mask_file_means_no_lesion(tmp_path: Path) -> None:
    paths = _small(tmp_path)
    (paths["masks"] / "img0_benign.png").unlink()
    out = tmp_path / "out"
    args = ["score", "--maps", str(paths["maps"]), "--masks", str(paths["masks"]), "--out", str(out), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    m = json.loads((out / "record.json").read_text())["metrics"]
    assert m["benign"]["n_images"] == 2 and m["benign"]["n_lesion_free"] == 1
    assert m["malignant"]["n_images"] == 0 and math.isnan(m["malignant"]["dice"])
    assert math.isnan(m["benign"]["auroc"])  # no labels given: no image-level metrics


def test_image_ids_may_contain_underscores_and_images_without_masks_take_the_common_size(tmp_path: Path) -> None:
    maps, masks = tmp_path / "maps", tmp_path / "masks"
    maps.mkdir()
    masks.mkdir()
    g = np.zeros((20, 16), np.uint8)
    g[2:5, 2:5] = 1
    for image_id in ("0_L_CC", "0_R_MLO"):
        for name in CLASSES:
            np.save(maps / f"{image_id}_{name}.npy", np.full((10, 8), 0.7, np.float32))  # half resolution
    _save_png(masks / "0_L_CC_malignant.png", g)  # 0_R_MLO has no mask: evaluated at the masks' 20x16
    out = tmp_path / "out"
    result = runner.invoke(app, ["score", "--maps", str(maps), "--masks", str(masks), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "record.json").read_text())
    m = record["metrics"]["malignant"]
    assert m["n_images"] == 1 and m["n_lesion_free"] == 1
    assert m["dice"] == pytest.approx(2 * 9 / (9 + 320))  # the constant 0.7 map predicts all 320 pixels
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert {r["image_id"] for r in rows} == {"0_L_CC", "0_R_MLO"}
    assert {int(r["region_pixels"]) for r in rows} == {320}


def test_a_label_only_image_given_in_the_labels_enters_no_localisation_metric(tmp_path: Path) -> None:
    """img0 is labelled benign but its lesion has no location (no mask, benign_located 0): AUROC only."""
    paths = _small(tmp_path)
    (paths["masks"] / "img0_benign.png").unlink()
    (paths["masks"] / "img2_benign.png").unlink()  # img2: a normal image
    rows = [
        {"image_id": f"img{i}", "benign": 1 - (i == 2), "malignant": 0, "benign_score": s, "malignant_score": 0.0}
        for i, s in enumerate((0.9, 0.4, 0.1))
    ]
    args = ["score", "--maps", str(paths["maps"]), "--masks", str(paths["masks"]), "--spacing-mm", "1", "-q"]
    # Without the located flags, a benign label on an image without a benign mask contradicts the masks.
    _write_labels(paths["labels"], rows)
    refused = runner.invoke(app, [*args, "--labels", str(paths["labels"]), "--out", str(tmp_path / "refused")])
    assert refused.exit_code == 2 and "img0 is labelled benign=1" in refused.output, refused.output
    records = {}
    cases = (
        ("lesion-free", [{**rows[0], "benign": 0}, *rows[1:]]),  # img0 labelled normal: its empty mask is lesion-free
        ("label-only", [{**r, "benign_located": int(i != 0), "malignant_located": 1} for i, r in enumerate(rows)]),
    )
    for name, labels in cases:
        _write_labels(paths["labels"], labels)
        out = tmp_path / name
        result = runner.invoke(app, [*args, "--labels", str(paths["labels"]), "--out", str(out)])
        assert result.exit_code == 0, result.output
        records[name] = json.loads((out / "record.json").read_text())["metrics"]["benign"]
    free, only = records["lesion-free"], records["label-only"]
    assert free["n_lesion_free"] == 2 and free["n_label_only"] == 0
    assert only["n_lesion_free"] == 1 and only["n_label_only"] == 1 and only["n_images"] == free["n_images"] == 1
    assert only["fp_area_fraction"] != pytest.approx(free["fp_area_fraction"])
    # img0 (score 0.9) still counts as a benign image for AUROC when label-only; labelled normal it is a false alarm.
    assert only["auroc"] == 1.0 and free["auroc"] == 0.5
