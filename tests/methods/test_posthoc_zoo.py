"""Post-hoc methods outside pytorch-grad-cam's ``compute_cam_per_layer`` path, and post-hoc maps of other classifiers.

Eigen-CAM and Eigen-Grad-CAM against pytorch-grad-cam's SVD projection (with the sign correction wsseg applies),
FullGrad against pytorch-grad-cam's ``FullGrad``, SmoothGrad-CAM++ against torchcam's ``SmoothGradCAMpp``, and
Grad-CAM and friends built on GMIC's and GLAM's global network against pytorch-grad-cam on the same network.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
from posthoc_kit import SIZE, images, make, one_thread  # noqa: F401 (one_thread: a fixture)
from torch import Tensor, nn

from wsseg import create_method, list_methods
from wsseg.method import PostHocCAMMethod, capture_output, check_output, normalize_maps
from wsseg.nn.projection import principal_projection
from wsseg.registry import get_method_spec

pytestmark = pytest.mark.usefixtures("one_thread")


class Scores(nn.Module):
    """A model returning (B, K) scores, as pytorch-grad-cam and torchcam want."""

    def __init__(self, module: nn.Module, scores: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.module = module  # registered, so the libraries find the target layer and the bias layers inside it
        self.fn = scores

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def activations_and_grads(model: nn.Module, layer: nn.Module, x: Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-grad-cam's activations of ``layer`` and the gradients of the batch-summed class-k score."""
    from pytorch_grad_cam.activations_and_gradients import ActivationsAndGradients

    hooks = ActivationsAndGradients(model, [layer], None, True)
    try:
        outputs = hooks(x)
        outputs[:, k].sum().backward()
        return hooks.activations[0].numpy(), hooks.gradients[0].numpy()
    finally:
        hooks.release()
        model.zero_grad(set_to_none=True)


def our_raw_maps(method: PostHocCAMMethod, x: Tensor) -> Tensor:
    """wsseg's (B, K, h, w) maps before the ReLU, through the template's own steps."""
    with torch.set_grad_enabled(method.saliency_requires_grad):
        with capture_output(method.target_layer()) as captured:
            scores = method.scores(x)
        return method.raw_maps(x, scores, captured[0]).detach()


class Layer3Target:
    """Mixin: explain an inner layer, so that gradients vary over space (on CAM's head they are constant)."""

    def target_layer(self) -> nn.Module:
        return self.backbone.model.layer3  # type: ignore[attr-defined]


def at_layer3(method: PostHocCAMMethod) -> PostHocCAMMethod:
    inner = type(f"{type(method).__name__}Layer3", (Layer3Target, type(method)), {})(method.cfg)
    inner.load_state_dict(method.state_dict())
    return inner.eval()  # type: ignore[no-any-return]


@pytest.mark.parametrize("target", ["backbone", "layer3"])
@pytest.mark.parametrize("name", ["eigencam", "eigengradcam"])
def test_eigen_maps_equal_pytorch_grad_cam_projection(name: str, target: str) -> None:
    # pytorch-grad-cam's EigenCAM keeps numpy's arbitrary SVD sign; wsseg applies the sign correction that
    # pytorch-grad-cam ships as get_2d_projection_with_sign_correction (Seg-Eigen-CAM). So: (1) the raw projection
    # equals pytorch-grad-cam's get_2d_projection up to that sign, and (2) the map equals pytorch-grad-cam's EigenCAM
    # pipeline (ReLU, then scale_cam_image) on the sign-corrected projection. In float64; pytorch-grad-cam returns
    # float32 projections.
    pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection, get_2d_projection_with_sign_correction

    method = make(name)
    method = (at_layer3(method) if target == "layer3" else method).double()
    x = images().double()
    model = Scores(method, method.scores)
    ours = method.predict(x).extras["cam_lowres"]  # (B, K, h, w)
    ours_raw = our_raw_maps(method, x)
    for k in range(method.num_classes):
        acts, grads = activations_and_grads(model, method.target_layer(), x, k)
        projected = acts if name == "eigencam" else grads * acts  # (B, C, h, w)
        plain = torch.from_numpy(get_2d_projection(projected)).double()  # (B, h, w), numpy's sign
        corrected = get_2d_projection_with_sign_correction(projected)
        scale = float(plain.abs().max())
        torch.testing.assert_close(ours_raw[:, k].abs(), plain.abs(), rtol=0.0, atol=1e-6 * scale)
        torch.testing.assert_close(ours_raw[:, k], torch.from_numpy(corrected).double(), rtol=0.0, atol=1e-6 * scale)
        theirs = torch.from_numpy(scale_cam_image(np.maximum(corrected, 0))).double()  # (B, h, w)
        assert (ours[:, k].amax(dim=(1, 2)) > 0.5).all() and (ours_raw[:, k] < 0).any()
        torch.testing.assert_close(ours[:, k], theirs, rtol=0.0, atol=1e-5)
    if name == "eigencam":
        torch.testing.assert_close(ours[:, 0], ours[:, 1], rtol=0, atol=0)  # class-agnostic


