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

Cache files are checked once per process (:func:`read_cache_file`): the first read of a file verifies the zip
checksums (CRC-32) of every member, the memory-mapped image included, and the arrays' shapes, dtypes, labels and
ids against the manifest; later reads only map the image. A damaged phantom file is regenerated (the phantom is a
pure function of its settings); a damaged file of a real dataset is named in an error that says how to
re-prepare it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import struct
import warnings
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import IO, Any

import numpy as np
import platformdirs
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from wsseg._io import atomic_save, atomic_write_json, atomic_write_text
from wsseg._threads import available_cpus
from wsseg.core import CLASSES, PROFILE_GEOMETRY
from wsseg.data.phantom import PHANTOM_VERSION, PhantomConfig, generate_image

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


def _write_phantom_image(cfg: PhantomConfig, seed: int, split: str, index: int, path: Path) -> np.ndarray:
    """Generate phantom image ``index`` of ``split`` and write it to ``path`` atomically; return its labels."""
    ident = sample_identity(split, index)
    img = generate_image(cfg, seed, split, index, view=ident["view"], laterality=ident["laterality"])
    meta = {**img.meta, **ident}

    def write(f: IO[bytes]) -> None:
        np.savez(
            f,
            image=img.image,
            # Masks are bit-packed along the width: 1/8 of the bytes, unpacked exactly on load.
            masks=np.packbits(img.masks, axis=-1),
            breast_mask=np.packbits(img.breast_mask, axis=-1),
            labels=img.labels.astype(np.float32),
            meta=np.array(json.dumps(meta)),
        )

    atomic_save(path, write)
    return img.labels


def _generate_one(args: tuple[PhantomConfig, int, str, int, str]) -> dict[str, Any]:
    """Generate one phantom image into the cache (kept when its file exists and is intact); its manifest row."""
    cfg, seed, split, index, root = args
    ident = sample_identity(split, index)
    rel = f"{split}/{ident['image_id']}.npz"
    path = Path(root) / rel
    labels = None
    if path.is_file():  # written by an interrupted generation: reuse it if it reads back whole
        try:
            with np.load(path, allow_pickle=False) as z:
                labels = np.asarray(z["labels"], dtype=np.float32).reshape(len(CLASSES))
        except (*CACHE_READ_ERRORS, TypeError):
            labels = None
    if labels is None:
        _clear(path)
        labels = _write_phantom_image(cfg, seed, split, index, path)
    return {**ident, "benign": int(labels[0] > 0), "malignant": int(labels[1] > 0), "file": rel}


def _clear(path: Path) -> None:
    """Remove what stands at a cache file's path (a damaged file, a link, a FIFO, an empty folder) before rewriting."""
    if path.is_dir() and not path.is_symlink():
        path.rmdir()  # a folder with content is not wsseg's: the OSError names it
    else:
        path.unlink(missing_ok=True)


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
    workers = max(1, min(workers or available_cpus(), len(tasks)))  # the CPUs this process may use
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
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"cannot read {path} ({e}); delete the folder {path.parent} to rebuild the cache") from None
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
            pass half the bytes (``wsseg run`` does this on CUDA; :func:`wsseg.runtime.inference.to_device`
            standardises a raw batch after the copy).
        patient_splits: patient_id -> split, replacing the manifest's split column (one fold of a k-fold
            cross-validation, :mod:`wsseg.data.folds`): every fold reads the same cache.
        image_hw: the (rows, cols) every cached image must have; unchecked when None.

    The first read of each file in any process checks it whole (:func:`read_cache_file`); which files were checked
    is kept in shared memory, so DataLoader workers (new ones each epoch) do not check a file again.
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
        image_hw: tuple[int, int] | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {SPLITS}")
        self.root = Path(root)
        self.split = split
        self.with_masks = with_masks
        self.dataset = dataset
        self.standardize = standardize
        self.image_hw = image_hw
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
        # Shared with the loader's worker processes (fork or spawn), so a file is verified once per run. (torch leaves
        # Tensor.share_memory_ unannotated.)
        self.verified: Tensor = torch.zeros(len(self.rows), dtype=torch.bool).share_memory_()  # type: ignore[no-untyped-call]

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
        row = self.rows[i]
        path = self.root / row["file"]
        verify = not bool(self.verified[i])
        try:
            raw, breast, masks, labels, meta = read_cache_file(path, row, self.with_masks, verify, self.image_hw)
        except CacheFileError as e:
            raw, breast, masks, labels, meta = self._repair(path, row, str(e))
        if verify:
            self.verified[i] = True
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

    def _repair(self, path: Path, row: dict[str, str], reason: str) -> CacheContent:
        """Regenerate a damaged phantom file and read it again; a real dataset's file is an error naming the fix.

        Raises:
            OSError: the file belongs to a real dataset's cache (or could not be regenerated).
        """
        settings = _phantom_settings(self.root)
        if settings is None:
            raise OSError(f"{path}: {reason}. {_reprepare_hint(self.root, self.dataset, self.image_hw)}")
        cfg, seed = settings
        index = row["image_id"].rpartition("-")[2]
        _clear(path)
        _write_phantom_image(cfg, seed, row["split"], int(index), path)
        warnings.warn(f"{path}: {reason}; regenerated it from the phantom generator", stacklevel=3)
        try:
            return read_cache_file(path, row, self.with_masks, True, self.image_hw)
        except CacheFileError as e:  # the generator disagrees with the manifest: the folder is not this version's
            raise OSError(f"{path}: regenerated but still {e}; delete {self.root} to rebuild the cache") from None


