"""GMIC: the globally-aware multiple instance classifier (Shen et al., Medical Image Analysis 2021, arXiv 2002.07613).

Original code: https://github.com/nyukat/GMIC (AGPL-3.0; inference only). This is a clean-room implementation
from wsseg's specification (summarised in docs/methods/gmic.md); no code was copied.

Forward, shapes at the paper preset (2944x1920 input):

1. Global module: the pre-activation ResNet-22 (:class:`wsseg.nn.resnet22.ResNet22`) gives h_g (B,256,46,30);
   a 1x1 convolution (no bias) and a sigmoid give the saliency map A (B,2,46,30); y_global is the mean of the
   top t% of each class map.
2. ROI retrieval: greedy selection of K=6 windows of 4x4 cells (256x256 pixels) on the sum of the per-class
   min-max normalised maps (:func:`wsseg.nn.roi.greedy_windows`); corners in pixels are ``round(i/46*2944)``.
3. Local module: a ResNet-18 (torchvision layout) on each 256x256 crop of the standardised input, spatially
   averaged: h_k (B,6,512).
4. Gated attention (Ilse et al. 2018, no biases): alpha = softmax_k w(tanh(V h_k) * sigmoid(U h_k)),
   z = sum_k alpha_k h_k, y_local = sigmoid(W z).
5. Fusion: y_fusion = sigmoid(Linear([max_hw h_g ; z])), the model's prediction (``logits`` here).

The saliency is A, bilinearly upsampled to the input resolution. Training (not in the original repository): the
loss of the paper, BCE on y_global, y_local and y_fusion plus beta times the L1 norm (the sum of absolute values)
of A, averaged over the batch; all modules are trained jointly. Retrieval is an argmax, so gradients reach the
global module through y_global, y_fusion and the L1 term only.

Official weights: ``create_method("gmic", profile="paper", weights="sample_model_1.p")`` or
``wsseg run --method gmic --profile paper --weights sample_model_1.p`` loads the released files strictly (all 258
keys). Each released model has its own ``percent_t`` (model 1: 0.02, 2 and 3: 0.03, 4: 0.05, 5: 0.1); set it with
``percent_t=...`` / ``--set method.percent_t=...``.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from wsseg.method import (
    Limit,
    MethodConfig,
    MethodOutput,
    WSSegMethod,
    bce_loss,
    between,
    fits_image,
    in_unit_interval,
    probability_bce,
)
from wsseg.nn.backbones import Pretrained, TimmModel
from wsseg.nn.input_pool import InputPool, pool_input, pooled_channels
from wsseg.nn.local_resnet import local_input, local_resnet
from wsseg.nn.resnet22 import ResNet22
from wsseg.nn.roi import (
    ROI_IMPLS,
    RoiImpl,
    extract_crops,
    extract_crops_reference,
    propose_windows,
    tissue_fraction,
    tissue_mask,
    top_t_mean,
)
from wsseg.nn.upsample import to_input_resolution
from wsseg.registry import register_method

# percent_t of the released sample_model_N.p files (GMIC src/constants.py; docs/methods/gmic.md).
RELEASED_PERCENT_T = {1: 0.02, 2: 0.03, 3: 0.03, 4: 0.05, 5: 0.1}


@dataclass
class GMICConfig(MethodConfig):
    """GMIC hyperparameters; the defaults are the released model 1 (``paper``).

    Attributes:
        global_width: channels of the global ResNet-22's first stage (16 released).
        global_strides: stride of each of its five stages (1, 2, 2, 2, 2 released).
        global_first_pool: keep its 3x3/2 max-pool (released: yes).
        global_input_downsample: reduce the image by this factor before the global module (crops are
            always taken from the full-resolution image).
        global_input_pool: how (:mod:`wsseg.nn.input_pool`): ``avg`` pooling or ``unshuffle`` (space-to-depth).
        local_channels: stage widths of the local ResNet-18 (torchvision's 64..512 released).
        local_stem_width: its stem width (64 released).
        local_in_chans: 1 (wsseg's default): the local network's first convolution is folded, its three-channel
            weights summed and applied to the one-channel crop (a third of the stem's cost, the same function up to
            float rounding); 3: the crop is repeated on three channels as in the official code, so fp32 outputs
            with official weights are bit for bit the official network's. Both load the same weight files.
        num_crops: K, crops per image in total (6 released).
        crop_size: (rows, cols) of a crop in input pixels (256x256 released).
        percent_t: the top-t% aggregation's t (0.02 for released model 1).
        beta: weight of the L1 norm of the saliency map in the loss (model 1: 3.259e-6).
        attention_dim: hidden size of the gated attention (128 released).
        pretrained: ``none`` (random) or ``imagenet``: the local ResNet-18 starts from torchvision's ImageNet weights
            (timm's ``resnet18.tv_in1k``), as in the paper; needs the released local widths (``--profile paper``).
            The global ResNet-22 has no pretrained weights and stays random.
        tissue_gate: multiply the saliency map by the fraction of each cell covered by tissue (pixels above the
            image's background value), so cells of air can neither carry the prediction nor be selected. Not in
            the released model (off at the paper preset); wsseg's aid for training from scratch on few images,
            where the unconstrained map learns to fire outside the breast.
        roi_impl: how crops are cut out: ``batched`` (one indexing operation for the batch, no host
            synchronisation) or ``reference`` (a per-image, per-crop Python loop that reads the corners back to
            the host, as the official code does). Same numbers; ``reference`` exists to measure the speedup
            (`wsseg bench --mode reference`).
    """

    global_width: int = 16
    global_strides: tuple[int, ...] = (1, 2, 2, 2, 2)
    global_first_pool: bool = True
    global_input_downsample: int = 1
    global_input_pool: InputPool = "avg"
    local_channels: tuple[int, int, int, int] = (64, 128, 256, 512)
    local_stem_width: int = 64
    local_in_chans: int = 1
    num_crops: int = 6
    crop_size: tuple[int, int] = (256, 256)
    percent_t: float = 0.02
    beta: float = 3.259e-6
    attention_dim: int = 128
    pretrained: Pretrained = "none"
    tissue_gate: bool = False
    roi_impl: RoiImpl = "batched"

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """Widths and counts a network can have, fractions in (0, 1], crops inside the image."""
        pooled = max(1, min(image_hw) // 32)
        return {
            "global_width": (between(1, 1024), "an integer in [1, 1024]"),
            "global_input_downsample": (between(1, pooled), f"an integer in [1, {pooled}] at this profile"),
            "local_stem_width": (between(1, 1024), "an integer in [1, 1024]"),
            "local_in_chans": (lambda v: v in (1, 3), "1 (folded first convolution) or 3 (official)"),
            "num_crops": (between(1, 64), "an integer in [1, 64]"),
            "crop_size": (fits_image(image_hw), f"(rows, cols) within the {image_hw[0]}x{image_hw[1]} image"),
            "percent_t": (in_unit_interval, "in (0, 1]"),
            "beta": (between(0, 1000), "in [0, 1000]"),
            "attention_dim": (between(1, 4096), "an integer in [1, 4096]"),
        }

    @classmethod
    def tiny(cls) -> GMICConfig:
        """A narrow network with two 32x32 crops, for unit tests on small images."""
        return cls(
            global_width=4,
            global_strides=(1, 2, 2, 1, 1),
            global_first_pool=False,
            local_channels=(8, 8, 16, 16),
            local_stem_width=8,
            num_crops=2,
            crop_size=(32, 32),
            percent_t=0.1,
            beta=1e-4,
            attention_dim=16,
        )

    @classmethod
    def quick(cls) -> GMICConfig:
        """736x480 at 0.4 mm: a half-width global module and six 64x64 crops, CPU-sized.

        The global module reads the image pooled 4x (1.6 mm) at half width, giving 23x15
        cells of 12.8 mm (the paper's are 6.4 mm; a 46x30 map would double the CPU time); six 64x64 crops
        (25.6 mm, as 256 px at 0.1 mm) go to a quarter-width ResNet-18. About 0.2 s per training step of 8
        images on two CPU cores. The tissue gate is on: trained from scratch on 1,280 images without it, the
        map learned to fire in the air beside the breast and no threshold beat the uniform map.
        """
        return cls(
            global_width=8,
            global_strides=(1, 2, 2, 1, 1),
            global_first_pool=False,
            global_input_downsample=4,
            local_channels=(16, 32, 64, 128),
            local_stem_width=16,
            crop_size=(64, 64),
            beta=1e-4,
            attention_dim=32,
            tissue_gate=True,
        )

    @classmethod
    def paper(cls) -> GMICConfig:
        """The released architecture and model 1's percent_t and beta (2944x1920 input, 46x30 map, K=6)."""
        return cls()


@register_method("gmic")
class GMIC(WSSegMethod):
    """Global saliency, greedy ROI crops, a local ResNet-18 with gated attention, and a fusion classifier."""

    Config = GMICConfig
    # Official key prefix -> wsseg module (docs/methods/gmic.md: 258 keys).
    official_prefixes = {
        "ds_net.": "global_backbone.",
        "left_postprocess_net.gn_conv_last.": "saliency_head.",
        "dn_resnet.": "local_backbone.",
        "mil_attn_V.": "attention_v.",
        "mil_attn_U.": "attention_u.",
        "mil_attn_w.": "attention_w.",
        "classifier_linear.": "local_classifier.",
        "fusion_dnn.": "fusion.",
    }

    cfg: GMICConfig

    def __init__(self, cfg: GMICConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__(cfg, num_classes, in_chans)
        if cfg.num_crops < 1 or not 0 < cfg.percent_t <= 1 or cfg.global_input_downsample < 1:
            raise ValueError("gmic needs num_crops >= 1, 0 < percent_t <= 1 and global_input_downsample >= 1")
        if cfg.roi_impl not in ROI_IMPLS:
            raise ValueError(f"gmic roi_impl must be one of {list(ROI_IMPLS)}, got {cfg.roi_impl!r}")
        if cfg.local_in_chans not in (1, 3):
            raise ValueError(
                f"gmic local_in_chans must be 1 (folded first convolution) or 3 (official), got {cfg.local_in_chans}"
            )
        chans = pooled_channels(in_chans, cfg.global_input_downsample, cfg.global_input_pool)
        self.global_backbone = ResNet22(chans, cfg.global_width, cfg.global_strides, 2, cfg.global_first_pool)
        g = self.global_backbone.num_features
        self.saliency_head = nn.Conv2d(g, num_classes, 1, bias=False)
        # method.pretrained=imagenet starts the local ResNet-18 from torchvision's ImageNet weights, as the paper does;
        # the global ResNet-22 has no published weights and stays random (initialisation() records both).
        self.local_backbone = local_resnet(
            18,
            cfg.local_channels,
            cfg.local_stem_width,
            pretrained=cfg.pretrained == "imagenet",
            name="gmic local_backbone",
        )
        c = cfg.local_channels[-1]
        self.attention_v = nn.Linear(c, cfg.attention_dim, bias=False)
        self.attention_u = nn.Linear(c, cfg.attention_dim, bias=False)
        self.attention_w = nn.Linear(cfg.attention_dim, 1, bias=False)
        self.local_classifier = nn.Linear(c, num_classes, bias=False)
        self.fusion = nn.Linear(g + c, num_classes)

    def global_module(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Images (B, 1, H, W) -> h_g (B, 256, h, w), the saliency map A (B, 2, h, w) and y_global (B, 2)."""
        x = pool_input(images, self.cfg.global_input_downsample, self.cfg.global_input_pool)  # (B, 1 or d*d, h, w)
        h_g = self.global_backbone(x)  # (B, 256, h, w)
        saliency_lowres = torch.sigmoid(self.saliency_head(h_g))  # (B, 2, h, w)
        if self.cfg.tissue_gate:
            saliency_lowres = saliency_lowres * tissue_fraction(
                tissue_mask(images), (int(h_g.shape[-2]), int(h_g.shape[-1]))
            )
        return h_g, saliency_lowres, top_t_mean(saliency_lowres, self.cfg.percent_t)

    def explained_layer(self) -> nn.Module:
        """Post-hoc methods explain the global module: its backbone's final feature map h_g (after BN and ReLU)."""
        return self.global_backbone.final_act

    def explained_logits(self, images: Tensor) -> Tensor:
        """The logit of y_global (B, 2), the global module's prediction (the crops and the fusion are not run)."""
        return torch.logit(self.global_module(images)[2].float(), eps=1e-6)

    def local_features(self, crops: Tensor) -> Tensor:
        """Crops (N, 1, h, w) -> the local ResNet-18's feature maps (N, 512, h/32, w/32) at the released widths."""
        local = cast(TimmModel, self.local_backbone)  # a timm ResNet
        return local.forward_features(local_input(crops, self.cfg.local_in_chans))  # (N, 1 or 3, h, w) in

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, 1, H, W) -> fusion logits (B, K) and the global saliency map at (B, K, H, W)."""
        size = (int(images.shape[-2]), int(images.shape[-1]))
        h_g, saliency_lowres, y_global = self.global_module(images)  # (B, 256, h, w), (B, 2, h, w), (B, 2)

        crop = self.cfg.crop_size
        corners = propose_windows(saliency_lowres, self.cfg.num_crops, crop, size)  # (B, K, 2) pixels
        cut = extract_crops if self.cfg.roi_impl == "batched" else extract_crops_reference
        crops = cut(images, corners, crop)  # (B, K, 1, crop_h, crop_w)
        b, k = crops.shape[:2]
        features = self.local_features(crops.flatten(0, 1))  # (B*K, 512, s, s)
        h_k = features.mean(dim=(2, 3)).view(b, k, -1)  # (B, K, 512)

        z, attention = self.attention_pool(h_k)  # (B, 512), (B, K)
        local_logits = self.local_classifier(z)  # (B, 2)
        g = h_g.amax(dim=(2, 3))  # (B, 256)
        fusion_logits = self.fusion(torch.cat((g, z), dim=1))  # (B, 2)

        saliency = to_input_resolution(saliency_lowres.float(), size)  # (B, 2, H, W)
        extras = {
            "y_global": y_global,
            "y_local": torch.sigmoid(local_logits),
            "y_fusion": torch.sigmoid(fusion_logits),
            "local_logits": local_logits,
            "saliency_lowres": saliency_lowres,
            "patch_locations": corners,
            "patch_attns": attention,
        }
        return MethodOutput(logits=fusion_logits, saliency=saliency, extras=extras)

    def attention_pool(self, h: Tensor) -> tuple[Tensor, Tensor]:
        """Gated attention MIL pooling: crop features (B, K, C) -> z (B, C) and the weights alpha (B, K).

        alpha = softmax over crops of w(tanh(V h_k) * sigmoid(U h_k)); z = sum_k alpha_k h_k.
        """
        scores = self.attention_w(torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h)))  # (B, K, 1)
        alpha = torch.softmax(scores.squeeze(-1).float(), dim=1)  # (B, K)
        return (alpha.to(h.dtype)[..., None] * h).sum(dim=1), alpha

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """BCE on y_global, y_local and y_fusion, plus beta times the L1 norm of the saliency map per image."""
        labels = batch["labels"].float()
        global_bce = probability_bce(out.extras["y_global"], labels)
        local_bce = bce_loss(out.extras["local_logits"], labels)
        fusion_bce = bce_loss(out.logits, labels)
        l1 = out.extras["saliency_lowres"].float().abs().sum(dim=(1, 2, 3)).mean()
        loss = global_bce + local_bce + fusion_bce + self.cfg.beta * l1
        return {
            "loss": loss,
            "global_bce": global_bce.detach(),
            "local_bce": local_bce.detach(),
            "fusion_bce": fusion_bce.detach(),
            "l1": l1.detach(),
        }

    def load_weights(self, path: str | Path) -> None:
        """Load a weights file strictly; warns when a released ``sample_model_N.p`` had another ``percent_t``."""
        match = re.fullmatch(r"sample_model_(\d)\.p", Path(path).name)
        if match and int(match[1]) in RELEASED_PERCENT_T:
            released = RELEASED_PERCENT_T[int(match[1])]
            if released != self.cfg.percent_t:
                warnings.warn(
                    f"{Path(path).name} was released with percent_t={released} but this model uses "
                    f"{self.cfg.percent_t}; pass percent_t={released} (CLI: --set method.percent_t={released}) "
                    "to reproduce the official outputs",
                    stacklevel=2,
                )
        super().load_weights(path)
