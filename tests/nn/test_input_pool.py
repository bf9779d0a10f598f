"""Input reduction before a CPU-sized network: average pooling loses point-like detail, space-to-depth keeps it."""

import pytest
import torch
import torch.nn.functional as F

from wsseg.nn.input_pool import pool_input, pooled_channels
from wsseg.registry import create_method


def test_avg_is_average_pooling() -> None:
    x = torch.randn(2, 1, 37, 22)
    assert torch.equal(pool_input(x, 4, "avg"), F.avg_pool2d(x, 4))
    assert pool_input(x, 1, "unshuffle") is x


def test_unshuffle_keeps_every_pixel() -> None:
    x = torch.randn(2, 1, 37, 22)  # not multiples of 4: the remainder rows/columns are dropped, as avg_pool2d does
    y = pool_input(x, 4, "unshuffle")
    assert y.shape == (2, 16, 9, 5) and pooled_channels(1, 4, "unshuffle") == 16
    assert torch.equal(F.pixel_shuffle(y, 4), x[..., :36, :20])


def test_a_point_survives_unshuffle_but_not_averaging() -> None:
    x = torch.zeros(1, 1, 16, 16)
    x[0, 0, 5, 6] = 1.0  # a calcification one pixel across
    assert float(pool_input(x, 4, "avg").max()) == pytest.approx(1.0 / 16)
    assert float(pool_input(x, 4, "unshuffle").max()) == 1.0


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="unshuffle"):
        pooled_channels(1, 4, "max")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("cam", {"input_downsample": 2, "input_pool": "unshuffle"}),
        # The WSOL methods that read the input themselves in training (ACoL always, ADL and SPG in train mode).
        ("acol", {"input_downsample": 2, "input_pool": "unshuffle"}),
        ("adl", {"input_downsample": 2, "input_pool": "unshuffle"}),
        ("spg", {"input_downsample": 2, "input_pool": "unshuffle"}),
        ("gmic", {"global_input_downsample": 2, "global_input_pool": "unshuffle"}),
        ("glam", {"global_input_downsample": 2, "global_input_pool": "unshuffle"}),
        ("unet", {"input_downsample": 2, "input_pool": "unshuffle"}),
    ],
)
def test_methods_read_unshuffled_input(name: str, overrides: dict[str, object]) -> None:
    torch.manual_seed(0)
    method = create_method(name, profile="tiny", **overrides)
    images = torch.randn(2, 1, 128, 96)
    out = method(images)
    assert out.logits.shape == (2, 2) and out.saliency.shape == (2, 2, 128, 96)
    batch = {"labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]]), "masks": torch.zeros(2, 2, 128, 96, dtype=torch.bool)}
    method.loss(out, batch)["loss"].backward()
    first = next(p for p in method.parameters() if p.ndim == 4)  # the first convolution reads the unshuffled channels
    assert first.shape[1] in (4, 12) and first.grad is not None and bool(first.grad.abs().sum() > 0)
