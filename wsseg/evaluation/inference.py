"""Running a method over a split: the one inference path shared by validation and evaluation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsseg.data.dataset import collate, standardize_images
from wsseg.method import MethodOutput, WSSegMethod


def autocast(device: torch.device, bf16: bool) -> Any:
    """bf16 autocast on CUDA when asked; a no-op context otherwise."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of a batch to ``device`` (asynchronously from pinned memory).

    A raw image batch (integer pixels, from a dataset opened with ``standardize=False``) is standardised after
    the copy, on the device: every consumer gets float32 standardised images either way.
    """
    out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    if "image" in out and not out["image"].is_floating_point():
        out["image"] = standardize_images(out["image"])  # (B, 1, H, W) uint16 -> float32
    return out


def predict_batches(
    method: WSSegMethod,
    dataset: Dataset[dict[str, Any]],
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
    num_workers: int = 0,
) -> Iterator[tuple[dict[str, Any], MethodOutput]]:
    """Yield ``(batch, output)`` over ``dataset`` in order, in eval mode.

    Autograd is enabled only for methods that need it for their maps (``saliency_requires_grad``).
    """
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    was_training = method.training
    method.eval()
    try:
        for batch in loader:
            batch = to_device(batch, device)
            with torch.set_grad_enabled(method.saliency_requires_grad), autocast(device, bf16):
                out = method.predict(batch["image"])
            yield batch, MethodOutput(out.logits.detach().float(), out.saliency.detach().float(), out.extras)
    finally:
        method.train(was_training)


def predict_logits(
    method: WSSegMethod,
    dataset: Dataset[dict[str, Any]],
    batch_size: int,
    device: torch.device,
    bf16: bool = False,
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) image-level logits and (N, K) labels over ``dataset`` in order (maps are computed but dropped)."""
    logits, labels = [], []
    for batch, out in predict_batches(method, dataset, batch_size, device, bf16, num_workers):
        logits.append(out.logits.cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
    return np.concatenate(logits), np.concatenate(labels)
