"""The backbone factory: timm feature extractors for one-channel mammograms.

Three initialisations, recorded on the returned module as ``wsseg_init``:

- ``random`` (the default): nothing is read or downloaded;
- ``imagenet:<architecture>.<tag>`` (``pretrained="imagenet"``): timm's own pretrained weights of that model,
  loaded by ``timm.create_model(pretrained=True, in_chans=1)`` through timm's hub mechanism (the Hugging Face hub
  for most models, cached in ``HF_HUB_CACHE``; read from the cache alone with ``HF_HUB_OFFLINE=1``; models that
  only have a URL are cached under ``TORCH_HOME/hub/checkpoints``). timm adapts the stem to one channel by summing
  its RGB filters and drops the classifier. The tag is timm's default for the name, or the one the name carries
  (``resnet18.tv_in1k``);
- ``file:<sha256>`` (``weights=FILE``): a local ``.pth``, ``.pt`` or ``.safetensors`` timm/torchvision state dict,
  loaded by timm with ``weights_only=True``, classifier dropped, RGB stem filters summed into one channel.

wsseg's custom-width aliases (``resnet18-w16``...) have no published weights; asking for them is an error that names
the alternatives.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar, cast

from torch import Tensor, nn

Pretrained = Literal["none", "imagenet"]
PRETRAINED_CHOICES: tuple[str, ...] = ("none", "imagenet")

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
        wsseg_init: how its weights were initialised: ``random``, ``imagenet:<timm tag>`` or ``file:<sha256>``
            (read by :meth:`wsseg.method.WSSegMethod.initialisation` for the run record).
    """

    def __init__(self, model: nn.Module, name: str, init: str = "random") -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.wsseg_init = init
        self.num_features: int = int(cast(TimmModel, model).num_features)

    def forward(self, images: Tensor) -> Tensor:
        """Return the last feature map, (B, C, h, w)."""
        return cast(TimmModel, self.model).forward_features(images)


