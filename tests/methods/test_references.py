"""Reference rows: uniform, random and intensity (floors) and the fully supervised U-Net (ceiling)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wsseg import create_method
from wsseg.cli import app
from wsseg.method import check_output
from wsseg.registry import get_method_spec

REFERENCES = ("uniform", "random", "intensity", "unet")
H, W = 64, 48


def synthetic_breast(n: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, 1, H, W) images: textured half-ellipse breasts on a background at the image minimum, and their masks."""
    g = torch.Generator().manual_seed(seed)
    rows = torch.arange(H, dtype=torch.float32)[:, None]
    cols = torch.arange(W, dtype=torch.float32)[None, :]
    breast = ((rows - H / 2) / (0.45 * H)) ** 2 + (cols / (0.8 * W)) ** 2 <= 1.0  # (H, W), chest wall at column 0
    images = []
    for _ in range(n):
        tissue = 1.0 + torch.rand(H, W, generator=g)  # strictly above the background
        img = torch.where(breast, tissue, torch.zeros(()))
        img = (img - img.mean()) / img.std()  # standardised over the whole image: background = image minimum
        images.append(img[None])
    return torch.stack(images), breast.expand(n, H, W)


@pytest.mark.parametrize("name", REFERENCES)
def test_output_shapes_and_range(name: str) -> None:
    torch.manual_seed(0)
    method = create_method(name, profile="tiny").eval()
    images, _ = synthetic_breast(3)
    with torch.no_grad():
        out = method(images)
    check_output(out, batch_size=3, num_classes=2, size=(H, W))
    assert out.saliency.dtype == torch.float32 and torch.isfinite(out.logits).all()
    loss = method.loss(out, {"labels": torch.zeros(3, 2), "masks": torch.zeros(3, 2, H, W, dtype=torch.bool)})
    assert loss["loss"].ndim == 0 and torch.isfinite(loss["loss"])


@pytest.mark.parametrize("name", ("uniform", "random", "intensity"))
def test_map_references_have_nothing_to_train(name: str) -> None:
    method = create_method(name, profile="quick")
    assert get_method_spec(name).supervision == "reference"  # a floor or prior, never a weakly supervised competitor
    assert not any(p.requires_grad for p in method.parameters())
    assert float(method.loss(method(synthetic_breast(1)[0]), {"labels": torch.zeros(1, 2)})["loss"]) == 0.0


def test_uniform_is_constant_inside_and_zero_outside_the_breast() -> None:
    method = create_method("uniform", profile="quick")
    images, breast = synthetic_breast(2)
    out = method(images)
    inside = breast[:, None].expand_as(out.saliency)
    assert torch.all(out.saliency[inside] == 1.0)
    assert torch.all(out.saliency[~inside] == 0.0)
    assert torch.all(out.logits == 0.0)


def test_uniform_opening_removes_background_specks() -> None:
    images, breast = synthetic_breast(1)
    images[0, 0, 2, W - 3] = images.max()  # a one-pixel bright speck in the background (a burnt-in label)
    assert create_method("uniform", profile="quick", open_px=0)(images).saliency[0, 0, 2, W - 3] == 1.0
    out = create_method("uniform", profile="quick")(images)
    assert out.saliency[0, 0, 2, W - 3] == 0.0
    assert torch.all(out.saliency[0, 0][breast[0]] == 1.0)


def test_random_is_deterministic_and_independent_of_the_batch() -> None:
    method = create_method("random", profile="quick")
    images, _ = synthetic_breast(3)
    together = method(images)
    alone = [method(images[i : i + 1]) for i in (2, 0, 1)]  # other batches, other order
    again = method(images)
    torch.testing.assert_close(together.saliency, again.saliency, rtol=0, atol=0)
    for j, i in enumerate((2, 0, 1)):
        torch.testing.assert_close(together.saliency[i], alone[j].saliency[0], rtol=0, atol=0)
        torch.testing.assert_close(together.logits[i], alone[j].logits[0], rtol=0, atol=0)
    # Different images, different maps; another seed, another map.
    assert not torch.allclose(together.saliency[0], together.saliency[1])
    other = create_method("random", profile="quick", seed=1)(images)
    assert not torch.allclose(together.saliency, other.saliency)
    assert float(together.saliency.std()) > 0.05


