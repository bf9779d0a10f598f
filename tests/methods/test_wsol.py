"""The training-time WSOL methods do what their papers say: HaS hides patches, ADL drops the most activated region,
ACoL erases above its threshold, SPG's guidance follows its thresholds, CutMix mixes labels by pasted area; all
evaluate as plain CAM classifiers; and each trains end to end on the tiny profile."""

from __future__ import annotations

import json
import math
from pathlib import Path

import posthoc_kit
import pytest
import torch
from posthoc_kit import one_thread  # noqa: F401 (a fixture)
from torch import Tensor
from typer.testing import CliRunner
from wsseg_methods.acol import erase, normalize_per_map
from wsseg_methods.adl import attention_dropout, drop_mask
from wsseg_methods.cutmix import cutmix, mixed_labels
from wsseg_methods.has import hide_patches
from wsseg_methods.spg import guidance_mask

from wsseg import create_method
from wsseg.cli import app
from wsseg.method import bce_loss

SIZE = (96, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


def images(batch: int = 4, seed: int = 1) -> Tensor:
    return posthoc_kit.images(batch, seed, SIZE)


def binomial_ok(hits: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(hits / n - p) <= sigmas * math.sqrt(p * (1 - p) / n)


# ----- HaS -----


@pytest.mark.parametrize("prob", [0.5, 0.2])
def test_has_hides_the_given_fraction_of_patches_and_nothing_else(prob: float) -> None:
    torch.manual_seed(0)
    x = torch.randn(32, 1, 100, 70) + 5.0  # no pixel is 0 before hiding
    hidden_x, grid = hide_patches(x, 9, prob)
    assert grid.shape == (32, 12, 8)  # ceil(100 / 9), ceil(70 / 9): border patches are cut
    assert binomial_ok(int(grid.sum()), grid.numel(), prob)
    mask = grid.repeat_interleave(9, 1).repeat_interleave(9, 2)[:, :100, :70][:, None]  # (B, 1, H, W)
    assert torch.equal(hidden_x[mask], torch.zeros(int(mask.sum())))  # hidden: the image mean, 0
    assert torch.equal(hidden_x[~mask], x[~mask])  # the rest untouched


def test_has_hides_only_in_training_and_keeps_cams_classifier() -> None:
    torch.manual_seed(0)
    has = create_method("has", profile="tiny")
    cam = create_method("cam", profile="tiny")
    cam.load_state_dict(has.state_dict(), strict=True)  # the same modules: a HaS run's weights are a CAM classifier
    assert has.patch_size(480) == 9 and has.patch_size(1920) == 34  # 4/224 of the width (wsolevaluation: 4 of 224)
    x = images()
    has.eval(), cam.eval()
    torch.testing.assert_close(has.predict(x).saliency, cam.predict(x).saliency, rtol=0, atol=0)
    has.train()
    seen: list[Tensor] = []
    handle = has.backbone.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    has(x + 10.0)
    handle.remove()
    assert (seen[0] == 0).float().mean() > 0.3  # about half the input hidden


# ----- ADL -----


def test_adl_drop_mask_hides_where_the_attention_reaches_gamma_of_its_maximum() -> None:
    attention = torch.rand(3, 1, 8, 6, generator=torch.Generator().manual_seed(0))
    mask = drop_mask(attention, 0.9)
    peak = attention.amax(dim=(2, 3), keepdim=True)
    assert torch.equal(mask == 0, attention >= 0.9 * peak)
    assert (mask == 0).flatten(1).any(dim=1).all()  # every image loses at least its peak


def test_adl_applies_the_drop_mask_at_the_drop_rate_else_the_importance_map() -> None:
    torch.manual_seed(0)
    features = torch.rand(2, 5, 8, 6, generator=torch.Generator().manual_seed(1))
    attention = features.mean(dim=1, keepdim=True)
    dropped = features * drop_mask(attention, 0.9)
    importance = features * torch.sigmoid(attention)
    n, drops = 2000, 0
    for _ in range(n):
        out = attention_dropout(features, 0.75, 0.9)
        is_drop = torch.equal(out, dropped)
        assert is_drop or torch.equal(out, importance)
        drops += is_drop
    assert binomial_ok(drops, n, 0.75)


def test_adl_acts_in_training_only_after_its_blocks() -> None:
    torch.manual_seed(0)
    adl = create_method("adl", profile="tiny", drop_rate=1.0)
    cam = create_method("cam", profile="tiny")
    cam.load_state_dict(adl.state_dict(), strict=True)  # ADL adds no parameter
    adl.eval(), cam.eval()
    x = images()
    torch.testing.assert_close(adl.predict(x).logits, cam.predict(x).logits, rtol=0, atol=0)
    adl.train()
    outputs: list[Tensor] = []
    after = adl.adl_blocks()
    handles = [b.register_forward_hook(lambda _m, _i, out: outputs.append(out)) for b in after]
    seen: list[Tensor] = []
    nxt = adl.classifier.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    adl(x)
    for h in (*handles, nxt):
        h.remove()
    # With drop_rate 1 the last ADL layer zeroes the most activated region of the classifier's input.
    last = outputs[-1]
    expected = last * drop_mask(last.mean(dim=1, keepdim=True), adl.cfg.gamma)
    torch.testing.assert_close(seen[0], expected, rtol=0, atol=0)


# ----- ACoL -----


def test_acol_erases_each_class_where_its_normalised_map_reaches_the_threshold() -> None:
    features = torch.rand(2, 4, 8, 6) + 0.1
    maps = torch.randn(2, 3, 8, 6)
    attention = normalize_per_map(maps)
    assert torch.allclose(attention.amin(dim=(2, 3)), torch.zeros(2, 3)) and torch.allclose(
        attention.amax(dim=(2, 3)), torch.ones(2, 3)
    )
    erased = erase(features, attention, 0.7)  # (B, K, C, h, w)
    for k in range(3):
        gone = (attention[:, k] >= 0.7)[:, None].expand(-1, 4, -1, -1)
        assert torch.equal(erased[:, k][gone], torch.zeros(int(gone.sum())))
        assert torch.equal(erased[:, k][~gone], features[~gone])


def test_acol_branch_b_reads_the_features_erased_by_branch_a() -> None:
    torch.manual_seed(0)
    acol = create_method("acol", profile="tiny").train()
    seen: list[Tensor] = []
    handle = acol.classifier_b.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    x = images(2)
    out = acol(x)
    handle.remove()
    features = acol.features(x).detach()
    expected = erase(features, out.extras["attention"], acol.cfg.threshold).flatten(0, 1)
    torch.testing.assert_close(seen[0], expected)
    assert (out.extras["attention"] >= 0.7).any()
    loss = acol.loss(out, {"labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})
    expected_loss = bce_loss(out.logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]])) + bce_loss(
        out.extras["logits_b"], torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    )
    torch.testing.assert_close(loss["loss"], expected_loss)


# ----- SPG -----


def test_spg_guidance_masks_follow_the_thresholds() -> None:
    a = torch.tensor([[0.9, 0.75, 0.6], [0.3, 0.04, 0.0]]).view(1, 1, 2, 3)
    mask = guidance_mask(a, high=0.7, low=0.05, min_foreground=1)
    expected = torch.tensor([[1.0, 1.0, math.nan], [math.nan, 0.0, 0.0]]).view(1, 1, 2, 3)
    torch.testing.assert_close(mask, expected, equal_nan=True)
    # Fewer than min_foreground pixels above `high`: the foreground is what exceeds 0.7 of the maximum instead.
    b = torch.tensor([[0.5, 0.4, 0.3], [0.2, 0.01, 0.0]]).view(1, 1, 2, 3)
    mask = guidance_mask(b, high=0.7, low=0.05, min_foreground=2)
    expected = torch.tensor([[1.0, 1.0, math.nan], [math.nan, 0.0, 0.0]]).view(1, 1, 2, 3)
    torch.testing.assert_close(mask, expected, equal_nan=True)


def test_spg_guidance_losses_use_images_with_a_positive_class_only() -> None:
    torch.manual_seed(0)
    spg = create_method("spg", profile="tiny").train()
    out = spg(images(2))
    negative = spg.loss(out, {"labels": torch.zeros(2, 2)})
    assert float(negative["b2_guidance"]) == float(negative["b1_guidance"]) == float(negative["c_guidance"]) == 0.0
    torch.testing.assert_close(negative["loss"], negative["bce"])
    positive = spg.loss(out, {"labels": torch.tensor([[1.0, 0.0], [0.0, 0.0]])})
    assert float(positive["b2_guidance"]) > 0 and float(positive["c_guidance"]) > 0
    # The guidance losses reach every branch.
    positive["loss"].backward()
    for part in (spg.b1_head, spg.b2_head, spg.b_shared, spg.c_head):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in part.parameters())