class CacheFileError(ValueError):
    """A cache file that is missing, damaged or not what the manifest says (the message says what is wrong)."""


# (image (H, W) uint16, breast (H, W) bool, masks (K, H, W) bool or None, labels (K,) float32, meta)
CacheContent = tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray, dict[str, Any]]
# What reading a damaged .npz can raise (zipfile's BadZipFile covers a bad CRC; EOFError an empty file).
CACHE_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error, struct.error)


def read_cache_file(
    path: Path, row: dict[str, str], with_masks: bool, verify: bool, image_hw: tuple[int, int] | None = None
) -> CacheContent:
    """Read one cache ``.npz``; with ``verify`` also check every member's CRC-32 and what the arrays hold.

    The image is memory-mapped (its pages go straight to the float conversion); ``verify`` adds one CRC pass over
    its bytes, which also brings them into the page cache. The other members are small and read through
    ``zipfile``, which checks their CRC as it reads them. Checked with ``verify``: the image is 2-D uint16 (of
    ``image_hw`` when given), the bit-packed masks match it, the labels are 0/1 and those of the manifest
    ``row``, the meta is a JSON object with the row's image id.

    Raises:
        CacheFileError: naming what is wrong.
    """
    if not path.is_file():
        kind = "missing" if not (path.exists() or path.is_symlink()) else "not a regular file"
        raise CacheFileError(f"the cached image is {kind}")
    try:
        with np.load(path, allow_pickle=False) as z:
            mapped = npz_memmap(path, "image.npy", z.zip)
            if verify and mapped is not None:
                _check_member_crc(path, z.zip.getinfo("image.npy"))
            raw = mapped if mapped is not None else z["image"]  # (H, W) uint16
            packed_breast = z["breast_mask"]
            packed_masks = z["masks"] if with_masks or verify else None
            labels = np.asarray(z["labels"], dtype=np.float32)
            meta = json.loads(str(z["meta"]))
    except zipfile.BadZipFile as e:
        raise CacheFileError(f"damaged ({e}): a checksum or the zip structure does not match") from None
    except CACHE_READ_ERRORS as e:
        raise CacheFileError(f"unreadable ({type(e).__name__}: {e})") from None
    if verify:
        _check_content(raw, packed_breast, packed_masks, labels, meta, row, image_hw)
    width = int(raw.shape[-1])
    breast = np.unpackbits(packed_breast, axis=-1, count=width).astype(bool)
    masks = (
        np.unpackbits(packed_masks, axis=-1, count=width).astype(bool)
        if packed_masks is not None and with_masks
        else None
    )
    return raw, breast, masks, labels, meta


def _check_member_crc(path: Path, info: zipfile.ZipInfo, chunk: int = 1 << 22) -> None:
    """Compare the CRC-32 of a stored member's bytes with the one its zip entry records."""
    with open(path, "rb") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        f.seek(info.header_offset + 30 + name_len + extra_len)
        left, crc = info.compress_size, 0
        while left > 0:
            data = f.read(min(chunk, left))
            if not data:
                raise CacheFileError(f"truncated: {info.filename} ends {left} bytes early")
            crc, left = zlib.crc32(data, crc), left - len(data)
    if crc != info.CRC:
        raise CacheFileError(f"damaged: the checksum of {info.filename} does not match (the file changed on disk)")


