"""SPG: self-produced guidance, CAM with auxiliary branches trained on masks made from the network's own maps.

Paper: Zhang et al., "Self-produced Guidance for Weakly-supervised Object Localization", ECCV 2018. Original code:
https://github.com/xiaomengyc/SPG. Architecture and thresholds at the defaults of clovaai/wsolevaluation (Choe et
al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020;
https://github.com/clovaai/wsolevaluation; its ResNet-50 SPG, with ``spg_threshold_{1,2,3}{h,l}``).

The backbone (a timm ResNet) is CAM's, with CAM's 1x1 classifier on its last features (the prediction and the
evaluation maps are CAM's: :mod:`wsseg_methods.cam`). In training, three class-agnostic branches predict foreground
logits (B, 1, h, w):

* B1 from the output of layer3's first block and B2 from layer3's output, each through its own 3x3 convolution and
  ReLU, then a shared 3x3 convolution, ReLU and 1x1 convolution;
* C from layer4's output (3x3 convolution to a quarter of its channels, ReLU, 1x1 convolution).

Each branch learns from a guidance mask built from a map a (upsampled to the backbone's input size): foreground (1)
where a > high, or where a > 0.7 max(a) when fewer than ``min_foreground`` of the pixels pass ``high``; background (0)
where a < low (background wins); every other pixel is ignored. B2 follows the classifier's normalised class map
(``b2_high`` 0.7, ``b2_low`` 0.01), B1 follows sigmoid(B2) (0.5, 0.05) and C follows the mean of sigmoid(B1) and
sigmoid(B2) (0.7, 0.1). The loss is BCE on the logits plus the three masked BCEs.

What wsseg changed: multi-label guidance. The references take the map of the image's one label; here the
attention is the maximum over the image's positive classes of their min-max normalised maps, and an image with no
positive class (a lesion-free mammogram has no object to localise) adds nothing to the three guidance losses. BCE
replaces the softmax cross-entropy. The guidance is computed at the backbone's input size (after
``input_downsample``), where the references use their 224x224 input, and the 30-pixel minimum of a 224x224 map is
the fraction ``min_foreground`` = 30 / 224^2 of the pixels. The branch widths follow wsolevaluation's ResNet-50
ratios (B: layer3's channels, 1024 there; C: a quarter of layer4's, 512 of 2048).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsseg.method import CAMMethod, ClassifierConfig, Limit, MethodOutput, WSSegMethod, bce_loss, between
from wsseg.nn.backbones import resnet_stages
from wsseg.nn.input_pool import pool_input
from wsseg.nn.upsample import to_input_resolution
from wsseg.registry import register_method

# wsolevaluation's fallback foreground threshold, relative to the map's maximum, when too few pixels pass `high`.
FALLBACK_RATIO = 0.7


@dataclass
class SPGConfig(ClassifierConfig):
    """SPG hyperparameters beside the classifier fields of :class:`wsseg.method.ClassifierConfig`.

    Attributes:
        b2_high, b2_low: thresholds of B2's mask from the classifier's attention (wsolevaluation: 0.7, 0.01).
        b1_high, b1_low: thresholds of B1's mask from sigmoid(B2) (0.5, 0.05).
        c_high, c_low: thresholds of C's mask from the fused B1/B2 map (0.7, 0.1).
        min_foreground: fewest foreground pixels, as a fraction of the map, before the 0.7 x max fallback (30 / 224^2).
    """

    b2_high: float = 0.7
    b2_low: float = 0.01
    b1_high: float = 0.5
    b1_low: float = 0.05
    c_high: float = 0.7
    c_low: float = 0.1
    min_foreground: float = 30 / 224**2

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """The classifier's limits; thresholds on maps in [0, 1] and a fraction of the map, each in [0, 1]."""
        fields = ("b2_high", "b2_low", "b1_high", "b1_low", "c_high", "c_low", "min_foreground")
        return {**super().limits(image_hw), **{name: (between(0, 1), "in [0, 1]") for name in fields}}


def guidance_mask(attention: Tensor, high: float, low: float, min_foreground: int) -> Tensor:
    """(B, 1, H, W) map in [0, 1] -> guidance (B, 1, H, W): 1 foreground, 0 background, NaN ignored.

    Foreground where ``attention`` > ``high``, or > 0.7 of the image's maximum when fewer than ``min_foreground``
    pixels pass ``high``; background where ``attention`` < ``low`` (it overrides the foreground).
    """
    fg = attention > high
    few = fg.flatten(1).sum(dim=1) < min_foreground  # (B,)
    fallback = attention > FALLBACK_RATIO * attention.amax(dim=(1, 2, 3), keepdim=True)
    fg = torch.where(few[:, None, None, None], fallback, fg)
    mask = torch.full_like(attention, float("nan"))
    mask = mask.masked_fill(fg, 1.0)
    return mask.masked_fill(attention < low, 0.0)


def masked_bce(logits: Tensor, mask: Tensor, valid: Tensor) -> Tensor:
    """BCE of (B, 1, H, W) logits against a guidance mask over its non-ignored pixels of the ``valid`` (B,) images."""
    keep = ~torch.isnan(mask) & valid[:, None, None, None]
    if not bool(keep.any()):
        return logits.sum() * 0.0  # nothing to learn from; keeps the graph (and the parameters' gradients) alive
    return F.binary_cross_entropy_with_logits(logits.float()[keep], mask[keep])


