"""Image-level classification metrics from logits."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (scikit-learn); NaN when only one class is present."""
    labels = np.asarray(labels)
    if labels.min() == labels.max():
        return math.nan
    return float(roc_auc_score(labels, scores))


def mean_auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean over classes of the per-class AUROC, (N, K) inputs; NaN classes are skipped."""
    values = [auroc(labels[:, k], scores[:, k]) for k in range(labels.shape[1])]
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else math.nan