def _check_content(
    raw: np.ndarray,
    breast: np.ndarray,
    masks: np.ndarray | None,
    labels: np.ndarray,
    meta: Any,
    row: dict[str, str],
    image_hw: tuple[int, int] | None,
) -> None:
    """The structure :func:`read_cache_file` checks when it verifies a file."""
    if raw.ndim != 2 or raw.dtype != np.uint16:
        raise CacheFileError(f"the image is {raw.dtype} of shape {raw.shape}, not a 2-D uint16 image")
    if image_hw is not None and tuple(raw.shape) != tuple(image_hw):
        raise CacheFileError(f"the image is {raw.shape[0]}x{raw.shape[1]}, not {image_hw[0]}x{image_hw[1]}")
    h, packed_w = raw.shape[0], (raw.shape[1] + 7) // 8
    if breast.dtype != np.uint8 or breast.shape != (h, packed_w):
        raise CacheFileError(f"the breast mask has shape {breast.shape}, not that of the image")
    if masks is not None and (masks.dtype != np.uint8 or masks.shape != (len(CLASSES), h, packed_w)):
        raise CacheFileError(f"the lesion masks have shape {masks.shape}, not ({len(CLASSES)}, image size)")
    expected = [float(row[c]) for c in CLASSES]
    if labels.shape != (len(CLASSES),) or labels.tolist() != expected:
        raise CacheFileError(f"the labels {labels.tolist()} are not the manifest's {expected}")
    if not isinstance(meta, dict) or meta.get("image_id") != row["image_id"]:
        found = meta.get("image_id") if isinstance(meta, dict) else type(meta).__name__
        raise CacheFileError(f"the meta names image {found!r}, not {row['image_id']!r}")


def cache_file_problem(root: Path, row: dict[str, str], image_hw: tuple[int, int] | None = None) -> str | None:
    """What is wrong with the cache file of manifest ``row`` (fully verified), or None when it is intact."""
    try:
        read_cache_file(root / row["file"], row, True, True, image_hw)
    except CacheFileError as e:
        return str(e)
    return None


def damaged_cache_files(root: Path, image_hw: tuple[int, int] | None = None) -> list[tuple[dict[str, str], str]]:
    """Every manifest row of a prepared folder whose file is damaged, with what is wrong (every file is read whole)."""
    out = []
    for row in read_manifest(root):
        problem = cache_file_problem(root, row, image_hw)
        if problem is not None:
            out.append((row, problem))
    return out


def repair_phantom_cache(root: Path, image_hw: tuple[int, int] | None = None) -> list[str]:
    """Check every file of a phantom cache folder and regenerate the damaged ones; their paths.

    Raises:
        ValueError: ``root`` is not a phantom cache of this generator version.
    """
    settings = _phantom_settings(root)
    if settings is None:
        raise ValueError(f"{root} is not a phantom cache of generator version {PHANTOM_VERSION}; delete it to rebuild")
    cfg, seed = settings
    repaired = []
    for row, _ in damaged_cache_files(root, image_hw):
        path = root / row["file"]
        _clear(path)
        _write_phantom_image(cfg, seed, row["split"], int(row["image_id"].rpartition("-")[2]), path)
        repaired.append(str(path))
    return repaired


def _phantom_settings(root: Path) -> tuple[PhantomConfig, int] | None:
    """The generator settings of a phantom cache folder (its ``phantom.json``), or None for another cache."""
    try:
        saved = json.loads((root / "phantom.json").read_text(encoding="utf-8"))
        if saved["version"] != PHANTOM_VERSION:
            return None
        return PhantomConfig(**saved["config"]), int(saved["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _reprepare_hint(root: Path, dataset: str, image_hw: tuple[int, int] | None) -> str:
    """How to re-prepare a real dataset's cache: the `wsseg data prepare` command with its download and profile."""
    try:
        download = json.loads((root / "report.json").read_text(encoding="utf-8"))["root"]
    except (OSError, ValueError, KeyError, TypeError):
        download = "PATH"
    sizes = {p: (g.height, g.width) for p, g in PROFILE_GEOMETRY.items()}
    profile = next((p for p, hw in sizes.items() if image_hw is not None and hw == tuple(image_hw)), "PROFILE")
    return (
        f"The cached copy is damaged: run `wsseg data prepare {dataset} --root {download} --profile {profile}`, "
        "which checks every cached file and re-prepares the damaged ones (the others are reused)"
    )


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