def test_intensity_is_brighter_where_the_image_is_brighter() -> None:
    method = create_method("intensity", profile="tiny")
    images, breast = synthetic_breast(1)
    images[0, 0, 20:30, 5:15] += 5.0  # a bright blob inside the breast
    out = method(images)
    sal = out.saliency[0, 0]
    assert torch.all(sal[~breast[0]] == 0.0)
    assert float(sal[20:30, 5:15].mean()) > float(sal[breast[0]].mean()) + 0.3
    assert float(sal.max()) == pytest.approx(1.0)
    torch.testing.assert_close(out.saliency[0, 0], out.saliency[0, 1])
    # The smoothed (quick) map keeps the ordering, and a brighter image has a larger image logit.
    smooth = create_method("intensity", profile="quick")(images).saliency[0, 0]
    assert float(smooth[20:30, 5:15].mean()) > float(smooth[breast[0]].mean())
    dim = method(synthetic_breast(1)[0]).logits
    assert torch.all(out.logits > dim)


def _unet_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    images, _ = synthetic_breast(2, seed)
    masks = torch.zeros(2, 2, H, W, dtype=torch.bool)
    masks[0, 0, 20:30, 8:18] = True
    masks[1, 1, 36:44, 10:20] = True
    images = images + 2.0 * masks.any(dim=1, keepdim=True).float()  # lesions are bright
    return {"image": images, "masks": masks, "labels": masks.flatten(2).any(dim=-1).float()}


def test_unet_is_fully_supervised_and_every_parameter_gets_a_gradient() -> None:
    assert get_method_spec("unet").supervision == "full"
    torch.manual_seed(0)
    method = create_method("unet", profile="tiny")
    batch = _unet_batch()
    out = method(batch["image"])
    terms = method.loss(out, batch)
    assert torch.isfinite(terms["loss"]) and {"pixel_bce", "dice", "image_bce"} <= set(terms)
    terms["loss"].backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_unet_without_masks_is_a_clear_error() -> None:
    method = create_method("unet", profile="tiny")
    batch = _unet_batch()
    with pytest.raises(ValueError, match="with_masks=True"):
        method.loss(method(batch["image"]), {"labels": batch["labels"]})


def test_unet_downsampled_input_of_any_size() -> None:
    method = create_method("unet", profile="quick", input_downsample=4).eval()  # pooled 4x, padded to the stride
    images = torch.randn(2, 1, 90, 70)
    with torch.no_grad():
        out = method(images)
    check_output(out, batch_size=2, num_classes=2, size=(90, 70))
    assert out.extras["pixel_logits"].shape == (2, 2, 22, 17)
    full = create_method("unet", profile="quick").eval()  # the quick preset reads the pixels as they are
    with torch.no_grad():
        assert full(images).extras["pixel_logits"].shape == (2, 2, 90, 70)


def test_unet_optimisation_reduces_the_loss() -> None:
    torch.manual_seed(0)
    method = create_method("unet", profile="tiny")
    batch = _unet_batch()
    opt = torch.optim.Adam(method.parameters(), lr=1e-2)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = method.loss(method(batch["image"]), batch)["loss"]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize(
    ("name", "extra", "supervision"), [("uniform", [], "reference"), ("unet", ["--epochs", "1"], "full")]
)
def test_cli_end_to_end(name: str, extra: list[str], supervision: str, tmp_path: Path, cache_dir: Path) -> None:
    args = ["run", "--method", name, "--profile", "tiny", *extra, "--out", str(tmp_path), "--cache-dir", str(cache_dir)]
    result = CliRunner().invoke(app, [*args, "-q"])
    assert result.exit_code == 0, result.output
    assert "uniform Dice" in result.output
    (record_path,) = tmp_path.glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["method"] == name and record["supervision"] == supervision
    for cls in ("benign", "malignant"):
        assert 0.0 <= record["metrics"][cls]["threshold"] <= 1.0
    if name == "uniform":
        # The breast estimated from the image is the phantom's breast: the row equals the harness's reference.
        for cls in ("benign", "malignant"):
            ref = record["references"]["uniform_breast"][cls]["dice"]
            assert record["metrics"][cls]["dice"] == pytest.approx(ref, nan_ok=True)
    else:
        assert [h["epoch"] for h in record["training"]["history"]] == [1]
