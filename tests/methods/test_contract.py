"""The method contract, checked for every registered method (a new method is tested the moment it registers)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from wsseg import create_method, list_methods
from wsseg.method import check_output
from wsseg.registry import get_method_spec

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
