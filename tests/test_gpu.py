"""CUDA paths (bf16 autocast, channels_last): skipped on machines without a GPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from wsseg import create_method
from wsseg.config import TrainConfig
from wsseg.data.dataset import MammogramDataset
from wsseg.evaluation.inference import predict_batches
from wsseg.method import check_output
from wsseg.training.loop import train


@pytest.mark.gpu
def test_bf16_training_and_inference_on_cuda(tiny_root: Path, tmp_path: Path) -> None:
    device = torch.device("cuda")
    method = create_method("cam", profile="tiny")
    cfg = dataclasses.replace(TrainConfig(), epochs=1, batch_size=4, warmup_steps=1, device="cuda")
    result = train(
        method,
        MammogramDataset(tiny_root, "train", with_masks=False),
        MammogramDataset(tiny_root, "val", with_masks=True),
        cfg,
        tmp_path,
        seed=0,
        run_config={},
        progress=False,
    )
    assert result.history and torch.isfinite(torch.tensor(result.history[0]["train_loss"]))
    assert next(method.parameters()).device.type == "cuda"
    val = MammogramDataset(tiny_root, "val", with_masks=True)
    for batch, out in predict_batches(method, val, 4, device, bf16=True):
        check_output(out, batch["image"].shape[0], 2, tuple(batch["image"].shape[-2:]))
        assert out.saliency.dtype == torch.float32 and out.saliency.device.type == "cuda"
