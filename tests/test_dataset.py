"""The phantom cache and the datasets the loop reads: splits, labels, masks, determinism, reuse."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import TINY_COUNTS
from wsseg.config import phantom_config
from wsseg.data.dataset import (
    SPLITS,
    MammogramDataset,
    prepare_phantom,
    read_manifest,
)
from wsseg.runtime.device import collate, standardize_images, to_device


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for row in read_manifest(root):
        with np.load(root / row["file"]) as z:
            for key in ("image", "masks", "breast_mask", "labels"):
                h.update(z[key].tobytes())
    return h.hexdigest()


def test_same_seed_gives_the_same_bytes(tiny_root: Path, tmp_path: Path) -> None:
    again = prepare_phantom(phantom_config("tiny"), 0, TINY_COUNTS, tmp_path, workers=1, progress=False)
    assert again != tiny_root
    assert _digest(again) == _digest(tiny_root)
    other = prepare_phantom(phantom_config("tiny"), 1, TINY_COUNTS, tmp_path, workers=1, progress=False)
    assert _digest(other) != _digest(tiny_root)


def test_second_prepare_reuses_the_cache(tiny_root: Path, cache_dir: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in tiny_root.rglob("*.npz")}
    again = prepare_phantom(phantom_config("tiny"), 0, TINY_COUNTS, cache_dir, progress=False)
    assert again == tiny_root
    assert {p: p.stat().st_mtime_ns for p in tiny_root.rglob("*.npz")} == before


def test_interrupted_generation_resumes(tmp_path: Path) -> None:
    root = prepare_phantom(phantom_config("tiny"), 0, TINY_COUNTS, tmp_path, workers=1, progress=False)
    # Simulate a crash after some images: manifest gone, one image missing.
    (root / "manifest.csv").unlink()
    victim = sorted((root / "train").glob("*.npz"))[3]
    victim.unlink()
    kept = sorted((root / "test").glob("*.npz"))[0]
    mtime = kept.stat().st_mtime_ns
    assert prepare_phantom(phantom_config("tiny"), 0, TINY_COUNTS, tmp_path, workers=1, progress=False) == root
    assert victim.exists() and kept.stat().st_mtime_ns == mtime


def test_splits_are_patient_disjoint(tiny_root: Path) -> None:
    patients = {s: {r["patient_id"] for r in read_manifest(tiny_root) if r["split"] == s} for s in SPLITS}
    assert all(patients.values())
    assert not patients["train"] & patients["val"]
    assert not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    # Every patient contributes four views: L/R x CC/MLO.
    rows = [r for r in read_manifest(tiny_root) if r["patient_id"] == next(iter(patients["train"]))]
    assert sorted((r["laterality"], r["view"]) for r in rows) == [("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]


def test_labels_agree_with_masks(tiny_root: Path) -> None:
    seen = np.zeros(2)
    for split in SPLITS:
        ds = MammogramDataset(tiny_root, split, with_masks=True)
        for i in range(len(ds)):
            s = ds[i]
            assert torch.equal(s["labels"], s["masks"].flatten(1).any(1).float())
            assert not (s["masks"] & ~s["breast_mask"]).any(), "lesion pixels outside the breast"
            seen += s["labels"].numpy()
        np.testing.assert_array_equal(ds.labels, np.stack([ds[i]["labels"].numpy() for i in range(len(ds))]))
    assert seen.min() > 0, "both classes must occur"


def test_sample_layout(tiny_root: Path) -> None:
    ds = MammogramDataset(tiny_root, "val", with_masks=True)
    s = ds[0]
    h, w = phantom_config("tiny").height, phantom_config("tiny").width
    assert s["image"].shape == (1, h, w) and s["image"].dtype == torch.float32
    assert abs(float(s["image"].mean())) < 1e-3 and float(s["image"].std()) == pytest.approx(1.0, abs=1e-2)
    assert s["masks"].shape == (2, h, w) and s["masks"].dtype == torch.bool
    assert s["breast_mask"].shape == (h, w)
    for key in ("patient_id", "exam_id", "image_id", "laterality", "view", "pixel_spacing_mm", "dataset"):
        assert key in s["meta"]
    batch = collate([ds[0], ds[1]])
    assert batch["image"].shape == (2, 1, h, w) and len(batch["meta"]) == 2


def test_raw_batches_are_standardised_on_the_device_like_the_workers_do(tiny_root: Path) -> None:
    # CUDA loaders ship uint16 pixels and to_device standardises them; the result is the workers' float32 image.
    std = MammogramDataset(tiny_root, "val", with_masks=True)
    raw = MammogramDataset(tiny_root, "val", with_masks=True, standardize=False)
    assert raw[0]["image"].dtype == torch.uint16
    with np.load(tiny_root / std.rows[0]["file"]) as z:
        assert np.array_equal(raw[0]["image"][0].numpy(), z["image"])
    a = to_device(collate([std[i] for i in range(4)]), torch.device("cpu"))
    b = to_device(collate([raw[i] for i in range(4)]), torch.device("cpu"))
    assert b["image"].dtype == torch.float32
    torch.testing.assert_close(b["image"], a["image"], rtol=0, atol=2e-5)
    assert torch.equal(a["masks"], b["masks"]) and torch.equal(a["labels"], b["labels"])
    flat = torch.full((1, 1, 4, 4), 7, dtype=torch.uint16)  # a constant image: zeros, not NaN
    assert torch.equal(standardize_images(flat), torch.zeros(1, 1, 4, 4))


def test_training_split_opened_without_masks_never_yields_them(tiny_root: Path) -> None:
    ds = MammogramDataset(tiny_root, "train", with_masks=False)
    assert all("masks" not in ds[i] for i in range(len(ds)))


def test_missing_manifest_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="wsseg data prepare"):
        MammogramDataset(tmp_path, "train", with_masks=False)


def test_bad_split_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        prepare_phantom(phantom_config("tiny"), 0, {"train": 6}, tmp_path, progress=False)
