"""CAM: class activation mapping (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016).

Original code: https://github.com/zhoubolei/CAM. A global-average-pooled linear classifier is trained with
multi-label BCE on the image labels; because pooling and the classifier are both linear, applying the
classifier at every location gives a per-class pixel-logit map whose spatial mean is exactly the image logit.
wsseg passes that map through a sigmoid, so the saliency is the classifier's probability at each location
(the original normalises the map per image instead; a sigmoid keeps lesion-free images dark).
The classifier is the one the post-hoc template (:class:`wsseg.method.PostHocCAMMethod`) trains, so a CAM run's
weights serve Grad-CAM and its relatives unchanged (``wsseg run --method gradcam --from-run <cam run>``).
"""

from __future__ import annotations

from dataclasses import dataclass

from wsseg.method import CAMMethod, ClassifierConfig
from wsseg.registry import register_method


@dataclass
class CAMConfig(ClassifierConfig):
    """CAM hyperparameters: the classifier fields and presets of :class:`wsseg.method.ClassifierConfig`."""


@register_method("cam")
class CAM(CAMMethod):
    """Class activation maps from a global-average-pooled linear classifier."""

    Config = CAMConfig

    cfg: CAMConfig
