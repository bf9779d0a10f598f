"""GLAM: global-local activation maps, weakly-supervised high-resolution segmentation (Liu et al., MIDL 2021).

Paper: "Weakly-supervised High-resolution Segmentation of Mammography Images for Breast Cancer Diagnosis",
arXiv 2106.07049.

Original code: https://github.com/nyukat/GLAM (inference only, a licence that forbids modification and
redistribution). This is a clean-room implementation from wsseg's specification (summarised in docs/methods/glam.md);
no code was copied and no official weights are shipped.

Forward, shapes at the paper preset (2944x1920 input):

1. Global network: the ResNet-22 of GMIC (:class:`wsseg.nn.resnet22.ResNet22`, Xavier-normal initialisation)
   returns l3 (B,64,184,120), l4 (B,128,92,60) and the final map (B,256,46,30). A 1x1 convolution (no bias) per
   level gives two-class logits; the coarser two are nearest-upsampled to 184x120 before their sigmoid:
   s1 (from l3), s2 (from l4), s3 (from the final map). The global saliency is S_g = 0.2 s1 + 0.6 s2 + 0.2 s3 and
   the prediction y_global is the mean of the three maps' top-3% means (k = 662 of 22,080 cells).
2. Region proposal: the greedy window selection of GMIC on S_g with one 32x32-cell window (512x512 pixels),
   with integer (floor) row/column conversion; the official code's true division, which turns the corner into a
   fraction on current PyTorch, is not reproduced. Corners are clamped so every patch lies inside the image.
3. Local network: a torchvision ResNet-34 with every stage at stride 1 (the stem and its max-pool kept) on the
   512x512 patch of the standardised input -> (B*k,512,128,128), a 1x1 convolution (no bias) and a sigmoid:
   the local maps (B,k,2,128,128). Their top-30% mean is the patch-level prediction y_local.
4. Paste-back and fusion: the local maps are nearest-resized to the patch and written into a zero canvas
   (B,2,2944,1920) (later patches overwrite earlier ones); the fused map is (canvas + nearest-upsampled S_g) / 2,
   so outside the patch it is S_g / 2.

``logits`` is the logit of y_global (the official model's prediction; the local network only refines the map),
``saliency`` is the fused map. The official head's unused 6->2 ``combine`` convolution is kept, frozen, so that
the official files load strictly and the parameter count is the official 24,086,140.

Training, wsseg's recipe (the paper's training section was not available to the specification; the stage
structure follows the two released checkpoints, ``model_sep`` = stages 1-2, ``model_joint`` = all three, and the
losses use the hooks the official code contains):

1. ``global``: BCE on each scale's top-k score (s1, s2, s3) plus ``l1_global`` times the mean of S_g.
2. ``local``: the global network frozen (eval mode, no gradients); BCE on y_local of the patches it selects plus
   ``l1_local`` times the mean of the local maps.
3. ``joint``: the sum of both losses, at ``stage_lr_scale[2]`` times the learning rate.

``stage_epochs`` sets the epochs of each stage (by default half the epochs, then a quarter each). Driven by the
training loop's hooks (``on_epoch_start``, ``lr_scale``, ``eligible_for_best``); the best checkpoint is chosen in the
last stage only, so it always holds a trained local network.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from wsseg.method import (
    Limit,
    MethodConfig,
    MethodOutput,
    TrainContext,
    WSSegMethod,
    between,
    fits_image,
    in_unit_interval,
    probability_bce,
)
from wsseg.nn.backbones import Pretrained
from wsseg.nn.input_pool import InputPool, pool_input, pooled_channels
from wsseg.nn.local_resnet import local_input, local_resnet
from wsseg.nn.resnet22 import ResNet22
from wsseg.nn.roi import (
    ROI_IMPLS,
    RoiImpl,
    extract_crops,
    extract_crops_reference,
    paste_patches,
    paste_patches_reference,
    propose_windows,
    tissue_fraction,
    tissue_mask,
    top_t_mean,
)
from wsseg.registry import register_method

Stage = Literal["global", "local", "joint"]
STAGES: tuple[Stage, Stage, Stage] = ("global", "local", "joint")


@dataclass
class GLAMConfig(MethodConfig):
    """GLAM hyperparameters; the defaults are the released model (``paper``).

    Attributes:
        global_width, global_strides, global_first_pool, global_input_downsample, global_input_pool: the global
            ResNet-22 and how it reads the image, as GMIC's.
        scale_weights: weights of (s1, s2, s3), the maps from l3, l4 and the final level, in S_g (0.2/0.6/0.2).
        percent_k: t of the top-t% mean of each global map (0.03).
        num_patches: patches per image (1 released).
        crop_size: (rows, cols) of a patch in input pixels (512x512 released).
        local_depth: 34 (released) or 18.
        local_channels, local_stem_width: the local ResNet's widths (torchvision's released).
        local_strides: per-stage strides of the local ResNet (all 1 released: output stride 4).
        local_in_chans: 1 (wsseg's default): the local network's first convolution is folded, its three-channel
            weights summed and applied to the one-channel patch (a third of the stem's cost, the same function up to
            float rounding); 3: the patch is repeated on three channels as in the official code, so fp32 outputs
            with official weights are bit for bit the official network's. Both load the same weight files.
        local_percent_k: t of the top-t% mean over the local maps, y_local (0.3).
        checkpoint_local: recompute the local network's activations in the backward pass (saves memory).
        pretrained: ``none`` (random) or ``imagenet``: the local ResNet starts from torchvision's ImageNet weights
            (timm's ``resnet34.tv_in1k``, or ``resnet18.tv_in1k`` for ``local_depth=18``); needs torchvision's local
            widths (``--profile paper``). The global ResNet-22 has no pretrained weights and stays random.
        stage_epochs: epochs of the global, local and joint stages; None splits ``train.epochs`` 2:1:1.
        stage_lr_scale: factor on the learning rate in each stage.
        l1_global: weight of the mean of S_g in the global loss.
        l1_local: weight of the mean of the local maps in the local loss.
        tissue_gate: multiply the global and local maps by the fraction of each cell covered by tissue (pixels
            above the image's background value). Not in the released model (off at the paper preset); wsseg's aid
            for training from scratch on few images, where unconstrained maps learn to fire outside the breast.
        roi_impl: how crops are cut out and pasted back: ``batched`` (one indexing operation for the batch, no host
            synchronisation) or ``reference`` (a per-image, per-crop Python loop that reads the corners back to
            the host, as the official code does). Same numbers; ``reference`` exists to measure the speedup
            (`wsseg bench --mode reference`).
    """

    global_width: int = 16
    global_strides: tuple[int, ...] = (1, 2, 2, 2, 2)
    global_first_pool: bool = True
    global_input_downsample: int = 1
    global_input_pool: InputPool = "avg"
    scale_weights: tuple[float, float, float] = (0.2, 0.6, 0.2)
    percent_k: float = 0.03
    num_patches: int = 1
    crop_size: tuple[int, int] = (512, 512)
    local_depth: int = 34
    local_channels: tuple[int, int, int, int] = (64, 128, 256, 512)
    local_stem_width: int = 64
    local_strides: tuple[int, int, int, int] = (1, 1, 1, 1)
    local_in_chans: int = 1
    local_percent_k: float = 0.3
    checkpoint_local: bool = False
    pretrained: Pretrained = "none"
    stage_epochs: tuple[int, int, int] | None = None
    stage_lr_scale: tuple[float, float, float] = (1.0, 1.0, 0.1)
    l1_global: float = 0.01
    l1_local: float = 0.01
    tissue_gate: bool = False
    roi_impl: RoiImpl = "batched"

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """Widths and counts a network can have, ResNet depths that exist, fractions in (0, 1], patches in the image."""
        pooled = max(1, min(image_hw) // 32)
        return {
            "global_width": (between(1, 1024), "an integer in [1, 1024]"),
            "global_input_downsample": (between(1, pooled), f"an integer in [1, {pooled}] at this profile"),
            "scale_weights": (lambda v: all(0 <= w <= 1000 for w in v), "three weights in [0, 1000]"),
            "percent_k": (in_unit_interval, "in (0, 1]"),
            "num_patches": (between(1, 64), "an integer in [1, 64]"),
            "crop_size": (fits_image(image_hw), f"(rows, cols) within the {image_hw[0]}x{image_hw[1]} image"),
            "local_depth": (lambda v: v in (18, 34), "18 or 34"),
            "local_stem_width": (between(1, 1024), "an integer in [1, 1024]"),
            "local_in_chans": (lambda v: v in (1, 3), "1 (folded first convolution) or 3 (official)"),
            "local_percent_k": (in_unit_interval, "in (0, 1]"),
            "stage_epochs": (lambda v: v is None or all(0 <= e <= 100_000 for e in v), "none or three epoch counts"),
            "stage_lr_scale": (lambda v: all(0 < s <= 100 for s in v), "three factors in (0, 100]"),
            "l1_global": (between(0, 1000), "in [0, 1000]"),
            "l1_local": (between(0, 1000), "in [0, 1000]"),
        }

    @classmethod
    def tiny(cls) -> GLAMConfig:
        """A narrow network with one 32x32 patch, for unit tests on small images."""
        return cls(
            global_width=4,
            global_strides=(1, 2, 1, 1, 1),
            global_first_pool=False,
            crop_size=(32, 32),
            local_depth=18,
            local_channels=(8, 8, 16, 16),
            local_stem_width=8,
        )

    @classmethod
    def quick(cls) -> GLAMConfig:
        """736x480 at 0.4 mm: a half-width global network and one 128x128 patch, CPU-sized.

        The global network reads the image pooled 2x; its three levels are 46x30,
        23x15 and 12x8 (the paper's ratios, 4x coarser cells), and one 128x128 patch (51.2 mm, as 512 px at
        0.1 mm) read by a quarter-width stride-free ResNet-18 into a 32x32 map (1.6 mm cells, the paper's 0.4 mm
        scaled). About 0.1 s (global stage) to 0.4 s (joint stage) per training step of 8 images on two CPU cores.
        The tissue gate is on: without it the global maps trained from scratch fired beside the lesion or in the
        air and the patch missed the lesion in 95-100 % of validation images.
        """
        return cls(
            global_width=8,
            global_strides=(1, 2, 1, 2, 2),
            global_input_downsample=2,
            crop_size=(128, 128),
            local_depth=18,
            local_channels=(16, 32, 64, 128),
            local_stem_width=16,
            tissue_gate=True,
        )

    @classmethod
    def paper(cls) -> GLAMConfig:
        """The released architecture (2944x1920 input, 184x120 global maps, one 512x512 patch, ResNet-34)."""
        return cls()


@register_method("glam")
class GLAM(WSSegMethod):
    """A global saliency network that picks a patch and a stride-free local network that segments it."""

    Config = GLAMConfig
    # Official key prefix -> wsseg module (docs/methods/glam.md: 352 keys).
    official_prefixes = {
        "global_network.downsampling_branch.": "global_backbone.",
        "global_network.postprocess_module.gn_conv_1.": "head_l3.",
        "global_network.postprocess_module.gn_conv_2.": "head_l4.",
        "global_network.postprocess_module.gn_conv_last.": "head_final.",
        "global_network.postprocess_module.combine.": "head_combine.",
        "detection_network.dn_resnet.": "local_backbone.",
        "detection_network.gn_conv_last.": "local_head.",
    }

    cfg: GLAMConfig

    def __init__(self, cfg: GLAMConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__(cfg, num_classes, in_chans)
        if len(cfg.global_strides) < 3 or cfg.num_patches < 1 or cfg.global_input_downsample < 1:
            raise ValueError("glam needs at least 3 global stages, num_patches >= 1 and global_input_downsample >= 1")
        if cfg.roi_impl not in ROI_IMPLS:
            raise ValueError(f"glam roi_impl must be one of {list(ROI_IMPLS)}, got {cfg.roi_impl!r}")
        if cfg.local_in_chans not in (1, 3):
            raise ValueError(
                f"glam local_in_chans must be 1 (folded first convolution) or 3 (official), got {cfg.local_in_chans}"
            )
        self.global_backbone = ResNet22(
            pooled_channels(in_chans, cfg.global_input_downsample, cfg.global_input_pool),
            cfg.global_width,
            cfg.global_strides,
            2,
            cfg.global_first_pool,
            init="xavier",
        )
        c3, c4, c5 = self.global_backbone.stage_channels[-3:]
        self.head_l3 = nn.Conv2d(c3, num_classes, 1, bias=False)
        self.head_l4 = nn.Conv2d(c4, num_classes, 1, bias=False)
        self.head_final = nn.Conv2d(c5, num_classes, 1, bias=False)
        # Built by the official head and never used: kept (frozen) so official files load strictly.
        self.head_combine = nn.Conv2d(3 * num_classes, num_classes, 1, bias=False).requires_grad_(False)
        # method.pretrained=imagenet: the local ResNet starts from torchvision's ImageNet weights (the stride-free
        # stages change no weight shape); the global ResNet-22 has no published weights and stays random.
        self.local_backbone = local_resnet(
            cfg.local_depth,
            cfg.local_channels,
            cfg.local_stem_width,
            cfg.local_strides,
            pretrained=cfg.pretrained == "imagenet",
            name="glam local_backbone",
        )
        self.local_head = nn.Conv2d(cfg.local_channels[-1], num_classes, 1, bias=False)
        # The training stage (a mode like ``training``, set by on_epoch_start); "joint" outside the loop.
        self.stage: Stage = "joint"
        self._epochs: int | None = None

    # ----- forward -----

    def global_maps(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images (B, 1, H, W) -> the per-scale maps (3, B, 2, h, w) (s1, s2, s3) and S_g (B, 2, h, w)."""
        x = pool_input(images, self.cfg.global_input_downsample, self.cfg.global_input_pool)
        l3, l4, final = self.global_backbone.forward_levels(x)[-3:]
        size = (int(l3.shape[-2]), int(l3.shape[-1]))
        logits = (
            self.head_l3(l3),  # (B, 2, h, w)
            F.interpolate(self.head_l4(l4), size=size, mode="nearest"),  # upsampled before the sigmoid
            F.interpolate(self.head_final(final), size=size, mode="nearest"),
        )
        scales = torch.stack([torch.sigmoid(z.float()) for z in logits])  # (3, B, 2, h, w)
        if self.cfg.tissue_gate:
            scales = scales * tissue_fraction(tissue_mask(images), size)
        weights = torch.tensor(self.cfg.scale_weights, device=scales.device).view(3, 1, 1, 1, 1)
        return scales, (weights * scales).sum(dim=0)

    def explained_layer(self) -> nn.Module:
        """Post-hoc methods explain the global network: its final feature map (after the final BN and ReLU)."""
        return self.global_backbone.final_act

    def explained_logits(self, images: Tensor) -> Tensor:
        """The logit of y_global (B, 2), the model's prediction, from the global network alone."""
        scales, _ = self.global_maps(images)  # (3, B, 2, h, w)
        y_global = torch.stack([top_t_mean(s, self.cfg.percent_k) for s in scales]).mean(dim=0)  # (B, 2)
        return torch.logit(y_global, eps=1e-6)

    def local_maps(self, crops: Tensor) -> Tensor:
        """Patches (N, 1, p, p) -> local maps (N, 2, p/4, p/4) in [0, 1] (output stride 4 at the released strides)."""
        net = self.local_backbone  # a timm ResNet: the stem, then four stages
        x = local_input(crops, self.cfg.local_in_chans)  # (N, 1 or 3, p, p)
        for name in ("conv1", "bn1", "act1", "maxpool"):
            x = net.get_submodule(name)(x)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            layer = net.get_submodule(name)
            use_ckpt = self.cfg.checkpoint_local and self.training and torch.is_grad_enabled()
            x = checkpoint(layer, x, use_reentrant=False) if use_ckpt else layer(x)
        return torch.sigmoid(self.local_head(x).float())

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, 1, H, W) -> logit(y_global) (B, 2) and the fused map (B, 2, H, W).

        In training during the ``global`` stage the local network is skipped (its loss is not used) and the
        saliency is S_g alone; during the ``local`` stage the global network runs without gradients.
        """
        size = (int(images.shape[-2]), int(images.shape[-1]))
        frozen_global = self.training and self.stage == "local"
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_global):
            scales, global_map = self.global_maps(images)  # (3, B, 2, h, w), (B, 2, h, w)
        scores = torch.stack([top_t_mean(s, self.cfg.percent_k) for s in scales])  # (3, B, 2)
        y_global = scores.mean(dim=0)  # (B, 2)
        logits = torch.logit(y_global, eps=1e-6)
        global_up = F.interpolate(global_map, size=size, mode="nearest")  # (B, 2, H, W)
        extras: dict[str, Tensor] = {"y_global": y_global, "scale_scores": scores, "saliency_global": global_map}
        if self.training and self.stage == "global":
            return MethodOutput(logits=logits, saliency=global_up.detach(), extras=extras)

        crop = self.cfg.crop_size
        corners = propose_windows(global_map, self.cfg.num_patches, crop, size)  # (B, k, 2) pixels
        batched = self.cfg.roi_impl == "batched"
        cut, paste = (extract_crops, paste_patches) if batched else (extract_crops_reference, paste_patches_reference)
        crops = cut(images, corners, crop)  # (B, k, 1, p, p)
        b, k = crops.shape[:2]
        local = self.local_maps(crops.flatten(0, 1))  # (B*k, 2, q, q)
        if self.cfg.tissue_gate:
            tissue = cut(tissue_mask(images), corners, crop).flatten(0, 1)  # (B*k, 1, p, p)
            local = local * tissue_fraction(tissue, (int(local.shape[-2]), int(local.shape[-1])))
        local = local.view(b, k, *local.shape[1:])  # (B, k, 2, q, q)
        y_local = top_t_mean(local.transpose(1, 2).flatten(2)[..., None], self.cfg.local_percent_k)  # (B, 2)
        saliency_local = paste(local, corners, crop, size)  # (B, 2, H, W)
        fused = (saliency_local + global_up) / 2
        extras.update(
            y_local=y_local,
            local_maps=local,
            saliency_local=saliency_local,
            patch_locations=corners,
        )
        return MethodOutput(logits=logits, saliency=fused, extras=extras)

    # ----- training -----

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """The current stage's loss: global (per-scale BCE + L1 of S_g), local (BCE of y_local + L1), or both."""
        labels = batch["labels"].float()
        terms: dict[str, Tensor] = {}
        total = torch.zeros((), device=out.logits.device)
        if self.stage in ("global", "joint"):
            scale_bce = torch.stack([probability_bce(s, labels) for s in out.extras["scale_scores"]]).mean()
            l1 = out.extras["saliency_global"].float().mean()
            total = total + scale_bce + self.cfg.l1_global * l1
            terms.update(global_bce=scale_bce.detach(), global_l1=l1.detach())
        if self.stage in ("local", "joint"):
            local_bce = probability_bce(out.extras["y_local"], labels)
            l1 = out.extras["local_maps"].float().mean()
            total = total + local_bce + self.cfg.l1_local * l1
            terms.update(local_bce=local_bce.detach(), local_l1=l1.detach())
        return {"loss": total, **terms}

    def stage_bounds(self, epochs: int) -> tuple[int, int, int]:
        """Epochs of the global, local and joint stages for a run of ``epochs`` epochs.

        Raises:
            ValueError: ``stage_epochs`` is set and does not sum to ``epochs``.
        """
        if self.cfg.stage_epochs is None:
            g = math.ceil(epochs / 2)
            loc = (epochs - g) // 2
            return g, loc, epochs - g - loc
        if sum(self.cfg.stage_epochs) != epochs or min(self.cfg.stage_epochs) < 0:
            raise ValueError(
                f"glam stage_epochs {tuple(self.cfg.stage_epochs)} must be >= 0 and sum to train.epochs = {epochs}; "
                f"set --set train.epochs={sum(self.cfg.stage_epochs)} or change method.stage_epochs"
            )
        g, loc, joint = self.cfg.stage_epochs  # a list when read from a JSON config
        return g, loc, joint

    def stage_of(self, epoch: int, epochs: int) -> Stage:
        """The stage of 0-based ``epoch`` in a run of ``epochs`` epochs."""
        g, loc, _ = self.stage_bounds(epochs)
        return "global" if epoch < g else "local" if epoch < g + loc else "joint"

    def on_train_start(self, ctx: TrainContext) -> None:
        """Check the stage schedule against the run's epochs before any step is taken."""
        self._epochs = ctx.epochs
        self.stage_bounds(self._epochs)

    def on_epoch_start(self, ctx: TrainContext, epoch: int) -> None:
        """Enter the epoch's stage: freeze the global network in the local stage (eval-mode BN, no gradients)."""
        self._epochs = ctx.epochs
        self.stage = self.stage_of(epoch, self._epochs)
        global_parts = (self.global_backbone, self.head_l3, self.head_l4, self.head_final)
        for part in global_parts:
            part.requires_grad_(self.stage != "local")
            if self.stage == "local":
                part.eval()
        self.local_backbone.requires_grad_(True)
        self.local_head.requires_grad_(True)

    def lr_scale(self, group: dict[str, Any], epoch: int) -> float:
        """``stage_lr_scale`` of the stage of ``epoch``."""
        if self._epochs is None:
            return 1.0
        return float(self.cfg.stage_lr_scale[STAGES.index(self.stage_of(epoch, self._epochs))])

    def eligible_for_best(self, epoch: int) -> bool:
        """Only epochs of the last stage that runs are candidates for the best checkpoint."""
        if self._epochs is None:
            return True
        bounds = self.stage_bounds(self._epochs)
        last = max(i for i, n in enumerate(bounds) if n > 0)
        return self.stage_of(epoch, self._epochs) == STAGES[last]
