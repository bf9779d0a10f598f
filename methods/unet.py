"""U-Net: the fully supervised upper bound (Ronneberger et al., "U-Net", MICCAI 2015).

The only method trained on lesion masks (``supervision = "full"``): it shows how much Dice the architecture
budget of a profile can reach when the masks are known, so the weakly supervised rows are read against both a floor
(the ``reference`` rows uniform, random, intensity) and a ceiling. Built with segmentation-models-pytorch
(``smp.Unet``) on a randomly initialised encoder, or with ``pretrained=imagenet`` on a ``tu-`` timm encoder that
starts from timm's pretrained weights (smp's timm encoder calls ``timm.create_model(pretrained=True, in_chans=1)``);
the decoder stays random.

Forward: the input is average-pooled by ``input_downsample`` (as CAM's), padded at the bottom/right with the
image's background value to a multiple of the encoder's stride and passed through the U-Net, whose per-class
pixel logits are cropped back. The saliency is their sigmoid brought to the input resolution by
:func:`wsseg.nn.upsample.to_input_resolution`. Each image logit is a log-sum-exp pooling of that class's pixel
logits, ``log(mean(exp(r * z))) / r`` with ``r = pool_sharpness`` (the mean at r -> 0, the max at r -> inf), so a
few confident lesion pixels make a confident image logit and AUROC is meaningful.

Loss: per-pixel BCE plus soft Dice against ``batch["masks"]`` area-pooled to the logit resolution by the same
``input_downsample`` average pooling as the image (the target of a low-resolution pixel is the lesion fraction it
covers, so no lesion is lost or inflated), plus ``image_loss_weight`` times BCE of the image logits on the labels.
The soft Dice is computed per image and class and averaged over the pairs with a lesion (the evaluator's Dice is an
average over lesion-positive images); lesion-free pairs are driven to 0 by the BCE terms.

The quick preset (a quarter-width ResNet-18 encoder with a deep stem) reads the 0.4 mm pixels of the quick images and
trains on 192x192 crops (77 mm), half of them centred near a lesion (:func:`lesion_crops`): 1.7x the pixels of a
4x-pooled 736x480 image per step. On phantom 2.1, at the same number of steps (1,600 of 8 images, seed 0), that gave
test Dice 0.32 / 0.40 and a 10 mm pointing game of 0.54 / 0.62 against 0.27 / 0.26 and 0.42 / 0.41 for whole
images pooled 4x (1.6 mm), the earlier preset: at 1.6 mm a calcification is a fraction of a pixel
(benchmarks/cpu-2core-2026-12-07-issue17-training.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from wsseg.method import Limit, MethodConfig, MethodOutput, TrainContext, WSSegMethod, bce_loss, between
from wsseg.nn.backbones import Pretrained, with_pretrained
from wsseg.nn.input_pool import InputPool, pool_input, pooled_channels
from wsseg.nn.upsample import to_input_resolution
from wsseg.registry import register_method


@dataclass
class UNetConfig(MethodConfig):
    """U-Net hyperparameters.

    Attributes:
        encoder: an smp encoder name; ``tu-<timm model>`` uses any timm model.
        encoder_width: for a ``tu-`` timm ResNet, the widths of its four stages are ``w, 2w, 4w, 8w``
            (timm's ``channels``) and its stem is timm's deep stem of width ``w/2 -> w``; None keeps the
            encoder's own architecture (needed for other encoders).
        encoder_depth: encoder stages used (3 to 5); the U-Net's output stride before cropping is ``2**depth``.
        pretrained: ``none`` (random) or ``imagenet``: a ``tu-`` encoder of timm's own widths (``encoder_width``
            None, e.g. the paper preset's ResNet-34) starts from timm's pretrained weights; the decoder is random.
        decoder_width: channels of the last (finest) decoder block; each coarser block doubles it.
        input_downsample: reduce the input by this factor before the U-Net (1 = full resolution).
        input_pool: how (:mod:`wsseg.nn.input_pool`): ``avg`` pooling or ``unshuffle`` (space-to-depth).
        pool_sharpness: ``r`` of the log-sum-exp pooling from pixel logits to image logits.
        dice_weight: weight of the soft Dice term.
        image_loss_weight: weight of the image-level BCE term.
        train_crop: train on square crops of this many pixels (of the profile's grid) instead of whole images;
            0 trains on whole images. Evaluation always reads whole images (the network is fully convolutional).
        crop_lesion_fraction: the chance that a crop is centred near a lesion pixel (of an image that has one)
            rather than on a breast pixel drawn uniformly.
    """

    encoder: str = "tu-resnet18"
    encoder_width: int | None = 16
    encoder_depth: int = 4
    pretrained: Pretrained = "none"
    decoder_width: int = 8
    input_downsample: int = 4
    input_pool: InputPool = "avg"
    pool_sharpness: float = 4.0
    dice_weight: float = 1.0
    image_loss_weight: float = 0.1
    train_crop: int = 0
    crop_lesion_fraction: float = 0.5

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """Depths smp builds, positive widths, pooling that leaves the U-Net's stride, positive loss weights."""
        pooled = max(1, min(image_hw) // 2 ** max(3, min(self.encoder_depth, 5)))
        return {
            "encoder": (lambda v: bool(v.strip()), "an smp encoder name, e.g. tu-resnet18"),
            "encoder_width": (lambda v: v is None or 1 <= v <= 1024, "none or an integer in [1, 1024]"),
            "encoder_depth": (between(3, 5), "3, 4 or 5"),
            "decoder_width": (between(1, 1024), "an integer in [1, 1024]"),
            "input_downsample": (between(1, pooled), f"an integer in [1, {pooled}] at this profile"),
            "pool_sharpness": (lambda v: 0 < v <= 100, "in (0, 100]"),
            "dice_weight": (between(0, 1000), "in [0, 1000]"),
            "image_loss_weight": (between(0, 1000), "in [0, 1000]"),
            # At least one cell of the shallowest encoder (stride 8) after the input pooling, as input_downsample's
            # bound above; deeper encoders pad (pixel_logits).
            "train_crop": (
                lambda v: v == 0 or self.input_downsample * 8 <= v <= min(image_hw),
                f"0 (whole images) or an integer in [{self.input_downsample * 8}, {min(image_hw)}] at this profile",
            ),
            "crop_lesion_fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
        }

    @classmethod
    def tiny(cls) -> UNetConfig:
        """A three-stage eighth-width ResNet-18 U-Net at full resolution: seconds on CPU."""
        return cls(encoder_width=8, encoder_depth=3, decoder_width=8, input_downsample=1)

    @classmethod
    def quick(cls) -> UNetConfig:
        """A four-stage quarter-width ResNet-18 U-Net trained on 192x192 crops of the 0.4 mm pixels.

        Whole images pooled 4x before: at 1.6 mm a calcification is a fraction of a pixel.
        """
        return cls(input_downsample=1, train_crop=192)

    @classmethod
    def paper(cls) -> UNetConfig:
        """A five-stage ResNet-34 U-Net with smp's default decoder widths on the input pooled 2x (0.2 mm pixels)."""
        return cls(encoder="tu-resnet34", encoder_width=None, encoder_depth=5, decoder_width=16, input_downsample=2)


def lesion_crops(batch: dict[str, Any], seeds: Sequence[int], size: int, lesion_fraction: float) -> dict[str, Any]:
    """One ``size`` x ``size`` crop of every image of a training batch, centred near a lesion or in the breast.

    Per image, drawn from its seed: with probability ``lesion_fraction`` (if its masks hold a lesion) the crop is
    centred on a lesion pixel drawn uniformly from the union of its masks, moved by up to a quarter crop per axis
    (the pixel stays inside), otherwise on a breast pixel drawn uniformly; a crop that would leave the image is slid
    back inside. A crop's label for a class is whether its mask holds that class's lesion; a labelled class without
    any mask pixel in the whole image (a lesion with no location, in real data) keeps the image's label.

    Args:
        batch: ``image`` (B, C, H, W), ``masks`` (B, K, H, W), ``labels`` (B, K) and ``breast_mask`` (B, H, W);
            other keys pass through.
        seeds: one seed per image.
        size: the crop's side in pixels.
        lesion_fraction: the chance of a lesion-centred crop for an image with a lesion.

    Raises:
        ValueError: the crop is larger than the images, or the batch has no masks.
    """
    if "masks" not in batch:
        raise ValueError("unet method.train_crop needs the lesion masks in the training batch (batch['masks'])")
    images, masks, labels, breast = batch["image"], batch["masks"], batch["labels"], batch["breast_mask"]
    h, w = images.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"unet method.train_crop={size} exceeds the {h}x{w} images; set it to at most {min(h, w)}")
    windows = []
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        # Every image draws the same three things, whichever branch it takes: its stream does not depend on them.
        u, a, shift = rng.random(), rng.random(), rng.integers(-(size // 4), size // 4 + 1, 2)
        lesion = masks[i].amax(dim=0) > 0  # (H, W)
        near_lesion = bool(lesion.any()) and u < lesion_fraction
        region = lesion if near_lesion else breast[i] > 0
        if not region.any():
            region = torch.ones_like(lesion)  # no breast mask: anywhere in the image
        ys, xs = torch.nonzero(region, as_tuple=True)  # (n,), (n,)
        k = min(int(a * len(ys)), len(ys) - 1)
        dy, dx = (int(shift[0]), int(shift[1])) if near_lesion else (0, 0)
        y0 = min(max(int(ys[k]) + dy - size // 2, 0), h - size)
        x0 = min(max(int(xs[k]) + dx - size // 2, 0), w - size)
        windows.append((y0, x0))

    def crop(t: Tensor) -> Tensor:
        return torch.stack([t[i, ..., y : y + size, x : x + size] for i, (y, x) in enumerate(windows)])

    crop_masks = crop(masks)  # (B, K, size, size)
    located = masks.flatten(2).amax(dim=-1) > 0  # (B, K): the class's lesion has pixels somewhere in the image
    present = (crop_masks.flatten(2).amax(dim=-1) > 0).to(labels.dtype)  # (B, K)
    return {
        **batch,
        "image": crop(images),  # (B, C, size, size)
        "masks": crop_masks,
        "breast_mask": crop(breast),  # (B, size, size)
        "labels": torch.where(located, present, labels),  # (B, K)
    }


def soft_dice_loss(probs: Tensor, target: Tensor, eps: float = 1.0) -> Tensor:
    """One minus the soft Dice, averaged over the (image, class) pairs whose target is not empty.

    Args:
        probs: (B, K, h, w) probabilities.
        target: (B, K, h, w) targets in [0, 1].
        eps: smoothing added to numerator and denominator (in pixels).

    Returns:
        A scalar; 0 (still attached to ``probs``) when no pair has a lesion.
    """
    inter = (probs * target).sum(dim=(-2, -1))  # (B, K)
    denom = probs.sum(dim=(-2, -1)) + target.sum(dim=(-2, -1))  # (B, K)
    dice = (2.0 * inter + eps) / (denom + eps)  # (B, K)
    positive = target.sum(dim=(-2, -1)) > 0  # (B, K)
    if not positive.any():
        return probs.sum() * 0.0
    return 1.0 - dice[positive].mean()


@register_method("unet")
class UNet(WSSegMethod):
    """Reference ceiling: a U-Net trained on the lesion masks (fully supervised)."""

    Config = UNetConfig
    supervision = "full"

    cfg: UNetConfig

    def __init__(self, cfg: UNetConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        # Here, not at the top: smp imports timm (seconds), which registering methods (`wsseg list methods`) skips.
        import segmentation_models_pytorch as smp

        super().__init__(cfg, num_classes, in_chans)
        if not 3 <= cfg.encoder_depth <= 5:
            raise ValueError(f"unet encoder_depth must be 3, 4 or 5, got {cfg.encoder_depth}")
        if cfg.input_downsample < 1 or cfg.decoder_width < 1 or cfg.pool_sharpness <= 0:
            raise ValueError("unet input_downsample and decoder_width must be >= 1 and pool_sharpness > 0")
        kwargs: dict[str, Any] = {}
        if cfg.encoder_width is not None:
            if not cfg.encoder.startswith("tu-"):
                raise ValueError(
                    f"unet encoder_width applies to timm ResNet encoders ('tu-resnet18', ...), not {cfg.encoder!r}; "
                    "set method.encoder_width=none"
                )
            w = cfg.encoder_width
            # Stage widths w..8w, and a deep stem (three 3x3 convolutions, w/2 -> w channels) instead of the 7x7,
            # 64-channel one: at stride 2 that stem and its decoder skip would cost more than the narrow stages.
            kwargs.update(channels=(w, 2 * w, 4 * w, 8 * w), stem_type="deep", stem_width=max(1, w // 2))
        decoder = tuple(cfg.decoder_width * 2 ** (cfg.encoder_depth - 1 - i) for i in range(cfg.encoder_depth))

        def build(weights: bool | None) -> smp.Unet:
            return smp.Unet(
                encoder_name=cfg.encoder,
                encoder_depth=cfg.encoder_depth,
                encoder_weights=weights,  # True: timm's pretrained weights of the tu- encoder; None: random
                decoder_channels=decoder,
                in_channels=pooled_channels(in_chans, cfg.input_downsample, cfg.input_pool),
                classes=num_classes,
                **kwargs,
            )

        if cfg.pretrained == "imagenet":
            if not cfg.encoder.startswith("tu-") or cfg.encoder_width is not None:
                raise ValueError(
                    f"unet encoder {cfg.encoder!r} (encoder_width={cfg.encoder_width}) has no pretrained weights: "
                    "pretrained=imagenet needs a timm encoder of timm's own widths, e.g. --profile paper "
                    "(tu-resnet34) or --set method.encoder_width=none; or keep method.pretrained=none"
                )
            self.net, init = with_pretrained(cfg.encoder[3:], f"unet encoder {cfg.encoder}", lambda: build(True))
            self.net.encoder.wsseg_init = init
        else:
            self.net = build(None)
        self.stride = 2**cfg.encoder_depth
        self._epochs: int | None = None  # the run's length, set by on_train_start (a schedule fact, not a result)

    def on_train_start(self, ctx: TrainContext) -> None:
        """Remember the run's length: only its last epoch provides the evaluated weights."""
        self._epochs = ctx.epochs

    def eligible_for_best(self, epoch: int) -> bool:
        """Only the last epoch: the ceiling is the fully trained segmenter, not the epoch with the best image AUROC.

        The image logit is a log-sum-exp of the pixel logits, a by-product of segmentation; selecting epochs on its
        validation AUROC picked under-trained networks on phantom 2 (epoch 2 of 8: test Dice 0.107 / 0.122 against
        0.188 / 0.180 for epoch 8, benchmarks/cpu-2core-2026-12-07-issue17-training.md).
        """
        return self._epochs is None or epoch == self._epochs - 1

    def training_batch(self, batch: dict[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
        """Lesion-centred crops when ``train_crop`` is set (:func:`lesion_crops`); whole images otherwise."""
        if not self.cfg.train_crop:
            return batch
        return lesion_crops(batch, seeds, self.cfg.train_crop, self.cfg.crop_lesion_fraction)

    def pixel_logits(self, images: Tensor) -> Tensor:
        """Images (B, C, H, W) -> per-class pixel logits (B, K, H/d, W/d) for ``d = input_downsample``."""
        x = pool_input(images, self.cfg.input_downsample, self.cfg.input_pool)  # (B, C or C*d*d, h, w)
        h, w = x.shape[-2:]
        pad = (0, -w % self.stride, 0, -h % self.stride)
        if any(pad):
            # Pad with each image's background value (its minimum) so the padding looks like air.
            lo = x.amin(dim=(-2, -1), keepdim=True)  # (B, C, 1, 1)
            x = F.pad(x - lo, pad) + lo  # (B, C, h + ph, w + pw)
        z: Tensor = self.net(x)  # (B, K, h + ph, w + pw)
        return z[..., :h, :w]  # (B, K, h, w)

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, C, H, W) -> LSE-pooled logits (B, K) and sigmoid segmentation maps (B, K, H, W)."""
        z = self.pixel_logits(images)  # (B, K, h, w)
        r = self.cfg.pool_sharpness
        flat = z.float().flatten(2)  # (B, K, h*w)
        logits = (torch.logsumexp(r * flat, dim=-1) - math.log(flat.shape[-1])) / r  # (B, K)
        size = (int(images.shape[-2]), int(images.shape[-1]))
        saliency = to_input_resolution(torch.sigmoid(z.float()), size)  # (B, K, H, W)
        return MethodOutput(logits=logits, saliency=saliency, extras={"pixel_logits": z})

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """Pixel BCE + soft Dice against the area-pooled masks, plus a small image-level BCE on the labels.

        Raises:
            ValueError: the batch has no ``"masks"`` (the method is fully supervised).
        """
        if "masks" not in batch:
            raise ValueError(
                "unet is fully supervised and needs batch['masks'] (B, K, H, W) in training; load the training "
                "split with MammogramDataset(..., with_masks=True) (wsseg run does so for supervision='full')"
            )
        z = out.extras["pixel_logits"].float()  # (B, K, h, w)
        masks = batch["masks"].to(device=z.device, dtype=torch.float32)  # (B, K, H, W)
        d = self.cfg.input_downsample
        target = F.avg_pool2d(masks, d) if d > 1 else masks  # (B, K, h, w): lesion fraction per pixel
        pixel = F.binary_cross_entropy_with_logits(z, target)
        dice = soft_dice_loss(torch.sigmoid(z), target)
        image = bce_loss(out.logits, batch["labels"])
        loss = pixel + self.cfg.dice_weight * dice + self.cfg.image_loss_weight * image
        return {"loss": loss, "pixel_bce": pixel.detach(), "dice": dice.detach(), "image_bce": image.detach()}
