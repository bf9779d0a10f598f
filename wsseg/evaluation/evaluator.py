"""The evaluator: it sees saliency maps, masks, the evaluated region and image ids, never the method.

Usage::

    ev = SegmentationEvaluator()
    for image_id, saliency, masks, breast in ...:
        ev.add(image_id, saliency, masks, breast)      # (K, h, w) maps, (K, H, W) masks
    thresholds = val_ev.calibrated_thresholds()         # chosen on the validation split
    metrics = ev.summary(thresholds)                     # per class: dice, iou, dice_at_0.5, ...

Maps are upsampled by the harness to the mask resolution (:func:`wsseg.nn.upsample.to_input_resolution`,
the same rule for every method) and validated (shape, NaN/inf, range) before anything is counted.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from wsseg.data.phantom import CLASSES
from wsseg.evaluation.metrics import (
    calibrate_threshold,
    counts_at_thresholds,
    dice_from_counts,
    iou_from_counts,
    threshold_grid,
)
from wsseg.nn.upsample import to_input_resolution


class SaliencyError(ValueError):
    """A saliency map breaks the contract (shape, NaN, range); the message names the image and the fix."""


def validate_saliency(saliency: Tensor, num_classes: int, image_id: str) -> None:
    """Raise :class:`SaliencyError` unless ``saliency`` is a finite (K, h, w) map with values in [0, 1]."""
    if saliency.ndim != 3 or saliency.shape[0] != num_classes:
        raise SaliencyError(
            f"{image_id}: saliency must be (K={num_classes}, h, w), got {tuple(saliency.shape)}; "
            "pass one map per class in the order " + ", ".join(CLASSES)
        )
    if not torch.isfinite(saliency).all():
        raise SaliencyError(f"{image_id}: saliency contains NaN or inf; check the method's normalisation")
    lo, hi = float(saliency.min()), float(saliency.max())
    if lo < 0.0 or hi > 1.0:
        raise SaliencyError(
            f"{image_id}: saliency values must lie in [0, 1], got [{lo:.4g}, {hi:.4g}]; apply a sigmoid or min-max"
        )


class SegmentationEvaluator:
    """Streams per-image threshold-grid statistics and reduces them to per-class Dice and IoU.

    Args:
        classes: class names, in the order of the map's first axis.
        n_bins: threshold grid resolution (thresholds k / n_bins).
    """

    def __init__(self, classes: tuple[str, ...] = CLASSES, n_bins: int = 1000) -> None:
        self.classes = classes
        self.n_bins = n_bins
        self.thresholds = threshold_grid(n_bins)
        # Per class, for images whose ground truth of that class is non-empty:
        self._pos: dict[str, dict[str, list[Any]]] = {c: {"id": [], "tp": [], "fp": [], "gt": []} for c in classes}
        # Per class, for lesion-free images: predicted area (pixels) per threshold and region size.
        self._neg: dict[str, dict[str, list[Any]]] = {c: {"id": [], "fp": [], "area": []} for c in classes}

    def add(self, image_id: str, saliency: Tensor, masks: Tensor, region: Tensor | None = None) -> None:
        """Accumulate one image.

        Args:
            image_id: the image's id (for error messages and per-image results).
            saliency: (K, h, w) maps in [0, 1]; upsampled here to the masks' (H, W).
            masks: (K, H, W) bool ground truth.
            region: (H, W) bool evaluated region (the breast); the whole image when None.
        """
        validate_saliency(saliency, len(self.classes), image_id)
        if masks.ndim != 3 or masks.shape[0] != len(self.classes):
            raise ValueError(f"{image_id}: masks must be (K={len(self.classes)}, H, W), got {tuple(masks.shape)}")
        size = (int(masks.shape[-2]), int(masks.shape[-1]))
        saliency = to_input_resolution(saliency[None], size)[0]  # (K, H, W)
        masks = masks.to(device=saliency.device, dtype=torch.bool)
        if region is None:
            region = torch.ones(size, dtype=torch.bool, device=saliency.device)
        region = region.to(device=saliency.device, dtype=torch.bool)
        for k, name in enumerate(self.classes):
            scores = saliency[k][region]  # (N,) evaluated pixels only
            target = masks[k][region]  # (N,)
            tp, fp = counts_at_thresholds(scores, target, self.n_bins)
            gt = int(target.sum())
            if gt > 0:
                pos = self._pos[name]
                pos["id"].append(image_id)
                pos["tp"].append(tp)
                pos["fp"].append(fp)
                pos["gt"].append(gt)
            else:
                neg = self._neg[name]
                neg["id"].append(image_id)
                neg["fp"].append(fp)
                neg["area"].append(int(region.sum()))

    def n_positive(self, name: str) -> int:
        """Number of accumulated images with a non-empty ground truth of class ``name``."""
        return len(self._pos[name]["gt"])

    def dice_curves(self, name: str) -> np.ndarray:
        """(n_images, n_bins + 1) per-image Dice at every threshold, lesion-positive images of ``name``."""
        pos = self._pos[name]
        if not pos["gt"]:
            return np.zeros((0, self.n_bins + 1))
        gt = np.asarray(pos["gt"], dtype=np.float64)[:, None]
        return dice_from_counts(np.stack(pos["tp"]), np.stack(pos["fp"]), gt)

    def iou_curves(self, name: str) -> np.ndarray:
        """(n_images, n_bins + 1) per-image IoU at every threshold, lesion-positive images of ``name``."""
        pos = self._pos[name]
        if not pos["gt"]:
            return np.zeros((0, self.n_bins + 1))
        gt = np.asarray(pos["gt"], dtype=np.float64)[:, None]
        return iou_from_counts(np.stack(pos["tp"]), np.stack(pos["fp"]), gt)

    def calibrated_thresholds(self) -> dict[str, float]:
        """Per class, the grid threshold that maximises the image-averaged Dice on these images.

        Call it on the validation evaluator and pass the result to the test evaluator's :meth:`summary`.
        A class with no positive image falls back to 0.5.
        """
        out = {}
        for name in self.classes:
            curves = self.dice_curves(name)
            out[name] = calibrate_threshold(np.nanmean(curves, axis=0), self.thresholds) if len(curves) else 0.5
        return out

    def _index(self, tau: float) -> int:
        return int(round(tau * self.n_bins))

    def summary(self, thresholds: dict[str, float], fixed_threshold: float = 0.5) -> dict[str, dict[str, float]]:
        """Per-class metrics at the given (calibrated) thresholds and at ``fixed_threshold``.

        Returns:
            ``{class: {"dice", "iou", "threshold", "dice_at_0.5", "iou_at_0.5", "n_images"}}``; Dice and IoU
            are means over the images with a lesion of that class (NaN when there is none).
        """
        fixed_key = f"{fixed_threshold:g}"
        out: dict[str, dict[str, float]] = {}
        for name in self.classes:
            dice, iou = self.dice_curves(name), self.iou_curves(name)
            k, k0 = self._index(thresholds[name]), self._index(fixed_threshold)

            def mean(curves: np.ndarray, col: int) -> float:
                return float(np.nanmean(curves[:, col])) if len(curves) else math.nan

            out[name] = {
                "dice": mean(dice, k),
                "iou": mean(iou, k),
                "threshold": float(self.thresholds[k]),
                f"dice_at_{fixed_key}": mean(dice, k0),
                f"iou_at_{fixed_key}": mean(iou, k0),
                "n_images": float(len(dice)),
            }
        return out