def test_spg_training_features_are_cams_backbone_features() -> None:
    torch.manual_seed(0)
    spg = create_method("spg", profile="tiny").train()
    x = images(2)
    with torch.no_grad():
        out = spg(x)
        pixel_logits = spg.classifier(spg.backbone(x))  # the same batch statistics: both in train mode
    torch.testing.assert_close(out.extras["pixel_logits"], pixel_logits)


# ----- CutMix -----


def test_cutmix_pastes_a_box_and_mixes_labels_by_its_area() -> None:
    torch.manual_seed(0)
    x = torch.arange(4.0)[:, None, None, None].expand(4, 1, *SIZE).clone()  # image i is constant i
    checked = 0
    for _ in range(20):
        mixed, index, lam = cutmix(x, 1.0)
        pasted = mixed != x  # where an image received another's pixels (index[i] != i)
        for i in range(4):
            if int(index[i]) != i:
                checked += 1
                area = float(pasted[i].float().mean())
                torch.testing.assert_close(torch.tensor(1.0 - area), lam.float(), rtol=0, atol=1e-6)
                assert torch.equal(mixed[i][pasted[i]], torch.full((int(pasted[i].sum()),), float(index[i])))
        labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
        expected = lam * labels + (1 - lam) * labels[index]
        torch.testing.assert_close(mixed_labels(labels, index, lam), expected)
    assert checked > 20


