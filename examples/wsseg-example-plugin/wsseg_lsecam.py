"""LSE-CAM: CAM whose image logit pools the pixel logits with log-sum-exp instead of a plain mean.

An example wsseg plugin (see CONTRIBUTING.md, "Add a method"). Log-sum-exp pooling (Pinheiro & Collobert,
CVPR 2015) moves between mean pooling (r -> 0) and max pooling (r -> inf); a large r lets a small lesion
decide the image label, which suits mammograms, where lesions cover well under 1 % of the breast.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsseg.method import MethodConfig, MethodOutput, WSSegMethod, bce_loss
from wsseg.nn.backbones import create_backbone
from wsseg.nn.upsample import to_input_resolution
from wsseg.registry import register_method


@dataclass
class LSECAMConfig(MethodConfig):
    """Hyperparameters: the backbone, its stride, input pooling and the LSE sharpness r."""

    backbone: str = "resnet18-w16"
    backbone_weights: str | None = None
    output_stride: int = 16
    input_downsample: int = 4
    r: float = 5.0

    @classmethod
    def tiny(cls) -> LSECAMConfig:
        """The timm test ResNet on the full-resolution tiny images."""
        return cls(backbone="test-resnet", input_downsample=1)


@register_method("lsecam")
class LSECAM(WSSegMethod):
    """CAM with log-sum-exp pooling of the pixel logits (example plugin)."""

    Config = LSECAMConfig
    cfg: LSECAMConfig

    def __init__(self, cfg: LSECAMConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__(cfg, num_classes, in_chans)
        self.backbone = create_backbone(cfg.backbone, in_chans, cfg.backbone_weights, cfg.output_stride)
        self.classifier = nn.Conv2d(self.backbone.num_features, num_classes, kernel_size=1)

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, 1, H, W) -> LSE-pooled logits (B, K) and sigmoid maps (B, K, H, W)."""
        x = F.avg_pool2d(images, self.cfg.input_downsample) if self.cfg.input_downsample > 1 else images
        pixel_logits = self.classifier(self.backbone(x)).float()  # (B, K, h, w)
        flat = pixel_logits.flatten(2)  # (B, K, h*w)
        # Subtracting log(h*w) makes a constant map pool to itself, as the mean does.
        logits = (torch.logsumexp(self.cfg.r * flat, dim=-1) - math.log(flat.shape[-1])) / self.cfg.r  # (B, K)
        saliency = to_input_resolution(torch.sigmoid(pixel_logits), images.shape[-2:])  # (B, K, H, W)
        return MethodOutput(logits=logits, saliency=saliency, extras={"pixel_logits": pixel_logits})

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Multi-label BCE on the image labels."""
        return {"loss": bce_loss(out.logits, batch["labels"])}
