"""The post-hoc CAM family: agreement with pytorch-grad-cam, hook hygiene, batching and CAM checkpoints.

Methods whose map pytorch-grad-cam computes through ``BaseCAM.compute_cam_per_layer`` are compared by
``reference_maps``; Eigen-CAM and Eigen-Grad-CAM, FullGrad and SmoothGrad-CAM++ (torchcam) in
``test_posthoc_zoo.py``.
"""

from __future__ import annotations

import pytest
import torch
from posthoc_kit import SIZE, images, make, one_thread  # noqa: F401 (one_thread: a fixture)
from torch import nn

from wsseg import create_method, list_methods
from wsseg.method import ClassifierConfig, PostHocCAMMethod, capture_output, check_output
from wsseg.registry import get_method_spec

# wsseg name -> pytorch-grad-cam class, the reference implementation (`pip install grad-cam`, a dev extra).
REFERENCE = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "layercam": "LayerCAM",
    "hirescam": "HiResCAM",
    "xgradcam": "XGradCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
}
# Every registered post-hoc method (those that read trained runs), for the template's behaviour.
POSTHOC = sorted(name for name in list_methods() if get_method_spec(name).cls.reads)

pytestmark = pytest.mark.usefixtures("one_thread")


def no_hooks(module: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks and not m._backward_pre_hooks
        for m in module.modules()
    )


class Logits(nn.Module):
    """pytorch-grad-cam wants a model returning (B, K) logits."""

    def __init__(self, method: PostHocCAMMethod) -> None:
        super().__init__()
        self.method = method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.method(x).logits


def reference_maps(
    name: str, method: PostHocCAMMethod, layer: nn.Module, x: torch.Tensor, raw: bool = False
) -> torch.Tensor:
    """pytorch-grad-cam's (B, K, h, w) maps at the target layer's resolution (``raw``: before ReLU and scaling).

    The comparison is exact by construction: this runs pytorch-grad-cam's own ``BaseCAM.forward`` steps (its
    hooks, one backward of the batch-summed ``ClassifierOutputTarget(k)`` scores, then
    ``compute_cam_per_layer`` = ``get_cam_image`` -> ReLU -> ``scale_cam_image``), and stops before the two
    steps wsseg does differently on purpose: the cv2 resize to the input size (``get_target_width_height``
    returns None, so ``scale_cam_image`` only min-max normalises, with its 1e-7 epsilon) and the re-normalising
    ``aggregate_multi_layers`` (a second division by max + 1e-7 that would shift values by up to 1e-7 / max).
    wsseg's ``extras["cam_lowres"]`` is the same ReLU + per-(image, class) min-max with the same epsilon, so
    the two differ only by rounding: summation order (numpy vs torch) and pytorch-grad-cam's float32 output.
    With ``raw`` the maps are ``get_cam_image``'s, the weighted sums before the ReLU (``PostHocCAMMethod.raw_maps``).
    """
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = Logits(method)
    per_class = []
    for k in range(method.num_classes):
        with getattr(pytorch_grad_cam, REFERENCE[name])(model=model, target_layers=[layer]) as cam:
            targets = [ClassifierOutputTarget(k) for _ in range(len(x))]
            outputs = cam.activations_and_grads(x)
            model.zero_grad()
            sum(target(output) for target, output in zip(targets, outputs, strict=True)).backward(retain_graph=True)
            cam.get_target_width_height = lambda _input: None  # no cv2 resize: stay at the feature resolution
            if raw:
                acts, grads = (cam.activations_and_grads.activations[0], cam.activations_and_grads.gradients[0])
                maps = cam.get_cam_image(x, layer, targets, acts.numpy(), grads.numpy())  # (B, h, w)
            else:
                maps = cam.compute_cam_per_layer(x, targets, eigen_smooth=False)[0][:, 0]  # (B, h, w)
        per_class.append(torch.from_numpy(maps))
    model.zero_grad(set_to_none=True)
    return torch.stack(per_class, dim=1)  # (B, K, h, w)


class Layer3Target:
    """Mixin: explain an inner layer, so that gradients vary over space (on CAM's head they are constant)."""

    def target_layer(self) -> nn.Module:
        return self.backbone.model.layer3  # type: ignore[attr-defined]


