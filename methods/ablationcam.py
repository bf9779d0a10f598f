"""Ablation-CAM: channels weighted by the relative drop of the class score when the channel is zeroed.

Paper: Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free
Localization", WACV 2020. wsseg follows pytorch-grad-cam's ``ablation_cam.py`` and ``AblationLayer``
(https://github.com/jacobgil/pytorch-grad-cam): for each channel c the target layer's output is replaced by the
activations with channel c ablated, the forward pass continues, and the weight is (y - y_c) / y, with y the
class score of the intact activations and y_c the ablated one. A channel is ablated to 0 when the image's
activations have minimum 0 (the post-ReLU feature maps wsseg explains), else to that minimum minus 1e7, as the
reference does (it lowers the value further for each ablated copy of a batch; wsseg does not). No gradient.

Cost and memory: one forward pass per channel and image (512 per image for the paper ResNet-18), run in chunks of
``batch_size`` ablated copies; the layers before the target layer run again for each copy, as in the reference,
so memory is that of one inference batch of ``batch_size`` images at 2944x1920. Every class's score comes from
the same forward pass. The relative drop divides by the class score itself, so a negative logit (the class judged
absent) reverses the sign of the weights, as in the reference; a zero score gives zero weights.

What wsseg changed: CAM's classifier (or another trained method's global network with ``--from-run``), the
backbone output as target layer, the class logit as score, all classes from one pass, chunks spanning images of
the batch, and ``to_input_resolution`` instead of cv2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from wsseg.method import ClassifierConfig, Limit, PostHocCAMMethod, WSSegMethod, between, map_dtype, replace_output
from wsseg.registry import register_method

# The reference's ablation value below the minimum when activations can be negative.
ABLATION_OFFSET = 1e7


@dataclass
class AblationCAMConfig(ClassifierConfig):
    """Ablation-CAM hyperparameters beside the classifier fields of :class:`wsseg.method.ClassifierConfig`.

    Attributes:
        batch_size: ablated copies per forward pass (pytorch-grad-cam's default 32); lower it to fit GPU memory at
            2944x1920, raise it for speed. The maps do not depend on it.
    """

    batch_size: int = 32

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """The classifier's limits and a batch size in [1, MAX_BATCH]."""
        from wsseg.config import MAX_BATCH

        return {**super().limits(image_hw), "batch_size": (between(1, MAX_BATCH), f"an integer in [1, {MAX_BATCH}]")}

    @classmethod
    def tiny(cls) -> AblationCAMConfig:
        """Timm's test ResNet, with every masked copy of a test batch in one or two forward passes."""
        return cls(backbone="test-resnet", output_stride=16, batch_size=128)


def ablate(activations: Tensor, channels: Tensor) -> Tensor:
    """Copies of one image's activations (n, C, h, w) with channel ``channels[i]`` of copy i ablated."""
    value = activations.amin(dim=(1, 2, 3))  # (n,) each copy's minimum (the same image's)
    value = torch.where(value == 0, value, value - ABLATION_OFFSET)
    out = activations.clone()
    rows = torch.arange(len(channels), device=activations.device)
    out[rows, channels] = value[:, None, None].to(out.dtype)
    return out


@register_method("ablationcam")
class AblationCAM(PostHocCAMMethod):
    """Ablation-CAM: channels weighted by the relative score drop when each is ablated (gradient-free)."""

    Config = AblationCAMConfig
    saliency_requires_grad = False

    cfg: AblationCAMConfig

    def __init__(
        self, cfg: AblationCAMConfig, num_classes: int = 2, in_chans: int = 1, network: WSSegMethod | None = None
    ) -> None:
        if cfg.batch_size < 1:
            raise ValueError(f"ablationcam batch_size must be at least 1, got {cfg.batch_size}; set method.batch_size")
        super().__init__(cfg, num_classes, in_chans, network)

    def raw_maps(self, images: Tensor, scores: Tensor, activations: Tensor) -> Tensor:
        """Maps (B, K, h, w) from the score drops of ``images`` (B, C_in, H, W) as each channel is ablated."""
        acts = activations.detach()  # (B, C, h, w), the layer's own dtype (bf16 under autocast)
        b, c = acts.shape[:2]
        layer = self.target_layer()
        ablated_scores = []
        for start in range(0, b * c, self.cfg.batch_size):
            pairs = torch.arange(start, min(start + self.cfg.batch_size, b * c), device=acts.device)
            image, channel = pairs // c, pairs % c
            with replace_output(layer, ablate(acts[image], channel)):
                ablated_scores.append(self.scores(images[image]))  # (n, K)
        dtype = map_dtype(activations)
        with torch.autocast(device_type=images.device.type, enabled=False):
            original = scores.detach().to(dtype)[:, None, :]  # (B, 1, K)
            drop = original - torch.cat(ablated_scores).to(dtype).view(b, c, -1)  # (B, C, K)
            weights = torch.where(original != 0, drop / original, torch.zeros_like(drop))
            return torch.einsum("bck,bchw->bkhw", weights, acts.to(dtype))  # (B, K, h, w)
