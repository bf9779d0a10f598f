"""CUDA paths (bf16 autocast, channels_last): skipped on machines without a GPU."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from wsseg import create_method
from wsseg.config import TrainConfig
from wsseg.data.dataset import MammogramDataset
from wsseg.method import check_output
from wsseg.runtime.device import collate, to_device
from wsseg.runtime.inference import predict_batches
from wsseg.training.loop import train


@pytest.mark.gpu
@pytest.mark.parametrize("augment", ["none", "window"])
def test_bf16_training_and_inference_on_cuda(tiny_root: Path, tmp_path: Path, augment: str) -> None:
    # Raw uint16 loaders, standardised (and window-noised) on the GPU, as `wsseg run` reads on CUDA.
    device = torch.device("cuda")
    method = create_method("cam", profile="tiny")
    cfg = dataclasses.replace(TrainConfig(), epochs=1, batch_size=4, warmup_steps=1, device="cuda", augment=augment)
    result = train(
        method,
        MammogramDataset(tiny_root, "train", with_masks=False, standardize=False),
        MammogramDataset(tiny_root, "val", with_masks=True, standardize=False),
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


@pytest.mark.gpu
def test_raw_batches_standardised_on_the_gpu_equal_the_workers_images(tiny_root: Path) -> None:
    std = MammogramDataset(tiny_root, "val", with_masks=True)
    raw = MammogramDataset(tiny_root, "val", with_masks=True, standardize=False)
    a = collate([std[i] for i in range(4)])
    b = to_device(collate([raw[i] for i in range(4)]), torch.device("cuda"))
    torch.testing.assert_close(b["image"].cpu(), a["image"], rtol=0, atol=2e-5)


@pytest.mark.gpu
@pytest.mark.parametrize(
    "name", ["xgradcam", "scorecam", "ablationcam", "eigencam", "eigengradcam", "fullgrad", "smoothgradcampp"]
)
def test_posthoc_maps_under_bf16_on_cuda(tiny_root: Path, name: str) -> None:
    # The maps' formulas run in float32 with autocast off; the CPU-bf16 test checks their values, this the CUDA path.
    device = torch.device("cuda")
    torch.manual_seed(0)
    method = create_method(name, profile="tiny").to(device)
    val = MammogramDataset(tiny_root, "val", with_masks=True, standardize=False)
    for batch, out in predict_batches(method, val, 4, device, bf16=True):
        check_output(out, batch["image"].shape[0], 2, tuple(batch["image"].shape[-2:]))
        assert out.saliency.dtype == torch.float32 and out.saliency.device.type == "cuda"
