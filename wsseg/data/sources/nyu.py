"""``nyu``: the NYU/GMIC exam-list format (pickle + 16-bit PNGs + segmentation PNGs).

Layout (as in the GMIC repository's ``sample_data``): an exam-list pickle (``exam_list_before_cropping.pkl``
or the one ``.pkl`` under ``--root``), ``images/<name>.png`` (16-bit, uncropped) and optionally
``segmentation/<name>_<benign|malignant>.png``. Each exam dict maps ``L-CC``/``R-CC``/``L-MLO``/``R-MLO`` to
image names; labels are the breast-level ``cancer_label`` entries of the view's side (``left_benign``...).
A listed segmentation that does not exist means no lesion of that class (the GMIC convention).

Segmentations may be in the original image frame (the image's size) or, as GMIC's own sample masks are, in
its 2944x1920 **model-input frame** (docs/datasets.md): cropped to ``window_location``, flipped by
``horizontal_flip``, and windowed at ``best_center`` with GMIC's inference-time zero padding. Those are
mapped back to the original frame with the exam list written by GMIC's crop and optimal-centre steps
(``data.pkl``: the same exams plus ``window_location`` and ``best_center`` per view). Under a folder ``--root``
the exam list carrying that metadata is preferred, then ``exam_list_before_cropping.pkl``; images are read
from the ``images/`` folder next to the exam list or under ``--root`` (the original, uncropped PNGs).

The pickle is read by a restricted unpickler that admits only plain containers and scalars; a pickle that
names any global (a class, a function such as ``os.system``) is refused before anything runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from wsseg.data.fixture_kit import H, Phantom, W, phantom, save_mask, save_png16
from wsseg.data.sources import (
    DataError,
    DataSource,
    Lesion,
    ModelFrame,
    Problem,
    ScanResult,
    SourceRecord,
    not_regular,
    register_source,
    regular_files,
    require_file,
)

VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")
GMIC_INPUT_SIZE = (2944, 1920)  # GMIC's model-input window (rows, cols), the frame of its segmentation PNGs


def gmic_window_origin(
    crop_hw: tuple[int, int], best_center: tuple[int, int], view: str, size: tuple[int, int] = GMIC_INPUT_SIZE
) -> tuple[int, int]:
    """(row, col) of GMIC's inference window's top-left corner in the flipped crop (docs/datasets.md).

    Without crop or size noise: the window is centred at ``best_center``; an axis shorter than the window is
    zero-padded (CC vertically on both sides, ``int(pad / 2)`` in front; MLO at the bottom; every view on the
    right), otherwise the window is shifted inside the image.
    """
    (h, w), (cy, cx) = crop_hw, best_center
    if h < size[0]:
        top = -((size[0] - h) // 2) if view.endswith("CC") else 0
    else:
        top = min(max(cy - size[0] // 2, 0), h - size[0])
    left = 0 if w < size[1] else min(max(cx - size[1] // 2, 0), w - size[1])
    return top, left


class _PlainUnpickler(pickle.Unpickler):
    """Refuses every global lookup, so only dicts, lists, tuples, strings, numbers, bools and None load."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refused to load the global {module}.{name}")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused a persistent id")


def load_exam_list(path: Path) -> list[dict[str, Any]]:
    """Read an exam-list pickle safely.

    Raises:
        DataError: the pickle names a global (could run code), is corrupt, or is not a list of dicts.
    """
    require_file(path, "exam list")
    try:
        data = _PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except pickle.UnpicklingError as e:
        raise DataError(
            path,
            f"not a plain exam list: {e}. wsseg never runs code from a pickle",
            "re-save the exam list with only lists, dicts, strings and numbers (pickle protocol <= 4)",
        ) from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise DataError(path, f"corrupt pickle ({type(e).__name__}: {e})", "re-create the exam list") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise DataError(path, f"expected a list of exam dicts, got {type(data).__name__}", "check the file")
    return data


def _has_crop_metadata(exams: list[dict[str, Any]]) -> bool:
    return bool(exams) and all("window_location" in e and "best_center" in e for e in exams)


def find_exam_list(root: Path) -> Path:
    """The exam list under ``root``: ``root`` itself when a file, else the one ``.pkl`` found.

    With several: the one pickle carrying GMIC's crop and centre metadata (``data.pkl``), else
    ``exam_list_before_cropping.pkl``.

    Raises:
        DataError: no candidate, or several with nothing to choose between them.
    """
    if root.is_file():
        return root
    problems: list[Problem] = []
    found = regular_files(root, "*.pkl", problems)
    if not found and problems:
        raise DataError(problems[0].file, problems[0].reason, "")
    if len(found) == 1:
        return found[0]
    with_meta = []
    for p in found:
        try:
            if _has_crop_metadata(load_exam_list(p)):
                with_meta.append(p)
        except DataError:
            continue  # not an exam list (or refused): never a candidate when others exist
    named = [p for p in found if p.name == "exam_list_before_cropping.pkl"]
    for group in (with_meta, named):
        if len(group) == 1:
            return group[0]
    raise DataError(
        root,
        f"expected one exam-list pickle, found {len(found)}"
        + (f" ({', '.join(str(p.relative_to(root)) for p in found[:5])})" if found else ""),
        "pass --root FILE.pkl" if found else "restore exam_list_before_cropping.pkl (or GMIC's data.pkl) there",
    )


