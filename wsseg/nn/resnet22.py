"""The pre-activation "ResNet-22" global backbone of GMIC and GLAM (docs/methods/gmic.md, docs/methods/glam.md).

Written from the specification. Submodule names reproduce the official state-dict sub-layout
(``first_conv``, ``layer_list.{stage}.{block}.{bn1,conv1,bn2,conv2,downsample.0}``, ``final_bn``), so the
official ``ds_net.*`` / ``global_network.downsampling_branch.*`` weights load by a prefix rename alone.

The released architecture: a 7x7/2 convolution (16 channels, no bias), a 3x3/2 max-pool with no padding (no
BN or ReLU between them), five stages of two pre-activation basic blocks with strides 1, 2, 2, 2, 2 and widths
16, 32, 64, 128, 256, a projection shortcut (1x1 convolution, no BN) on the first block of EVERY stage, and a
final BN + ReLU. The width, the stage strides and the max-pool are configurable so that CPU presets can keep
the map's physical cell size on smaller images.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn


class PreActBlock(nn.Module):
    """Pre-activation basic block: ``conv(relu(bn(conv(relu(bn(x)))))) + shortcut``, no ReLU after the add.

    The projection shortcut, when present, is applied to the pre-activated input ``relu(bn1(x))``.
    """

    def __init__(self, in_ch: int, out_ch: int, stride: int, project: bool) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False)) if project else None

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, h, w) -> (B, C_out, h/s, w/s)."""
        a = torch.relu(self.bn1(x))
        shortcut = self.downsample(a) if self.downsample is not None else x
        out: Tensor = self.conv1(a)
        out = self.conv2(torch.relu(self.bn2(out)))
        return out + shortcut


class ResNet22(nn.Module):
    """The GMIC/GLAM global backbone.

    Args:
        in_chans: input channels (1 for mammograms).
        width: channels of the first stage; stage ``s`` has ``width * 2**s``.
        strides: one stride per stage (the released network: 1, 2, 2, 2, 2).
        blocks_per_stage: blocks in every stage (2 in the released network).
        first_pool: keep the 3x3/2 max-pool after the first convolution.
        init: ``default`` keeps PyTorch's initialisation (GMIC); ``xavier`` is GLAM's Xavier-normal convolutions.
    """

    def __init__(
        self,
        in_chans: int = 1,
        width: int = 16,
        strides: tuple[int, ...] = (1, 2, 2, 2, 2),
        blocks_per_stage: int = 2,
        first_pool: bool = True,
        init: Literal["default", "xavier"] = "default",
    ) -> None:
        super().__init__()
        self.first_conv = nn.Conv2d(in_chans, width, 7, stride=2, padding=3, bias=False)
        self.first_pool = nn.MaxPool2d(3, stride=2, padding=0) if first_pool else nn.Identity()
        stages, in_ch = [], width
        self.stage_channels: list[int] = []
        for s, stride in enumerate(strides):
            out_ch = width * 2**s
            blocks = [PreActBlock(in_ch, out_ch, stride, project=True)]
            blocks += [PreActBlock(out_ch, out_ch, 1, project=False) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            self.stage_channels.append(out_ch)
            in_ch = out_ch
        self.layer_list = nn.ModuleList(stages)
        self.final_bn = nn.BatchNorm2d(in_ch)
        # A module (no parameters), so that post-hoc methods can hook the final feature map h_g.
        self.final_act = nn.ReLU()
        self.num_features = in_ch
        if init == "xavier":
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.xavier_normal_(m.weight)

    def forward_levels(self, x: Tensor) -> list[Tensor]:
        """Images (B, C_in, H, W) -> the raw outputs of every stage but the last, then the final feature map.

        At the released configuration and 2944x1920 input: l1 (B,16,735,479), l2 (B,32,368,240),
        l3 (B,64,184,120), l4 (B,128,92,60) (block outputs with no BN or ReLU), and
        final = relu(final_bn(stage 4)) (B,256,46,30).
        """
        x = self.first_pool(self.first_conv(x))  # (B, w, H/4, W/4) with the pool
        levels = []
        for stage in self.layer_list:
            x = stage(x)
            levels.append(x)
        levels[-1] = self.final_act(self.final_bn(levels[-1]))
        return levels

    def forward(self, x: Tensor) -> Tensor:
        """Images (B, C_in, H, W) -> the final feature map h_g, (B, C, h, w) after the final BN and ReLU."""
        return self.forward_levels(x)[-1]
