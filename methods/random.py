"""Random: a seeded random map, the sanity floor of the benchmark.

Each image gets smooth noise: a ``grid_height`` x ``grid_width`` grid of uniform [0, 1) values per class, brought
to the input resolution by :func:`wsseg.nn.upsample.to_input_resolution` (bilinear, like every method's maps), and
one standard-normal logit per class. A method that scores no better than this row, or whose AUROC is no better than
its 0.5-in-expectation AUROC, produces maps unrelated to the lesions.

The noise is a function of the image alone: the generator is seeded from ``(seed, BLAKE2b hash of the image's
float32 bytes)``, so an image gets the same map in any batch, in any order, on any call, and different images get
different maps. The method has no parameters and is not trained.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from wsseg.method import Limit, MethodConfig, MethodOutput, ParameterFreeMethod, between
from wsseg.nn.upsample import to_input_resolution
from wsseg.registry import register_method


def image_seed(image: Tensor) -> int:
    """A 64-bit integer determined by the bytes of one (C, H, W) image."""
    data = image.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy().tobytes()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


@dataclass
class RandomConfig(MethodConfig):
    """Random-map hyperparameters (identical in every profile).

    Attributes:
        seed: the generator seed, combined with each image's hash.
        grid_height: rows of the low-resolution noise grid.
        grid_width: columns of the low-resolution noise grid.
    """

    seed: int = 0
    grid_height: int = 12
    grid_width: int = 8

    def limits(self, image_hw: tuple[int, int]) -> dict[str, Limit]:
        """A seed numpy takes, a grid no finer than the image."""
        from wsseg.config import SEED_RANGE, seed_ok

        return {
            "seed": (seed_ok, SEED_RANGE),
            "grid_height": (between(1, image_hw[0]), f"an integer in [1, {image_hw[0]}] at this profile"),
            "grid_width": (between(1, image_hw[1]), f"an integer in [1, {image_hw[1]}] at this profile"),
        }


@register_method("random")
class RandomMap(ParameterFreeMethod):
    """Reference floor: smooth noise and random logits, seeded by each image's bytes."""

    Config = RandomConfig
    supervision = "reference"  # learns nothing: a floor or prior row, never ranked among the weak methods

    cfg: RandomConfig

    def __init__(self, cfg: RandomConfig, num_classes: int = 2, in_chans: int = 1) -> None:
        super().__init__(cfg, num_classes, in_chans)
        if cfg.grid_height < 1 or cfg.grid_width < 1:
            raise ValueError(f"random grid must be at least 1x1, got {cfg.grid_height}x{cfg.grid_width}")

    def forward(self, images: Tensor) -> MethodOutput:
        """Images (B, C, H, W) -> per-image seeded logits (B, K) and smooth noise maps (B, K, H, W)."""
        k, gh, gw = self.num_classes, self.cfg.grid_height, self.cfg.grid_width
        noise, logits = [], []
        for image in images:
            rng = np.random.default_rng([self.cfg.seed, image_seed(image)])
            noise.append(rng.random((k, gh, gw), dtype=np.float32))  # (K, gh, gw)
            logits.append(rng.standard_normal(k, dtype=np.float32))  # (K,)
        grid = torch.from_numpy(np.stack(noise)).to(images.device)  # (B, K, gh, gw)
        saliency = to_input_resolution(grid, (int(images.shape[-2]), int(images.shape[-1])))  # (B, K, H, W)
        return MethodOutput(logits=torch.from_numpy(np.stack(logits)).to(images.device), saliency=saliency)