def find_folder(root: Path, pkl: Path, name: str) -> Path:
    """``<pkl folder>/<name>``, else ``<root>/<name>``, else the first ``<name>`` folder under ``root``."""
    base = root if root.is_dir() else pkl.parent
    for candidate in (pkl.parent / name, base / name):
        if candidate.is_dir():
            return candidate
    return next((p for p in sorted(base.rglob(name)) if p.is_dir()), pkl.parent / name)


@register_source("nyu")
class NYUExamList(DataSource):
    """NYU/GMIC exam-list pickle with 16-bit PNG views and {0,255} segmentation PNGs; breast-level labels."""

    annotation = "mask"
    label_source = "pathology"
    licence = "GMIC sample data ships with AGPL-3.0 code; your own NYU-format data: your terms"

    def write_fixture(self, root: Path) -> dict[str, Any]:
        """A tiny NYU exam list with its images and segmentations (:func:`write_fixture`)."""
        return write_fixture(root)

    def scan(self, root: Path) -> ScanResult:
        """Read the exam list and resolve each view's PNG and segmentation files."""
        pkl = find_exam_list(root)
        images, segs = find_folder(root, pkl, "images"), find_folder(root, pkl, "segmentation")
        records, problems = [], []
        first_seen: dict[str, str] = {}  # image name -> where it was first listed
        for i, exam in enumerate(load_exam_list(pkl)):
            for view in VIEWS:
                names = exam.get(view, []) or []
                if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
                    where = f"{pkl} exam {i} {view}"
                    problems.append(
                        Problem(where, f"{view} must be a list of image names, got {names!r}; fix the exam")
                    )
                    continue
                for j, name in enumerate(names):
                    where = f"{pkl} exam {i} {view}"
                    if name in first_seen:  # one image in two exams (or of two patients): the first listing is kept
                        problems.append(
                            Problem(
                                where, f"duplicate image {name!r}, already listed in {first_seen[name]}; list it once"
                            )
                        )
                        continue
                    first_seen[name] = where
                    try:
                        records.append(self._record(exam, i, view, j, name, images, segs, pkl))
                    except DataError as e:
                        problems.append(Problem(e.file, e.reason + (f"; {e.fix}" if e.fix else "")))
        return ScanResult(records, problems)

    @staticmethod
    def _record(
        exam: dict[str, Any], i: int, view: str, j: int, name: str, images: Path, segs: Path, pkl: Path
    ) -> SourceRecord:
        where = f"{pkl} exam {i} {view}"
        side = "left" if view.startswith("L") else "right"
        cancer = exam.get("cancer_label")
        if not isinstance(cancer, dict):
            raise DataError(where, "no cancer_label dict", "add cancer_label with left_/right_ benign/malignant")
        labels = []
        for cls in ("benign", "malignant"):
            value = cancer.get(f"{side}_{cls}")
            if value not in (0, 1):
                raise DataError(where, f"unknown label {side}_{cls}={value!r}", "use 0 or 1")
            labels.append(int(value))
        flip = str(exam.get("horizontal_flip", "NO")).upper()
        if flip not in ("NO", "YES"):
            raise DataError(where, f"horizontal_flip is {flip!r}", "use 'NO' or 'YES'")
        # With 'NO', right views face left natively (chest wall on the right); 'YES' swaps the convention.
        chest_wall = (
            ("right" if side == "right" else "left") if flip == "NO" else ("left" if side == "right" else "right")
        )
        frame = model_frame(exam, view, j, flip, where)
        lesions = []
        for cls in ("benign", "malignant"):
            seg_names = exam.get(f"{view}_{cls}_seg") or [f"{name}_{cls}"]
            if not isinstance(seg_names, list | tuple) or not all(isinstance(s, str) for s in seg_names):
                raise DataError(where, f"{view}_{cls}_seg must be a list of names, got {seg_names!r}", "fix the exam")
            for seg in seg_names:
                seg_file = segs / f"{seg}.png"
                kind = not_regular(seg_file)
                if kind is not None:  # a folder or a broken link must not read as "no lesion"
                    raise DataError(seg_file, f"the segmentation is {kind}", "replace it with the PNG or remove it")
                if seg_file.is_file():
                    if not labels[("benign", "malignant").index(cls)]:
                        raise DataError(seg_file, f"a {cls} mask on a view labelled {side}_{cls}=0", "fix the label")
                    lesions.append(Lesion(cls, "mask", mask_file=seg_file, model_frame=frame))
        exam_id = str(exam.get("exam_id", f"exam{i:04d}"))
        return SourceRecord(
            image_id=name,
            patient_id=str(exam.get("patient_id", exam_id)),
            exam_id=exam_id,
            laterality=view[0],
            view=view.split("-")[1],
            labels=(labels[0], labels[1]),
            image_file=images / f"{name}.png",
            lesions=lesions,
            chest_wall=chest_wall,
        )


