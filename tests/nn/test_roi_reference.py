"""The reference ROI mode (the official code's host loops) computes what the batched helpers compute.

``roi_impl="reference"`` exists so that `wsseg bench --mode reference` measures the batched helpers' speedup; the
two must give the same logits, maps and patch locations (fp32, 1e-4), or the ratio would compare different work.
"""

from __future__ import annotations

import pytest
import torch

from wsseg import create_method
from wsseg.config import phantom_config
from wsseg.nn.roi import extract_crops, extract_crops_reference, paste_patches, paste_patches_reference


def test_reference_crops_and_paste_equal_the_batched_helpers() -> None:
    torch.manual_seed(0)
    images = torch.randn(3, 2, 40, 36)
    # Overlapping crops (later ones win in the paste), crops touching the borders.
    corners = torch.tensor([[[0, 0], [4, 6], [24, 20]], [[24, 20], [24, 20], [0, 20]], [[10, 3], [0, 0], [9, 4]]])
    crop = (16, 16)
    assert torch.equal(extract_crops(images, corners, crop), extract_crops_reference(images, corners, crop))
    maps = torch.rand(3, 3, 2, 4, 4, requires_grad=True)  # crop 16 -> 4x4 maps (output stride 4)
    batched = paste_patches(maps, corners, crop, (40, 36))
    reference = paste_patches_reference(maps, corners, crop, (40, 36))
    assert torch.equal(batched, reference)
    # Both are differentiable with the same gradient (the overwritten parts of earlier patches get none).
    (g_batched,) = torch.autograd.grad((batched * torch.arange(40.0)[:, None]).sum(), maps)
    (g_reference,) = torch.autograd.grad((reference * torch.arange(40.0)[:, None]).sum(), maps)
    assert torch.equal(g_batched, g_reference)


def test_reference_crops_pad_images_smaller_than_the_crop() -> None:
    images = torch.randn(2, 1, 6, 5)
    corners = torch.zeros(2, 1, 2, dtype=torch.long)
    assert torch.equal(extract_crops(images, corners, (8, 8)), extract_crops_reference(images, corners, (8, 8)))
    maps = torch.rand(2, 1, 2, 2, 2)
    pasted = paste_patches(maps, corners, (8, 8), (6, 5))
    assert torch.equal(pasted, paste_patches_reference(maps, corners, (8, 8), (6, 5)))


@pytest.mark.parametrize("profile", ["tiny", "quick"])
@pytest.mark.parametrize("name", ["gmic", "glam"])
def test_reference_mode_gives_the_same_outputs_as_the_batched_mode(name: str, profile: str) -> None:
    torch.set_num_threads(1)
    pcfg = phantom_config(profile)  # type: ignore[arg-type]
    torch.manual_seed(0)
    batched = create_method(name, profile=profile).eval()
    reference = create_method(name, profile=profile, roi_impl="reference").eval()
    reference.load_state_dict(batched.state_dict())
    # Random images with a constant background on one side, so the tissue gate (quick) has air to exclude.
    images = torch.randn(2, 1, pcfg.height, pcfg.width)
    images[..., : pcfg.width // 4] = images.min()
    with torch.no_grad():
        a, b = batched(images), reference(images)
    assert torch.equal(a.extras["patch_locations"], b.extras["patch_locations"])
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=1e-4)
    torch.testing.assert_close(a.saliency, b.saliency, rtol=0, atol=1e-4)
    for key in ("y_local", "local_maps", "patch_attns"):
        if key in a.extras:
            torch.testing.assert_close(a.extras[key], b.extras[key], rtol=0, atol=1e-4)


def test_unknown_roi_impl_names_the_choices() -> None:
    with pytest.raises(ValueError, match="batched"):
        create_method("gmic", profile="tiny", roi_impl="loop")
