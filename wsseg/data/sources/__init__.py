"""The data-source registry: one name per dataset reader, discovered lazily.

A data source reads one public dataset in its native layout (as downloaded) and turns it into a list of
:class:`SourceRecord`: ids, laterality, view, image-level labels, the official split where one exists, and
the lesion annotations in the **original image frame**. Everything after that (decoding, breast crop, flip
to the canonical orientation, resize to the profile's size, the cache) is shared and lives in
:mod:`wsseg.data.prepare`, so a new source is one file with one ``scan`` method (and, beside it, the writer of a
tiny fixture of its native layout). The built-in phantom is a source too (:mod:`wsseg.data.sources.phantom`): it
generates its images instead of reading a download, by overriding :meth:`DataSource.prepare`.

Every source, built in or third party, registers through the ``wsseg.sources`` entry-point group, the same way
methods do (:mod:`wsseg.registry`): loading an entry point imports the source's module, whose
``@register_source("name")`` decorator records the class. The entry points are read on first lookup.
"""

from __future__ import annotations

import csv
import fnmatch
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np

from wsseg._entry_points import load_entry_points
from wsseg.core import Geometry

if TYPE_CHECKING:  # the data settings live in wsseg.config, a floor above; sources only read their fields
    from wsseg.config import DataConfig
    from wsseg.data.preview import PreviewItem

ENTRY_POINT_GROUP = "wsseg.sources"
# Dataset names end up in cache folders, run ids and CLI arguments: one path component of plain characters.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")

AnnotationType = Literal["mask", "box", "circle", "polygon", "none"]
LabelSource = Literal["pathology", "birads", "user"]


class DataError(ValueError):
    """A problem with one file of a download: the message names the file, the reason and the fix."""

    def __init__(self, file: str | Path, reason: str, fix: str = "") -> None:
        self.file = str(file)
        self.reason = reason
        self.fix = fix
        super().__init__(f"{file}: {reason}" + (f". {fix}" if fix else ""))


@dataclass(frozen=True)
class Problem:
    """One skipped or broken item, for the report of ``wsseg data check`` / ``prepare``."""

    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


def not_regular(path: Path) -> str | None:
    """What ``path`` is when it exists but is no regular file (reading a FIFO would block forever), else None."""
    if path.is_file() or not (path.exists() or path.is_symlink()):
        return None
    if path.is_symlink() and not path.exists():
        return "a symbolic link to nothing"
    return "a folder" if path.is_dir() else "not a regular file (a FIFO, socket or device)"


def require_file(path: Path, what: str = "file") -> None:
    """Raise a :class:`DataError` naming ``path`` unless it is a regular file.

    Raises:
        DataError: missing, or a folder, FIFO, socket, device or dangling link.
    """
    kind = not_regular(path)
    if kind is not None:
        raise DataError(path, f"the {what} is {kind}", "replace it with the file from the download")
    if not path.is_file():
        raise DataError(path, f"the {what} is missing", "restore it from the download")


def regular_files(root: Path, pattern: str, problems: list[Problem]) -> list[Path]:
    """``root.rglob(pattern)``, sorted, without the entries that are no regular files (reported in ``problems``)."""
    out = []
    for p in sorted(root.rglob(pattern)):
        kind = not_regular(p)
        if kind is None:
            out.append(p)
        else:  # left out and said: a folder named like an index must not make the index vanish silently
            problems.append(Problem(str(p), f"{kind}, not a data file; replace it with the file from the download"))
    return out


def read_csv_table(
    path: Path, required: Sequence[str], delimiter: str = ","
) -> tuple[list[tuple[str, dict[str, str]]], list[Problem]]:
    """The rows of a downloaded CSV index as ``(path:line, row)``; rows cut short or too long become problems.

    A row with fewer fields than the header is what a download cut short leaves; one with more is a row whose
    fields moved (an unquoted comma). Either would silently shift values, so it is reported instead of read. Keys
    and values are stripped; a byte-order mark is skipped.

    Raises:
        DataError: not a regular file, not UTF-8 text, or a header without the ``required`` columns (an empty file).
    """
    require_file(path, "index CSV")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            # strict: a file cut inside a quoted field (CBIS-DDSM's paths are quoted) is an error, not a short value.
            reader = csv.DictReader(f, delimiter=delimiter, strict=True)
            header = [h.strip() for h in (reader.fieldnames or [])]
            raw = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(path, f"not a readable CSV ({e})", "restore the file from the download (UTF-8 text)") from None
    missing = [c for c in required if c not in header]
    if missing:
        what = "the file is empty" if not header else f"its header is {header[:8]}"
        raise DataError(path, f"missing column(s) {missing} ({what})", "restore the CSV from the download")
    rows, problems = [], []
    for i, row in enumerate(raw, start=2):
        where = f"{path}:{i}"
        short = [k.strip() for k, v in row.items() if k is not None and v is None]
        if short:
            problems.append(Problem(where, f"the row ends before column(s) {short}: the file is cut short or broken"))
        elif row.get(None):
            problems.append(Problem(where, f"the row has {len(row[None])} more field(s) than the header"))
        else:
            rows.append((where, {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}))
    return rows, problems