def model_frame(exam: dict[str, Any], view: str, j: int, flip: str, where: str) -> ModelFrame | None:
    """GMIC's model-input frame of image ``j`` of ``view`` from the exam's crop and centre metadata, if present.

    Raises:
        DataError: the metadata is present but malformed.
    """
    locations, centers = exam.get("window_location"), exam.get("best_center")
    if not isinstance(locations, dict) or not isinstance(centers, dict):
        return None
    try:
        top, bottom, left, right = (int(v) for v in locations[view][j])
        cy, cx = (int(v) for v in centers[view][j])
    except (KeyError, IndexError, TypeError, ValueError):
        raise DataError(
            where, "window_location/best_center missing or malformed for this view", "re-run GMIC's crop step"
        ) from None
    if bottom <= top or right <= left:
        raise DataError(where, f"empty window_location {(top, bottom, left, right)}", "re-run GMIC's crop step")
    # GMIC flips R views with horizontal_flip 'NO' and L views with 'YES' (docs/datasets.md).
    flipped = view.startswith("R") == (flip == "NO")
    origin = gmic_window_origin((bottom - top, right - left), (cy, cx), view)
    return ModelFrame((top, bottom, left, right), flipped, origin, GMIC_INPUT_SIZE)


# The fixture: a tiny synthetic download in the native layout, for tests and `wsseg data fixture`.

GMIC_SIZE = (2944, 1920)  # GMIC's model-input frame (rows, cols)
NYU_WINDOW = (2, H, 1, W)  # the fixture's GMIC crop (top, bottom, left, right) of every view


def write_fixture(
    root: Path, n_exams: int = 4, horizontal_flip: str = "NO", model_frame_masks: bool = False
) -> dict[str, Phantom]:
    """``exam_list_before_cropping.pkl`` (protocol 3) + ``images/*.png`` + ``segmentation/*.png``.

    With ``model_frame_masks`` the segmentations are drawn, as GMIC's sample ones are, in its 2944x1920 model-input
    frame (cropped to ``NYU_WINDOW``, flipped, zero-padded as GMIC pads at inference: CC above and below, MLO
    below, every view on the right), and ``sample_output/data.pkl`` is written: the exam list with the crop's
    ``window_location`` and ``best_center``, as GMIC's crop and optimal-centre steps leave it.
    """
    exams, truth = [], {}
    for i in range(n_exams):
        exam: dict[str, Any] = {"horizontal_flip": horizontal_flip}
        for view in ("L-CC", "R-CC", "L-MLO", "R-MLO"):
            name = f"{i}_{view}"
            right_native = (view[0] == "R") == (horizontal_flip == "NO")
            ph = phantom(chest_wall_right=right_native)
            truth[name] = ph
            save_png16(root / "images" / f"{name}.png", ph.image)
            exam[view] = [name]
            exam[f"{view}_benign_seg"] = [f"{name}_benign"]  # listed even when the file does not exist
            exam[f"{view}_malignant_seg"] = [f"{name}_malignant"]
            if view[0] == "L":
                mask = _gmic_frame(ph.lesion, view, right_native) if model_frame_masks else ph.lesion
                save_mask(root / "segmentation" / f"{name}_malignant.png", mask)
        exam["cancer_label"] = {
            "benign": 0,
            "malignant": 1,
            "unknown": 0,
            "left_benign": 0,
            "right_benign": 0,
            "left_malignant": 1,
            "right_malignant": 0,
        }
        exams.append(exam)
    (root / "exam_list_before_cropping.pkl").write_bytes(pickle.dumps(exams, protocol=3))
    if model_frame_masks:
        top, bottom, left, right = NYU_WINDOW
        for exam in exams:
            views = ("L-CC", "R-CC", "L-MLO", "R-MLO")
            exam["window_location"] = {v: [NYU_WINDOW] for v in views}
            exam["best_center"] = {v: [((bottom - top) // 2, (right - left) - 961)] for v in views}
        (root / "sample_output").mkdir(parents=True, exist_ok=True)
        (root / "sample_output" / "data.pkl").write_bytes(pickle.dumps(exams, protocol=3))
    return truth


def _gmic_frame(lesion: np.ndarray, view: str, flipped: bool) -> np.ndarray:
    """A native mask as GMIC's model input sees it: cropped, flipped, zero-padded to 2944x1920."""
    top, bottom, left, right = NYU_WINDOW
    crop = lesion[top:bottom, left:right]
    crop = crop[:, ::-1] if flipped else crop
    out = np.zeros(GMIC_SIZE, dtype=bool)
    front = (GMIC_SIZE[0] - crop.shape[0]) // 2 if view.endswith("CC") else 0
    out[front : front + crop.shape[0], : crop.shape[1]] = crop
    return out
