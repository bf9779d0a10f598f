"""Datasets the training loop and the evaluator read, and the on-disk phantom cache behind them.

A sample is a dict with stable keys:

- ``image``: float32 (1, H, W), standardised per image, canonical orientation (chest wall at column 0);
- ``labels``: float32 (K,) in the order of :data:`CLASSES` (benign, malignant);
- ``masks``: bool (K, H, W), present only when the dataset was opened ``with_masks=True``;
- ``breast_mask``: bool (H, W);
- ``meta``: dict with ``patient_id``, ``exam_id``, ``image_id``, ``laterality``, ``view``,
  ``pixel_spacing_mm``, ``dataset``, ``version`` and the lesion list.

The loader used for training opens the training split with ``with_masks=False``: masks are never read
from disk, so they cannot reach a weakly supervised method.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import struct
import zipfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from wsseg._io import atomic_save, atomic_write_json, atomic_write_text
from wsseg.data.phantom import CLASSES, PHANTOM_VERSION, PhantomConfig, generate_image

SPLITS = ("train", "val", "test")
# Each phantom patient has one exam of four views; splits are ranges of patients, so they never share one.
VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
MANIFEST_COLUMNS = ("image_id", "patient_id", "exam_id", "split", "laterality", "view", "benign", "malignant", "file")


def default_cache_dir() -> Path:
    """``$WSSEG_CACHE_DIR`` if set, else the user's XDG cache folder (``~/.cache/wsseg`` on Linux)."""
    env = os.environ.get("WSSEG_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("wsseg"))


def phantom_cache_key(cfg: PhantomConfig, seed: int, counts: dict[str, int]) -> str:
    """A short hash of everything that decides the phantom's bytes."""
    blob = json.dumps(
        {"version": PHANTOM_VERSION, "cfg": dataclasses.asdict(cfg), "seed": seed, "counts": counts}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def sample_identity(split: str, index: int) -> dict[str, str]:
    """Ids, laterality and view of phantom image ``index`` of ``split`` (four views per patient)."""
    laterality, view = VIEWS[index % len(VIEWS)]
    patient = f"phantom-{split}-p{index // len(VIEWS):04d}"
    return {
        "image_id": f"phantom-{split}-{index:05d}",
        "patient_id": patient,
        "exam_id": patient,
        "split": split,
        "laterality": laterality,
        "view": view,
    }


def _generate_one(args: tuple[PhantomConfig, int, str, int, str]) -> dict[str, Any]:
    """Generate one phantom image into the cache (skipped when its file exists) and return its manifest row."""
    cfg, seed, split, index, root = args
    ident = sample_identity(split, index)
    rel = f"{split}/{ident['image_id']}.npz"
    path = Path(root) / rel
    if path.exists():
        with np.load(path) as z:
            labels = z["labels"]
    else:
        img = generate_image(cfg, seed, split, index, view=ident["view"], laterality=ident["laterality"])
        labels = img.labels
        meta = {**img.meta, **ident}

        def write(f: io.BufferedIOBase) -> None:
            np.savez(
                f,
                image=img.image,
                # Masks are bit-packed along the width: 1/8 of the bytes, unpacked exactly on load.
                masks=np.packbits(img.masks, axis=-1),
                breast_mask=np.packbits(img.breast_mask, axis=-1),
                labels=img.labels.astype(np.float32),
                meta=np.array(json.dumps(meta)),
            )

        atomic_save(path, write)  # type: ignore[arg-type]
    return {**ident, "benign": int(labels[0] > 0), "malignant": int(labels[1] > 0), "file": rel}


def prepare_phantom(
    cfg: PhantomConfig,
    seed: int,
    counts: dict[str, int],
    cache_dir: str | Path | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Generate the phantom into the cache (in parallel) unless it is already there; return its folder.

    The folder is keyed by the generator version, the config, the seed and the split sizes, so a
    second run with the same settings reuses it at once. Each image is written atomically, so an
    interrupted generation resumes where it stopped.

    Args:
        cfg: generator settings (size, pixel spacing, lesion mix, ...).
        seed: the dataset seed (not the training seed: every run sees the same images).
        counts: images per split; multiples of 4 (one exam of four views per patient).
        cache_dir: base cache folder; :func:`default_cache_dir` when None.
        workers: processes; all cores when None.
        progress: show a progress bar.
    """
    for split, n in counts.items():
        if split not in SPLITS or n <= 0 or n % len(VIEWS):
            raise ValueError(f"phantom split {split!r} needs a positive multiple of {len(VIEWS)} images, got {n}")
    base = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    root = base / "phantom" / f"v{PHANTOM_VERSION}-{phantom_cache_key(cfg, seed, counts)}"
    if (root / "manifest.csv").exists():
        return root
    tasks = [(cfg, seed, split, i, str(root)) for split in SPLITS for i in range(counts.get(split, 0))]
    for split in counts:
        (root / split).mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks)))
    bar = tqdm(total=len(tasks), desc=f"phantom {cfg.height}x{cfg.width}", unit="img", disable=not progress)
    rows: list[dict[str, Any]] = []
    if workers == 1:
        for t in tasks:
            rows.append(_generate_one(t))
            bar.update()
    else:
        with ProcessPoolExecutor(workers) as pool:
            for row in pool.map(_generate_one, tasks, chunksize=4):
                rows.append(row)
                bar.update()
    bar.close()
    atomic_write_json(
        root / "phantom.json",
        {"version": PHANTOM_VERSION, "config": dataclasses.asdict(cfg), "seed": seed, "counts": counts},
    )
    # The manifest is written last: its presence marks a complete cache.
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "manifest.csv", buf.getvalue())
    return root


def read_manifest(root: str | Path) -> list[dict[str, str]]:
    """The manifest rows of a prepared dataset folder.

    Raises:
        FileNotFoundError: no manifest (the folder was not prepared, or preparation was interrupted).
    """
    path = Path(root) / "manifest.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; run `wsseg data prepare` (or `wsseg run`) to build the cache")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    missing = set(MANIFEST_COLUMNS) - set(rows[0] if rows else MANIFEST_COLUMNS)
    if missing:
        raise ValueError(f"{path} lacks columns {sorted(missing)}; delete the folder to rebuild the cache")
    return rows


def split_hash(image_ids: Sequence[str]) -> str:
    """A hash of a split's sorted image ids, recorded so a run names exactly what it saw."""
    return hashlib.sha256("\n".join(sorted(image_ids)).encode()).hexdigest()[:16]


class MammogramDataset(Dataset[dict[str, Any]]):
    """One split of a prepared dataset folder.

    Args:
        root: the prepared folder (holds ``manifest.csv``).
        split: ``train``, ``val`` or ``test``.
        with_masks: read lesion masks; False for the training loader of weakly supervised methods.
        dataset: the dataset's registered name, copied into each sample's meta.
        standardize: return the image standardised (float32); False returns the cache's raw pixels (uint16) for
            :func:`standardize_images` to standardise on the GPU: the loader workers then skip the float work and
            pass half the bytes (``wsseg run`` does this on CUDA; :func:`wsseg.evaluation.inference.to_device`
            standardises a raw batch after the copy).
        patient_splits: patient_id -> split, replacing the manifest's split column (one fold of a k-fold
            cross-validation, :mod:`wsseg.data.folds`): every fold reads the same cache.
    """

    def __init__(
        self,
        root: str | Path,
        split: str,
        with_masks: bool,
        dataset: str = "phantom",
        *,
        standardize: bool = True,
        patient_splits: dict[str, str] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        self.root = Path(root)
        self.split = split
        self.with_masks = with_masks
        self.dataset = dataset
        self.standardize = standardize
        rows = read_manifest(root)
        if patient_splits is None:
            self.rows = [r for r in rows if r["split"] == split]
        else:
            unknown = sorted({r["patient_id"] for r in rows} - set(patient_splits))
            if unknown:
                raise ValueError(
                    f"{self.root / 'manifest.csv'} has patients the fold assignment lacks ({', '.join(unknown[:5])}); "
                    "the assignment must come from the same download: regenerate it with `wsseg data split --folds`"
                )
            self.rows = [r for r in rows if patient_splits[r["patient_id"]] == split]
        if not self.rows:
            raise ValueError(f"{self.root / 'manifest.csv'} has no images in split {split!r}")

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def image_ids(self) -> list[str]:
        """Image ids in dataset order."""
        return [r["image_id"] for r in self.rows]

    @property
    def labels(self) -> np.ndarray:
        """(N, K) float32 image labels, read from the manifest (no image decoding)."""
        return np.array([[float(r[c]) for c in CLASSES] for r in self.rows], dtype=np.float32)

    def __getitem__(self, i: int) -> dict[str, Any]:
        path = self.root / self.rows[i]["file"]
        try:
            with np.load(path) as z:
                # Memory-mapped: the image's pages are read once, straight into the float conversion below.
                mapped = npz_memmap(path, "image.npy", z.zip)
                raw = mapped if mapped is not None else z["image"]  # (H, W) uint16
                width = raw.shape[-1]
                breast = np.unpackbits(z["breast_mask"], axis=-1, count=width).astype(bool)
                masks = np.unpackbits(z["masks"], axis=-1, count=width).astype(bool) if self.with_masks else None
                labels = z["labels"].astype(np.float32)
                meta = json.loads(str(z["meta"]))
        except (OSError, KeyError, ValueError) as e:
            raise OSError(f"cannot read {path}: {e}. Delete {self.root} to rebuild the cache.") from e
        if self.standardize:
            image = raw.astype(np.float32)
            # Per-image standardisation (as GMIC/GLAM do) removes exposure differences between images. numpy, not
            # standardize_images: 20 vs 81 ms per 2944x1920 image on a CPU core, and the published CPU results' numbers.
            image = (image - image.mean()) / max(float(image.std()), 1e-6)
        else:
            image = np.array(raw)  # out of the read-only memory map, still uint16
        meta.update(dataset=self.dataset, split=self.split)
        sample: dict[str, Any] = {
            "image": torch.from_numpy(image)[None],  # (1, H, W)
            "labels": torch.from_numpy(labels),  # (K,)
            "breast_mask": torch.from_numpy(breast),  # (H, W)
            "meta": meta,
        }
        if masks is not None:
            sample["masks"] = torch.from_numpy(masks)  # (K, H, W)
        return sample


def standardize_images(images: Tensor) -> Tensor:
    """(B, 1, H, W) raw pixels of any dtype -> float32 standardised per image, as :class:`MammogramDataset` does.

    Runs where ``images`` are (on the GPU for a raw CUDA batch); the mean and variance are accumulated in
    float64, so the result matches the loader's numpy standardisation to float32 rounding.
    """
    x = images.float()
    dims = (1, 2, 3)
    mean = x.mean(dim=dims, keepdim=True, dtype=torch.float64)  # (B, 1, 1, 1)
    centred = x - mean.float()
    std = centred.square().mean(dim=dims, keepdim=True, dtype=torch.float64).sqrt()  # population std, as numpy
    return centred / std.clamp_min(1e-6).float()


def npz_memmap(path: str | Path, member: str, archive: zipfile.ZipFile | None = None) -> np.ndarray | None:
    """A read-only memory map of one array stored uncompressed in an ``.npz`` file; None if it is compressed.

    ``np.load`` cannot memory-map inside an archive, but ``np.savez`` stores members uncompressed, so each one is
    a plain ``.npy`` file at a fixed offset: the local zip header gives the offset, the ``.npy`` header the
    dtype and shape. Pass ``archive`` when the file is already open (``np.load(path).zip``), so that its
    directory is not read twice.

    Raises:
        KeyError: no such member.
        ValueError: not a zip file or not a ``.npy`` member.
    """
    if archive is not None:
        info = archive.getinfo(member)
    else:
        try:
            with zipfile.ZipFile(path) as zf:
                info = zf.getinfo(member)
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path} is not an .npz archive: {e}") from e
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the fixed part of the local file header
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: broken zip header for {member}")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:  # format 3.0 (non-ASCII field names): not worth mapping
            return None
        offset = f.tell()
    if dtype.hasobject:
        raise ValueError(f"{path}: {member} holds Python objects; refusing to map it")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors along a new batch axis; ``meta`` becomes a list of dicts."""
    batch: dict[str, Any] = {"meta": [s["meta"] for s in samples]}
    for key in samples[0]:
        if key != "meta":
            batch[key] = torch.stack([s[key] for s in samples])
    return batch
