"""Per-image statistics: everything every metric needs, kept per image.

Bootstrap and paired comparisons re-weight images from these statistics without seeing a map again.

For one image and one class the evaluator computes, at the evaluated (mask) resolution:

- ``pos_hist``, ``neg_hist``: (n_bins + 1,) histograms of the map's values on the threshold grid at the
  ground-truth-positive and -negative pixels of the region (Dice, IoU, pooled variants, PxAP, false
  positives on lesion-free images);
- ``sum_sg``, ``sum_s``: sums of the map over the lesion and over the region (soft Dice);
- ``point_px``: the distance in pixels from the map's peak to the nearest lesion pixel (pointing game;
  ``inf`` when the map is 0 in the whole region, NaN on a lesion-free image); ``peak``: the map's maximum
  inside the region;
- ``lesion_scores`` / ``fp_scores``: the detection score of each lesion (NaN if missed) and the scores
  of the false-positive detections (FROC);
- the image-level score and label when known (AUROC, AUPRC);
- ``box_iou``: for box ground truth only (the mask is the union of the annotated boxes), the best IoU between
  any box of the map thresholded at tau * max and any ground-truth box, for tau = 0, 0.01, ..., 0.99
  (MaxBoxAccV2); empty otherwise;
- map-independent facts about the lesions, for the breakdown by size and type and for the chance levels
  (:func:`wsseg.evaluation.summary.chance_levels`): ``lesion_px`` and ``n_components`` (the largest 8-connected
  component of the mask inside the region, in pixels, and the number of components; :mod:`wsseg.evaluation.lesions`),
  ``lesion_type`` (the type group of the image's lesions of the class, from the sample's meta; ``""`` when unknown),
  ``chance_hit`` (per pointing tolerance r, the fraction of the region within r of the lesion: the probability that
  a peak drawn uniformly in the region is a hit, with the pointing game's own distance rule), ``lesion_cover`` (per
  FROC lesion, the fraction of the region its grown component covers) and ``grown_cover`` (the fraction covered by
  all of them).
- ``located``: False for a *label-only* image of the class: labelled with a lesion of the class whose location
  the dataset does not give (mini-MIAS's widely spread calcifications, a BI-RADS-only finding). Its empty mask
  does not mean "lesion-free", so every localisation statistic of the class is empty for it (zero histograms and
  sums, no detections) and it is left out of the FROC's image count: it enters no localisation metric, only the
  image-level ones (AUROC, AUPRC).

:class:`SplitStats` stacks them over the images of a split (memory O(images x n_bins), about 16 KB
per image and class at 1,000 bins, independent of the resolution) and saves them to one ``.npz`` file.
"""

from __future__ import annotations

import math
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from wsseg._io import atomic_save
from wsseg.evaluation.localization import (
    best_box_iou_curve,
    detections,
    distance_to_mask_px,
    grown_lesions,
    match_detections,
    peak_index,
)
from wsseg.evaluation.metrics import bin_indices

# Pointing-game tolerances, mm (the keys pointing_game_<r>mm of a record).
POINTING_TOLERANCES_MM: tuple[float, ...] = (0.0, 5.0, 10.0)


@dataclass(frozen=True)
class FrocSettings:
    """How FROC detections are made and matched (see :mod:`wsseg.evaluation.localization`).

    Attributes:
        nms_mm: half-width of the local-maximum window, in mm.
        tolerance_mm: lesions are grown by this distance before matching, in mm.
        max_candidates: detections kept per image and class, the highest-scoring ones.
    """

    nms_mm: float = 5.0
    tolerance_mm: float = 5.0
    max_candidates: int = 100


@dataclass
class ClassStats:
    """One image's statistics for one class (see the module docstring)."""

    pos_hist: np.ndarray
    neg_hist: np.ndarray
    sum_sg: float
    sum_s: float
    point_px: float
    peak: float
    lesion_scores: np.ndarray
    fp_scores: np.ndarray
    froc_done: bool
    box_iou: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lesion_px: float = math.nan
    n_components: int = 0
    lesion_type: str = ""
    chance_hit: np.ndarray = field(default_factory=lambda: np.full(len(POINTING_TOLERANCES_MM), np.nan))
    lesion_cover: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grown_cover: float = math.nan
    located: bool = True


