"""CAM: output contract, and the pixel-logit map agrees with the pooled classifier."""

from __future__ import annotations

import pytest
import torch

from wsseg import create_method
from wsseg.method import check_output


def test_cam_shapes_and_range() -> None:
    torch.manual_seed(0)
    method = create_method("cam", profile="tiny").eval()
    images = torch.randn(3, 1, 96, 64)
    out = method(images)
    check_output(out, batch_size=3, num_classes=2, size=(96, 64))
    assert out.logits.shape == (3, 2) and out.saliency.shape == (3, 2, 96, 64)
    assert 0.0 <= float(out.saliency.min()) and float(out.saliency.max()) <= 1.0


def test_cam_logit_is_the_mean_pixel_logit() -> None:
    torch.manual_seed(0)
    method = create_method("cam", profile="tiny").eval()
    images = torch.randn(2, 1, 96, 64)
    with torch.no_grad():
        out = method(images)
        features = method.backbone(images)  # (B, C, h, w)
        pooled = features.mean(dim=(2, 3))  # (B, C)
        w = method.classifier.weight.flatten(1)  # (K, C)
        expected = pooled @ w.T + method.classifier.bias
    torch.testing.assert_close(out.logits, expected, rtol=1e-4, atol=1e-5)
    # The low-resolution map is the sigmoid of the pixel logits.
    torch.testing.assert_close(torch.sigmoid(out.extras["pixel_logits"]), torch.sigmoid(method.classifier(features)))


def test_cam_loss_and_gradients_reach_every_parameter() -> None:
    method = create_method("cam", profile="tiny")
    out = method(torch.randn(2, 1, 96, 64))
    loss = method.loss(out, {"labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})["loss"]
    assert torch.isfinite(loss)
    loss.backward()
    missing = [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_unknown_config_field_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="backbone"):
        create_method("cam", profile="tiny", not_a_field=3)


def test_unknown_backbone_names_the_fix() -> None:
    with pytest.raises(ValueError, match="timm.list_models"):
        create_method("cam", profile="tiny", backbone="no-such-net")


def test_local_backbone_weights_load(tmp_path) -> None:
    import timm

    src = timm.create_model("test_resnet", num_classes=0, in_chans=1)
    path = tmp_path / "weights.pth"
    torch.save(src.state_dict(), path)
    method = create_method("cam", profile="tiny", backbone_weights=str(path))
    for key, value in src.state_dict().items():
        torch.testing.assert_close(method.backbone.model.state_dict()[key], value)
