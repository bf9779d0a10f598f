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

from torch import Tensor

from wsseg.method import ClassifierConfig, MethodOutput, PostHocCAMMethod
from wsseg.registry import register_method


@dataclass
class CAMConfig(ClassifierConfig):
    """CAM hyperparameters: the classifier fields and presets of :class:`wsseg.method.ClassifierConfig`."""


@register_method("cam")
class CAM(PostHocCAMMethod):
    """Class activation maps from a global-average-pooled linear classifier."""

    Config = CAMConfig
    # CAM's map is the classifier itself, applied at every location: no gradients needed.
    saliency_requires_grad = False

    cfg: CAMConfig

    def predict(self, images: Tensor) -> MethodOutput:
        """Images (B, 1, H, W) -> logits (B, K) and sigmoid CAMs (B, K, H, W): the forward pass's own map."""
        return self(images)
