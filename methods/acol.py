"""ACoL: adversarial complementary learning, a second classifier on features erased where the first fires.

Paper: Zhang et al., "Adversarial Complementary Learning for Weakly Supervised Object Localization", CVPR 2018.
Original code: https://github.com/xiaomengyc/ACoL. Hyperparameters and head architecture at the defaults of
clovaai/wsolevaluation (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020;
https://github.com/clovaai/wsolevaluation): erasing threshold 0.7 (``acol_threshold``); each classifier is a
3x3 convolution, ReLU, 3x3 convolution, ReLU and a 1x1 convolution to the classes, whose spatial mean is the logit.

Forward: the backbone's features F (B, C, h, w) go to classifier A, giving class maps M_A (B, K, h, w) and logits
mean(M_A). M_A is min-max normalised per image and class (detached); for each class k the features are erased
(set to 0) where the normalised map of k is at least the threshold, and classifier B reads the erased features:
its map of class k, M_B[:, k], comes from the features erased with class k's map, so B must find the parts of
the lesion that A does not use. The loss is BCE on A's logits plus BCE on B's logits; the logits are A's
(wsolevaluation's); the saliency is the maximum of the two branches' maps, max(sigmoid(M_A), sigmoid(M_B)).

What wsseg changed: multi-label erasing, one erased copy of the features per class (the references erase with the
map of the image's one label, the ground truth in training and the predicted class at inference; every class
here is a label of its own); BCE instead of the softmax cross-entropy; the branch maps are fused through a
sigmoid, as CAM's (:mod:`wsseg_methods.cam`), instead of per-image min-max normalisation, so lesion-free images
stay dark; the head width is ``head_width``, by default half the backbone's channels (wsolevaluation's 1024 on
ResNet-50's 2048), which keeps the two heads within CPU minutes at the quick profile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from wsseg.method import ClassifierConfig, Limit, MethodOutput, WSSegMethod, bce_loss, between
from wsseg.nn.backbones import create_backbone
from wsseg.nn.input_pool import pool_input, pooled_channels
from wsseg.nn.upsample import to_input_resolution
from wsseg.registry import register_method


@dataclass
class ACoLConfig(ClassifierConfig):
    """ACoL hyperparameters beside the backbone fields of :class:`wsseg.method.ClassifierConfig`.

    Attributes:
        threshold: erase the features where classifier A's normalised class map is at least this (0.7).
        head_width: channels of each classifier's two 3x3 convolutions; None = half the backbone's channels.
    """

    threshold: float = 0.7
    head_width: int | None = None

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """The classifier's limits, a threshold on maps normalised to [0, 1], a width a convolution can have."""
        return {
            **super().limits(image_hw),
            "threshold": (between(0, 1), "in [0, 1] (the maps are normalised to [0, 1])"),
            "head_width": (lambda v: v is None or 1 <= v <= 4096, "none or an integer in [1, 4096]"),
        }


def classifier_head(in_channels: int, width: int, num_classes: int) -> nn.Sequential:
    """Wsolevaluation's ACoL classifier: conv3x3, ReLU, conv3x3, ReLU, conv1x1 to the classes."""
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, num_classes, 1),
    )


def normalize_per_map(maps: Tensor) -> Tensor:
    """(B, K, h, w) -> each map min-max normalised to [0, 1]; a constant map becomes 0."""
    lo = maps.amin(dim=(2, 3), keepdim=True)
    span = maps.amax(dim=(2, 3), keepdim=True) - lo
    return torch.where(span > 0, (maps - lo) / span.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps))


def erase(features: Tensor, attention: Tensor, threshold: float) -> Tensor:
    """Features (B, C, h, w) erased per class where ``attention`` (B, K, h, w) >= threshold -> (B, K, C, h, w)."""
    keep = (attention < threshold).to(features.dtype)  # (B, K, h, w)
    return features[:, None] * keep[:, :, None]


@register_method("acol")
class ACoL(WSSegMethod):
    """ACoL: a second classifier learns from features erased where the first classifier's map is high."""

    Config = ACoLConfig

    cfg: ACoLConfig

    def __init__(self, cfg: ACoLConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__(cfg, num_classes, in_chans)
        if not 0 < cfg.threshold <= 1 or (cfg.head_width is not None and cfg.head_width < 1):
            raise ValueError(
                f"acol needs 0 < threshold <= 1 and head_width >= 1 or none, got {cfg.threshold} and "
                f"{cfg.head_width}; set method.threshold / method.head_width"
            )
        chans = pooled_channels(in_chans, cfg.input_downsample, cfg.input_pool)
        self.backbone = create_backbone(
            cfg.backbone, chans, cfg.backbone_weights, cfg.output_stride, pretrained=cfg.pretrained
        )
        c = self.backbone.num_features
        width = cfg.head_width if cfg.head_width is not None else max(1, c // 2)
        self.classifier_a = classifier_head(c, width, num_classes)
        self.classifier_b = classifier_head(c, width, num_classes)

    def features(self, images: Tensor) -> Tensor:
        """Images (B, C_in, H, W) -> backbone features (B, C, h, w) (after ``input_downsample``)."""
        x = pool_input(images, self.cfg.input_downsample, self.cfg.input_pool)  # (B, C_in or C_in*d*d, H/d, W/d)
        features: Tensor = self.backbone(x)
        return features

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, 1, H, W) -> A's logits (B, K) and max(sigmoid(M_A), sigmoid(M_B)) at (B, K, H, W)."""
        features = self.features(images)  # (B, C, h, w)
        b, k = features.shape[0], self.num_classes
        map_a = self.classifier_a(features)  # (B, K, h, w)
        attention = normalize_per_map(map_a.detach().float())  # (B, K, h, w)
        erased = erase(features, attention, self.cfg.threshold)  # (B, K, C, h, w)
        maps_b = self.classifier_b(erased.flatten(0, 1)).view(b, k, k, *map_a.shape[-2:])  # (B, K erased, K, h, w)
        map_b = maps_b.diagonal(dim1=1, dim2=2).permute(0, 3, 1, 2)  # (B, K, h, w): class k from erasure k
        fused = torch.maximum(torch.sigmoid(map_a.detach().float()), torch.sigmoid(map_b.detach().float()))
        saliency = to_input_resolution(fused, (images.shape[-2], images.shape[-1]))  # (B, K, H, W)
        extras = {"logits_b": map_b.mean(dim=(2, 3)), "map_a": map_a, "map_b": map_b, "attention": attention}
        return MethodOutput(logits=map_a.mean(dim=(2, 3)), saliency=saliency, extras=extras)

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """BCE on classifier A's logits plus BCE on classifier B's."""
        bce_a = bce_loss(out.logits, batch["labels"])
        bce_b = bce_loss(out.extras["logits_b"], batch["labels"])
        return {"loss": bce_a + bce_b, "bce_a": bce_a.detach(), "bce_b": bce_b.detach()}

    def explained_layer(self) -> nn.Module:
        """Post-hoc methods explain classifier A on the backbone's features."""
        return self.backbone

    def explained_logits(self, images: Tensor) -> Tensor:
        """Classifier A's logits (B, K), the model's prediction."""
        maps: Tensor = self.classifier_a(self.features(images))  # (B, K, h, w)
        return maps.mean(dim=(2, 3))
