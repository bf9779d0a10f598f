"""FullGrad: the input-gradient map plus the bias-gradient maps of every convolution and batch norm.

Paper: Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization", NeurIPS 2019.
Original code: https://github.com/idiap/fullgrad-saliency. wsseg follows pytorch-grad-cam's ``fullgrad_cam.py``
(https://github.com/jacobgil/pytorch-grad-cam). Per class, one backward pass of the class score gives

* the input term |dS/dx * x|, and
* for every hooked layer with output z and bias b, the bias term |b_c * dS/dz_c| per channel c,

each channel map is min-max normalised (epsilon 1e-7), upsampled bilinearly to the input size and summed over
channels, layers and the input; the sum is min-max normalised. The map is made at the input resolution, so it
has no target layer and no ``cam_lowres``.

What it hooks: the image (its gradient) and every module of the explained network that is exactly an
``nn.Conv2d`` or an ``nn.BatchNorm2d`` (pytorch-grad-cam's rule: subclasses such as timm's ``BatchNormAct2d`` are
not) and has a bias, through a gradient hook on its output. A batch norm's bias is its effective bias in eval mode,
b - running_mean * weight / sqrt(running_var + eps), as in the official code. Layers the explained scores do not
run through (GMIC's local network, GLAM's local network and the classifier heads the global prediction does not
use) get no gradient and add nothing. Linear layers' biases are not spatial and are not used, as in both
references. CAM's classifier is a biased 1x1 convolution, but its gradient is constant over space, so its term is
zero after the normalisation.

What wsseg changed: the upsampling is ``torch.nn.functional.interpolate`` (bilinear, ``align_corners=False``; cv2's
bilinear resize agrees with it to 1e-7), each layer's channels are summed before the upsampling (the same sum, as
the upsampling is linear, and one upsampled map per layer instead of one per channel), CAM's classifier (or another
trained method's global network with ``--from-run``), one map per class from the class logit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from wsseg.method import CAM_EPS, MethodOutput, PostHocCAMMethod, map_dtype, normalize_maps
from wsseg.registry import register_method

BIAS_LAYERS = (nn.Conv2d, nn.BatchNorm2d)


def bias_layers(module: nn.Module) -> list[nn.Module]:
    """The modules FullGrad hooks: exactly ``nn.Conv2d`` or ``nn.BatchNorm2d``, with a bias."""
    return [m for m in module.modules() if type(m) in BIAS_LAYERS and getattr(m, "bias", None) is not None]


def effective_bias(layer: nn.Module) -> Tensor:
    """(C,) the bias a layer adds: a convolution's own; a batch norm's in eval mode, with its running statistics."""
    bias = layer.bias
    if not isinstance(bias, Tensor):
        raise TypeError(f"{type(layer).__name__} has no bias tensor")
    if isinstance(layer, nn.BatchNorm2d):
        assert layer.running_mean is not None and layer.running_var is not None and layer.weight is not None
        scale = layer.weight / torch.sqrt(layer.running_var + layer.eps)
        return (bias - layer.running_mean * scale).detach()
    return bias.detach()


def channel_sum_map(values: Tensor, size: tuple[int, int]) -> Tensor:
    """Non-negative (B, C, h, w) -> (B, H, W): every channel min-max normalised, summed, upsampled to ``size``."""
    values = values - values.amin(dim=(2, 3), keepdim=True)
    values = values / (values.amax(dim=(2, 3), keepdim=True) + CAM_EPS)
    summed = values.sum(dim=1, keepdim=True)  # (B, 1, h, w)
    if tuple(summed.shape[-2:]) != size:
        summed = F.interpolate(summed, size=size, mode="bilinear", align_corners=False)
    return summed[:, 0]


@contextmanager
def bias_gradient_maps(layers: list[nn.Module], size: tuple[int, int], total: list[Tensor]) -> Iterator[None]:
    """While open, every backward pass through a hooked layer adds its bias term (B, H, W) to ``total[0]``.

    A forward hook registers a gradient hook on each layer's output; the gradient it receives is that of the
    output as the layer returned it, even when a later in-place op (``ReLU(inplace=True)``) changes the tensor.
    """

    def forward_hook(layer: nn.Module) -> Callable[[nn.Module, Any, Any], None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor) and output.requires_grad:
                bias = effective_bias(layer)

                def add_term(grad: Tensor) -> None:
                    with torch.autocast(device_type=grad.device.type, enabled=False):
                        dtype = map_dtype(grad)
                        term = (grad.to(dtype) * bias.to(dtype)[None, :, None, None]).abs()  # (B, C, h, w)
                        total[0] = total[0] + channel_sum_map(term, size)

                output.register_hook(add_term)  # type: ignore[no-untyped-call]  # torch: Tensor.register_hook is untyped

        return hook

    handles = [layer.register_forward_hook(forward_hook(layer)) for layer in layers]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@register_method("fullgrad")
class FullGrad(PostHocCAMMethod):
    """FullGrad: input-gradient and bias-gradient maps of every convolution and batch norm, summed."""

    def predict(self, images: Tensor) -> MethodOutput:
        """Images (B, C_in, H, W) -> the explained logits (B, K) and FullGrad maps (B, K, H, W) in [0, 1], detached.

        Works under ``torch.no_grad()``, leaves no hook and no parameter ``.grad`` behind.
        """
        size = (int(images.shape[-2]), int(images.shape[-1]))
        total = [torch.zeros((), device=images.device)]
        maps = []
        with torch.enable_grad(), bias_gradient_maps(bias_layers(self.explained()), size, total):
            x = images.detach().requires_grad_(True)
            logits = self.scores(x)  # (B, K)
            k_last = logits.shape[1] - 1
            for k in range(logits.shape[1]):
                total[0] = torch.zeros((), device=images.device)
                (grad_x,) = torch.autograd.grad(logits[:, k].sum(), x, retain_graph=k < k_last)
                with torch.autocast(device_type=images.device.type, enabled=False):
                    dtype = map_dtype(grad_x)
                    inputs = channel_sum_map((grad_x.to(dtype) * x.detach().to(dtype)).abs(), size)  # (B, H, W)
                    maps.append(inputs + total[0])
        with torch.autocast(device_type=images.device.type, enabled=False):
            saliency = normalize_maps(torch.stack(maps, dim=1)).float()  # (B, K, H, W)
        return MethodOutput(logits=logits.detach(), saliency=saliency.clamp(0.0, 1.0))
