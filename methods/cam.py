"""CAM: class activation mapping (Zhou et al., "Learning Deep Features for Discriminative Localization", CVPR 2016).

Original code: https://github.com/zhoubolei/CAM. A global-average-pooled linear classifier is trained with
multi-label BCE on the image labels; because pooling and the classifier are both linear, applying the
classifier at every location gives a per-class pixel-logit map whose spatial mean is exactly the image logit.
wsseg passes that map through a sigmoid, so the saliency is the classifier's probability at each location
(the original normalises the map per image instead; a sigmoid keeps lesion-free images dark).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsseg.method import ClassifierConfig, MethodOutput, WSSegMethod, bce_loss
from wsseg.nn.backbones import create_backbone
from wsseg.nn.upsample import to_input_resolution
from wsseg.registry import register_method


@dataclass
class CAMConfig(ClassifierConfig):
    """CAM hyperparameters.

    Attributes:
        backbone: backbone name (wsseg alias or timm model).
        backbone_weights: optional local weights file; random initialisation when None.
        output_stride: backbone stride; 16 doubles the map resolution of a plain ResNet at little cost.
        input_downsample: average-pool the input by this factor before the backbone (1 = full resolution).
            The quick preset uses 4 (1.6 mm pixels) so that training on 1,280 images fits minutes on a
            2-core CPU; maps are still returned at the input resolution.
    """


@register_method("cam")
class CAM(WSSegMethod):
    """Class activation maps from a global-average-pooled linear classifier."""

    Config = CAMConfig

    cfg: CAMConfig

    def __init__(self, cfg: CAMConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__(cfg, num_classes, in_chans)
        self.backbone = create_backbone(cfg.backbone, in_chans, cfg.backbone_weights, cfg.output_stride)
        # A 1x1 convolution is the linear classifier applied at every location.
        self.classifier = nn.Conv2d(self.backbone.num_features, num_classes, kernel_size=1)

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, 1, H, W) -> logits (B, K) and sigmoid CAMs (B, K, H, W)."""
        x = F.avg_pool2d(images, self.cfg.input_downsample) if self.cfg.input_downsample > 1 else images
        features = self.backbone(x)  # (B, C, h, w)
        pixel_logits = self.classifier(features)  # (B, K, h, w)
        logits = pixel_logits.mean(dim=(2, 3))  # (B, K): equals classifier(GAP(features))
        saliency = to_input_resolution(torch.sigmoid(pixel_logits.float()), images.shape[-2:])  # (B, K, H, W)
        return MethodOutput(logits=logits, saliency=saliency, extras={"pixel_logits": pixel_logits})

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Multi-label BCE on the image labels."""
        return {"loss": bce_loss(out.logits, batch["labels"])}
