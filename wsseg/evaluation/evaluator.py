"""The evaluator: it sees saliency maps, masks, the evaluated region and image ids, never the method.

Usage::

    ev = SegmentationEvaluator()
    for image_id, saliency, masks, breast in ...:
        ev.add(image_id, saliency, masks, breast, patient_id=..., spacing_mm=...)  # (K, h, w) maps, (K, H, W) masks
    thresholds = val_ev.calibrated_thresholds()         # chosen on the validation split
    metrics = ev.summary(thresholds)                     # per class: dice, iou, dice_at_0.5, pxap, froc, ...

Maps are validated (shape, NaN/inf, range) and upsampled by the harness to the mask resolution
(:func:`wsseg.nn.upsample.to_input_resolution`, bilinear by default, the same rule for every method);
then each image is reduced at once to O(n_bins) statistics (:mod:`wsseg.evaluation.stats`) and its
full-resolution map is dropped, so memory does not depend on the resolution.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from wsseg.core import CLASSES
from wsseg.evaluation.metrics import dice_from_counts, iou_from_counts, reverse_cumsum, threshold_grid
from wsseg.evaluation.stats import ClassStats, FrocSettings, SplitStats, class_stats, stack_class
from wsseg.evaluation.summary import calibrated_thresholds, summarize
from wsseg.nn.upsample import UpsampleMode, to_input_resolution
from wsseg.runtime.distributed import unshard

Normalization = Literal["none", "minmax"]


class SaliencyError(ValueError):
    """A saliency map breaks the contract (shape, NaN, range); the message names the image and the fix."""


def validate_saliency(saliency: Tensor, num_classes: int, image_id: str, check_range: bool = True) -> None:
    """Raise :class:`SaliencyError` unless ``saliency`` is a finite (K, h, w) map with values in [0, 1].

    Args:
        saliency: the maps of one image.
        num_classes: K.
        image_id: named in the message.
        check_range: also require values in [0, 1] (off when a normalisation is declared).
    """
    if saliency.ndim != 3 or saliency.shape[0] != num_classes:
        raise SaliencyError(
            f"{image_id}: saliency must be (K={num_classes}, h, w), got {tuple(saliency.shape)}; "
            "pass one map per class in the order " + ", ".join(CLASSES)
        )
    # One pass: min and max propagate NaN, and any inf shows up in one of them.
    lo_t, hi_t = torch.aminmax(saliency.detach())
    lo, hi = float(lo_t), float(hi_t)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise SaliencyError(f"{image_id}: saliency contains NaN or inf; check the method's normalisation")
    if check_range and (lo < 0.0 or hi > 1.0):
        raise SaliencyError(
            f"{image_id}: saliency values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; apply a sigmoid or min-max"
        )


def minmax(maps: Tensor) -> Tensor:
    """Per-map min-max normalisation of (K, H, W) maps to [0, 1]; a constant map becomes all zeros."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    span = maps.amax(dim=(-2, -1), keepdim=True) - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(1e-30), torch.zeros_like(maps))


