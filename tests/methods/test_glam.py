"""GLAM: the released architecture's size and layout, official weight files, fusion semantics and staged training."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from wsseg import create_method
from wsseg.config import TrainConfig
from wsseg.data.dataset import MammogramDataset
from wsseg.method import TrainContext
from wsseg.nn.roi import top_t_mean
from wsseg.training.loop import lr_factor, train


@pytest.fixture(scope="module")
def paper_glam() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method("glam", profile="paper").eval()


def test_paper_preset_has_the_official_parameter_count(paper_glam: torch.nn.Module) -> None:
    assert sum(p.numel() for p in paper_glam.parameters()) == 24_086_140
    local = sum(p.numel() for n, p in paper_glam.named_parameters() if n.startswith(("local_backbone.", "local_head.")))
    assert local == 21_285_696
    # The unused 6->2 ``combine`` convolution is kept for strict loading but never trained.
    assert not paper_glam.head_combine.weight.requires_grad


def test_official_layout_has_the_352_keys_of_the_spec(paper_glam: torch.nn.Module) -> None:
    sd = paper_glam.official_state_dict()
    assert len(sd) == 352
    prefix = "detection_network.dn_resnet."
    tv = {k: v.shape for k, v in torchvision.models.resnet34().state_dict().items() if not k.startswith("fc.")}
    assert {k[len(prefix) :]: v.shape for k, v in sd.items() if k.startswith(prefix)} == tv
    gmic = create_method("gmic", profile="paper").official_state_dict()
    branch = "global_network.downsampling_branch."
    glob = {k[len(branch) :]: v.shape for k, v in sd.items() if k.startswith(branch)}
    assert glob == {k[len("ds_net.") :]: v.shape for k, v in gmic.items() if k.startswith("ds_net.")}
    head = "global_network.postprocess_module."
    assert sd[head + "gn_conv_1.weight"].shape == (2, 64, 1, 1)
    assert sd[head + "gn_conv_2.weight"].shape == (2, 128, 1, 1)
    assert sd[head + "gn_conv_last.weight"].shape == (2, 256, 1, 1)
    assert sd[head + "combine.weight"].shape == (2, 6, 1, 1)
    assert sd["detection_network.gn_conv_last.weight"].shape == (2, 512, 1, 1)


@pytest.mark.parametrize("name", ["model_sep.ckpt", "model_joint.ckpt"])
def test_official_files_load_strictly(paper_glam: torch.nn.Module, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    torch.save(paper_glam.official_state_dict(), path, _use_new_zipfile_serialization=False)
    torch.manual_seed(1)
    loaded = create_method("glam", profile="paper", weights=path)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, paper_glam.state_dict()[key]), key
    # A GMIC file is not a GLAM file: the error names the keys.
    gmic_path = tmp_path / "sample_model_1.p"
    torch.save(create_method("gmic", profile="paper").official_state_dict(), gmic_path)
    with pytest.raises(ValueError, match="258 unexpected keys: classifier_linear.weight"):
        create_method("glam", profile="paper", weights=gmic_path)


def test_paper_forward_shapes_and_patch_position(paper_glam: torch.nn.Module) -> None:
    torch.manual_seed(2)
    with torch.no_grad():
        out = paper_glam(torch.randn(1, 1, 2944, 1920))
    assert out.extras["saliency_global"].shape == (1, 2, 184, 120)
    assert out.extras["local_maps"].shape == (1, 1, 2, 128, 128)
    assert out.extras["saliency_local"].shape == out.saliency.shape == (1, 2, 2944, 1920)
    loc = out.extras["patch_locations"]
    assert loc.dtype == torch.int64 and (loc % 16 == 0).all()
    assert (loc[..., 0] <= 2944 - 512).all() and (loc[..., 1] <= 1920 - 512).all()


def test_fusion_semantics_on_the_tiny_preset() -> None:
    torch.manual_seed(3)
    model = create_method("glam", profile="tiny").eval()
    images = torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        out = model(images)
    s_g, local = out.extras["saliency_global"], out.extras["saliency_local"]
    global_up = F.interpolate(s_g, size=(96, 64), mode="nearest")
    assert torch.allclose(out.saliency, (local + global_up) / 2)
    # The prediction is the global one: the mean of the three scales' top-3% means.
    scales = out.extras["scale_scores"]
    assert torch.allclose(torch.sigmoid(out.logits), scales.mean(0), atol=1e-5)
    for b in range(2):
        r, c = out.extras["patch_locations"][b, 0].tolist()
        inside = torch.zeros(96, 64, dtype=torch.bool)
        inside[r : r + 32, c : c + 32] = True
        assert torch.equal(local[b][:, ~inside], torch.zeros_like(local[b][:, ~inside]))  # zero outside the patch
        assert torch.allclose(out.saliency[b][:, ~inside], global_up[b][:, ~inside] / 2)  # S_g / 2 outside
        patch = F.interpolate(out.extras["local_maps"][b, 0][None], size=(32, 32), mode="nearest")[0]
        assert torch.equal(local[b][:, inside].view(2, 32, 32), patch)
    assert torch.allclose(
        out.extras["y_local"], top_t_mean(out.extras["local_maps"].transpose(1, 2).flatten(2)[..., None], 0.3)
    )


def test_global_map_weights_the_three_scales() -> None:
    torch.manual_seed(4)
    model = create_method("glam", profile="tiny", scale_weights=(1.0, 0.0, 0.0)).eval()
    with torch.no_grad():
        scales, s_g = model.global_maps(torch.randn(1, 1, 96, 64))
    assert torch.equal(s_g, scales[0])  # s1, the map from l3 (the finest level)


def test_stage_schedule_defaults_and_errors() -> None:
    model = create_method("glam", profile="tiny")
    assert model.stage_bounds(8) == (4, 2, 2)
    assert model.stage_bounds(1) == (1, 0, 0)
    assert [model.stage_of(e, 4) for e in range(4)] == ["global", "global", "local", "joint"]
    bad = create_method("glam", profile="tiny", stage_epochs=(1, 1, 1))
    with pytest.raises(ValueError, match="sum to train.epochs = 4"):
        bad.stage_bounds(4)


def test_local_stage_freezes_the_global_network(tmp_path: Path) -> None:
    torch.manual_seed(5)
    model = create_method("glam", profile="tiny", stage_epochs=(1, 1, 1))
    model.train()
    ctx = TrainContext(device=torch.device("cpu"), total_steps=3, epochs=3, run_dir=tmp_path)
    model.on_train_start(ctx)
    model.on_epoch_start(ctx, 1)
    assert model.stage == "local" and not model.global_backbone.training
    stats = model.global_backbone.final_bn.running_mean.clone()
    out = model(torch.randn(2, 1, 96, 64))
    model.loss(out, {"labels": torch.tensor([[1.0, 0.0], [0.0, 0.0]])})["loss"].backward()
    assert all(p.grad is None for p in model.global_backbone.parameters())
    assert all(p.grad is not None for p in model.local_backbone.parameters())
    assert torch.equal(stats, model.global_backbone.final_bn.running_mean)
    assert model.lr_scale({}, 1) == 1.0 and model.lr_scale({}, 2) == 0.1


def test_staged_training_through_the_shared_loop(tiny_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(6)
    model = create_method("glam", profile="tiny", stage_epochs=(1, 1, 1))
    cfg = dataclasses.replace(TrainConfig(), epochs=3, batch_size=4, warmup_steps=1, device="cpu")
    result = train(
        model,
        MammogramDataset(tiny_root, "train", with_masks=False),
        MammogramDataset(tiny_root, "val", with_masks=True),
        cfg,
        tmp_path,
        seed=0,
        run_config={},
        progress=False,
    )
    assert result.best_epoch == 3  # only the joint stage may provide the best checkpoint
    steps = 3 * 4  # 16 images in batches of 4
    assert result.history[2]["lr"] == pytest.approx(cfg.lr * lr_factor(steps, 1, steps) * 0.1)
    assert result.history[1]["lr"] == pytest.approx(cfg.lr * lr_factor(8, 1, steps))


def test_activation_checkpointing_gives_the_same_loss_and_gradients() -> None:
    images, labels = torch.randn(2, 1, 96, 64), {"labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(7)
        model = create_method("glam", profile="tiny", checkpoint_local=ckpt).train()
        loss = model.loss(model(images), labels)["loss"]
        loss.backward()
        grads.append((loss.detach(), model.local_backbone.layer1[0].conv1.weight.grad.clone()))
    assert torch.allclose(grads[0][0], grads[1][0]) and torch.allclose(grads[0][1], grads[1][1], atol=1e-6)
