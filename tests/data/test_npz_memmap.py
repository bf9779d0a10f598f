"""The cache's image is memory-mapped out of its .npz archive and equals what np.load reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsseg.data.dataset import MammogramDataset, npz_memmap


def test_every_member_of_a_cached_sample_maps_to_what_np_load_reads(tiny_root: Path) -> None:
    path = tiny_root / MammogramDataset(tiny_root, "test", with_masks=True).rows[0]["file"]
    with np.load(path) as z:
        for name in ("image", "masks", "breast_mask", "labels"):
            mapped = npz_memmap(path, f"{name}.npy")
            assert isinstance(mapped, np.memmap)
            assert mapped.dtype == z[name].dtype and np.array_equal(mapped, z[name])


def test_compressed_members_fall_back_and_bad_files_are_clear(tmp_path: Path) -> None:
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    np.savez_compressed(tmp_path / "c.npz", image=image)
    assert npz_memmap(tmp_path / "c.npz", "image.npy") is None  # the dataset then reads it with np.load
    np.savez(tmp_path / "f.npz", image=np.asfortranarray(image))
    assert np.array_equal(npz_memmap(tmp_path / "f.npz", "image.npy"), image)
    with pytest.raises(KeyError):
        npz_memmap(tmp_path / "f.npz", "nope.npy")
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not an .npz archive"):
        npz_memmap(tmp_path / "bad.npz", "image.npy")
