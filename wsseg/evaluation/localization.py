"""Localization metrics: pointing game, lesion-level FROC and MaxBoxAccV2.

Definitions (in words in docs/evaluation.md, "Localisation metrics"):

Pointing game.
    The map's peak ``p* = argmax_{p in region} s(p)``; ties go to the first pixel in row-major order.
    A lesion-positive image is a hit at tolerance r (mm) when the Euclidean distance from the centre of
    ``p*`` to the centre of the nearest lesion pixel, times the pixel spacing, is <= r; r = 0 means
    the peak lies on the lesion. A map that is 0 everywhere in the region points nowhere: a miss.

Lesion-level FROC.
    *Lesions* are the 8-connected components of the ground-truth mask grown by ``tolerance_mm``
    (every pixel within that distance of a lesion pixel), so the specks of one calcification cluster
    closer than twice the tolerance form one lesion. *Detections* are the local maxima of the map
    inside the region: pixels equal to the maximum of the (2 r + 1)-pixel square window around them,
    r = ``nms_mm`` / spacing, with a score > 0; a plateau of equal maxima (an 8-connected component of
    such pixels) is one detection at its first pixel in row-major order. Only the
    ``max_candidates`` highest-scoring detections of an image are kept. Thresholding the map at t keeps
    the detections with score >= t. A detection inside a grown lesion hits it; a lesion is detected
    at the highest score among the detections that hit it; further hits on a detected lesion are
    neither true nor false positives (the CAMELYON16 / MONAI rule); every other detection is a
    false positive. Sweeping t over the detection scores gives the operating points
    (mean false positives per image over *all* images, lesion sensitivity), joined to the origin;
    the sensitivity at a false-positive rate f is read off the polyline through them in threshold order
    (linear between points; MONAI's ``compute_froc_score``) and the FROC score is its mean over
    f in {0.25, 0.5, 1, 2, 4, 8}.

MaxBoxAccV2 (for box ground truth; Choe et al. 2020).
    For each relative threshold tau on a grid, the map is binarised at ``s >= tau * max(s)`` and every
    8-connected component gives a box (the bounding box of its pixels). ``BoxAcc(tau, delta)`` is the
    fraction of images where some predicted box has IoU >= delta with some ground-truth box;
    ``MaxBoxAccV2 = mean_{delta in {0.3, 0.5, 0.7}} max_tau BoxAcc(tau, delta)``. Boxes are
    ``(x0, y0, x1, y1)`` in pixels, half-open: a box covers columns x0..x1-1 and rows y0..y1-1.
    wsolevaluation takes boxes from all OpenCV contours, including the contours of holes; wsseg takes
    one box per connected component (a hole's box lies inside its component's box).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
FPPI_POINTS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
IOU_THRESHOLDS: tuple[float, ...] = (0.3, 0.5, 0.7)


def peak_index(masked: np.ndarray) -> int:
    """Flat index of the map's maximum (first in row-major order), -1 when the maximum is <= 0.

    Args:
        masked: (H, W) map with the pixels outside the region set to a negative value.
    """
    idx = int(np.argmax(masked))
    return idx if masked.flat[idx] > 0 else -1


def distance_to_mask_px(flat_index: int, target: np.ndarray) -> float:
    """Euclidean distance in pixels from pixel ``flat_index`` to the nearest ``True`` pixel of ``target``.

    Returns ``inf`` when ``flat_index`` is -1 (no peak) or the target is empty.
    """
    if flat_index < 0:
        return float("inf")
    rows, cols = np.nonzero(target)
    if len(rows) == 0:
        return float("inf")
    r, c = divmod(flat_index, target.shape[1])
    return float(np.sqrt(np.min((rows - r) ** 2 + (cols - c) ** 2)))


def detections(masked: np.ndarray, nms_px: int, max_candidates: int) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of a map (the FROC detections; see the module docstring).

    Args:
        masked: (H, W) float map, pixels outside the region set to a negative value.
        nms_px: half-width r of the (2 r + 1)-pixel square suppression window.
        max_candidates: keep at most this many detections, the highest-scoring ones.

    Returns:
        coords: (n, 2) int64 (row, col) of the detections, by decreasing score.
        scores: (n,) float64 map values there.
    """
    # Only the bounding box of the positive pixels can hold a detection; the window sees -inf beyond it,
    # which changes nothing because every pixel outside the box is <= 0.
    rows = np.flatnonzero((masked > 0).any(axis=1))
    if len(rows) == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    cols = np.flatnonzero((masked[rows[0] : rows[-1] + 1] > 0).any(axis=0))
    r0, c0 = int(rows[0]), int(cols[0])
    crop = masked[r0 : rows[-1] + 1, c0 : cols[-1] + 1]  # (h, w) view
    window = 2 * max(int(nms_px), 0) + 1
    local_max = ndimage.maximum_filter(crop, size=window, mode="constant", cval=-np.inf)  # (h, w)
    peaks = (crop == local_max) & (crop > 0)  # (h, w) bool
    flat = np.flatnonzero(peaks)
    labels, _ = ndimage.label(peaks, structure=EIGHT_CONNECTED)
    # One detection per plateau, at its first pixel: np.unique returns the first occurrence in flat order.
    _, first = np.unique(labels.flat[flat], return_index=True)
    flat = flat[first]
    scores = crop.flat[flat].astype(np.float64)
    order = np.argsort(-scores, kind="stable")[:max_candidates]
    rr, cc = np.unravel_index(flat[order], crop.shape)
    coords = np.stack([rr + r0, cc + c0], axis=1).astype(np.int64)
    return coords, scores[order]


