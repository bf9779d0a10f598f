"""SmoothGrad-CAM++: Grad-CAM++ with its gradient powers averaged over noisy copies of the input.

Paper: Omeiza et al., "Smooth Grad-CAM++: An Enhanced Inference Level Visualization Technique for Deep
Convolutional Neural Network Models", arXiv:1908.01224, 2019. Original code: https://github.com/yiskw713/SmoothGradCAMplusplus.
pytorch-grad-cam has no SmoothGrad-CAM++; wsseg follows torchcam's ``SmoothGradCAMpp`` (torchcam 0.5,
https://github.com/frgfm/torch-cam) and agrees with it. With A the activations of the clean input and, for each of
``num_samples`` noisy inputs (the input plus Gaussian noise of standard deviation ``std``), g the gradient of the
class score w.r.t. the target layer's activations:

* D2 and D3, the means over the noisy inputs of g^2 and g^3;
* alpha = D2 / (2 D2 + sum_ij(D3 * A) + 1e-8) per location and channel;
* channel weights sum_ij(alpha * relu(g)), and the map relu(sum_c w_c A'_c), min-max normalised.

torchcam differs from the paper in three places, and wsseg keeps torchcam's choices so the two agree: the
numerator of alpha is D2 (the paper writes D1, the mean gradient; torchcam's "personal correction" restores
Grad-CAM++'s form), the channel sum in the denominator is of D3 * A (Grad-CAM++ multiplies D3 by sum_ij A), and
g and A' in the last step are those of the LAST noisy input, not means over the noise or the clean activations.

What wsseg changed: the noise is drawn from a generator seeded with ``noise_seed`` at every call (on the CPU, so
every device draws the same numbers) and one noise image is shared by the images of a batch, so an image's map
does not depend on the batch it is evaluated in and evaluation is deterministic (torchcam draws from the global
generator, one noise per batch item). The noise is added to the standardised image (zero mean, unit variance per
image), so ``std`` = 0.3 (torchcam's default) is 0.3 of the image's own standard deviation. Also CAM's classifier
(or another trained method's global network with ``--from-run``), the backbone output as target layer, one map per
class from the class logit, and ``to_input_resolution`` for the upsampling. Cost: ``num_samples`` forward passes
and ``num_samples`` x K backward passes per batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from wsseg.method import (
    ClassifierConfig,
    Limit,
    PostHocCAMMethod,
    WSSegMethod,
    between,
    capture_output,
    class_gradients,
    map_dtype,
)
from wsseg.registry import register_method

# torchcam's epsilon in the denominator of alpha.
EPS = 1e-8


@dataclass
class SmoothGradCAMppConfig(ClassifierConfig):
    """SmoothGrad-CAM++ hyperparameters (torchcam's defaults) beside the classifier fields.

    Attributes:
        num_samples: noisy copies of the input.
        std: standard deviation of the Gaussian noise, in units of the standardised image.
        noise_seed: seed of the noise generator, reset at every call (deterministic maps).
    """

    num_samples: int = 4
    std: float = 0.3
    noise_seed: int = 0

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """The classifier's limits, a sample count, a noise level and a seed torch's generator takes."""
        from wsseg.config import SEED_RANGE, seed_ok

        return {
            **super().limits(image_hw),
            "num_samples": (between(1, 1000), "an integer in [1, 1000]"),
            "std": (between(0, 10), "in [0, 10] (units of the standardised image)"),
            "noise_seed": (seed_ok, SEED_RANGE),
        }


def noise_images(shape: tuple[int, ...], num_samples: int, std: float, seed: int) -> list[Tensor]:
    """``num_samples`` CPU tensors of ``shape`` with N(0, std^2) entries, from a generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.normal(0.0, std, shape, generator=generator) for _ in range(num_samples)]


@register_method("smoothgradcampp")
class SmoothGradCAMpp(PostHocCAMMethod):
    """SmoothGrad-CAM++: Grad-CAM++ on gradients averaged over noisy inputs (torchcam's formulation)."""

    Config = SmoothGradCAMppConfig

    cfg: SmoothGradCAMppConfig

    def __init__(
        self, cfg: SmoothGradCAMppConfig, num_classes: int = 2, in_chans: int = 1, network: WSSegMethod | None = None
    ) -> None:
        if cfg.num_samples < 1 or not cfg.std >= 0:
            raise ValueError(
                f"smoothgradcampp needs num_samples >= 1 and std >= 0, got {cfg.num_samples} and {cfg.std}; "
                "set method.num_samples / method.std"
            )
        super().__init__(cfg, num_classes, in_chans, network)

    def raw_maps(self, images: Tensor, scores: Tensor, activations: Tensor) -> Tensor:
        """Maps (B, K, h, w) from the clean activations (B, C, h, w) and the gradients on noisy copies of ``images``."""
        dtype = map_dtype(activations)
        clean = activations.detach().to(dtype)  # (B, C, h, w)
        grad_2 = grad_3 = torch.zeros((), dtype=dtype, device=clean.device)
        shape = (1, *images.shape[1:])  # one noise image, shared by the batch
        for noise in noise_images(shape, self.cfg.num_samples, self.cfg.std, self.cfg.noise_seed):
            noisy = images + noise.to(device=images.device, dtype=images.dtype)  # (B, C_in, H, W)
            with capture_output(self.target_layer()) as captured:
                noisy_scores = self.scores(noisy)  # (B, K)
            last_acts = captured[0]
            last_grads = class_gradients(noisy_scores, last_acts).to(dtype)  # (B, K, C, h, w)
            grad_2 = grad_2 + last_grads.pow(2)
            grad_3 = grad_3 + last_grads.pow(3)
        with torch.autocast(device_type=images.device.type, enabled=False):
            grad_2, grad_3 = grad_2 / self.cfg.num_samples, grad_3 / self.cfg.num_samples
            spread = (grad_3 * clean[:, None]).sum(dim=(3, 4), keepdim=True)  # (B, K, C, 1, 1)
            alpha = grad_2 / (2 * grad_2 + spread + EPS)  # (B, K, C, h, w)
            weights = (alpha * last_grads.clamp_min(0)).sum(dim=(3, 4))  # (B, K, C)
            return torch.einsum("bkc,bchw->bkhw", weights, last_acts.detach().to(dtype))  # (B, K, h, w)
