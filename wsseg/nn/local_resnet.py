"""Local (patch) networks of GMIC and GLAM: torchvision-named ResNets that read one-channel crops.

Built with timm, whose ResNet has exactly torchvision's state-dict names (``conv1``, ``bn1``,
``layer{1..4}.{i}.{conv1,bn1,conv2,bn2,downsample.0,downsample.1}``), so the official ``dn_resnet.*`` weights
and torchvision ImageNet weights load 1:1. The official models ``expand`` the one-channel crop to three identical
channels; :class:`GrayInputConv` keeps the three-channel first convolution (same keys, same parameter count) and
convolves the one channel with its weights summed over the input-channel axis, which is the same function at a
third of the cost, up to float rounding. With ``local_in_chans=3`` the methods feed the crop repeated on three
channels instead (:func:`local_input`), as the official code does, and the first convolution runs unfolded: the
fp32 output is then bit for bit what a torchvision ResNet with the same weights computes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch.nn.functional as F
from torch import Tensor, nn

from wsseg.nn.backbones import with_pretrained

if TYPE_CHECKING:
    from timm.models.resnet import BasicBlock


class GrayInputConv(nn.Conv2d):
    """A three-channel convolution applied to one-channel input as if the channel were repeated three times."""

    def forward(self, x: Tensor) -> Tensor:
        """(B, 1, H, W) (or (B, 3, H, W)) -> (B, C_out, H', W')."""
        if x.shape[1] == 1 and self.in_channels == 3:
            weight = self.weight.sum(dim=1, keepdim=True)  # (C_out, 1, k, k): sum over the three equal channels
            return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        return super().forward(x)


def local_input(crops: Tensor, in_chans: int) -> Tensor:
    """The local network's input: the crops (N, 1, h, w) as they are, or repeated on three channels.

    ``in_chans`` 1 feeds the folded first convolution (:class:`GrayInputConv`); 3 gives (N, 3, h, w), a view, as
    the official code's ``expand``, for the unfolded one.

    Raises:
        ValueError: ``in_chans`` is neither 1 nor 3.
    """
    if in_chans not in (1, 3):
        raise ValueError(f"local_in_chans must be 1 (folded first convolution) or 3 (official), got {in_chans}")
    return crops if in_chans == 1 else crops.expand(-1, 3, -1, -1)


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
        first = _first_block(model, "layer1")
        model.bn1 = nn.BatchNorm2d(stem_width)
        first.conv1 = nn.Conv2d(stem_width, channels[0], 3, stride=1, padding=1, bias=False)
        downsample = None
        if stem_width != channels[0]:
            downsample = nn.Sequential(nn.Conv2d(stem_width, channels[0], 1, bias=False), nn.BatchNorm2d(channels[0]))
        first.downsample = downsample
        for m in (first.conv1, *(downsample or ())):
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        stem = nn.Conv2d(3, stem_width, 7, stride=2, padding=3, bias=False)
        model.conv1 = stem
        nn.init.kaiming_normal_(stem.weight, mode="fan_out", nonlinearity="relu")
    gray = GrayInputConv(3, stem_width, 7, stride=2, padding=3, bias=False)
    gray.weight.data.copy_(_conv(model, "conv1").weight.data)  # the pretrained RGB filters too, summed at forward time
    model.conv1 = gray
    for layer, stride in zip(("layer1", "layer2", "layer3", "layer4"), stage_strides, strict=True):
        first = _first_block(model, layer)
        first.conv1.stride = (stride, stride)
        if first.downsample is not None:
            _conv(first.downsample, "0").stride = (stride, stride)
        elif stride != 1:
            raise ValueError("a strided stage needs a projection shortcut; change the stage widths")
    return model


def _first_block(model: nn.Module, layer: str) -> BasicBlock:
    """The first block of the timm ResNet stage ``layer`` (``"layer1"`` .. ``"layer4"``)."""
    from timm.models.resnet import BasicBlock  # here, not at the top: timm loads in seconds

    block = model.get_submodule(f"{layer}.0")
    if not isinstance(block, BasicBlock):  # timm's resnet18/34 are made of basic blocks
        raise TypeError(f"{layer}.0 of timm's ResNet is a {type(block).__name__}, not a BasicBlock")
    return block


def _conv(module: nn.Module, name: str) -> nn.Conv2d:
    """The convolution ``name`` (a dotted path) of ``module``."""
    conv = module.get_submodule(name)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"{name} of {type(module).__name__} is a {type(conv).__name__}, not a Conv2d")
    return conv
