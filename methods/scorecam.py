"""Score-CAM: channels weighted by the softmax of the class scores of the input masked by each channel.

Paper: Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural Networks", CVPR
Workshops 2020. Original code: https://github.com/haofanwang/Score-CAM. wsseg follows pytorch-grad-cam's
``score_cam.py`` (https://github.com/jacobgil/pytorch-grad-cam): each activation channel is upsampled to the input
size (bilinear with ``align_corners=True``, as its ``UpsamplingBilinear2d``), min-max normalised to [0, 1]
(epsilon 1e-8), and multiplies the input; the class scores of the C masked inputs, softmaxed over the channels,
weight the channels. No gradient is computed.

Cost and memory: one forward pass per channel and image (512 per image for the paper ResNet-18), run in chunks of
``batch_size`` masked images, each built only when its chunk runs, so memory is that of one inference batch of
``batch_size`` images at 2944x1920 whatever the channel count. Every class's score comes from the same forward pass.

What wsseg changed: CAM's classifier (or another trained method's global network with ``--from-run``), the
backbone output as target layer, the class logit as score (pytorch-grad-cam's ``ClassifierOutputTarget``), all
classes from one pass per masked input, chunks spanning images of the batch, and ``to_input_resolution``
instead of cv2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from wsseg.method import ClassifierConfig, Limit, PostHocCAMMethod, WSSegMethod, between, map_dtype
from wsseg.registry import register_method


@dataclass
class ScoreCAMConfig(ClassifierConfig):
    """Score-CAM hyperparameters beside the classifier fields of :class:`wsseg.method.ClassifierConfig`.

    Attributes:
        batch_size: masked images per forward pass (pytorch-grad-cam's default 16); lower it to fit GPU memory at
            2944x1920, raise it for speed. The maps do not depend on it.
    """

    batch_size: int = 16

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """The classifier's limits and a batch size in [1, MAX_BATCH]."""
        from wsseg.config import MAX_BATCH

        return {**super().limits(image_hw), "batch_size": (between(1, MAX_BATCH), f"an integer in [1, {MAX_BATCH}]")}

    @classmethod
    def tiny(cls) -> ScoreCAMConfig:
        """Timm's test ResNet, with every masked copy of a test batch in one or two forward passes."""
        return cls(backbone="test-resnet", output_stride=16, batch_size=128)


def channel_masks(activations: Tensor, size: tuple[int, int]) -> Tensor:
    """(N, h, w) activation channels -> (N, 1, H, W) masks in [0, 1], upsampled and min-max normalised."""
    up = F.interpolate(activations[:, None], size=size, mode="bilinear", align_corners=True)  # (N, 1, H, W)
    lo = up.amin(dim=(2, 3), keepdim=True)
    hi = up.amax(dim=(2, 3), keepdim=True)
    return (up - lo) / (hi - lo + 1e-8)


@register_method("scorecam")
class ScoreCAM(PostHocCAMMethod):
    """Score-CAM: channels weighted by the softmaxed scores of the input masked by each channel (gradient-free)."""

    Config = ScoreCAMConfig
    saliency_requires_grad = False

    cfg: ScoreCAMConfig

    def __init__(
        self, cfg: ScoreCAMConfig, num_classes: int = 2, in_chans: int = 1, network: WSSegMethod | None = None
    ) -> None:
        if cfg.batch_size < 1:
            raise ValueError(f"scorecam batch_size must be at least 1, got {cfg.batch_size}; set method.batch_size")
        super().__init__(cfg, num_classes, in_chans, network)

    def raw_maps(self, images: Tensor, scores: Tensor, activations: Tensor) -> Tensor:
        """Maps (B, K, h, w) from the scores of ``images`` (B, C_in, H, W) masked by each channel of (B, C, h, w)."""
        dtype = map_dtype(activations)
        acts = activations.detach().to(dtype)  # (B, C, h, w)
        b, c = acts.shape[:2]
        size = (int(images.shape[-2]), int(images.shape[-1]))
        masked_scores = []
        for start in range(0, b * c, self.cfg.batch_size):
            pairs = torch.arange(start, min(start + self.cfg.batch_size, b * c), device=acts.device)
            image, channel = pairs // c, pairs % c
            with torch.autocast(device_type=images.device.type, enabled=False):
                masks = channel_masks(acts[image, channel], size)  # (n, 1, H, W)
            masked = images[image] * masks.to(images.dtype)  # (n, C_in, H, W)
            masked_scores.append(self.scores(masked).to(dtype))  # (n, K)
        weights = torch.softmax(torch.cat(masked_scores).view(b, c, -1), dim=1)  # (B, C, K)
        with torch.autocast(device_type=images.device.type, enabled=False):
            return torch.einsum("bck,bchw->bkhw", weights, acts)  # (B, K, h, w)