def centre_classifier(method: PostHocCAMMethod) -> None:
    """Make every class map change sign, so the ReLU and the normalisation matter.

    At random initialisation the features of all locations point the same way, so each class's map has one
    sign and half the maps are all zero. Removing from each classifier row its component along the mean
    feature centres the maps on zero.
    """
    with torch.no_grad():
        mean = method.backbone(images()).mean(dim=(0, 2, 3))  # (C,)
        weight = method.classifier.weight[:, :, 0, 0]  # (K, C), a view
        weight -= (weight @ mean)[:, None] * mean / mean.dot(mean)


def our_raw_maps(method: PostHocCAMMethod, x: torch.Tensor) -> torch.Tensor:
    """wsseg's (B, K, h, w) maps before the ReLU, through the template's own steps."""
    with torch.set_grad_enabled(method.saliency_requires_grad):
        with capture_output(method.target_layer()) as captured:
            scores = method.scores(x)
        return method.raw_maps(x, scores, captured[0]).detach()


# Score-CAM and Ablation-CAM run one forward pass per channel (192 at layer3) for each image, in both libraries:
# their inner-layer case adds minutes and nothing the backbone case does not test (they use no gradient).
CASES = [(name, target) for name in sorted(REFERENCE) for target in ("backbone", "layer3")]
CASES = [(name, target) for name, target in CASES if target == "backbone" or name not in ("scorecam", "ablationcam")]


@pytest.mark.parametrize(("name", "target"), CASES)
def test_maps_equal_pytorch_grad_cam_exactly(name: str, target: str) -> None:
    # In float64 the comparison measures the formulas, not rounding: the centred maps are sums that cancel
    # and the min-max normalisation divides by their small maximum, which amplifies float32 rounding of the
    # two libraries' different summation orders to ~1e-5. pytorch-grad-cam returns float32 maps, so the only
    # difference left is that final rounding (< 6e-8); Score-CAM's and Ablation-CAM's weights pass through float32
    # in pytorch-grad-cam (its scores are gathered with .item() into float32 arrays), a relative 6e-8 more.
    method = make(name)
    centre_classifier(method)
    if target == "layer3":
        inner = type(f"{type(method).__name__}Layer3", (Layer3Target, type(method)), {})(method.cfg)
        inner.load_state_dict(method.state_dict())
        method = inner.eval()
    method = method.double()
    x = images().double()
    ours = method.predict(x).extras["cam_lowres"]  # (B, K, h, w)
    theirs = reference_maps(name, method, method.target_layer(), x).double()
    assert ours.shape == theirs.shape == (3, 2, 8, 6)
    if name == "ablationcam":
        # Ablation-CAM divides each score drop by the score itself, so a negative logit (half of them, with the
        # centred classifier) reverses the map's sign and the ReLU zeroes it: compare the signed maps too.
        ours_raw, theirs_raw = our_raw_maps(method, x), reference_maps(name, method, method.target_layer(), x, raw=True)
        assert (ours_raw.amax(dim=(2, 3)) > 0).any() and (ours_raw.amin(dim=(2, 3)) < 0).any()
        # pytorch-grad-cam's float32 scores and weights: 1e-6 of the map's scale, what the normalisation sees.
        scale = float(ours_raw.abs().max())
        torch.testing.assert_close(ours_raw, theirs_raw.double(), rtol=0.0, atol=1e-6 * scale)
    else:
        assert (ours.amax(dim=(2, 3)) > 0.5).all(), "an all-zero map would make the comparison vacuous"
    # Ablation-CAM's relative drops (y - y_c) / y subtract float32 scores in pytorch-grad-cam: their rounding,
    # divided by y, reaches ~1e-6 of the normalised maps.
    torch.testing.assert_close(ours, theirs, rtol=0.0, atol=1e-5 if name == "ablationcam" else 2e-7)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_maps_equal_pytorch_grad_cam_in_float32(name: str) -> None:
    # The model as created (float32, as it runs); its uncentred maps have one sign each, so rounding stays small.
    method = make(name)
    x = images()
    ours = method.predict(x).extras["cam_lowres"]  # (B, K, h, w)
    theirs = reference_maps(name, method, method.target_layer(), x)
    assert (ours.amax(dim=(2, 3)) > 0.5).any(), "every map is zero: the comparison would be vacuous"
    torch.testing.assert_close(ours, theirs, rtol=0.0, atol=1e-5)


