"""CutMix: CAM trained on images with a rectangle pasted from another image and labels mixed by area.

Paper: Yun et al., "CutMix: Regularization Strategy to Train Strong Classifiers with Localizable Features", ICCV
2019. Original code: https://github.com/clovaai/CutMix-PyTorch. Hyperparameters at the defaults of
clovaai/wsolevaluation (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020;
https://github.com/clovaai/wsolevaluation): ``beta`` = 1 (``cutmix_beta``) and ``prob`` = 1 (``cutmix_prob``).

During training, with probability ``prob`` per batch: lambda ~ Beta(beta, beta); a box of height H sqrt(1 - lambda)
and width W sqrt(1 - lambda) is centred at a uniformly drawn pixel and clipped to the image; every image of the
batch receives that box cut from another image of the batch (a random permutation); lambda becomes the fraction
of the image left unpasted, and the loss is lambda BCE(y) + (1 - lambda) BCE(y_pasted), which for the
multi-label BCE equals BCE against the mixed labels lambda y + (1 - lambda) y_pasted. Evaluation sees whole
images; the network and the maps are CAM's (:class:`wsseg.method.CAMMethod`), so a CutMix run's weights are a CAM
classifier.

What wsseg changed: the multi-label BCE (the references mix two softmax cross-entropies with the same weights),
and the random draws come from torch's global generator on the CPU, whose state every checkpoint saves, so a
resumed run draws what an uninterrupted one draws. A pasted rectangle may carry background or the other breast's
tissue across the skin line; that is the method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wsseg.method import CAMMethod, ClassifierConfig, Limit, MethodOutput, WSSegMethod, bce_loss, between
from wsseg.registry import register_method


@dataclass
class CutMixConfig(ClassifierConfig):
    """CutMix hyperparameters beside the classifier fields of :class:`wsseg.method.ClassifierConfig`.

    Attributes:
        beta: parameter of the Beta(beta, beta) distribution of the unpasted fraction (wsolevaluation: 1).
        prob: probability that a training batch is mixed (wsolevaluation: 1).
    """

    beta: float = 1.0
    prob: float = 1.0

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """The classifier's limits, a Beta parameter (positive) and a probability."""
        return {
            **super().limits(image_hw),
            "beta": (lambda v: 0 < v <= 1000, "a positive number up to 1000"),
            "prob": (between(0, 1), "in [0, 1]"),
        }


def cut_box(height: int, width: int, lam: float) -> tuple[int, int, int, int]:
    """A random box (top, bottom, left, right) of about (1 - lam) of the image's area, centred uniformly, clipped."""
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut), int(width * cut)
    cy, cx = int(torch.randint(height, (), device="cpu")), int(torch.randint(width, (), device="cpu"))
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    return top, bottom, left, right


def cutmix(images: Tensor, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """Paste a random box of ``images`` (B, C, H, W) from a permutation of the batch into each image.

    Returns:
        The mixed images, the permutation (B,) (image i received the box of image ``index[i]``) and lambda, the
        fraction of each image's area left unpasted (a 0-d tensor).
    """
    b, _, h, w = images.shape
    # Every draw on the CPU generator explicitly: the same stream on every device, and numbers under the meta-device
    # check a run makes before reading data (wsseg.config.check_method_config).
    concentration = torch.tensor(beta, device="cpu")
    lam = float(torch.distributions.Beta(concentration, concentration).sample())
    index = torch.randperm(b, device="cpu")
    top, bottom, left, right = cut_box(h, w, lam)
    mixed = images.clone()
    mixed[:, :, top:bottom, left:right] = images[index.to(images.device), :, top:bottom, left:right]
    kept = 1.0 - (bottom - top) * (right - left) / (h * w)
    return mixed, index, torch.tensor(kept)


def mixed_labels(labels: Tensor, index: Tensor, lam: Tensor) -> Tensor:
    """(B, K) labels mixed in proportion to area: lam * labels + (1 - lam) * labels[index]."""
    lam = lam.to(labels.device, torch.float32)
    return lam * labels.float() + (1.0 - lam) * labels[index.to(labels.device)].float()


@register_method("cutmix")
class CutMix(CAMMethod):
    """CutMix: CAM trained on images with a box pasted from another image and labels mixed by area."""

    Config = CutMixConfig

    cfg: CutMixConfig

    def __init__(
        self, cfg: CutMixConfig, num_classes: int = 2, in_chans: int = 1, network: WSSegMethod | None = None
    ) -> None:
        if not cfg.beta > 0 or not 0 <= cfg.prob <= 1:
            raise ValueError(
                f"cutmix needs beta > 0 and 0 <= prob <= 1, got {cfg.beta} and {cfg.prob}; "
                "set method.beta / method.prob"
            )
        super().__init__(cfg, num_classes, in_chans, network)

    def forward(self, images: Tensor) -> MethodOutput:
        """CAM's forward; in training, with probability ``prob``, on mixed ``images`` (B, 1, H, W).

        ``extras`` then holds ``mix_index`` (B,) and ``mix_lambda`` (0-d), which :meth:`loss` reads.
        """
        mix: dict[str, Tensor] = {}
        if self.training and float(torch.rand((), device="cpu")) < self.cfg.prob:
            images, index, lam = cutmix(images, self.cfg.beta)
            mix = {"mix_index": index, "mix_lambda": lam}
        out = super().forward(images)
        out.extras.update(mix)
        return out

    def loss(self, out: MethodOutput, batch: dict[str, Any]) -> dict[str, Tensor]:
        """BCE against the labels mixed by area (the plain labels when the batch was not mixed)."""
        labels = batch["labels"]
        if "mix_index" in out.extras:
            labels = mixed_labels(labels, out.extras["mix_index"], out.extras["mix_lambda"])
        return {"loss": bce_loss(out.logits, labels)}
