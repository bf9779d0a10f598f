"""HaS: Hide-and-Seek, CAM trained on images with random grid patches hidden.

Paper: Singh & Lee, "Hide-and-Seek: Forcing a Network to be Meticulous for Weakly-supervised Object and Action
Localization", ICCV 2017. Original code: https://github.com/kkanshul/Hide-and-Seek. Hyperparameters at the defaults
of clovaai/wsolevaluation (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR
2020; https://github.com/clovaai/wsolevaluation), the benchmark that compares the WSOL training methods.

During training each image is divided into a grid of square patches and every patch is hidden independently with
probability ``hide_prob`` (wsolevaluation: ``has_drop_rate`` 0.5), so that the classifier cannot rely on the most
discriminative part alone and must find every part of the object. Evaluation sees whole images; the network,
the loss and the maps are CAM's (:class:`wsseg.method.CAMMethod`), so a HaS run's weights are a CAM classifier.

What wsseg changed: the patch size is a fraction of the image width, ``patch_fraction`` = 4/224 (wsolevaluation's
``has_grid_size`` 4 is a patch side in pixels of its 224x224 crops), so the patches cover the same share of
the image at every profile: 9 px at 736x480 (3.6 mm), 34 px at 2944x1920 (3.4 mm). A hidden patch is set to 0,
the image's mean: images are standardised per image, and the paper fills hidden patches with the mean pixel
value so that the statistics of the first layer's activations stay those of the evaluation images. The patches
are hidden on the input before ``input_downsample``. The random draws come from torch's global generator, whose
state every checkpoint saves, so a resumed run draws what an uninterrupted one draws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from wsseg.method import CAMMethod, ClassifierConfig, Limit, MethodOutput, WSSegMethod, between, in_unit_interval
from wsseg.registry import register_method


@dataclass
class HaSConfig(ClassifierConfig):
    """HaS hyperparameters beside the classifier fields of :class:`wsseg.method.ClassifierConfig`.

    Attributes:
        patch_fraction: side of a hidden square patch as a fraction of the image width (wsolevaluation: 4 of 224).
        hide_prob: probability that a patch is hidden (wsolevaluation: 0.5).
    """

    patch_fraction: float = 4 / 224
    hide_prob: float = 0.5

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """The classifier's limits, a patch no wider than the image, a probability."""
        return {
            **super().limits(image_hw),
            "patch_fraction": (in_unit_interval, "in (0, 1] (a fraction of the image width)"),
            "hide_prob": (between(0, 1), "in [0, 1]"),
        }


def hide_patches(images: Tensor, patch: int, prob: float) -> tuple[Tensor, Tensor]:
    """Hide random patches of ``images`` (B, C, H, W): each ``patch``-pixel square set to 0 with ``prob``.

    Returns:
        The images with hidden patches and the (B, ceil(H / patch), ceil(W / patch)) boolean grid of hidden
        patches (the last row and column of patches may be cut by the image border).
    """
    b, _, h, w = images.shape
    rows, cols = math.ceil(h / patch), math.ceil(w / patch)
    hidden = torch.rand(b, rows, cols) < prob  # (B, rows, cols), from the CPU generator on every device
    grid = hidden.to(images.device)
    mask = grid.repeat_interleave(patch, dim=1).repeat_interleave(patch, dim=2)[:, :h, :w]  # (B, H, W)
    return images.masked_fill(mask[:, None], 0.0), hidden


@register_method("has")
class HaS(CAMMethod):
    """Hide-and-Seek: CAM trained on images with random grid patches hidden."""

    Config = HaSConfig

    cfg: HaSConfig

    def __init__(
        self, cfg: HaSConfig, num_classes: int = 2, in_chans: int = 1, network: WSSegMethod | None = None
    ) -> None:
        if not 0 < cfg.patch_fraction <= 1 or not 0 <= cfg.hide_prob <= 1:
            raise ValueError(
                f"has needs 0 < patch_fraction <= 1 and 0 <= hide_prob <= 1, got {cfg.patch_fraction} and "
                f"{cfg.hide_prob}; set method.patch_fraction / method.hide_prob"
            )
        super().__init__(cfg, num_classes, in_chans, network)

    def patch_size(self, width: int) -> int:
        """The side in pixels of a hidden patch on images ``width`` pixels wide."""
        return max(1, round(self.cfg.patch_fraction * width))

    def forward(self, images: Tensor) -> MethodOutput:
        """CAM's forward; in training, on ``images`` (B, 1, H, W) with random patches hidden."""
        if self.training:
            images, _ = hide_patches(images, self.patch_size(int(images.shape[-1])), self.cfg.hide_prob)
        return super().forward(images)