@pytest.mark.parametrize("name", POSTHOC)
def test_predict_leaves_no_hooks_no_grads_and_keeps_the_mode(name: str) -> None:
    method = make(name)
    for training in (False, True):
        method.train(training)
        with torch.no_grad():  # predict enables autograd inside
            out = method.predict(images(2))
        assert method.training is training
        assert no_hooks(method)
        assert all(p.grad is None for p in method.parameters())
        assert not out.logits.requires_grad and not out.saliency.requires_grad


def test_hooks_are_removed_when_the_forward_raises() -> None:
    method = make("gradcam")
    with pytest.raises(RuntimeError):
        method.predict(torch.randn(1, 3, *SIZE))  # 3 channels into a 1-channel stem
    assert no_hooks(method)


def test_the_template_names_the_hook_to_implement() -> None:
    method = PostHocCAMMethod(ClassifierConfig.tiny()).eval()
    with pytest.raises(NotImplementedError, match="channel_weights"):
        method.predict(images(1))
    assert no_hooks(method)


@pytest.mark.parametrize("name", POSTHOC)
def test_batched_backward_equals_one_image_at_a_time(name: str) -> None:
    method = make(name)
    x = images(3)
    batched = method.predict(x)
    singles = [method.predict(x[i : i + 1]) for i in range(3)]
    if "cam_lowres" in batched.extras:  # FullGrad's maps are made at the input resolution
        singles_lowres = torch.cat([s.extras["cam_lowres"] for s in singles])
        torch.testing.assert_close(batched.extras["cam_lowres"], singles_lowres, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.saliency, torch.cat([s.saliency for s in singles]), atol=1e-5, rtol=0)
    torch.testing.assert_close(batched.logits, torch.cat([s.logits for s in singles]), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", POSTHOC)
def test_output_contract_for_predict_and_forward(name: str) -> None:
    method = make(name)
    x = images(2)
    out = method.predict(x)
    check_output(out, batch_size=2, num_classes=2, size=SIZE)
    assert out.saliency.shape == (2, 2, *SIZE)
    assert name == "fullgrad" or out.extras["cam_lowres"].shape == (2, 2, 8, 6)
    assert float(out.saliency.min()) >= 0.0 and float(out.saliency.max()) <= 1.0
    # Training runs the classifier only: CAM's logits, the cheap sigmoid map, BCE reaching every parameter.
    method.train()
    out = method(x)
    check_output(out, batch_size=2, num_classes=2, size=SIZE)
    loss = method.loss(out, {"labels": torch.tensor([[1.0, 0.0], [0.0, 1.0]])})["loss"]
    loss.backward()
    assert not [n for n, p in method.named_parameters() if p.requires_grad and p.grad is None]


def test_an_all_zero_map_stays_zero() -> None:
    method = make("gradcam")
    with torch.no_grad():
        method.classifier.weight.zero_()  # zero gradients -> all-zero maps, which must not become NaN
    out = method.predict(images(2))
    assert torch.equal(out.saliency, torch.zeros_like(out.saliency))


@pytest.mark.parametrize("name", POSTHOC)
def test_cam_checkpoints_load_strictly(name: str) -> None:
    # What `--from-run <a CAM run>` does: CAM's best.pt state dict into a post-hoc method, strictly.
    cam = create_method("cam", profile="tiny").eval()
    method = create_method(name, profile="tiny")
    assert list(method.state_dict()) == list(cam.state_dict())
    method.load_state_dict(cam.state_dict(), strict=True)
    method.eval()
    x = images(2)
    with torch.no_grad():
        expected = cam(x)
    out = method.predict(x)
    torch.testing.assert_close(out.logits, expected.logits)
    if name == "hirescam":
        # On CAM's GAP-linear head d logit / dA = W / (h w) everywhere, so HiResCAM is CAM's map without its bias,
        # divided by h w (kept here because the 1e-7 epsilon of the normalisation sees the scale).
        with torch.no_grad():
            raw = torch.relu(nn.functional.conv2d(cam.backbone(x), cam.classifier.weight))  # (B, K, h, w)
        raw = raw / (raw.shape[-2] * raw.shape[-1])
        raw = raw - raw.amin(dim=(2, 3), keepdim=True)
        expected_maps = raw / (raw.amax(dim=(2, 3), keepdim=True) + 1e-7)
        torch.testing.assert_close(out.extras["cam_lowres"], expected_maps, atol=1e-5, rtol=0)
