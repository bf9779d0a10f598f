"""Window noise on the training device (wsseg.training.augment): exact on whole-pixel moves, seeded, shardable."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from wsseg import create_method
from wsseg.config import TrainConfig
from wsseg.data.dataset import MammogramDataset
from wsseg.training.augment import augment_batch, resample_windows, window_noise_params
from wsseg.training.loop import train


def _batch(b: int = 3, h: int = 24, w: int = 16) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    image = torch.randn(b, 1, h, w)
    return {
        "image": image,
        "masks": torch.rand(b, 2, h, w) > 0.7,
        "breast_mask": image[:, 0] > 0,
        "labels": torch.rand(b, 2),
    }


def test_a_window_equal_to_the_image_leaves_the_batch_unchanged() -> None:
    batch = _batch()
    windows = torch.tensor([[0.0, 24.0, 0.0, 16.0]]).repeat(3, 1)
    out = resample_windows(batch, windows)
    torch.testing.assert_close(out["image"], batch["image"], rtol=0, atol=5e-5)
    assert torch.equal(out["masks"], batch["masks"]) and torch.equal(out["breast_mask"], batch["breast_mask"])
    assert out["labels"] is batch["labels"]


def test_a_whole_pixel_shift_moves_the_pixels_and_fills_with_background() -> None:
    batch = _batch(b=2)
    # Image 0: window 3 rows down and 2 columns left; image 1: 5 rows up.
    windows = torch.tensor([[3.0, 27.0, -2.0, 14.0], [-5.0, 19.0, 0.0, 16.0]])
    out = resample_windows(batch, windows)
    img, got = batch["image"], out["image"]
    floor0, floor1 = img[0].min(), img[1].min()
    torch.testing.assert_close(got[0, :, :21, 2:], img[0, :, 3:, :14], rtol=0, atol=5e-5)
    torch.testing.assert_close(got[0, :, 21:], floor0.expand(1, 3, 16), rtol=0, atol=5e-5)
    torch.testing.assert_close(got[0, :, :, :2], floor0.expand(1, 24, 2), rtol=0, atol=5e-5)
    torch.testing.assert_close(got[1, :, 5:], img[1, :, :19], rtol=0, atol=5e-5)
    torch.testing.assert_close(got[1, :, :5], floor1.expand(1, 5, 16), rtol=0, atol=5e-5)
    assert torch.equal(out["masks"][0, :, :21, 2:], batch["masks"][0, :, 3:, :14])
    assert not out["masks"][0, :, 21:].any() and not out["breast_mask"][1, :5].any()


def test_a_half_size_window_is_a_bicubic_zoom() -> None:
    batch = _batch(b=1, h=32, w=32)
    out = resample_windows(batch, torch.tensor([[0.0, 16.0, 0.0, 16.0]]))
    zoom = F.interpolate(batch["image"][:, :, :16, :16], size=(32, 32), mode="bicubic", align_corners=False)
    # Away from the borders (where grid_sample reads background and interpolate repeats the edge) they agree.
    torch.testing.assert_close(out["image"][..., 4:28, 4:28], zoom[..., 4:28, 4:28], rtol=0, atol=1e-4)


def test_the_draws_are_seeded_bounded_and_scale_with_the_image() -> None:
    a = window_noise_params(64, seed=1, epoch=2, micro=3, shift_px=100, size_px=100, hw=(736, 480))
    assert torch.equal(a, window_noise_params(64, seed=1, epoch=2, micro=3, shift_px=100, size_px=100, hw=(736, 480)))
    assert not torch.equal(
        a, window_noise_params(64, seed=1, epoch=2, micro=4, shift_px=100, size_px=100, hw=(736, 480))
    )
    # At 736 rows, 100 paper pixels are 25; horizontal border noise is round(100 * 1920 / 2944) = 65 -> 16.25.
    shift_only = window_noise_params(256, seed=1, epoch=0, micro=0, shift_px=100, size_px=0, hw=(736, 480))
    assert torch.equal(shift_only, torch.round(shift_only))  # whole-pixel moves
    assert torch.equal(shift_only[:, 1] - shift_only[:, 0], torch.full((256,), 736.0, dtype=torch.float64))
    assert shift_only[:, 0].abs().max() == 25 and shift_only[:, 2].abs().max() == 25
    size_only = window_noise_params(256, seed=1, epoch=0, micro=0, shift_px=0, size_px=100, hw=(736, 480))
    borders = size_only - torch.tensor([0.0, 736.0, 0.0, 480.0], dtype=torch.float64)
    assert borders[:, :2].abs().max() <= 25 and borders[:, :2].abs().max() > 24
    assert borders[:, 2:].abs().max() <= 16.25 and borders[:, 2:].abs().max() > 15
    zero = window_noise_params(5, seed=1, epoch=0, micro=0, shift_px=0, size_px=0, hw=(736, 480))
    assert torch.equal(zero, torch.tensor([[0.0, 736.0, 0.0, 480.0]], dtype=torch.float64).repeat(5, 1))


def test_each_rank_gets_its_images_single_process_draws() -> None:
    batch = _batch(b=4)
    kw = {"seed": 0, "epoch": 1, "micro": 5, "shift_px": 400.0, "size_px": 400.0}
    whole = augment_batch(batch, range(4), 4, **kw)
    assert not torch.allclose(whole["image"], batch["image"])
    for rank in (0, 1):  # two processes: rank r holds images r, r + 2 (wsseg.runtime.distributed.shard)
        part = {k: v[rank::2] for k, v in batch.items()}
        got = augment_batch(part, range(rank, 4, 2), 4, **kw)
        torch.testing.assert_close(got["image"], whole["image"][rank::2], rtol=0, atol=0)
        assert torch.equal(got["masks"], whole["masks"][rank::2])


def test_training_with_window_noise_trains_on_other_images(tiny_root: Path, tmp_path: Path) -> None:
    weights = {}
    for augment in ("none", "window"):
        torch.manual_seed(123)
        method = create_method("cam", profile="tiny")
        cfg = dataclasses.replace(TrainConfig(), epochs=1, batch_size=4, device="cpu", augment=augment)
        train(
            method,
            MammogramDataset(tiny_root, "train", with_masks=False),
            MammogramDataset(tiny_root, "val", with_masks=True),
            cfg,
            tmp_path / augment,
            seed=7,
            run_config={},
            progress=False,
        )
        weights[augment] = method.state_dict()
    diffs = [(weights["none"][k].float() - weights["window"][k].float()).abs().max() for k in weights["none"]]
    assert max(diffs) > 1e-4


@pytest.mark.parametrize("value", ["-1", "1000"])
def test_noise_amplitudes_out_of_range_are_refused(value: str) -> None:
    from wsseg.config import make_run_config

    with pytest.raises(ValueError, match="train.augment_shift_px must be in"):
        make_run_config("cam", "tiny", 0, [f"train.augment_shift_px={value}"])
