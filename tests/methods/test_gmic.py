"""GMIC: the released architecture's size and layout, official weight files, and the batched forward pass."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torchvision

from wsseg import create_method
from wsseg.nn.roi import top_t_mean


@pytest.fixture(scope="module")
def paper_gmic() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_method("gmic", profile="paper").eval()


def test_paper_preset_has_the_official_parameter_count(paper_gmic: torch.nn.Module) -> None:
    assert sum(p.numel() for p in paper_gmic.parameters()) == 14_110_322
    parts = {"global_backbone": 2_799_536, "saliency_head": 512, "local_backbone": 11_176_512}
    for prefix, count in parts.items():
        assert sum(p.numel() for n, p in paper_gmic.named_parameters() if n.startswith(prefix + ".")) == count


def test_official_layout_has_the_258_keys_of_the_spec(paper_gmic: torch.nn.Module) -> None:
    sd = paper_gmic.official_state_dict()
    assert len(sd) == 258
    # The local module has exactly torchvision's ResNet-18 names and shapes, without fc.
    tv = {k: v.shape for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    assert {k[len("dn_resnet.") :]: v.shape for k, v in sd.items() if k.startswith("dn_resnet.")} == tv
    assert len([k for k in sd if k.startswith("ds_net.")]) == 131
    assert sd["ds_net.first_conv.weight"].shape == (16, 1, 7, 7)
    for s in range(5):  # a projection shortcut on the first block of every stage, including [16,16,1,1]
        c_in, c_out = 16 * 2 ** max(s - 1, 0), 16 * 2**s
        assert sd[f"ds_net.layer_list.{s}.0.downsample.0.weight"].shape == (c_out, c_in, 1, 1)
        assert sd[f"ds_net.layer_list.{s}.0.bn1.weight"].shape == (c_in,)  # bn1 has the block's input channels
        assert f"ds_net.layer_list.{s}.1.downsample.0.weight" not in sd
    expected = {
        "ds_net.final_bn.running_var": (256,),
        "left_postprocess_net.gn_conv_last.weight": (2, 256, 1, 1),
        "mil_attn_V.weight": (128, 512),
        "mil_attn_U.weight": (128, 512),
        "mil_attn_w.weight": (1, 128),
        "classifier_linear.weight": (2, 512),
        "fusion_dnn.weight": (2, 768),
        "fusion_dnn.bias": (2,),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key


def _legacy_save(state: dict[str, torch.Tensor], path: Path) -> None:
    # The released files were written by PyTorch 1.1: the legacy, non-zip serialisation.
    torch.save(state, path, _use_new_zipfile_serialization=False)


def test_official_file_loads_strictly_and_reproduces_the_weights(paper_gmic: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "sample_model_1.p"
    official = paper_gmic.official_state_dict()
    _legacy_save(official, path)
    torch.manual_seed(1)  # a different initialisation, overwritten by the file
    loaded = create_method("gmic", profile="paper", weights=path)
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, paper_gmic.state_dict()[key]), key
    # Files without num_batches_tracked counters (older PyTorch) load as well.
    _legacy_save({k: v for k, v in official.items() if not k.endswith("num_batches_tracked")}, path)
    create_method("gmic", profile="paper", weights=path)


def test_a_file_with_another_layout_is_refused_with_the_differing_keys(
    paper_gmic: torch.nn.Module, tmp_path: Path
) -> None:
    sd = paper_gmic.official_state_dict()
    sd["fusion_dnn.extra"] = sd.pop("fusion_dnn.bias")
    sd["classifier_linear.weight"] = torch.zeros(3, 512)
    path = tmp_path / "other.p"
    torch.save(sd, path)
    with pytest.raises(ValueError) as e:
        create_method("gmic", profile="paper", weights=path)
    msg = str(e.value)
    assert "fusion.bias" in msg and "fusion.extra" in msg and "local_classifier.weight (3, 512) vs (2, 512)" in msg
    assert str(path) in msg


def test_a_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "sample_model_1.p"
    torch.save({"ds_net.first_conv.weight": Exploit()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        create_method("gmic", profile="paper", weights=path)
    assert not marker.exists()


def test_released_model_with_another_percent_t_warns(paper_gmic: torch.nn.Module, tmp_path: Path) -> None:
    path = tmp_path / "sample_model_4.p"
    torch.save(paper_gmic.official_state_dict(), path)
    with pytest.warns(UserWarning, match="percent_t=0.05"):
        create_method("gmic", profile="paper", weights=path)


def test_paper_forward_shapes_and_crop_positions(paper_gmic: torch.nn.Module) -> None:
    torch.manual_seed(2)
    with torch.no_grad():
        out = paper_gmic(torch.randn(1, 1, 2944, 1920))
    assert out.extras["saliency_lowres"].shape == (1, 2, 46, 30)
    assert out.saliency.shape == (1, 2, 2944, 1920)
    loc = out.extras["patch_locations"]
    assert loc.shape == (1, 6, 2) and loc.dtype == torch.int64
    assert (loc % 64 == 0).all() and (loc[..., 0] <= 2944 - 256).all() and (loc[..., 1] <= 1920 - 256).all()
    assert out.extras["patch_attns"].sum().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(out.extras["y_fusion"], torch.sigmoid(out.logits))


def test_batched_forward_equals_a_per_image_per_crop_loop() -> None:
    """The batched crops, local network and attention against the loop the original code runs."""
    torch.manual_seed(3)
    model = create_method("gmic", profile="tiny").eval()
    images = torch.randn(3, 1, 96, 64)
    with torch.no_grad():
        out = model(images)
        a = out.extras["saliency_lowres"]
        assert torch.allclose(out.extras["y_global"], top_t_mean(a, model.cfg.percent_t))
        for b in range(3):
            feats = []
            for r, c in out.extras["patch_locations"][b].tolist():
                crop = images[b : b + 1, :, r : r + 32, c : c + 32].expand(-1, 3, -1, -1)  # the official 3-ch expand
                feats.append(model.local_backbone.forward_features(crop).mean(dim=(2, 3))[0])
            h = torch.stack(feats)  # (K, C)
            score = model.attention_w(torch.tanh(model.attention_v(h)) * torch.sigmoid(model.attention_u(h)))[:, 0]
            alpha = torch.softmax(score, dim=0)
            z = (alpha[:, None] * h).sum(0)
            g = model.global_backbone(images[b : b + 1]).amax(dim=(2, 3))[0]
            assert torch.allclose(alpha, out.extras["patch_attns"][b], atol=1e-5)
            assert torch.allclose(torch.sigmoid(model.local_classifier(z)), out.extras["y_local"][b], atol=1e-5)
            fusion = torch.sigmoid(model.fusion(torch.cat((g, z))))
            assert torch.allclose(fusion, out.extras["y_fusion"][b], atol=1e-5)


def test_attention_pooling_by_hand() -> None:
    model = create_method("gmic", profile="tiny")
    c, d = model.attention_v.in_features, model.attention_v.out_features
    with torch.no_grad():
        model.attention_v.weight.zero_()
        model.attention_v.weight[0, 0] = 1.0  # tanh(V h) = (tanh(h_0), 0, ...)
        model.attention_u.weight.zero_()  # sigmoid(U h) = 1/2
        model.attention_w.weight.fill_(1.0)
        h = torch.zeros(1, 2, c)
        h[0, 0, 0], h[0, 1, 0], h[0, :, 1] = 0.0, 1.0, torch.tensor([3.0, 5.0])
        z, alpha = model.attention_pool(h)
    s1 = 0.5 * torch.tanh(torch.tensor(1.0))  # crop 0 scores 0.5 * tanh(0) = 0
    expected = torch.softmax(torch.stack([torch.tensor(0.0), s1]), dim=0)
    assert torch.allclose(alpha[0], expected)
    assert z[0, 1].item() == pytest.approx(3.0 * expected[0].item() + 5.0 * expected[1].item())
    assert d == model.cfg.attention_dim


def test_loss_terms_and_l1_weight() -> None:
    torch.manual_seed(4)
    model = create_method("gmic", profile="tiny", beta=0.0).train()
    images, labels = torch.randn(2, 1, 96, 64), torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = model(images)
    terms = model.loss(out, {"labels": labels})
    assert terms["loss"].item() == pytest.approx(
        (terms["global_bce"] + terms["local_bce"] + terms["fusion_bce"]).item(), rel=1e-6
    )
    l1 = out.extras["saliency_lowres"].abs().sum(dim=(1, 2, 3)).mean()
    assert terms["l1"].item() == pytest.approx(l1.item(), rel=1e-6)
