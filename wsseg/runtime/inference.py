"""Running a method over a split: the one inference path shared by validation and evaluation."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wsseg.runtime.device import collate, to_device
from wsseg.runtime.precision import autocast

if TYPE_CHECKING:  # types only: the runtime floor imports no method code
    from wsseg.method import MethodOutput, WSSegMethod


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
            yield (
                batch,
                dataclasses.replace(out, logits=out.logits.detach().float(), saliency=out.saliency.detach().float()),
            )
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