@dataclass(frozen=True)
class ModelFrame:
    """Where a mask drawn in a model-input frame sits in the original image (GMIC's segmentation PNGs).

    The frame is: crop the original to ``window_location``, mirror it left-right when ``flipped``, then take the
    ``size`` window whose top-left corner is ``origin`` in that flipped crop (negative or overhanging parts
    were zero padding).

    Attributes:
        window_location: ``(top, bottom, left, right)`` of the crop in the original image, half-open.
        flipped: whether the crop was mirrored before windowing.
        origin: ``(row, col)`` of the window's top-left corner in the flipped crop.
        size: the model frame's ``(rows, cols)``.
    """

    window_location: tuple[int, int, int, int]
    flipped: bool
    origin: tuple[int, int]
    size: tuple[int, int]

    def to_original(self, mask: np.ndarray, original_hw: tuple[int, int]) -> np.ndarray:
        """A (rows, cols) = ``size`` mask mapped into a bool mask of the original image; padding is dropped."""
        top, bottom, left, right = self.window_location
        h, w = bottom - top, right - left
        r0, c0 = self.origin
        crop = np.zeros((h, w), dtype=bool)
        rs, re_ = max(r0, 0), min(r0 + self.size[0], h)
        cs, ce = max(c0, 0), min(c0 + self.size[1], w)
        if rs < re_ and cs < ce:
            crop[rs:re_, cs:ce] = mask[rs - r0 : re_ - r0, cs - c0 : ce - c0]
        if self.flipped:
            crop = crop[:, ::-1]
        out = np.zeros(original_hw, dtype=bool)
        out[top:bottom, left:right] = crop[: original_hw[0] - top, : original_hw[1] - left]
        return out


@dataclass
class Lesion:
    """One annotated finding, in the original image frame (x = column, y = row, see docs/datasets.md, "Conventions").

    Attributes:
        cls: ``benign`` or ``malignant``.
        kind: ``mask`` (a mask file), ``box``, ``circle`` or ``none`` (labelled but not localised).
        mask_file: binary mask image of the original image's size (kind ``mask``).
        box: ``(xmin, ymin, xmax, ymax)`` continuous pixel edges, half-open on the max side (kind ``box``).
        circle: ``(col, row, radius)`` in pixel indices, row counted from the top (kind ``circle``).
        polygon: ``[(x, y), ...]`` vertices in pixel indices (kind ``polygon``, e.g. INbreast contours).
        name: the dataset's own lesion type (``mass``, ``CALC``...), kept for the meta.
        model_frame: for a mask file drawn in a model-input frame rather than the original one: where that frame
            sits in the image (used when the mask's size is the frame's, not the image's).
    """

    cls: str
    kind: AnnotationType
    mask_file: Path | None = None
    box: tuple[float, float, float, float] | None = None
    circle: tuple[float, float, float] | None = None
    polygon: list[tuple[float, float]] | None = None
    name: str = ""
    model_frame: ModelFrame | None = None


@dataclass
class SourceRecord:
    """One image of a download, before decoding.

    Attributes:
        image_id: unique within the dataset.
        patient_id: the split unit (all images of a patient land in one split).
        exam_id: the exam (study) the image belongs to.
        laterality: ``L`` or ``R`` (``""`` when unknown).
        view: ``CC``, ``MLO``...
        labels: ``(benign, malignant)`` image-level presence, 0/1.
        image_file: the image on disk (DICOM, PNG, PGM, ...).
        lesions: annotations in the original frame.
        split: the official split (``train``/``test``, or ``val``) or None where the dataset has none.
        chest_wall: where the dataset's tags put the chest wall natively (``left``/``right``), or None; the
            flip itself is decided by image content and disagreements are counted in the report.
        pixel_spacing_mm: native pixel spacing when known.
        expected_hw: the (rows, cols) the dataset's tables give, checked against the decoded image.
        extra: dataset-specific meta copied into each sample's meta.
    """

    image_id: str
    patient_id: str
    exam_id: str
    laterality: str
    view: str
    labels: tuple[int, int]
    image_file: Path
    lesions: list[Lesion] = field(default_factory=list)
    split: str | None = None
    chest_wall: str | None = None
    pixel_spacing_mm: float | None = None
    expected_hw: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScanResult:
    """What a source found in a download: the usable records and the problems met while indexing."""

    records: list[SourceRecord]
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class PrepareOptions:
    """How a dataset is prepared, beyond its :class:`~wsseg.config.DataConfig` (``wsseg data prepare``'s flags).

    Attributes:
        workers: processes (all the CPUs this process may use when None).
        strict: any bad file is an error instead of a skipped image (downloads only).
        split_file: a ``patient_id,split`` CSV replacing the committed split (downloads only).
        verify: read every cached file whole and prepare the damaged ones again (``wsseg data prepare``); a run
            trusts a complete cache and repairs a damaged file when it meets it.
        progress: show progress bars.
        log: where one-line notes go (images skipped, files repaired).
    """

    workers: int | None = None
    strict: bool = False
    split_file: str | Path | None = None
    verify: bool = False
    progress: bool = True
    log: Callable[[str], None] = print