def grown_lesions(target: np.ndarray, tolerance_px: float) -> tuple[np.ndarray, int, tuple[int, int]]:
    """Label the lesions of a mask grown by ``tolerance_px`` (computed on the mask's bounding box only).

    Returns:
        labels: (h, w) int32 lesion labels (0 = background) on the crop.
        n: number of lesions.
        origin: (row, col) of the crop in the image.
    """
    rows = np.flatnonzero(target.any(axis=1))
    cols = np.flatnonzero(target.any(axis=0))
    if len(rows) == 0:
        return np.zeros((0, 0), dtype=np.int32), 0, (0, 0)
    m = int(np.ceil(tolerance_px)) + 1
    r0, r1 = max(rows[0] - m, 0), min(rows[-1] + m + 1, target.shape[0])
    c0, c1 = max(cols[0] - m, 0), min(cols[-1] + m + 1, target.shape[1])
    crop = target[r0:r1, c0:c1]
    grown = ndimage.distance_transform_edt(~crop) <= tolerance_px if tolerance_px > 0 else crop  # (h, w)
    labels, n = ndimage.label(grown, structure=EIGHT_CONNECTED)
    return labels.astype(np.int32), int(n), (int(r0), int(c0))


def match_detections(
    coords: np.ndarray, scores: np.ndarray, target: np.ndarray, tolerance_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Split one image's detections into lesion hits and false positives.

    Args:
        coords: (n, 2) detection (row, col).
        scores: (n,) detection scores.
        target: (H, W) bool lesion mask.
        tolerance_px: lesions are grown by this many pixels.

    Returns:
        lesion_scores: (n_lesions,) the highest score of a detection hitting each lesion, NaN if none.
        fp_scores: (n_fp,) scores of the false-positive detections.
    """
    labels, n, (r0, c0) = grown_lesions(target, tolerance_px)
    lesion_scores = np.full(n, np.nan)
    hit = np.zeros(len(scores), dtype=np.int64)  # lesion label per detection, 0 = none
    if n and len(scores):
        r, c = coords[:, 0] - r0, coords[:, 1] - c0
        inside = (r >= 0) & (r < labels.shape[0]) & (c >= 0) & (c < labels.shape[1])
        hit[inside] = labels[r[inside], c[inside]]
        for lesion in range(1, n + 1):
            s = scores[hit == lesion]
            if len(s):
                lesion_scores[lesion - 1] = s.max()
    return lesion_scores, scores[hit == 0].astype(np.float64)


@dataclass(frozen=True)
class FrocResult:
    """A FROC curve and its summary.

    Attributes:
        fppi: (m,) mean false positives per image at each operating point in threshold order, from 0.
        sensitivity: (m,) lesion sensitivity at the same points.
        sensitivity_at: sensitivity interpolated at each rate of ``FPPI_POINTS``.
        score: mean of ``sensitivity_at``.
    """

    fppi: np.ndarray
    sensitivity: np.ndarray
    sensitivity_at: dict[float, float]
    score: float


def froc_curves(
    lesion_scores: np.ndarray,
    fp_scores: np.ndarray,
    n_images: np.ndarray,
    lesion_weights: np.ndarray,
    fp_weights: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """FROC operating points for B weightings of the same detections at once.

    Args:
        lesion_scores: (L,) detection score of every lesion, NaN for a missed lesion.
        fp_scores: (F,) scores of all false-positive detections.
        n_images: (B,) number (or total weight) of images, lesion-free ones included.
        lesion_weights: (B, L) weight of each lesion (its image's weight).
        fp_weights: (B, F) weight of each false positive.

    Returns:
        fppi, sensitivity: (B, m) operating points from the origin, one per distinct detection score
        from the highest down; sensitivity is NaN in rows whose lesions weigh 0.
    """
    lesion_scores = np.asarray(lesion_scores, dtype=np.float64)
    detected = ~np.isnan(lesion_scores)
    scores = np.concatenate([lesion_scores[detected], np.asarray(fp_scores, dtype=np.float64)])
    is_tp = np.concatenate([np.ones(int(detected.sum()), bool), np.zeros(len(fp_scores), bool)])
    weights = np.concatenate([lesion_weights[:, detected], fp_weights], axis=1)  # (B, M)
    order = np.argsort(-scores, kind="stable")
    scores, is_tp, weights = scores[order], is_tp[order], weights[:, order]
    last_of_score = np.append(scores[1:] != scores[:-1], len(scores) > 0)  # ties form one operating point
    last_of_score = last_of_score[: len(scores)]
    tp_cum = np.cumsum(np.where(is_tp, weights, 0.0), axis=1)[:, last_of_score]  # (B, m - 1)
    fp_cum = np.cumsum(np.where(is_tp, 0.0, weights), axis=1)[:, last_of_score]
    total = lesion_weights.sum(axis=1, keepdims=True)  # (B, 1)
    zero = np.zeros((len(weights), 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        fppi = np.concatenate([zero, fp_cum / np.asarray(n_images, dtype=np.float64)[:, None]], axis=1)
        sens = np.concatenate([zero, tp_cum], axis=1) / np.where(total > 0, total, np.nan)
    return fppi, sens


def sensitivity_at(fppi: np.ndarray, sens: np.ndarray, rates: Sequence[float] = FPPI_POINTS) -> np.ndarray:
    """Sensitivity at each false-positive rate, read off the FROC polyline, (B, len(rates)).

    The polyline joins the operating points in threshold order. At a rate f it is interpolated between the
    last point with ``fppi <= f`` and the next one; where several points share the rate f the last (best)
    one counts, and beyond the last point the sensitivity stays at its last value. This is ``np.interp`` on
    the points in order, as in MONAI's ``compute_froc_score``, vectorised over the rows.
    """
    out = np.empty((len(fppi), len(rates)))
    rows = np.arange(len(fppi))
    m = fppi.shape[1]
    for j, f in enumerate(rates):
        i = (fppi <= f).sum(axis=1) - 1  # (B,) last point at or below f (rows are non-decreasing, start at 0)
        nxt = np.minimum(i + 1, m - 1)
        x0, x1, y0, y1 = fppi[rows, i], fppi[rows, nxt], sens[rows, i], sens[rows, nxt]
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(x1 > x0, (f - x0) / (x1 - x0), 0.0)
        out[:, j] = y0 + frac * (y1 - y0)
    return out


def froc(
    lesion_scores: np.ndarray,
    fp_scores: np.ndarray,
    n_images: float,
    rates: Sequence[float] = FPPI_POINTS,
) -> FrocResult:
    """The FROC curve of detections pooled over ``n_images`` images (see the module docstring).

    Args:
        lesion_scores: (L,) detection score of every lesion, NaN for a missed lesion.
        fp_scores: (F,) scores of all false-positive detections.
        n_images: number of images, lesion-free ones included.
        rates: false positives per image at which sensitivity is read.

    Returns:
        The curve; sensitivities are NaN when there is no lesion or no image.
    """
    if len(lesion_scores) == 0 or n_images <= 0:
        nan = float("nan")
        return FrocResult(np.zeros(1), np.full(1, nan), {f: nan for f in rates}, nan)
    fppi, sens = froc_curves(
        lesion_scores, fp_scores, np.array([n_images]), np.ones((1, len(lesion_scores))), np.ones((1, len(fp_scores)))
    )
    at = sensitivity_at(fppi, sens, rates)[0]
    return FrocResult(fppi[0], sens[0], dict(zip(rates, at.tolist(), strict=True)), float(at.mean()))


def boxes_from_map(saliency: np.ndarray, relative_threshold: float) -> np.ndarray:
    """Bounding boxes of the 8-connected components of ``saliency >= relative_threshold * max(saliency)``.

    Args:
        saliency: (H, W) map.
        relative_threshold: tau in [0, 1].

    Returns:
        (n, 4) int64 half-open boxes (x0, y0, x1, y1); empty when the map's maximum is <= 0.
    """
    peak = float(np.max(saliency))
    if peak <= 0:
        return np.zeros((0, 4), dtype=np.int64)
    labels, _ = ndimage.label(saliency >= relative_threshold * peak, structure=EIGHT_CONNECTED)
    boxes = [(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop) for sl in ndimage.find_objects(labels) if sl]
    return np.asarray(boxes, dtype=np.int64).reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of half-open boxes, (n, 4) x (m, 4) -> (n, m)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def best_box_iou_curve(saliency: np.ndarray, gt_boxes: np.ndarray, relative_thresholds: np.ndarray) -> np.ndarray:
    """Per relative threshold, the best IoU between any predicted box and any ground-truth box, (T,)."""
    out = np.zeros(len(relative_thresholds))
    if len(np.asarray(gt_boxes).reshape(-1, 4)) == 0:
        return out
    for t, tau in enumerate(relative_thresholds):
        boxes = boxes_from_map(saliency, float(tau))
        if len(boxes):
            out[t] = float(box_iou(boxes, gt_boxes).max())
    return out


def max_box_acc_v2(
    saliency_maps: Sequence[np.ndarray],
    gt_boxes: Sequence[np.ndarray],
    relative_thresholds: np.ndarray | None = None,
    iou_thresholds: Sequence[float] = IOU_THRESHOLDS,
) -> dict[str, float]:
    """MaxBoxAccV2 over images (see the module docstring).

    Args:
        saliency_maps: per image, an (H, W) map.
        gt_boxes: per image, (m, 4) half-open ground-truth boxes (x0, y0, x1, y1).
        relative_thresholds: the tau grid; 0, 0.01, ..., 0.99 when None.
        iou_thresholds: the deltas averaged over.

    Returns:
        ``{"max_box_acc_v2": ..., "box_acc_iou_0.3": ..., ...}`` with each delta's best BoxAcc and, under
        ``"threshold_iou_<delta>"``, the tau that reached it (the lowest on ties).
    """
    if len(saliency_maps) != len(gt_boxes):
        raise ValueError(f"got {len(saliency_maps)} maps but {len(gt_boxes)} box lists; pass one box list per map")
    taus = np.arange(100) / 100 if relative_thresholds is None else np.asarray(relative_thresholds, dtype=np.float64)
    if not len(saliency_maps):
        return {"max_box_acc_v2": float("nan")}
    best = np.stack([best_box_iou_curve(s, g, taus) for s, g in zip(saliency_maps, gt_boxes, strict=True)])  # (N, T)
    out: dict[str, float] = {}
    per_delta = []
    for delta in iou_thresholds:
        acc = (best >= delta).mean(axis=0)  # (T,) BoxAcc(tau, delta)
        k = int(np.argmax(acc))
        out[f"box_acc_iou_{delta:g}"] = float(acc[k])
        out[f"threshold_iou_{delta:g}"] = float(taus[k])
        per_delta.append(float(acc[k]))
    out["max_box_acc_v2"] = float(np.mean(per_delta))
    return out