# The relative thresholds of MaxBoxAccV2 (tau * max of the map).
BOX_TAUS = np.arange(100) / 100


def gt_boxes_from_mask(target: np.ndarray) -> np.ndarray:
    """Half-open (x0, y0, x1, y1) boxes of the 8-connected components of a box-annotation mask, (m, 4)."""
    labels, _ = ndimage.label(target, structure=np.ones((3, 3), dtype=bool))
    found = [(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop) for sl in ndimage.find_objects(labels) if sl]
    return np.asarray(found, dtype=np.int64).reshape(-1, 4)


def _crop_around(target: np.ndarray, margin: int) -> tuple[slice, slice]:
    """The bounding box of ``target``'s pixels grown by ``margin`` pixels, clipped to the image."""
    rows = np.flatnonzero(target.any(axis=1))
    cols = np.flatnonzero(target.any(axis=0))
    r0, r1 = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, target.shape[0])
    c0, c1 = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, target.shape[1])
    return slice(r0, r1), slice(c0, c1)


@dataclass(frozen=True)
class LesionFacts:
    """Map-independent facts about one image's lesions of one class (see the module docstring)."""

    lesion_px: float
    n_components: int
    chance_hit: np.ndarray
    lesion_cover: np.ndarray
    grown_cover: float


def lesion_facts(
    target: np.ndarray, region: np.ndarray | None, spacing_mm: float | None, froc: FrocSettings
) -> LesionFacts:
    """Lesion size, pointing-game chance and FROC lesion covers of one (region-restricted) mask.

    Args:
        target: (H, W) bool lesion mask, already restricted to the region.
        region: (H, W) bool evaluated region; the whole image when None.
        spacing_mm: pixel spacing; the chance at tolerances above 0 and the covers are NaN / empty without it.
        froc: the FROC settings (their tolerance grows the lesions).
    """
    tolerances = POINTING_TOLERANCES_MM
    area = float(region.sum()) if region is not None else float(target.size)
    if not target.any() or area <= 0:
        return LesionFacts(math.nan, 0, np.full(len(tolerances), np.nan), np.zeros(0), math.nan)
    spacing = spacing_mm if spacing_mm is not None and spacing_mm > 0 else None  # None: unknown
    # Every lesion pixel and everything within the largest tolerance of one lies in this crop, so distances and
    # components computed on it are exact.
    margin = int(math.ceil(max(tolerances) / spacing)) + 1 if spacing is not None else 1
    rs, cs = _crop_around(target, margin)
    crop = target[rs, cs]  # (h, w)
    inside = region[rs, cs] if region is not None else np.ones_like(crop)
    labels, n = ndimage.label(crop, structure=np.ones((3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())[1:]
    chance = np.full(len(tolerances), np.nan)
    chance[0] = float(crop.sum()) / area  # r = 0: the peak lies on the lesion
    if spacing is not None:
        # The pointing game's rule: a hit when (distance in pixels to the nearest lesion pixel) x spacing <= r.
        dist_mm = ndimage.distance_transform_edt(~crop) * spacing  # (h, w)
        for j, r in enumerate(tolerances):
            if r > 0:
                chance[j] = float(np.count_nonzero((dist_mm <= r) & inside)) / area
    cover, grown = np.zeros(0), math.nan
    if spacing is not None:
        grown_labels, n_lesions, (r0, c0) = grown_lesions(target, froc.tolerance_mm / spacing)
        h, w = grown_labels.shape
        in_region = region[r0 : r0 + h, c0 : c0 + w] if region is not None else np.ones((h, w), dtype=bool)
        counts = np.bincount(grown_labels[in_region].ravel(), minlength=n_lesions + 1)
        cover, grown = counts[1:] / area, float(counts[1:].sum()) / area
    return LesionFacts(float(sizes.max()), int(n), chance, cover.astype(np.float64), grown)


def class_stats(
    saliency: np.ndarray,
    target: np.ndarray,
    region: np.ndarray | None,
    n_bins: int,
    spacing_mm: float | None,
    froc: FrocSettings,
    boxes: bool = False,
    lesion_type: str = "",
    located: bool = True,
) -> ClassStats:
    """Statistics of one full-resolution map against its mask.

    Args:
        saliency: (H, W) float32 map in [0, 1], already at the mask resolution.
        target: (H, W) bool lesion mask of this class.
        region: (H, W) bool evaluated region (the breast); the whole image when None.
        n_bins: threshold grid resolution.
        spacing_mm: pixel spacing at this resolution; FROC is skipped when None.
        froc: FROC detection settings.
        boxes: the ground truth is boxes (the mask is their union): also compute the MaxBoxAccV2 curve.
        lesion_type: the type group of the image's lesions of this class (:mod:`wsseg.evaluation.lesions`).
        located: False for a label-only image of this class (labelled, lesion not located): only the map's peak
            is kept (the image-level score when no logit is given); every localisation statistic is empty.
    """
    if not located:
        return _label_only_stats(saliency, region, n_bins, spacing_mm)
    box_curve = np.zeros(0)
    if boxes and target.any():
        # Boxes from the whole map, as MaxBoxAccV2 defines them (not restricted to the region).
        box_curve = best_box_iou_curve(saliency, gt_boxes_from_mask(target), BOX_TAUS)
    idx = bin_indices(saliency, n_bins)  # (H, W) int32
    if region is not None:
        target = target & region
        idx[~region] = n_bins + 1  # a sentinel bin for pixels outside the region, dropped below
    flat_target = np.flatnonzero(target)  # lesions are small: index them instead of masking twice
    all_hist = np.bincount(idx.ravel(), minlength=n_bins + 2)[: n_bins + 1]
    pos_hist = np.bincount(idx.flat[flat_target], minlength=n_bins + 2)[: n_bins + 1]
    neg_hist = all_hist - pos_hist

    masked = saliency if region is None else np.where(region, saliency, np.float32(-1.0))  # (H, W)
    sum_s = (
        float(np.sum(saliency, dtype=np.float64, where=region))
        if region is not None
        else float(np.sum(saliency, dtype=np.float64))
    )
    sum_sg = float(np.sum(saliency.flat[flat_target], dtype=np.float64))
    peak_at = peak_index(masked)
    peak = float(masked.flat[peak_at]) if peak_at >= 0 else 0.0
    point_px = distance_to_mask_px(peak_at, target) if len(flat_target) else math.nan

    froc_done = spacing_mm is not None and spacing_mm > 0
    lesion_scores, fp_scores = np.zeros(0), np.zeros(0)
    if froc_done:
        assert spacing_mm is not None
        coords, scores = detections(masked, round(froc.nms_mm / spacing_mm), froc.max_candidates)
        lesion_scores, fp_scores = match_detections(coords, scores, target, froc.tolerance_mm / spacing_mm)
    facts = lesion_facts(target, region, spacing_mm, froc)
    return ClassStats(
        pos_hist.astype(np.int64),
        neg_hist.astype(np.int64),
        sum_sg,
        sum_s,
        point_px,
        peak,
        lesion_scores,
        fp_scores,
        froc_done,
        box_curve,
        facts.lesion_px,
        facts.n_components,
        lesion_type if len(flat_target) else "",
        facts.chance_hit,
        facts.lesion_cover,
        facts.grown_cover,
    )


def _label_only_stats(
    saliency: np.ndarray, region: np.ndarray | None, n_bins: int, spacing_mm: float | None
) -> ClassStats:
    """The statistics of a label-only image: its map's peak in the region and nothing a localisation metric reads."""
    masked = saliency if region is None else np.where(region, saliency, np.float32(-1.0))  # (H, W)
    peak_at = peak_index(masked)
    empty = np.zeros(n_bins + 1, dtype=np.int64)
    return ClassStats(
        pos_hist=empty,
        neg_hist=empty.copy(),
        sum_sg=0.0,
        sum_s=0.0,
        point_px=math.nan,
        peak=float(masked.flat[peak_at]) if peak_at >= 0 else 0.0,
        lesion_scores=np.zeros(0),
        fp_scores=np.zeros(0),
        # Detections were not needed, not impossible: the class's FROC stays defined for the other images.
        froc_done=spacing_mm is not None and spacing_mm > 0,
        located=False,
    )


@dataclass
class ClassArrays:
    """One class's statistics stacked over the N images of a split.

    Attributes:
        pos_hist, neg_hist: (N, n_bins + 1) int64.
        sum_sg, sum_s, point_px: (N,) float64.
        lesion_scores, lesion_image: (L,) detection score and image index of every lesion.
        fp_scores, fp_image: (F,) score and image index of every false-positive detection.
        image_score, image_label: (N,) float64, NaN where unknown.
        froc_done: whether detections were made (the pixel spacing was known for every image).
        box_iou: (N, 100) MaxBoxAccV2 curves, NaN rows for images without box ground truth of this class.
        lesion_px, n_components: (N,) the largest lesion component in pixels and the number of components (NaN, 0
            on lesion-free images).
        lesion_type: (N,) str, the type group of each image's lesions of the class (``""``: none or unknown).
        chance_hit: (N, len(POINTING_TOLERANCES_MM)) pointing-game chance per image (NaN on lesion-free images).
        lesion_cover: (L,) the fraction of its image's region each FROC lesion covers, grown by the tolerance.
        grown_cover: (N,) the fraction of the region all grown lesions cover (NaN without lesion or spacing).
        located: (N,) bool, False for the label-only images of this class (see the module docstring); all True
            when read from a file written before label-only images existed.

    Statistics saved before the lesion facts existed load with NaN (and empty types) in their place.
    """

    pos_hist: np.ndarray
    neg_hist: np.ndarray
    sum_sg: np.ndarray
    sum_s: np.ndarray
    point_px: np.ndarray
    lesion_scores: np.ndarray
    lesion_image: np.ndarray
    fp_scores: np.ndarray
    fp_image: np.ndarray
    image_score: np.ndarray
    image_label: np.ndarray
    froc_done: bool
    box_iou: np.ndarray = field(default_factory=lambda: np.zeros((0, len(BOX_TAUS))))
    lesion_px: np.ndarray = field(default_factory=lambda: np.zeros(0))
    n_components: np.ndarray = field(default_factory=lambda: np.zeros(0))
    lesion_type: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    chance_hit: np.ndarray = field(default_factory=lambda: np.zeros((0, len(POINTING_TOLERANCES_MM))))
    lesion_cover: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grown_cover: np.ndarray = field(default_factory=lambda: np.zeros(0))
    located: np.ndarray = field(default_factory=lambda: np.ones(0, dtype=bool))

    def __post_init__(self) -> None:
        # Arrays missing from older files (or left at their defaults) become NaN of the right length.
        n, n_lesions = len(self.sum_s), len(self.lesion_scores)
        if self.box_iou.shape[0] != n:
            self.box_iou = np.full((n, len(BOX_TAUS)), np.nan)
        for name in ("lesion_px", "n_components", "grown_cover"):
            if len(getattr(self, name)) != n:
                setattr(self, name, np.full(n, np.nan))
        if len(self.lesion_type) != n:
            self.lesion_type = np.full(n, "", dtype="<U16")
        if self.chance_hit.shape[0] != n:
            self.chance_hit = np.full((n, len(POINTING_TOLERANCES_MM)), np.nan)
        if len(self.lesion_cover) != n_lesions:
            self.lesion_cover = np.full(n_lesions, np.nan)
        # Files written before label-only images existed: every image located.
        if len(self.located) != n:
            self.located = np.ones(n, dtype=bool)
        self.located = np.asarray(self.located, dtype=bool)

    @property
    def gt(self) -> np.ndarray:
        """(N,) lesion pixels per image."""
        return np.asarray(self.pos_hist.sum(axis=1), dtype=np.int64)

    @property
    def area(self) -> np.ndarray:
        """(N,) evaluated-region pixels per image."""
        return np.asarray(self.pos_hist.sum(axis=1) + self.neg_hist.sum(axis=1), dtype=np.int64)

    def subset(self, index: np.ndarray) -> ClassArrays:
        """The statistics of the images ``index`` (an (M,) int array), in that order."""
        remap = np.full(len(self.sum_s), -1)
        remap[index] = np.arange(len(index))
        keep_l = np.isin(self.lesion_image, index)
        keep_f = np.isin(self.fp_image, index)
        return ClassArrays(
            self.pos_hist[index],
            self.neg_hist[index],
            self.sum_sg[index],
            self.sum_s[index],
            self.point_px[index],
            self.lesion_scores[keep_l],
            remap[self.lesion_image[keep_l]],
            self.fp_scores[keep_f],
            remap[self.fp_image[keep_f]],
            self.image_score[index],
            self.image_label[index],
            self.froc_done,
            self.box_iou[index],
            self.lesion_px[index],
            self.n_components[index],
            self.lesion_type[index],
            self.chance_hit[index],
            self.lesion_cover[keep_l],
            self.grown_cover[index],
            self.located[index],
        )


# The arrays a statistics file may lack (written by an older wsseg); see ClassArrays.__post_init__.
OPTIONAL_ARRAYS = frozenset(
    {"box_iou", "lesion_px", "n_components", "lesion_type", "chance_hit", "lesion_cover", "grown_cover", "located"}
)


def concat_arrays(parts: Sequence[ClassArrays]) -> ClassArrays:
    """One class's statistics of several image sets, in order (the test folds of a cross-validation, pooled)."""
    offsets = np.cumsum([0, *(len(a.sum_s) for a in parts[:-1])])
    return ClassArrays(
        pos_hist=np.concatenate([a.pos_hist for a in parts]),
        neg_hist=np.concatenate([a.neg_hist for a in parts]),
        sum_sg=np.concatenate([a.sum_sg for a in parts]),
        sum_s=np.concatenate([a.sum_s for a in parts]),
        point_px=np.concatenate([a.point_px for a in parts]),
        lesion_scores=np.concatenate([a.lesion_scores for a in parts]),
        lesion_image=np.concatenate([a.lesion_image + o for a, o in zip(parts, offsets, strict=True)]),
        fp_scores=np.concatenate([a.fp_scores for a in parts]),
        fp_image=np.concatenate([a.fp_image + o for a, o in zip(parts, offsets, strict=True)]),
        image_score=np.concatenate([a.image_score for a in parts]),
        image_label=np.concatenate([a.image_label for a in parts]),
        froc_done=all(a.froc_done for a in parts),
        box_iou=np.concatenate([a.box_iou.reshape(-1, len(BOX_TAUS)) for a in parts]),
        lesion_px=np.concatenate([a.lesion_px for a in parts]),
        n_components=np.concatenate([a.n_components for a in parts]),
        lesion_type=np.concatenate([a.lesion_type.astype("<U16") for a in parts]),
        chance_hit=np.concatenate([a.chance_hit.reshape(-1, len(POINTING_TOLERANCES_MM)) for a in parts]),
        lesion_cover=np.concatenate([a.lesion_cover for a in parts]),
        grown_cover=np.concatenate([a.grown_cover for a in parts]),
        located=np.concatenate([a.located for a in parts]),
    )


@dataclass
class SplitStats:
    """Per-image statistics of a split, per class, plus what the metrics need to know about each image.

    Attributes:
        image_ids, patient_ids: (N,) in the order the images were added.
        spacing_mm: (N,) pixel spacing at the evaluated resolution, NaN where unknown.
        n_bins: the threshold grid.
        classes: per class name, the stacked statistics.
    """

    image_ids: list[str]
    patient_ids: list[str]
    spacing_mm: np.ndarray
    n_bins: int
    classes: dict[str, ClassArrays] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_ids)

    def reorder(self, image_ids: Sequence[str]) -> SplitStats:
        """The same statistics with the images in the order ``image_ids`` (a permutation of them)."""
        pos = {i: k for k, i in enumerate(self.image_ids)}
        index = np.array([pos[i] for i in image_ids], dtype=np.int64)
        return SplitStats(
            [self.image_ids[k] for k in index],
            [self.patient_ids[k] for k in index],
            self.spacing_mm[index],
            self.n_bins,
            {c: a.subset(index) for c, a in self.classes.items()},
        )

    def save(self, path: str | Path) -> Path:
        """Write the statistics to one compressed ``.npz`` file, atomically."""
        arrays: dict[str, np.ndarray] = {
            "image_ids": np.array(self.image_ids, dtype=str),
            "patient_ids": np.array(self.patient_ids, dtype=str),
            "spacing_mm": self.spacing_mm,
            "n_bins": np.array(self.n_bins),
            "classes": np.array(list(self.classes), dtype=str),
        }
        for name, a in self.classes.items():
            for key in ClassArrays.__dataclass_fields__:
                arrays[f"{name}.{key}"] = np.asarray(getattr(a, key))
        # numpy's stubs match **arrays against savez_compressed's allow_pickle (numpy >= 2.1) too.
        return atomic_save(path, lambda f: np.savez_compressed(f, **arrays))  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> SplitStats:
        """Read a file written by :meth:`save`.

        Raises:
            ValueError: the file is missing, unreadable or not a wsseg statistics file.
        """
        path = Path(path)
        if not path.is_file():  # a FIFO would block the read forever
            what = "missing" if not (path.exists() or path.is_symlink()) else "not a regular file"
            raise ValueError(f"the per-image statistics {path} are {what}; re-run the evaluation")
        try:
            with np.load(path, allow_pickle=False) as z:
                data = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            raise ValueError(f"cannot read per-image statistics {path}: {e}; re-run the evaluation") from None
        if not isinstance(data, dict):  # np.load gives an array for a plain .npy
            raise ValueError(f"{path} is not a wsseg per-image statistics file (.npz); re-run the evaluation")
        problem = _stats_problem(data)
        if problem is not None:
            raise ValueError(f"{path} is not a valid wsseg per-image statistics file: {problem}; re-run the evaluation")
        try:
            classes = {
                name: ClassArrays(
                    **{
                        key: data[f"{name}.{key}"]
                        for key in ClassArrays.__dataclass_fields__
                        # Files written before boxes, lesion facts or label-only images existed lack those arrays.
                        if key not in OPTIONAL_ARRAYS or f"{name}.{key}" in data
                    }
                )
                for name in data["classes"].tolist()
            }
            for a in classes.values():
                a.froc_done = bool(a.froc_done)  # files without label-only flags: __post_init__ locates every image
            return cls(
                data["image_ids"].tolist(),
                data["patient_ids"].tolist(),
                data["spacing_mm"],
                int(data["n_bins"]),
                classes,
            )
        except KeyError as e:
            raise ValueError(f"{path} is not a wsseg per-image statistics file (no {e}); re-run the evaluation") from e


def _stats_problem(data: dict[str, np.ndarray]) -> str | None:
    """What is wrong with the arrays of a statistics file (shapes, dtypes, counts, indices), or None."""
    for key in ("image_ids", "patient_ids", "spacing_mm", "n_bins", "classes"):
        if key not in data:
            return f"no {key}"
    ids, n_bins = data["image_ids"], data["n_bins"]
    if ids.ndim != 1 or ids.dtype.kind != "U" or data["patient_ids"].shape != ids.shape:
        return "image_ids and patient_ids must be two lists of strings of one length"
    n = len(ids)
    if data["spacing_mm"].shape != (n,) or data["spacing_mm"].dtype.kind != "f":
        return "spacing_mm must hold one number per image"
    if n_bins.shape != () or n_bins.dtype.kind not in "iu" or not 1 <= int(n_bins) <= 100_000:
        return "n_bins must be an integer in [1, 100000]"
    if data["classes"].ndim != 1 or data["classes"].dtype.kind != "U":
        return "classes must be a list of names"
    hist = (n, int(n_bins) + 1)
    for name in data["classes"].tolist():
        if name not in ("benign", "malignant"):
            return f"unknown class {name!r}"
        for key in ClassArrays.__dataclass_fields__:
            arr = data.get(f"{name}.{key}")
            if arr is None:
                if key in OPTIONAL_ARRAYS:
                    continue  # files written before these arrays existed: ClassArrays fills them with NaN
                return f"no {name}.{key}"
            if key in ("pos_hist", "neg_hist"):
                ok = arr.shape == hist and arr.dtype.kind in "iu" and bool((arr >= 0).all())
            elif key in ("lesion_image", "fp_image"):
                ok = arr.ndim == 1 and arr.dtype.kind in "iu" and bool(((arr >= 0) & (arr < n)).all())
            elif key in ("lesion_scores", "fp_scores"):
                ok = (
                    arr.ndim == 1
                    and arr.dtype.kind == "f"
                    and len(arr) == len(data.get(f"{name}.{key[:-7]}_image", []))
                )
            elif key == "froc_done":
                ok = arr.shape == () and arr.dtype.kind == "b"
            elif key == "box_iou":
                ok = arr.shape == (n, len(BOX_TAUS)) and arr.dtype.kind == "f"
            elif key == "located":
                ok = arr.shape == (n,) and arr.dtype.kind == "b"
            elif key == "chance_hit":
                ok = arr.shape == (n, len(POINTING_TOLERANCES_MM)) and arr.dtype.kind == "f"
            elif key == "lesion_cover":  # one value per FROC lesion
                ok = arr.ndim == 1 and arr.dtype.kind == "f" and len(arr) == len(data.get(f"{name}.lesion_image", []))
            elif key == "lesion_type":
                ok = arr.shape == (n,) and arr.dtype.kind == "U"
            elif key == "n_components":
                ok = arr.shape == (n,) and arr.dtype.kind in "iuf"
            else:  # sum_sg, sum_s, point_px, image_score, image_label, lesion_px, grown_cover
                ok = arr.shape == (n,) and arr.dtype.kind == "f"
            if not ok:
                return f"{name}.{key} has dtype {arr.dtype} and shape {arr.shape}, not what {n} images give"
    return None


def stack_class(
    per_image: Sequence[ClassStats], image_scores: Sequence[float], image_labels: Sequence[float], n_bins: int
) -> ClassArrays:
    """Stack one class's per-image statistics (in image order) into :class:`ClassArrays`."""
    n = len(per_image)
    lesion_image = [np.full(len(s.lesion_scores), i) for i, s in enumerate(per_image)]
    fp_image = [np.full(len(s.fp_scores), i) for i, s in enumerate(per_image)]
    empty_hist = np.zeros((0, n_bins + 1), dtype=np.int64)
    return ClassArrays(
        pos_hist=np.stack([s.pos_hist for s in per_image]) if n else empty_hist,
        neg_hist=np.stack([s.neg_hist for s in per_image]) if n else empty_hist,
        sum_sg=np.array([s.sum_sg for s in per_image], dtype=np.float64),
        sum_s=np.array([s.sum_s for s in per_image], dtype=np.float64),
        point_px=np.array([s.point_px for s in per_image], dtype=np.float64),
        lesion_scores=np.concatenate([s.lesion_scores for s in per_image]) if n else np.zeros(0),
        lesion_image=np.concatenate(lesion_image).astype(np.int64) if n else np.zeros(0, dtype=np.int64),
        fp_scores=np.concatenate([s.fp_scores for s in per_image]) if n else np.zeros(0),
        fp_image=np.concatenate(fp_image).astype(np.int64) if n else np.zeros(0, dtype=np.int64),
        image_score=np.array(image_scores, dtype=np.float64),
        image_label=np.array(image_labels, dtype=np.float64),
        froc_done=bool(n) and all(s.froc_done for s in per_image),
        box_iou=np.stack([s.box_iou if len(s.box_iou) else np.full(len(BOX_TAUS), np.nan) for s in per_image]).reshape(
            n, len(BOX_TAUS)
        ),
        lesion_px=np.array([s.lesion_px for s in per_image], dtype=np.float64),
        n_components=np.array([s.n_components for s in per_image], dtype=np.float64),
        lesion_type=np.array([s.lesion_type for s in per_image], dtype="<U16").reshape(n),
        chance_hit=np.stack([s.chance_hit for s in per_image]).reshape(n, len(POINTING_TOLERANCES_MM))
        if n
        else np.zeros((0, len(POINTING_TOLERANCES_MM))),
        lesion_cover=np.concatenate([s.lesion_cover for s in per_image]) if n else np.zeros(0),
        grown_cover=np.array([s.grown_cover for s in per_image], dtype=np.float64),
        located=np.array([s.located for s in per_image], dtype=bool),
    )