@dataclass
class Prepared:
    """A prepared dataset: the cache folder the loaders read and what the run record says about it.

    Attributes:
        root: the cache folder (``manifest.csv`` plus one ``.npz`` per image).
        info: the record's ``dataset_info`` (version, cache key, annotation...).
        summary: what ``wsseg data prepare`` prints about it (counts, skipped files, repaired files).
    """

    root: Path
    info: dict[str, Any]
    summary: str


class DataSource:
    """Base class of a dataset reader. Subclasses set the class attributes and implement :meth:`scan`.

    A download is scanned into records and turned into the cache by :mod:`wsseg.data.prepare`; a source that makes
    its images itself (the phantom) overrides :meth:`prepare`, :meth:`validate`, :meth:`patient_labels` and
    :meth:`preview` (and :meth:`data_version`) instead, and sets ``needs_root = False``.

    Attributes:
        name: registry name (set by :func:`register_source`).
        annotation: the ground truth the dataset gives: ``mask``, ``box``, ``circle`` or ``none``; the
            evaluator uses the metrics valid for it.
        label_source: where benign/malignant comes from: ``pathology`` (biopsy), ``birads`` (radiologist
            suspicion, a proxy) or ``user``.
        licence: the dataset's licence terms in a few words (shown by ``wsseg list datasets``).
        version: bump when the reading of the native files changes (it keys the cache).
        default_pixel_spacing_mm: the spacing assumed when neither the tables nor the header give one (metrics
            in mm, e.g. FROC distances, need one); the sample's meta says where its spacing came from.
        skip_for_processing: DICOMs whose Presentation Intent Type is ``FOR PROCESSING`` (raw detector data) are
            skipped and reported, as the dataset's own tools do (VinDr-Mammo).
        needs_root: the source reads a download (``--data-root``); False for a generated dataset.
    """

    name: ClassVar[str] = ""
    annotation: ClassVar[str] = "mask"
    label_source: ClassVar[str] = "pathology"
    licence: ClassVar[str] = ""
    version: ClassVar[int] = 1
    # Native pixel spacing to assume when neither the record nor the DICOM header gives one.
    default_pixel_spacing_mm: ClassVar[float] = 0.1
    skip_for_processing: ClassVar[bool] = False
    needs_root: ClassVar[bool] = True

    def scan(self, root: Path) -> ScanResult:
        """Index the download at ``root`` without decoding any image.

        Raises:
            DataError: the download is unusable as a whole (no index file, unreadable table).
        """
        raise NotImplementedError

    @classmethod
    def description(cls) -> str:
        """First line of the class docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def write_fixture(self, root: Path) -> dict[str, Any]:
        """Write a tiny synthetic download of this dataset, in its native layout and with its traps, into ``root``.

        For tests and ``wsseg data fixture``; a source defines it beside its reader. Returns image id -> what was
        drawn there (:class:`wsseg.data.fixture_kit.Phantom` for the built-in sources).

        Raises:
            NotImplementedError: the source has no fixture writer.
        """
        raise NotImplementedError(f"dataset {self.name!r} has no fixture writer")

    def validate(self, data: DataConfig) -> None:
        """Refuse data settings this source cannot use, before anything is read.

        Raises:
            ValueError: naming the option and the fix.
        """
        if data.root is None:
            raise ValueError(f"--dataset {self.name} needs --data-root PATH (the downloaded dataset)")

    def data_version(self, data: DataConfig) -> str:
        """The version that data prepared with ``data``'s settings gets in a record's ``dataset_info``, before any read.

        ``wsseg benchmark`` compares it with a finished run's, so a run made from an older reading of the download
        (or an older phantom generator) is not skipped and published beside the new ones. A source that overrides
        :meth:`prepare` writes this value as its ``info["version"]`` and overrides this method to match.
        """
        from wsseg.data.prepare import dataset_version  # the shared pipeline imports this module

        return dataset_version(self.name, self.version, data.voi_lut)

    def prepare(self, data: DataConfig, geometry: Geometry, options: PrepareOptions) -> Prepared:
        """Read, preprocess and cache the download at ``data.root`` at ``geometry`` (reused when already there).

        Raises:
            ValueError: no ``data.root``.
            FileNotFoundError: ``data.root`` does not exist.
            DataError: see :func:`wsseg.data.prepare.prepare_source`.
        """
        from wsseg.data.prepare import prepare_download  # the shared pipeline imports this module

        return prepare_download(self, data, geometry, options)

    def patient_labels(
        self, root: str | Path | None, cache_root: Path | None = None
    ) -> list[tuple[str, tuple[float, float]]]:
        """``(patient_id, (benign, malignant))`` per image, read from the download's index (no image decoded).

        Raises:
            ValueError: no ``root``.
            DataError: the index is unusable.
        """
        if root is None:
            raise ValueError(f"--dataset {self.name} needs --data-root PATH (the downloaded dataset)")
        return [
            (r.patient_id, (float(r.labels[0]), float(r.labels[1]))) for r in self.scan(Path(root).expanduser()).records
        ]

    def preview(
        self,
        data: DataConfig,
        geometry: Geometry,
        n: int,
        split: str,
        ids: list[str] | None,
        lesions_only: bool,
        split_file: str | Path | None = None,
    ) -> tuple[list[PreviewItem], list[Problem]]:
        """Preview tiles of ``n`` images of ``split`` (or ``ids``) as they will be scored; nothing is written.

        The split is the one ``prepare`` uses: ``split_file``, else the committed one, else the official or seeded one.

        Raises:
            ValueError: no ``data.root``, or an unknown split.
            FileNotFoundError, DataError: see :func:`wsseg.data.prepare.preview_source`.
        """
        from wsseg.data.prepare import preview_source  # the shared pipeline imports this module

        self.validate(data)
        assert data.root is not None  # validate refuses a missing root
        return preview_source(
            self.name,
            data.root,
            (geometry.height, geometry.width),
            n,
            split,
            data.seed,
            ids,
            lesions_only,
            data.voi_lut,
            data.allow_outside_root,
            split_file,
        )


S = TypeVar("S", bound=type[DataSource])
_REGISTRY: dict[str, type[DataSource]] = {}
_BROKEN: dict[str, str] = {}
_discovered = False
_loading_source: str | None = None


def register_source(name: str) -> Callable[[S], S]:
    """Class decorator that registers a data source under ``name``.

    Raises:
        ValueError: a name that is not one word of letters, digits, ``_`` and ``-``, or a name already taken by
            another class (the message names both).
        TypeError: the class is not a :class:`DataSource`.
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"dataset name {name!r}: use letters, digits, '_' and '-' only (it names cache folders)")

    def decorator(cls: S) -> S:
        if not (isinstance(cls, type) and issubclass(cls, DataSource)):
            raise TypeError(f"@register_source({name!r}) decorates {cls!r}, not a subclass of DataSource")
        old = _REGISTRY.get(name)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            where = f" ({_loading_source})" if _loading_source else ""
            raise ValueError(
                f"dataset name {name!r} is registered twice: by {old.__module__}.{old.__qualname__} and by "
                f"{cls.__module__}.{cls.__qualname__}{where}; rename one of them"
            )
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


