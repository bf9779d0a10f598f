"""The U-Net's lesion-centred training crops (``method.train_crop``) and the loop's per-image seeds they draw from."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from wsseg_methods.unet import lesion_crops

from wsseg import create_method
from wsseg.config import TrainConfig, make_run_config
from wsseg.data.dataset import MammogramDataset
from wsseg.training.augment import image_seeds
from wsseg.training.checkpoint import load_checkpoint
from wsseg.training.loop import train

H, W, S = 60, 80, 24


def _batch() -> dict[str, Any]:
    """Four images whose pixel values encode their position; lesions in 0 (benign) and 1 (malignant), none in 2,
    and a malignant label without any mask pixel in 3 (a lesion with no location, as real data has)."""
    pos = torch.arange(H * W, dtype=torch.float32).reshape(1, H, W)
    images = torch.stack([pos + 10_000 * i for i in range(4)])  # (4, 1, H, W)
    masks = torch.zeros(4, 2, H, W, dtype=torch.bool)
    masks[0, 0, 5:8, 70:74] = True  # near a corner: the crop must slide back inside the image
    masks[1, 1, 40:44, 30:33] = True
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 1.0]])
    breast = torch.zeros(4, H, W, dtype=torch.bool)
    breast[:, :, :20] = True  # the breast: the left quarter of every image
    return {"image": images, "masks": masks, "labels": labels, "breast_mask": breast, "meta": ["m"] * 4}


def _window(crop: torch.Tensor, i: int) -> tuple[int, int]:
    """Where crop ``i`` was cut from, read from its first pixel's value."""
    first = int(crop[0, 0, 0]) - 10_000 * i
    return first // W, first % W


def test_lesion_crops_are_windows_of_the_image_holding_the_lesion() -> None:
    batch = _batch()
    out = lesion_crops(batch, image_seeds(3, 0, 0, range(4)), S, lesion_fraction=1.0)
    assert out["image"].shape == (4, 1, S, S) and out["masks"].shape == (4, 2, S, S)
    assert out["breast_mask"].shape == (4, S, S) and out["meta"] == batch["meta"]
    for i in range(4):
        y, x = _window(out["image"][i], i)
        assert 0 <= y <= H - S and 0 <= x <= W - S
        assert torch.equal(out["image"][i], batch["image"][i, :, y : y + S, x : x + S])
        assert torch.equal(out["masks"][i], batch["masks"][i, :, y : y + S, x : x + S])
        assert torch.equal(out["breast_mask"][i], batch["breast_mask"][i, y : y + S, x : x + S])
    # Lesion images: the whole lesion is a few pixels, so a crop around any of its pixels holds lesion pixels.
    assert out["masks"][0, 0].any() and out["masks"][1, 1].any()
    # Labels follow the crop, but a labelled class with no mask anywhere keeps the image's label.
    assert out["labels"].tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.0, 1.0]]


def test_crops_without_lesion_centring_sit_on_the_breast_and_labels_follow_the_crop() -> None:
    batch = _batch()
    for epoch in range(20):
        out = lesion_crops(batch, image_seeds(0, epoch, 0, range(4)), S, lesion_fraction=0.0)
        assert out["breast_mask"].flatten(1).any(dim=1).all()  # every crop is centred on a breast pixel
        present = out["masks"].flatten(2).any(dim=-1)  # (4, 2)
        assert torch.equal(out["labels"][:3], present[:3].float())
        assert out["labels"][3].tolist() == [0.0, 1.0]


def test_crops_are_a_function_of_the_seeds() -> None:
    batch = _batch()
    a = lesion_crops(batch, image_seeds(5, 1, 2, range(4)), S, 0.5)
    b = lesion_crops(batch, image_seeds(5, 1, 2, range(4)), S, 0.5)
    assert all(torch.equal(a[k], b[k]) for k in ("image", "masks", "labels", "breast_mask"))
    windows = {
        tuple(_window(lesion_crops(batch, image_seeds(5, e, 0, range(4)), S, 0.5)["image"][2], 2)) for e in range(8)
    }
    assert len(windows) > 1  # other epochs, other crops


def test_image_seeds_depend_on_the_place_in_the_global_batch_only() -> None:
    whole = image_seeds(7, 3, 11, range(6))
    assert len(set(whole)) == 6
    # Two ranks each take every second image of the global batch and draw what one process draws for it.
    assert image_seeds(7, 3, 11, [0, 2, 4]) == whole[0::2] and image_seeds(7, 3, 11, [1, 3, 5]) == whole[1::2]
    assert image_seeds(7, 3, 12, range(6)) != whole and image_seeds(8, 3, 11, range(6)) != whole


def test_bad_crops_are_clear_errors() -> None:
    batch = _batch()
    with pytest.raises(ValueError, match=f"train_crop={H + 1} exceeds the {H}x{W} images; set it to at most {H}"):
        lesion_crops(batch, image_seeds(0, 0, 0, range(4)), H + 1, 0.5)
    with pytest.raises(ValueError, match="needs the lesion masks"):
        lesion_crops({k: v for k, v in batch.items() if k != "masks"}, image_seeds(0, 0, 0, range(4)), S, 0.5)
    with pytest.raises(ValueError, match="train_crop"):
        make_run_config("unet", "tiny", 0, ["method.train_crop=500"])
    with pytest.raises(ValueError, match="crop_lesion_fraction"):
        make_run_config("unet", "tiny", 0, ["method.crop_lesion_fraction=1.5"])


def test_the_unet_trains_on_crops_and_is_evaluated_on_whole_images(tiny_root: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    cfg = make_run_config("unet", "tiny", 0, ["method.train_crop=64", "method.crop_lesion_fraction=1"])
    unet = create_method("unet", profile="tiny", train_crop=64, crop_lesion_fraction=1.0)
    assert cfg.method_config["train_crop"] == 64
    seen: list[tuple[int, ...]] = []
    original_loss = unet.loss

    def loss(out: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        seen.append(tuple(batch["image"].shape[-2:]))
        # A lesion-centred crop of an image with a lesion holds lesion pixels, and its labels say so.
        located = batch["masks"].flatten(2).any(dim=-1)
        assert torch.equal(batch["labels"] > 0, located)
        return original_loss(out, batch)

    unet.loss = loss  # type: ignore[method-assign]
    train_cfg = dataclasses.replace(
        TrainConfig(), epochs=1, batch_size=4, warmup_steps=1, checkpoint_every=1, device="cpu"
    )
    result = train(
        unet,
        MammogramDataset(tiny_root, "train", with_masks=True),
        MammogramDataset(tiny_root, "val", with_masks=True),
        train_cfg,
        tmp_path,
        seed=7,
        run_config={"test": True},
        progress=False,
    )
    assert seen and set(seen) == {(64, 64)}
    assert load_checkpoint(result.last_checkpoint)["epoch"] == 1
    unet.eval()
    image = MammogramDataset(tiny_root, "val", with_masks=True)[0]["image"][None]  # (1, 1, 184, 120)
    assert unet(image).saliency.shape == (1, 2, 184, 120)  # evaluation reads the whole image