def test_cutmix_trains_on_the_mixed_labels() -> None:
    torch.manual_seed(0)
    method = create_method("cutmix", profile="tiny").train()
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = method(images(2))
    assert "mix_index" in out.extras
    mixed = mixed_labels(labels, out.extras["mix_index"], out.extras["mix_lambda"])
    torch.testing.assert_close(method.loss(out, {"labels": labels})["loss"], bce_loss(out.logits, mixed))
    never = create_method("cutmix", profile="tiny", prob=0.0).train()
    assert "mix_index" not in never(images(2)).extras


# ----- end to end -----


@pytest.mark.parametrize("method", ["has", "acol", "spg", "adl", "cutmix"])
def test_trains_and_evaluates_on_the_tiny_profile(tmp_path: Path, cache_dir: Path, method: str) -> None:
    args = ["run", "--method", method, "--profile", "tiny", "--out", str(tmp_path), "--cache-dir", str(cache_dir)]
    result = CliRunner().invoke(app, [*args, "--run-id", "run", "-q"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "record.json").read_text())
    assert record["method"] == method and record["explains"] is None
    assert len(record["training"]["history"]) == 2 and all(
        math.isfinite(h["train_loss"]) for h in record["training"]["history"]
    )
    assert 0.0 <= record["metrics"]["malignant"]["threshold"] <= 1.0


def test_a_backbone_without_resnet_stages_is_refused_with_the_fix() -> None:
    for name in ("adl", "spg"):
        with pytest.raises(ValueError, match=rf"{name} acts inside a timm ResNet.*Set method.backbone"):
            create_method(name, profile="tiny", backbone="efficientnet_b0")
