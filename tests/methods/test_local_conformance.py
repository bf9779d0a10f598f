"""GMIC's and GLAM's local networks against torchvision's ResNet with the same official-layout weights.

The official code repeats each one-channel crop on three channels and runs a torchvision ResNet. With
``method.local_in_chans=3`` wsseg does the same and its fp32 output must be that network's, bit for bit; with the
default fold (the first convolution's weights summed over the input channels, applied to one channel) it computes
the same function up to float rounding (measured here: GMIC's features, values up to 18.6, differ by up to 1.5e-5;
GLAM's local maps by up to 8.3e-5). Both modes load the same official file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision.models as tv
from torch import Tensor, nn

from wsseg import create_method

# The methods' local networks at torchvision's widths (the released ones), on small crops to stay CPU-sized:
# GMIC's ResNet-18 with torchvision's strides, GLAM's ResNet-34 with every stage at stride 1.
CASES: dict[str, tuple[dict[str, Any], str, Callable[[], tv.ResNet], int]] = {
    "gmic": ({"crop_size": (64, 64)}, "dn_resnet.", tv.resnet18, 2),
    "glam": ({"crop_size": (64, 64), "local_depth": 34}, "detection_network.dn_resnet.", tv.resnet34, 1),
}
WIDTHS: dict[str, Any] = {"local_channels": (64, 128, 256, 512), "local_stem_width": 64}


def _reference(factory: Callable[[], tv.ResNet], stride: int, weights: dict[str, Tensor]) -> tv.ResNet:
    """torchvision's ResNet with ``weights`` (its own ``fc``, unused) and the later stages at ``stride``."""
    net = factory()
    missing, unexpected = net.load_state_dict(weights, strict=False)
    assert set(missing) == {"fc.weight", "fc.bias"} and not unexpected
    for layer in (net.layer2, net.layer3, net.layer4):
        layer[0].conv1.stride = (stride, stride)
        if layer[0].downsample is not None:
            layer[0].downsample[0].stride = (stride, stride)
    return net.eval()


def _reference_features(net: tv.ResNet, x: Tensor) -> Tensor:
    """The torchvision ResNet up to its last stage (no pooling, no classifier): (N, 3, h, w) -> (N, 512, h', w')."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _official_file(name: str, tmp_path: Path) -> tuple[Path, dict[str, Tensor]]:
    """An official-layout file whose local network has random weights and BatchNorm statistics; those weights."""
    options, prefix, factory, _ = CASES[name]
    torch.manual_seed(0)
    local = factory().state_dict()
    gen = torch.Generator().manual_seed(1)
    for key, value in local.items():
        if key.endswith(("running_mean", "bias")):
            value.copy_(torch.randn(value.shape, generator=gen) * 0.1)
        elif key.endswith(("running_var", "bn1.weight", "bn2.weight")) or ".downsample.1.weight" in key:
            value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
    local = {k: v for k, v in local.items() if not k.startswith("fc.")}
    official = create_method(name, profile="tiny", **options, **WIDTHS).official_state_dict()
    assert {k[len(prefix) :] for k in official if k.startswith(prefix)} == set(local)
    official.update({prefix + k: v for k, v in local.items()})
    path = tmp_path / f"{name}-official.pt"
    torch.save(official, path)
    return path, local


def _local_output(model: nn.Module, name: str, crops: Tensor) -> Tensor:
    """The method's own local-network path on crops (N, 1, h, w): GMIC's features, GLAM's local maps."""
    return model.local_features(crops) if name == "gmic" else model.local_maps(crops)


@pytest.mark.parametrize("name", ["gmic", "glam"])
def test_three_channel_local_network_is_torchvisions_bit_for_bit_and_the_fold_is_close(
    name: str, tmp_path: Path
) -> None:
    options, _, factory, stride = CASES[name]
    path, weights = _official_file(name, tmp_path)
    reference = _reference(factory, stride, weights)
    crops = torch.randn(3, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    outputs = {}
    for chans in (3, 1):
        model = create_method(name, profile="tiny", weights=path, local_in_chans=chans, **options, **WIDTHS).eval()
        with torch.no_grad():
            outputs[chans] = _local_output(model, name, crops)
            features = _reference_features(reference, crops.expand(-1, 3, -1, -1))  # the official expand
            want = features if name == "gmic" else torch.sigmoid(model.local_head(features).float())
    assert outputs[3].dtype == torch.float32
    assert torch.equal(outputs[3], want)  # local_in_chans=3: the official network's fp32 output, bit for bit
    torch.testing.assert_close(outputs[1], want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))  # the fold


def test_local_in_chans_is_checked() -> None:
    with pytest.raises(ValueError, match="local_in_chans"):
        create_method("glam", profile="tiny", local_in_chans=2)
