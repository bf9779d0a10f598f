"""The method contract, checked for every registered method (a new method is tested the moment it registers)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from wsseg import create_method, list_methods
from wsseg.config import make_run_config
from wsseg.method import check_output
from wsseg.registry import get_method_spec, make_config

H, W = 96, 64


def _batch() -> dict[str, Any]:
    """Two synthetic images: a breast on a minimum-valued background, one with a bright 'lesion'."""
    g = torch.Generator().manual_seed(0)
    images = torch.full((2, 1, H, W), -1.0)
    breast = torch.zeros(2, H, W, dtype=torch.bool)
    breast[:, 8:88, :48] = True
    images[:, 0][breast] = torch.rand(int(breast.sum()), generator=g)
    masks = torch.zeros(2, 2, H, W, dtype=torch.bool)
    masks[0, 1, 40:50, 20:30] = True
    images[0, 0, 40:50, 20:30] += 2.0
    labels = masks.flatten(2).any(-1).float()
    return {"image": images, "labels": labels, "masks": masks, "breast_mask": breast}


@pytest.fixture(params=list_methods())
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_output_shapes_and_range(name: str) -> None:
    torch.manual_seed(0)
    method = create_method(name, profile="tiny")
    batch = _batch()
    check_output(method(batch["image"]), 2, 2, (H, W))
    method.eval()
    check_output(method.predict(batch["image"]), 2, 2, (H, W))


def test_finite_loss_and_gradients_reach_every_trainable_parameter(name: str) -> None:
    torch.manual_seed(0)
    method = create_method(name, profile="tiny").train()
    batch = _batch()
    if get_method_spec(name).supervision != "full":
        batch.pop("masks")  # only fully supervised methods may read masks
    loss = method.loss(method(batch["image"]), batch)["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)
    params = [(n, p) for n, p in method.named_parameters() if p.requires_grad]
    if not params:
        return
    loss.backward()
    missing = [n for n, p in params if p.grad is None]
    assert not missing, f"no gradient reaches {missing}"


def test_evaluation_is_deterministic(name: str) -> None:
    torch.manual_seed(0)
    method = create_method(name, profile="tiny").eval()
    images = _batch()["image"]
    a, b = method.predict(images), method.predict(images)
    torch.testing.assert_close(a.saliency, b.saliency, rtol=0, atol=0)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)


def test_registry_metadata(name: str) -> None:
    spec = get_method_spec(name)
    assert spec.name == name == spec.cls.name
    assert spec.description, f"{name} needs a one-line class docstring (shown by `wsseg list methods`)"
    assert spec.supervision in ("weak", "full", "reference")
    assert spec.cls.Config.tiny() is not None and spec.cls.Config.quick() is not None


# Methods whose forward pass needs real data (torch.nonzero, a per-image seed from the image's bytes): the pre-run
# check can only build them on the meta device.
DATA_DEPENDENT_FORWARD = {"intensity", "random"}


@pytest.mark.parametrize("profile", ["tiny", "quick", "paper"])
def test_every_preset_passes_the_pre_run_check(name: str, profile: str) -> None:
    # make_run_config runs the method's limits and builds the network on the meta device; a preset it refuses would
    # make `wsseg run --method <name>` fail before reading any data.
    cfg = make_run_config(name, profile)  # type: ignore[arg-type]
    assert cfg.method_config == make_config(name, profile).to_dict()


def test_training_forward_runs_on_the_meta_device(name: str) -> None:
    # The pre-run check tolerates an operation without a meta kernel; every other method must get through its whole
    # training forward pass there, or a configuration its forward pass cannot take is found only after data loading.
    if name in DATA_DEPENDENT_FORWARD:
        pytest.skip(f"{name}'s forward pass depends on the image values")
    spec = get_method_spec(name)
    cfg = make_config(name, "tiny")
    with torch.device("meta"):
        method = spec.cls(cfg, num_classes=2, in_chans=1).train()
        out = method(torch.zeros(2, 1, H, W))
    assert out.saliency.is_meta and tuple(out.saliency.shape) == (2, 2, H, W)
    assert tuple(out.logits.shape) == (2, 2)