class SegmentationEvaluator:
    """Streams per-image statistics and reduces them to the per-class metrics of a run record.

    Args:
        classes: class names, in the order of the map's first axis.
        n_bins: threshold grid resolution (thresholds k / n_bins).
        upsample: how maps reach the mask resolution (``bilinear`` by default).
        normalization: ``none`` (maps must already lie in [0, 1]) or ``minmax`` (per map, after upsampling).
        froc: FROC detection settings.
    """

    def __init__(
        self,
        classes: tuple[str, ...] = CLASSES,
        n_bins: int = 1000,
        upsample: UpsampleMode = "bilinear",
        normalization: Normalization = "none",
        froc: FrocSettings | None = None,
    ) -> None:
        self.classes = classes
        self.n_bins = n_bins
        self.upsample = upsample
        self.normalization = normalization
        self.froc = froc or FrocSettings()
        self.thresholds = threshold_grid(n_bins)
        self._ids: list[str] = []
        self._patients: list[str] = []
        self._spacing: list[float] = []
        self._per_class: dict[str, list[ClassStats]] = {c: [] for c in classes}
        self._scores: dict[str, list[float]] = {c: [] for c in classes}
        self._labels: dict[str, list[float]] = {c: [] for c in classes}

    def add(
        self,
        image_id: str,
        saliency: Tensor,
        masks: Tensor,
        region: Tensor | None = None,
        *,
        patient_id: str | None = None,
        spacing_mm: float | None = None,
        image_scores: Sequence[float] | Tensor | np.ndarray | None = None,
        image_labels: Sequence[float] | Tensor | np.ndarray | None = None,
        boxes: bool = False,
        lesion_types: Sequence[str] | None = None,
        located: Sequence[bool] | None = None,
    ) -> None:
        """Accumulate one image.

        Args:
            image_id: the image's id (for error messages and per-image results).
            saliency: (K, h, w) maps in [0, 1]; upsampled here to the masks' (H, W).
            masks: (K, H, W) bool ground truth.
            region: (H, W) bool evaluated region (the breast); the whole image when None.
            patient_id: the bootstrap unit; the image is its own patient when None.
            spacing_mm: pixel spacing at the mask resolution; mm-based metrics (pointing game beyond
                0 mm, FROC) are NaN for images without it.
            image_scores: (K,) image-level predictions (logits or probabilities) for AUROC/AUPRC; when
                None but ``image_labels`` are given, each map's maximum inside the region.
            image_labels: (K,) image-level labels (0/1).
            boxes: the ground truth is boxes (each mask is the union of its boxes): MaxBoxAccV2 is added.
            lesion_types: (K,) the type group of the image's lesions of each class (``mass``, ``calcification``,
                ``other``; :func:`wsseg.evaluation.lesions.image_lesion_type`), for the breakdown by type;
                unknown (``""``) when None.
            located: (K,) per class, False where the image is labelled with a lesion of the class that the dataset
                does not locate (a label-only image): its empty mask is not "lesion-free", so the image enters no
                localisation metric of that class, only AUROC/AUPRC. All True when None.
        """
        k = len(self.classes)
        validate_saliency(saliency, k, image_id, check_range=self.normalization == "none")
        if masks.ndim != 3 or masks.shape[0] != k:
            raise ValueError(f"{image_id}: masks must be (K={k}, H, W), got {tuple(masks.shape)}")
        size = (int(masks.shape[-2]), int(masks.shape[-1]))
        if region is not None and tuple(region.shape) != size:
            raise ValueError(f"{image_id}: region is {tuple(region.shape)} but the masks are {size}; pass one size")
        saliency = saliency.detach().cpu()
        if tuple(saliency.shape[-2:]) != size:
            full = to_input_resolution(saliency[None], size, self.upsample)[0]  # (K, H, W) float32
        else:
            full = saliency.float()  # already at the mask resolution and checked: no copy for float32 maps
        if self.normalization == "minmax":
            full = minmax(full)
        maps = full.numpy()
        target = masks.detach().cpu().numpy().astype(bool, copy=False)  # (K, H, W)
        breast = None if region is None else region.detach().cpu().numpy().astype(bool, copy=False)  # (H, W)
        scores = _per_class(image_scores, k)
        labels = _per_class(image_labels, k)
        types = list(lesion_types) if lesion_types is not None else [""] * k
        if len(types) != k:
            raise ValueError(f"{image_id}: expected {k} lesion types (one per class), got {len(types)}")
        where = [True] * k if located is None else [bool(x) for x in located]
        if len(where) != k:
            raise ValueError(f"{image_id}: located needs one flag per class ({k}), got {len(where)}")
        for c, name in enumerate(self.classes):
            stats = class_stats(
                maps[c],
                target[c],
                breast,
                self.n_bins,
                spacing_mm,
                self.froc,
                boxes=boxes,
                lesion_type=types[c],
                located=where[c],
            )
            self._per_class[name].append(stats)
            self._scores[name].append(stats.peak if image_scores is None and image_labels is not None else scores[c])
            self._labels[name].append(labels[c])
        self._ids.append(image_id)
        self._patients.append(patient_id if patient_id is not None else image_id)
        self._spacing.append(float(spacing_mm) if spacing_mm else float("nan"))

    @classmethod
    def interleave(cls, parts: Sequence[SegmentationEvaluator]) -> SegmentationEvaluator:
        """One evaluator of all of ``parts``' images, in the order one evaluator would have added them.

        Part r must hold images r, r + n, r + 2n, ... of the split (n = ``len(parts)``), as the ranks of a
        ``torchrun`` evaluation do; the settings are part 0's (every part was made from the same config).
        """
        out = cls(parts[0].classes, parts[0].n_bins, parts[0].upsample, parts[0].normalization, parts[0].froc)
        out._ids = unshard([p._ids for p in parts])
        out._patients = unshard([p._patients for p in parts])
        out._spacing = unshard([p._spacing for p in parts])
        for name in out.classes:
            out._per_class[name] = unshard([p._per_class[name] for p in parts])
            out._scores[name] = unshard([p._scores[name] for p in parts])
            out._labels[name] = unshard([p._labels[name] for p in parts])
        return out

    def stats(self) -> SplitStats:
        """The per-image statistics gathered so far."""
        return SplitStats(
            list(self._ids),
            list(self._patients),
            np.array(self._spacing, dtype=np.float64),
            self.n_bins,
            {
                name: stack_class(self._per_class[name], self._scores[name], self._labels[name], self.n_bins)
                for name in self.classes
            },
        )

    def n_positive(self, name: str) -> int:
        """Number of accumulated images with a non-empty ground truth of class ``name``."""
        return int(sum(int(s.pos_hist.sum()) > 0 for s in self._per_class[name]))

    def _curves(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        pos = [s for s in self._per_class[name] if s.pos_hist.sum() > 0]
        if not pos:
            empty = np.zeros((0, self.n_bins + 1))
            return empty, empty, np.zeros((0, 1))
        tp = reverse_cumsum(np.stack([s.pos_hist for s in pos]))
        fp = reverse_cumsum(np.stack([s.neg_hist for s in pos]))
        return tp, fp, tp[:, :1].astype(np.float64)

    def dice_curves(self, name: str) -> np.ndarray:
        """(n_images, n_bins + 1) per-image Dice at every threshold, lesion-positive images of ``name``."""
        return dice_from_counts(*self._curves(name))

    def iou_curves(self, name: str) -> np.ndarray:
        """(n_images, n_bins + 1) per-image IoU at every threshold, lesion-positive images of ``name``."""
        return iou_from_counts(*self._curves(name))

    def calibrated_thresholds(self) -> dict[str, float]:
        """Per class, the grid threshold that maximises the image-averaged Dice on these images.

        Call it on the validation evaluator and pass the result to the test evaluator's :meth:`summary`.
        A class with no positive image falls back to 0.5.
        """
        return calibrated_thresholds(self.stats())

    def summary(self, thresholds: dict[str, float], fixed_threshold: float = 0.5) -> dict[str, dict[str, float]]:
        """Per-class metrics at the given (calibrated) thresholds, at ``fixed_threshold`` and at the oracle.

        Returns:
            ``{class: {"dice", "iou", "threshold", "dice_at_0.5", ..., "pxap", "froc", "auroc", "n_images", ...}}``
            (keys in :mod:`wsseg.evaluation.summary`); Dice and IoU are means over the images with a lesion
            of that class (NaN when there is none).
        """
        return summarize(self.stats(), thresholds, fixed_threshold)


def _per_class(values: Sequence[float] | Tensor | np.ndarray | None, k: int) -> list[float]:
    if values is None:
        return [float("nan")] * k
    arr = values.detach().cpu().numpy() if isinstance(values, Tensor) else np.asarray(values)
    arr = arr.astype(np.float64).reshape(-1)
    if len(arr) != k:
        raise ValueError(f"expected {k} image-level values (one per class), got {len(arr)}")
    return arr.tolist()
