"""ADL: CAM trained with attention-based dropout layers inside the backbone.

Paper: Choe & Shim, "Attention-based Dropout Layer for Weakly Supervised Object Localization", CVPR 2019. Original
code: https://github.com/junsukchoe/ADL. Hyperparameters and layer positions at the defaults of clovaai/wsolevaluation
(Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right", CVPR 2020;
https://github.com/clovaai/wsolevaluation): ``drop_rate`` 0.75 (``adl_drop_rate``) and ``gamma`` 0.9
(``adl_threshold``).

An ADL layer has no parameters and acts only in training. From a feature map F (B, C, h, w) it forms the
self-attention map M = mean_c F (B, 1, h, w), then

* the drop mask: 0 where M >= gamma * max(M) (the most activated region of each image), 1 elsewhere;
* the importance map: sigmoid(M);

and multiplies F by the drop mask with probability ``drop_rate``, else by the importance map (one draw per layer
and batch, as the reference). Hiding the most discriminative region makes the classifier learn the rest of the
object; the importance map keeps rewarding it. Evaluation runs the plain network: the network, the loss and the
maps are CAM's (:class:`wsseg.method.CAMMethod`), so an ADL run's weights are a CAM classifier.

Positions: after the first block of ``layer3`` and after the first and the last block of ``layer4``
(wsolevaluation's ResNet-50 places them after blocks 0 of layer3 and 0 and 2 of layer4, its last), so the
backbone must be a timm ResNet (``resnet18-w16``, ``resnet18``, ...).

What wsseg changed: the random choice comes from torch's global generator on the CPU, whose state every
checkpoint saves (a resumed run draws what an uninterrupted one draws); the layers are applied in the forward
pass instead of being inserted as modules, so the state dict is CAM's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from wsseg.method import CAMMethod, ClassifierConfig, Limit, MethodOutput, WSSegMethod, between
from wsseg.nn.backbones import resnet_stages
from wsseg.nn.input_pool import pool_input
from wsseg.nn.upsample import to_input_resolution
from wsseg.registry import register_method


@dataclass
class ADLConfig(ClassifierConfig):
    """ADL hyperparameters beside the classifier fields of :class:`wsseg.method.ClassifierConfig`.

    Attributes:
        drop_rate: probability that an ADL layer applies the drop mask rather than the importance map (0.75).
        gamma: the drop mask hides where the attention is at least ``gamma`` times its maximum (0.9).
    """

    drop_rate: float = 0.75
    gamma: float = 0.9

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """The classifier's limits, a probability and a fraction of the attention's maximum."""
        return {
            **super().limits(image_hw),
            "drop_rate": (between(0, 1), "in [0, 1]"),
            "gamma": (between(0, 1), "in [0, 1] (a fraction of the attention's maximum)"),
        }


def drop_mask(attention: Tensor, gamma: float) -> Tensor:
    """(B, 1, h, w) attention -> 0 where it is at least ``gamma`` times each image's maximum, 1 elsewhere."""
    peak = attention.amax(dim=(2, 3), keepdim=True)  # (B, 1, 1, 1)
    return (attention < gamma * peak).to(attention.dtype)


def attention_dropout(features: Tensor, drop_rate: float, gamma: float) -> Tensor:
    """One ADL layer in training: ``features`` (B, C, h, w) times the drop mask or the importance map.

    The drop mask (:func:`drop_mask`) with probability ``drop_rate``, else the importance map sigmoid(mean_c features).
    """
    attention = features.mean(dim=1, keepdim=True)  # (B, 1, h, w), the self-attention map
    # The draw is made on the CPU generator explicitly: the same stream on every device, and a number under the
    # meta-device check a run makes before reading data (wsseg.config.check_method_config).
    if float(torch.rand((), device="cpu")) < drop_rate:
        return features * drop_mask(attention, gamma)
    return features * torch.sigmoid(attention)


@register_method("adl")
class ADL(CAMMethod):
    """ADL: CAM trained with attention-based dropout layers that hide the most activated region."""

    Config = ADLConfig

    cfg: ADLConfig

    def __init__(
        self, cfg: ADLConfig, num_classes: int = 2, in_chans: int = 1, network: WSSegMethod | None = None
    ) -> None:
        if not 0 <= cfg.drop_rate <= 1 or not 0 <= cfg.gamma <= 1:
            raise ValueError(
                f"adl needs drop_rate and gamma in [0, 1], got {cfg.drop_rate} and {cfg.gamma}; "
                "set method.drop_rate / method.gamma"
            )
        super().__init__(cfg, num_classes, in_chans, network)
        resnet_stages(self.backbone, "adl")  # a clear error now rather than at the first training step

    def adl_blocks(self) -> list[nn.Module]:
        """The blocks after which an ADL layer acts: layer3's first, layer4's first and last."""
        _, (_, _, layer3, layer4) = resnet_stages(self.backbone, "adl")
        return [layer3[0], layer4[0], layer4[-1]]

    def training_features(self, x: Tensor) -> Tensor:
        """The backbone's forward (timm ResNet ``forward_features``) with ADL after :meth:`adl_blocks`."""
        stem, stages = resnet_stages(self.backbone, "adl")
        after = self.adl_blocks()
        x = stem(x)
        for stage in stages:
            for block in stage:
                x = block(x)
                if any(block is b for b in after):
                    x = attention_dropout(x, self.cfg.drop_rate, self.cfg.gamma)
        return x  # (B, C, h, w)

    def forward(self, images: Tensor) -> MethodOutput:
        """CAM's forward; in training, with the ADL layers acting on the backbone's features."""
        if not self.training:
            return super().forward(images)
        x = pool_input(images, self.cfg.input_downsample, self.cfg.input_pool)  # (B, C_in or C_in*d*d, H/d, W/d)
        pixel_logits = self.classifier(self.training_features(x))  # (B, K, h, w)
        saliency = to_input_resolution(
            torch.sigmoid(pixel_logits.detach().float()), (images.shape[-2], images.shape[-1])
        )
        return MethodOutput(pixel_logits.mean(dim=(2, 3)), saliency, {"pixel_logits": pixel_logits})
