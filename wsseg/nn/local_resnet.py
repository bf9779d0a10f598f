"""Local (patch) networks of GMIC and GLAM: torchvision-named ResNets that read one-channel crops.

Built with timm, whose ResNet has exactly torchvision's state-dict names (``conv1``, ``bn1``,
``layer{1..4}.{i}.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}``), so the official ``dn_resnet.*`` weights
and torchvision ImageNet weights load 1:1. The official models ``expand`` the one-channel crop to three identical
channels; :class:`GrayInputConv` keeps the three-channel first convolution (same keys, same parameter count) and
convolves the one channel with its weights summed over the input-channel axis, which is the same function at a
third of the cost.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from wsseg.nn.backbones import with_pretrained


class GrayInputConv(nn.Conv2d):
    """A three-channel convolution applied to one-channel input as if the channel were repeated three times."""

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, H, W) (or (B, 3, H, W)) -> (B, C_out, H', W')."""
        if x.shape[1] == 1 and self.in_channels == 3:
            weight = self.weight.sum(dim=1, keepdim=True)  # (C_out, 1, k, k): sum over the three equal channels
            return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return super().forward(x)


TORCHVISION_CHANNELS = (64, 128, 256, 512)


def local_resnet(
    depth: int = 18,
    channels: tuple[int, int, int, int] = TORCHVISION_CHANNELS,
    stem_width: int = 64,
    stage_strides: tuple[int, int, int, int] = (1, 2, 2, 2),
    pretrained: bool = False,
    name: str = "local network",
) -> nn.Module:
    """A torchvision-topology ResNet-18/34 without pooling and classifier, reading one-channel crops.

    Args:
        depth: 18 or 34 (basic blocks [2,2,2,2] or [3,4,6,3]).
        channels: stage widths; torchvision's are (64, 128, 256, 512).
        stem_width: channels of the 7x7/2 stem; torchvision's is 64.
        stage_strides: per-stage strides; torchvision's are (1, 2, 2, 2) and GLAM's local network uses
            (1, 1, 1, 1) (output stride 4, the max-pool is kept).
        pretrained: start from torchvision's ImageNet weights, as timm publishes them (``resnet18.tv_in1k``,
            ``resnet34.tv_in1k``), through timm's hub mechanism; the network's ``wsseg_init`` then says so. The
            three-channel stem is kept (so official files still load) and :class:`GrayInputConv` sums its RGB
            filters for the one channel, which is timm's ``in_chans=1`` adaptation. Needs torchvision's widths.
        name: what to call the network in errors.

    Returns:
        A timm ResNet; ``forward_features`` maps (B, 1, h, w) crops to (B, channels[-1], h/s, w/s).
        Random initialisation is torchvision's: Kaiming-normal (fan_out) convolutions, BN weights 1 and biases 0.

    Raises:
        ValueError: another depth; ``pretrained`` with widths that have no published weights, or weights that
            cannot be loaded.
    """
    import timm  # here, not at the top: registering GMIC and GLAM need not load timm (seconds)

    if depth not in (18, 34):
        raise ValueError(f"local_resnet depth must be 18 or 34, got {depth}")
    options: dict[str, Any] = {
        "in_chans": 3,
        "num_classes": 0,
        "global_pool": "",
        "channels": channels,
        "stem_width": stem_width,
    }
    if pretrained:
        if tuple(channels) != TORCHVISION_CHANNELS or stem_width != 64:
            raise ValueError(
                f"the {name} is a narrow ResNet-{depth} (stage widths {tuple(channels)}, stem {stem_width}) without "
                "pretrained weights; ImageNet weights exist for torchvision's widths (64, 128, 256, 512) with a "
                "64-wide stem, which --profile paper uses; or keep method.pretrained=none"
            )
        tag = f"resnet{depth}.tv_in1k"
        model, init = with_pretrained(tag, name, lambda: timm.create_model(tag, pretrained=True, **options))
        setattr(model, "wsseg_init", init)  # noqa: B010 (a plain attribute read by WSSegMethod.initialisation)
    else:
        model = timm.create_model(
            f"resnet{depth}",
            pretrained=False,
            zero_init_last=False,  # torchvision initialises every BN weight to 1
            **options,
        )
    if stem_width != 64:
        # timm's plain stem is always 64 wide: narrow it and rewire the first block (CPU presets only).
        first = model.layer1[0]
        model.bn1 = nn.BatchNorm2d(stem_width)
        first.conv1 = nn.Conv2d(stem_width, channels[0], 3, stride=1, padding=1, bias=False)
        if stem_width == channels[0]:
            first.downsample = None
        else:
            first.downsample = nn.Sequential(
                nn.Conv2d(stem_width, channels[0], 1, bias=False), nn.BatchNorm2d(channels[0])
            )
        for m in (first.conv1, *(first.downsample or ())):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        model.conv1 = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    gray = GrayInputConv(3, stem_width, 7, stride=2, padding=3, bias=False)
    gray.weight.data.copy_(model.conv1.weight.data)  # the pretrained RGB filters too, summed at forward time
    model.conv1 = gray
    for layer, stride in zip((model.layer1, model.layer2, model.layer3, model.layer4), stage_strides, strict=True):
        first = layer[0]
        first.conv1.stride = (stride, stride)
        if first.downsample is not None:
            first.downsample[0].stride = (stride, stride)
        elif stride != 1:
            raise ValueError("a strided stage needs a projection shortcut; change the stage widths")
    return model