@contextmanager
def _source(source: str) -> Iterator[None]:
    global _loading_source
    previous, _loading_source = _loading_source, source
    try:
        yield
    finally:
        _loading_source = previous


def _discover() -> None:
    """Load every entry point of the ``wsseg.sources`` group once; a failing plugin is recorded, not raised."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    eps = sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    load_entry_points(eps, _REGISTRY, _BROKEN, _source, "dataset")


def refresh() -> None:
    """Rescan the entry points (after installing a plugin into a running interpreter).

    Sources already imported stay registered; broken entries are retried.
    """
    global _discovered
    _discovered = False
    _BROKEN.clear()
    _discover()


def list_sources(pattern: str = "*") -> list[str]:
    """Registered, working data-source names matching ``pattern`` (the phantom included), sorted."""
    _discover()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def broken_sources() -> dict[str, str]:
    """Entry points of the ``wsseg.sources`` group that failed to load, with their error."""
    _discover()
    return dict(_BROKEN)


def get_source(name: str) -> DataSource:
    """An instance of source ``name``.

    Raises:
        KeyError: unknown or broken source; the message lists the valid names or the import error.
    """
    _discover()
    if name in _REGISTRY:
        return _REGISTRY[name]()
    if name in _BROKEN:
        raise KeyError(f"dataset {name!r} is installed but broken: {_BROKEN[name]}")
    raise KeyError(f"unknown dataset {name!r}; available: {', '.join(list_sources())}")