@pytest.mark.parametrize("name", ["eigencam", "eigengradcam"])
def test_the_principal_component_sign_does_not_depend_on_the_input_sign(name: str) -> None:
    # The SVD's sign is arbitrary; the correction makes the largest absolute value positive on every call.
    x = torch.rand(4, 16, 8, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    p = principal_projection(x)
    assert torch.equal(p.amax(dim=(1, 2)) >= p.amin(dim=(1, 2)).abs(), torch.ones(4, dtype=torch.bool))
    torch.testing.assert_close(principal_projection(-x), p, rtol=0, atol=1e-12)  # -x: the same axis, flipped back


def test_fullgrad_equals_pytorch_grad_cam() -> None:
    # pytorch-grad-cam's FullGrad hooks every nn.Conv2d / nn.BatchNorm2d with a bias of the whole model and
    # returns its final, normalised map at the input size (float32, through cv2's bilinear resize, which agrees
    # with torch's to 1e-7). In float64; only pytorch-grad-cam's float32 steps remain.
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = make("fullgrad").double()
    x = images().double()
    ours = method.predict(x).saliency  # (B, K, H, W)
    model = Scores(method, method.scores)
    for k in range(method.num_classes):
        with pytorch_grad_cam.FullGrad(model=model, target_layers=[]) as cam:
            theirs = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(k) for _ in range(len(x))])
        assert ours[:, k].std() > 0.05, "a flat map would make the comparison vacuous"
        torch.testing.assert_close(ours[:, k], torch.from_numpy(theirs).float(), rtol=0.0, atol=1e-5)


def test_fullgrad_hooks_every_biased_convolution_and_batch_norm() -> None:
    from wsseg_methods.fullgrad import bias_layers

    method = make("fullgrad")
    layers = bias_layers(method)
    norms = [m for m in method.modules() if type(m) is nn.BatchNorm2d]
    assert method.classifier in layers and all(m in layers for m in norms) and len(norms) > 5
    assert not [m for m in layers if isinstance(m, nn.Conv2d) and m.bias is None]


@pytest.mark.parametrize("target", ["backbone", "layer3"])
def test_smoothgradcampp_equals_torchcam(target: str) -> None:
    # torchcam draws its noise from the global generator, one noise image per call and sample; wsseg from a
    # generator seeded with noise_seed, one noise image shared by the batch. One image at a time, with the
    # global seed set to noise_seed before each of torchcam's calls (one per class), both add the same noise.
    # torchcam's unnormalised maps (the ReLU of the weighted sum) go through wsseg's normalisation.
    torchcam = pytest.importorskip("torchcam.methods")
    method = make("smoothgradcampp")
    method = (at_layer3(method) if target == "layer3" else method).double()
    model = Scores(method, method.scores)
    x = images().double()
    for i in range(len(x)):
        xi = x[i : i + 1]
        ours = method.predict(xi).extras["cam_lowres"]  # (1, K, h, w)
        for k in range(method.num_classes):
            with torchcam.SmoothGradCAMpp(
                model, target_layer=method.target_layer(), num_samples=method.cfg.num_samples, std=method.cfg.std
            ) as extractor:
                model(xi)
                torch.manual_seed(method.cfg.noise_seed)
                (cam,) = extractor(class_idx=k, normalized=False)  # (1, h, w)
            assert ours[0, k].amax() > 0.5
            torch.testing.assert_close(ours[:, k], normalize_maps(cam[:, None])[:, 0], rtol=0.0, atol=1e-5)


def test_smoothgradcampp_noise_is_seeded() -> None:
    method = make("smoothgradcampp")
    x = images(2)
    a, b = method.predict(x).saliency, method.predict(x).saliency
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    method.cfg.noise_seed = 1
    assert not torch.equal(method.predict(x).saliency, a)


# ----- post-hoc maps of another trained method's classifier -----


def on_network(name: str, network: str) -> PostHocCAMMethod:
    torch.manual_seed(0)
    net = create_method(network, profile="tiny").eval()
    spec = get_method_spec(name)
    method = spec.cls(spec.cls.Config.tiny(), network=net).eval()  # type: ignore[call-arg]
    assert isinstance(method, PostHocCAMMethod)
    return method


