"""Choosing the device and moving batches onto it."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error that names the fix."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors along a new batch axis; ``meta`` becomes a list of dicts."""
    batch: dict[str, Any] = {"meta": [s["meta"] for s in samples]}
    for key in samples[0]:
        if key != "meta":
            batch[key] = torch.stack([s[key] for s in samples])
    return batch


def standardize_images(images: Tensor) -> Tensor:
    """(B, 1, H, W) raw pixels of any dtype -> float32 standardised per image, as :class:`MammogramDataset` does.

    Runs where ``images`` are (on the GPU for a raw CUDA batch); the mean and variance are accumulated in
    float64, so the result matches the loader's numpy standardisation to float32 rounding.
    """
    x = images.float()
    dims = (1, 2, 3)
    mean = x.mean(dim=dims, keepdim=True, dtype=torch.float64)  # (B, 1, 1, 1)
    centred = x - mean.float()
    std = centred.square().mean(dim=dims, keepdim=True, dtype=torch.float64).sqrt()  # population std, as numpy
    return centred / std.clamp_min(1e-6).float()


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch to ``device`` (asynchronously from pinned memory).

    A raw image batch (integer pixels, from a dataset opened with ``standardize=False``) is standardised after
    the copy, on the device: every consumer gets float32 standardised images either way.
    """
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if "image" in out and not out["image"].is_floating_point():
        out["image"] = standardize_images(out["image"])  # (B, 1, H, W) uint16 -> float32
    return out
