"""``nyu``: the NYU/GMIC exam-list format (pickle + 16-bit PNGs + segmentation PNGs).

Layout (as in the GMIC repository's ``sample_data``): an exam-list pickle (``exam_list_before_cropping.pkl``
or the one ``.pkl`` under ``--root``), ``images/<name>.png`` (16-bit, uncropped) and optionally
``segmentation/<name>_<benign|malignant>.png``. Each exam dict maps ``L-CC``/``R-CC``/``L-MLO``/``R-MLO`` to
image names; labels are the breast-level ``cancer_label`` entries of the view's side (``left_benign``...).
A listed segmentation that does not exist means no lesion of that class (the GMIC convention).

Segmentations must be in the original image frame (same size as the image). GMIC's own sample masks are in
its 2944x1920 model-input frame; mapping them back needs the crop and centre metadata and is not supported
yet: such a mask is reported as wrong-size.

The pickle is read by a restricted unpickler that admits only plain containers and scalars; a pickle that
names any global (a class, a function such as ``os.system``) is refused before anything runs.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from wsseg.data.sources import DataError, DataSource, Lesion, Problem, ScanResult, SourceRecord, register_source

VIEWS = ("L-CC", "R-CC", "L-MLO", "R-MLO")


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


def find_exam_list(root: Path) -> Path:
    """``exam_list_before_cropping.pkl`` or the single ``.pkl`` under ``root``.

    Raises:
        DataError: none, or several candidates.
    """
    if root.is_file():
        return root
    named = sorted(root.rglob("exam_list_before_cropping.pkl"))
    found = named or sorted(root.rglob("*.pkl"))
    if len(found) != 1:
        raise DataError(root, f"expected one exam-list pickle, found {len(found)}", "pass --root FILE.pkl")
    return found[0]


@register_source("nyu")
class NYUExamList(DataSource):
    """NYU/GMIC exam-list pickle with 16-bit PNG views and {0,255} segmentation PNGs; breast-level labels."""

    annotation = "mask"
    label_source = "pathology"
    licence = "GMIC sample data ships with AGPL-3.0 code; your own NYU-format data: your terms"

    def scan(self, root: Path) -> ScanResult:
        """Read the exam list and resolve each view's PNG and segmentation files."""
        pkl = find_exam_list(root)
        base = pkl.parent
        records, problems = [], []
        for i, exam in enumerate(load_exam_list(pkl)):
            for view in VIEWS:
                for name in exam.get(view, []) or []:
                    try:
                        records.append(self._record(exam, i, view, str(name), base, pkl))
                    except DataError as e:
                        problems.append(Problem(e.file, e.reason + (f"; {e.fix}" if e.fix else "")))
        return ScanResult(records, problems)

    @staticmethod
    def _record(exam: dict[str, Any], i: int, view: str, name: str, base: Path, pkl: Path) -> SourceRecord:
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
        lesions = []
        for cls in ("benign", "malignant"):
            seg_names = exam.get(f"{view}_{cls}_seg") or [f"{name}_{cls}"]
            for seg in seg_names:
                seg_file = base / "segmentation" / f"{seg}.png"
                if seg_file.is_file():
                    if not labels[("benign", "malignant").index(cls)]:
                        raise DataError(seg_file, f"a {cls} mask on a view labelled {side}_{cls}=0", "fix the label")
                    lesions.append(Lesion(cls, "mask", mask_file=seg_file))
        exam_id = str(exam.get("exam_id", f"exam{i:04d}"))
        return SourceRecord(
            image_id=name,
            patient_id=str(exam.get("patient_id", exam_id)),
            exam_id=exam_id,
            laterality=view[0],
            view=view.split("-")[1],
            labels=(labels[0], labels[1]),
            image_file=base / "images" / f"{name}.png",
            lesions=lesions,
            chest_wall=chest_wall,
        )