REFERENCE = {"gradcam": "GradCAM", "gradcampp": "GradCAMPlusPlus", "xgradcam": "XGradCAM", "layercam": "LayerCAM"}


@pytest.mark.parametrize("network", ["gmic", "glam"])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_posthoc_maps_of_the_global_network_equal_pytorch_grad_cam(name: str, network: str) -> None:
    # The explained scores are the logit of y_global from the global network alone; pytorch-grad-cam runs on a
    # model returning those scores, with the target layer the network names (its final feature map h_g).
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    method = on_network(name, network).double()
    net = method.network
    assert net is not None and method.target_layer() is net.explained_layer()
    x = images(2).double()
    out = method.predict(x)
    check_output(out, 2, 2, SIZE)
    torch.testing.assert_close(out.logits, net.explained_logits(x).detach())
    model = Scores(net, net.explained_logits)
    for k in range(2):
        # BaseCAM.forward's steps up to compute_cam_per_layer (as test_posthoc.reference_maps): its final
        # aggregate_multi_layers would normalise a second time, and the global network's raw maps are small
        # enough (1e-6) that the epsilon 1e-7 of the first normalisation leaves their maximum near 0.9.
        with getattr(pytorch_grad_cam, REFERENCE[name])(model=model, target_layers=[net.explained_layer()]) as cam:
            targets = [ClassifierOutputTarget(k) for _ in range(len(x))]
            outputs = cam.activations_and_grads(x)
            sum(target(output) for target, output in zip(targets, outputs, strict=True)).backward(retain_graph=True)
            cam.get_target_width_height = lambda _input: None  # no cv2 resize: stay at the feature resolution
            theirs = torch.from_numpy(cam.compute_cam_per_layer(x, targets, eigen_smooth=False)[0][:, 0]).double()
        ours = out.extras["cam_lowres"][:, k]
        assert (ours.amax(dim=(1, 2)) > 0.5).any()
        torch.testing.assert_close(ours, theirs, rtol=0.0, atol=1e-5)


@pytest.mark.parametrize("name", ["scorecam", "ablationcam", "eigencam", "fullgrad", "smoothgradcampp"])
def test_every_posthoc_method_runs_on_gmic(name: str) -> None:
    method = on_network(name, "gmic")
    x = images(2)
    out = method.predict(x)
    check_output(out, 2, 2, SIZE)
    assert out.saliency.amax() > 0.5
    assert all(p.grad is None for p in method.parameters())
    # The network's own weights, under the `network.` prefix: a GMIC checkpoint loads into method.network.
    assert set(method.state_dict()) == {f"network.{k}" for k in method.network.state_dict()}  # type: ignore[union-attr]


@pytest.mark.parametrize("network", ["has", "acol", "spg", "adl", "cutmix"])
def test_gradcam_explains_every_wsol_training_method(network: str) -> None:
    method = on_network("gradcam", network)
    assert network in method.reads
    x = images(2)
    out = method.predict(x)
    check_output(out, 2, 2, SIZE)
    # The explained scores are the network's own evaluation logits (ACoL: classifier A's, its prediction).
    torch.testing.assert_close(out.logits, method.explained().predict(x).logits.detach())


def test_a_method_without_an_explained_classifier_names_the_fix() -> None:
    method = on_network("gradcam", "unet")
    with pytest.raises(NotImplementedError, match="explained_layer"):
        method.predict(images(1))


# ----- bf16 and chunking -----

POSTHOC = sorted(name for name in list_methods() if get_method_spec(name).cls.reads)


@pytest.mark.parametrize("name", POSTHOC)
def test_maps_under_bf16_autocast_stay_float32_and_close_to_fp32(name: str) -> None:
    # CPU autocast to bfloat16 exercises the CUDA bf16 path's dtype handling (SVD, ablated activations, noise,
    # bias gradients): the formulas run in float32 with autocast off, so only the network's bf16 rounding remains.
    method = make(name)
    x = images(2)
    reference = method.predict(x).saliency
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = method.predict(x)
    check_output(out, 2, 2, SIZE)
    assert out.saliency.dtype == torch.float32
    assert float((out.saliency - reference).abs().mean()) < 0.01


@pytest.mark.parametrize("name", ["scorecam", "ablationcam"])
def test_the_batch_size_knob_does_not_change_the_maps(name: str) -> None:
    method = make(name)
    x = images(2)
    whole = method.predict(x).saliency  # the tiny preset: every masked copy of the batch in one or two passes
    method.cfg.batch_size = 7  # chunks that straddle the two images
    torch.testing.assert_close(method.predict(x).saliency, whole, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="method.batch_size"):
        get_method_spec(name).cls(get_method_spec(name).cls.Config(batch_size=0))  # type: ignore[call-arg]
