"""The backbone factory: timm feature extractors for one-channel mammograms.

Backbones start from random initialisation: nothing is ever downloaded. A user may pass a local
weights file (``.pth``, ``.pt`` or ``.safetensors``, a timm/torchvision state dict); timm loads it with
``weights_only=True``, drops the classifier and sums RGB stem filters into one channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, cast

from torch import Tensor, nn

# wsseg's own names for timm architectures with non-default widths. Any other timm model name is
# accepted as is (``timm.list_models()`` lists them).
ALIASES: dict[str, dict[str, Any]] = {
    # A resnet18 at a quarter of the width: ~0.3 s per 736x480 image for a training step on 2 CPU cores.
    "resnet18-w16": {"model_name": "resnet18", "channels": (16, 32, 64, 128)},
    "resnet18-w32": {"model_name": "resnet18", "channels": (32, 64, 128, 256)},
    # timm's tiny test network, for unit tests.
    "test-resnet": {"model_name": "test_resnet"},
}


class TimmModel(Protocol):
    """The members of a timm model wsseg uses besides ``nn.Module``'s own.

    ``timm.create_model`` is typed as returning a bare ``nn.Module``, whose unknown attributes torch types as
    ``Tensor | Module``; every timm model has these two, so code that holds one casts it to this protocol.
    """

    num_features: int  # channels of forward_features' output

    def forward_features(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> the last feature map (B, num_features, h, w)."""
        ...


class Backbone(nn.Module):
    """A timm network without pooling or classifier: (B, C_in, H, W) -> (B, C, H/s, W/s).

    Attributes:
        num_features: channel count C of the output feature map.
        name: the name the backbone was created with.
    """

    def __init__(self, model: nn.Module, name: str) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.num_features: int = int(cast(TimmModel, model).num_features)

    def forward(self, images: Tensor) -> Tensor:
        """Return the last feature map, (B, C, h, w)."""
        return cast(TimmModel, self.model).forward_features(images)


def list_backbones() -> list[str]:
    """Wsseg's aliases; every name of ``timm.list_models()`` is accepted as well."""
    return sorted(ALIASES)


def create_backbone(
    name: str,
    in_chans: int = 1,
    weights: str | Path | None = None,
    output_stride: int = 32,
    **kwargs: Any,
) -> Backbone:
    """Build a feature extractor.

    Args:
        name: a wsseg alias (see ``list_backbones``) or any timm model name.
        in_chans: input channels (1 for mammograms).
        weights: optional local weights file; random initialisation when None.
        output_stride: 8, 16 or 32 where the architecture supports dilation.
        **kwargs: passed to ``timm.create_model``.

    Raises:
        ValueError: unknown name (the message lists the aliases) or a weights file that does not exist.
    """
    import timm  # here, not at the top: registering methods (`wsseg list methods`) need not load timm (seconds)

    spec = dict(ALIASES.get(name, {"model_name": name}))
    model_name = spec.pop("model_name")
    if not timm.is_model(model_name):
        raise ValueError(f"unknown backbone {name!r}; use one of {list_backbones()} or a name from timm.list_models()")
    spec.update(kwargs)
    if output_stride != 32:
        spec["output_stride"] = output_stride
    pretrained = False
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValueError(
                f"backbone weights file {path} does not exist; pass the path of a local .pth/.safetensors file"
            )
        # A file overlay makes timm read the weights from disk and never from the network.
        spec["pretrained_cfg_overlay"] = {"file": str(path), "url": "", "hf_hub_id": ""}
        pretrained = True
    try:
        model = timm.create_model(
            model_name, pretrained=pretrained, in_chans=in_chans, num_classes=0, global_pool="", **spec
        )
    except Exception as e:  # timm's loader raises whatever torch.load or the state dict's keys give
        if not pretrained:
            raise
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"cannot load the backbone weights file {weights} into {name}: {detail}; pass a state dict of this "
            "architecture saved with torch.save (.pth/.pt) or safetensors"
        ) from None
    return Backbone(model, name)


def resnet_stages(backbone: Backbone, method: str) -> tuple[nn.Sequential, list[nn.Sequential]]:
    """A timm ResNet backbone's stem (conv1, bn1, act1, maxpool) and its four stages, for methods that act inside it.

    Running the stem, then the stages in order, is the backbone's forward pass (timm's ``forward_features``). The
    returned containers hold the backbone's own modules; they are not registered anywhere.

    Raises:
        ValueError: the backbone is not a timm ResNet; the message names ``method`` and the fix.
    """
    model = backbone.model
    stem = [getattr(model, name, None) for name in ("conv1", "bn1", "act1", "maxpool")]
    stages = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    if not all(isinstance(m, nn.Module) for m in stem) or not all(isinstance(m, nn.Sequential) for m in stages):
        raise ValueError(
            f"{method} acts inside a timm ResNet's stages (layer1-layer4); backbone {backbone.name!r} has none. "
            "Set method.backbone to a ResNet (resnet18-w16, resnet18, ...)"
        )
    return nn.Sequential(*[m for m in stem if isinstance(m, nn.Module)]), [
        m for m in stages if isinstance(m, nn.Sequential)
    ]