def list_backbones() -> list[str]:
    """Wsseg's aliases; every name of ``timm.list_models()`` is accepted as well."""
    return sorted(ALIASES)


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (it names a weights file in records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_pretrained(pretrained: str, weights: str | Path | None = None) -> None:
    """Refuse an unknown ``pretrained`` value, or ``imagenet`` together with a weights file.

    Raises:
        ValueError: the message names the option and the valid values.
    """
    if pretrained not in PRETRAINED_CHOICES:
        raise ValueError(f"method.pretrained={pretrained!r}: choose one of {', '.join(PRETRAINED_CHOICES)}")
    if pretrained != "none" and weights is not None:
        raise ValueError(
            "method.pretrained=imagenet and method.backbone_weights=FILE both initialise the backbone; pass one"
        )


def pretrained_tag(model_name: str) -> str | None:
    """``<architecture>.<tag>`` of the weights timm would load for ``model_name``, or None when it has none."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(model_name, allow_unregistered=False)
    except (RuntimeError, ValueError):
        return None
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file):
        return None
    arch = model_name.split(".", 1)[0]
    return f"{arch}.{cfg.tag}" if cfg.tag else arch


M = TypeVar("M")


def with_pretrained(model_name: str, name: str, build: Callable[[], M]) -> tuple[M, str]:
    """Run ``build`` (which loads timm's pretrained weights of ``model_name``) and return its result and description.

    Args:
        model_name: a timm name, optionally with a tag (``resnet34.tv_in1k``).
        name: what to call the network in errors (a wsseg option value or a network's name).
        build: creates the network with ``pretrained=True`` through timm (directly, or through smp's timm encoders).

    Returns:
        The network and ``imagenet:<architecture>.<tag>``.

    Raises:
        ValueError: the model has no pretrained weights, or they cannot be loaded (no internet and no cached copy);
            the message says how to get them.
    """
    tag = pretrained_tag(model_name)
    if tag is None:
        raise ValueError(
            f"backbone {name!r} has no pretrained weights in timm; pick a name of timm.list_pretrained() (e.g. "
            "method.backbone=resnet18), pass method.backbone_weights=FILE, or keep method.pretrained=none"
        )
    try:
        model = build()
    except (OSError, RuntimeError, ValueError) as e:  # offline without a cached copy, a refused download, ...
        import timm

        cfg = timm.models.get_pretrained_cfg(model_name)
        hub = cfg.hf_hub_id if cfg is not None else model_name
        raise ValueError(
            f"cannot load timm's pretrained weights {tag} for {name!r} ({type(e).__name__}: {str(e)[:200]}). Fetch "
            f"them once with internet (`huggingface-cli download {hub}` or any run with method.pretrained=imagenet; "
            "they are cached in HF_HUB_CACHE, default ~/.cache/huggingface/hub), then run with HF_HUB_OFFLINE=1 where "
            "there is no internet; or pass a local file with method.backbone_weights=FILE"
        ) from e
    return model, f"imagenet:{tag}"


def create_backbone(
    name: str,
    in_chans: int = 1,
    weights: str | Path | None = None,
    output_stride: int = 32,
    pretrained: str = "none",
    **kwargs: Any,
) -> Backbone:
    """Build a feature extractor.

    Args:
        name: a wsseg alias (see ``list_backbones``) or any timm model name (with a tag to pick the weights).
        in_chans: input channels (1 for mammograms).
        weights: optional local weights file; random initialisation when None.
        output_stride: 8, 16 or 32 where the architecture supports dilation.
        pretrained: ``none`` or ``imagenet`` (timm's pretrained weights of ``name``, see the module docstring).
        **kwargs: passed to ``timm.create_model``.

    Raises:
        ValueError: unknown name (the message lists the aliases), a weights file that does not exist, or
            ``pretrained="imagenet"`` for a backbone without published weights or whose weights cannot be loaded.
    """
    import timm  # here, not at the top: registering methods (`wsseg list methods`) need not load timm (seconds)

    check_pretrained(pretrained, weights)
    spec = dict(ALIASES.get(name, {"model_name": name}))
    model_name = spec.pop("model_name")
    if not timm.is_model(model_name):
        raise ValueError(f"unknown backbone {name!r}; use one of {list_backbones()} or a name from timm.list_models()")
    if pretrained == "imagenet" and "channels" in spec:
        raise ValueError(
            f"backbone {name!r} is wsseg's narrow {model_name} and has no pretrained weights (timm publishes "
            f"full-width networks only); use method.backbone={model_name} for ImageNet weights "
            f"({pretrained_tag(model_name)}), "
            "pass method.backbone_weights=FILE, or keep method.pretrained=none"
        )
    spec.update(kwargs)
    if output_stride != 32:
        spec["output_stride"] = output_stride
    options = {"in_chans": in_chans, "num_classes": 0, "global_pool": "", **spec}
    if pretrained == "imagenet":
        model, init = with_pretrained(
            model_name, name, lambda: timm.create_model(model_name, pretrained=True, **options)
        )
        return Backbone(model, name, init)
    init = "random"
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValueError(
                f"backbone weights file {path} does not exist; pass the path of a local .pth/.safetensors file"
            )
        # A file overlay makes timm read the weights from disk and never from the network.
        options["pretrained_cfg_overlay"] = {"file": str(path), "url": "", "hf_hub_id": ""}
        init = f"file:{file_sha256(path)}"
    try:
        model = timm.create_model(model_name, pretrained=weights is not None, **options)
    except Exception as e:  # timm's loader raises whatever torch.load or the state dict's keys give
        if weights is None:
            raise
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(
            f"cannot load the backbone weights file {weights} into {name}: {detail}; pass a state dict of this "
            "architecture saved with torch.save (.pth/.pt) or safetensors"
        ) from None
    return Backbone(model, name, init)


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