@register_method("spg")
class SPG(CAMMethod):
    """SPG: CAM with foreground branches trained on masks produced from its own maps (self-produced guidance)."""

    Config = SPGConfig

    cfg: SPGConfig

    def __init__(
        self, cfg: SPGConfig, num_classes: int = 2, in_chans: int = 1, network: WSSegMethod | None = None
    ) -> None:
        thresholds = (cfg.b2_high, cfg.b2_low, cfg.b1_high, cfg.b1_low, cfg.c_high, cfg.c_low, cfg.min_foreground)
        if not all(0 <= t <= 1 for t in thresholds):
            raise ValueError(f"spg thresholds and min_foreground must lie in [0, 1], got {thresholds}")
        super().__init__(cfg, num_classes, in_chans, network)
        _, (_, _, layer3, _) = resnet_stages(self.backbone, "spg")  # a clear error now, not at the first step
        c3 = [m for m in layer3.modules() if isinstance(m, nn.BatchNorm2d)][-1].num_features  # layer3's channels
        c4 = self.backbone.num_features
        self.b1_head = nn.Sequential(nn.Conv2d(c3, c3, 3, padding=1), nn.ReLU())
        self.b2_head = nn.Sequential(nn.Conv2d(c3, c3, 3, padding=1), nn.ReLU())
        self.b_shared = nn.Sequential(nn.Conv2d(c3, c3, 3, padding=1), nn.ReLU(), nn.Conv2d(c3, 1, 1))
        self.c_head = nn.Sequential(
            nn.Conv2d(c4, max(1, c4 // 4), 3, padding=1), nn.ReLU(), nn.Conv2d(max(1, c4 // 4), 1, 1)
        )

    def forward(self, images: Tensor) -> MethodOutput:
        """CAM's forward; in training also the foreground logits of B1, B2 and C (B, 1, h, w) in ``extras``."""
        if not self.training:
            return super().forward(images)
        x = pool_input(images, self.cfg.input_downsample, self.cfg.input_pool)  # (B, C_in or C_in*d*d, H/d, W/d)
        size = (int(x.shape[-2]), int(x.shape[-1]))  # the guidance resolution
        stem, (layer1, layer2, layer3, layer4) = resnet_stages(self.backbone, "spg")
        h = layer3[0](layer2(layer1(stem(x))))  # SPG-A1: layer3's first block
        b1 = self.b_shared(self.b1_head(h))  # (B, 1, h3, w3)
        h = layer3[1:](h)  # SPG-A2: the rest of layer3
        b2 = self.b_shared(self.b2_head(h))
        features = layer4(h)  # (B, C, h, w), as CAM's backbone computes them
        c = self.c_head(features)
        pixel_logits = self.classifier(features)  # (B, K, h, w)
        saliency = to_input_resolution(
            torch.sigmoid(pixel_logits.detach().float()), (images.shape[-2], images.shape[-1])
        )
        up = {
            n: F.interpolate(t.float(), size=size, mode="bilinear", align_corners=False)
            for n, t in (("b1", b1), ("b2", b2), ("c", c))
        }
        extras = {"pixel_logits": pixel_logits, **{f"logits_{n}": t for n, t in up.items()}}
        return MethodOutput(pixel_logits.mean(dim=(2, 3)), saliency, extras)

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """BCE on the logits plus the three guidance BCEs (training batches; evaluation has no branches)."""
        labels = batch["labels"].float()
        bce = bce_loss(out.logits, labels)
        if "logits_b1" not in out.extras:
            return {"loss": bce}
        b1, b2, c = out.extras["logits_b1"], out.extras["logits_b2"], out.extras["logits_c"]
        size = (int(b2.shape[-2]), int(b2.shape[-1]))
        n_min = max(1, round(self.cfg.min_foreground * size[0] * size[1]))
        positive = labels > 0.5  # (B, K)
        valid = positive.any(dim=1)  # (B,): images with an object
        cams = F.interpolate(
            out.extras["pixel_logits"].detach().float(), size=size, mode="bilinear", align_corners=False
        )
        lo, hi = cams.amin(dim=(2, 3), keepdim=True), cams.amax(dim=(2, 3), keepdim=True)
        normalised = (cams - lo) / (hi - lo).clamp_min(1e-12)  # (B, K, H', W')
        attention = normalised.masked_fill(~positive[:, :, None, None], 0.0).amax(dim=1, keepdim=True)  # (B, 1, H', W')
        p1, p2 = torch.sigmoid(b1.detach()), torch.sigmoid(b2.detach())
        b2_loss = masked_bce(b2, guidance_mask(attention, self.cfg.b2_high, self.cfg.b2_low, n_min), valid)
        b1_loss = masked_bce(b1, guidance_mask(p2, self.cfg.b1_high, self.cfg.b1_low, n_min), valid)
        c_loss = masked_bce(c, guidance_mask((p1 + p2) / 2, self.cfg.c_high, self.cfg.c_low, n_min), valid)
        return {
            "loss": bce + b2_loss + b1_loss + c_loss,
            "bce": bce.detach(),
            "b2_guidance": b2_loss.detach(),
            "b1_guidance": b1_loss.detach(),
            "c_guidance": c_loss.detach(),
        }
