"""The backbone factory: timm feature extractors for one-channel mammograms.

Backbones start from random initialisation: nothing is ever downloaded. A user may pass a local
weights file (``.pth``, ``.pt`` or ``.safetensors``, a timm/torchvision state dict); timm loads it with
``weights_only=True``, drops the classifier and sums RGB stem filters into one channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
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
        self.num_features: int = int(model.num_features)

    def forward(self, images: Tensor) -> Tensor:
        """Return the last feature map, (B, C, h, w)."""
        return self.model.forward_features(images)  # type: ignore[no-any-return]


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
