"""The shared GMIC/GLAM steps against hand-computed cases (docs/methods/) and brute-force references."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wsseg.nn.roi import (
    cells_to_pixels,
    extract_crops,
    greedy_windows,
    paste_patches,
    tissue_fraction,
    tissue_mask,
    top_t_count,
    top_t_mean,
    window_cells,
)


@pytest.mark.parametrize(
    ("n", "percent", "k"),
    [
        (46 * 30, 0.02, 28),  # GMIC model 1
        (46 * 30, 0.03, 41),  # models 2 and 3
        (46 * 30, 0.05, 69),  # model 4
        (46 * 30, 0.1, 138),  # model 5
        (184 * 120, 0.03, 662),  # GLAM global maps
        (128 * 128, 0.3, 4915),  # GLAM local maps, one patch
        (10, 0.25, 2),  # round(2.5) is 2: Python rounds half to even, as the official code does
        (10, 0.01, 1),  # never fewer than one value
    ],
)
def test_top_t_count_matches_the_released_k(n: int, percent: float, k: int) -> None:
    assert top_t_count(n, percent) == k


def test_top_t_mean_averages_the_largest_values_per_class() -> None:
    maps = torch.stack([torch.arange(1380.0).view(46, 30), -torch.arange(1380.0).view(46, 30)])[None]  # (1,2,46,30)
    got = top_t_mean(maps, 0.02)
    # Class 0: the 28 largest of 0..1379 are 1352..1379; class 1: the largest of -0..-1379 are 0..-27.
    assert got[0, 0].item() == pytest.approx(np.mean(np.arange(1352, 1380)))
    assert got[0, 1].item() == pytest.approx(-np.mean(np.arange(28)))


def test_window_cells_at_the_released_settings() -> None:
    assert window_cells((256, 256), (2944, 1920), (46, 30)) == (4, 4)  # GMIC
    assert window_cells((512, 512), (2944, 1920), (184, 120)) == (32, 32)  # GLAM
    assert window_cells((64, 64), (100, 100), (3, 3)) == (2, 2)
    assert window_cells((512, 512), (100, 100), (3, 3)) == (3, 3)  # never larger than the map


def test_greedy_selection_with_suppression_on_a_crafted_map() -> None:
    # Two classes on an 8x8 map, 2x2 windows. Each class map is min-max normalised, then the classes are summed.
    m = torch.zeros(1, 2, 8, 8)
    m[0, 0, 1:4, 1:3] = 10.0  # class 0: a 3x2 block of its maximum (normalises to 1)
    m[0, 0, 7, 7] = 5.0  # and one cell at half its maximum
    m[0, 1, 5:7, 4:6] = 0.2  # class 1: a 2x2 block of its maximum (normalises to 1, whatever its scale)
    corners = greedy_windows(m, 4, (2, 2))
    # 1st: windows (1,1) and (2,1) both average 1; the first in row-major order wins.
    # 2nd: class 1's block at (5,4) averages 1.
    # 3rd: the leftover row 3 of class 0's block: window (2,1) now covers two zeroed and two live cells (0.5),
    #      overlapping the first window, and so does (3,1) (rows 3-4: two live cells), so (2,1) wins by order.
    # 4th: only the 0.5 cell at (7,7) is left: the single window covering it, (6,6), averages 0.125.
    assert corners.tolist() == [[[1, 1], [5, 4], [2, 1], [6, 6]]]


def test_greedy_selection_of_a_constant_map_has_no_nan() -> None:
    corners = greedy_windows(torch.full((2, 2, 6, 5), 0.5), 2, (2, 2))
    assert corners.tolist() == [[[0, 0], [0, 0]]] * 2  # all zeros after normalisation: the first window


def _brute_force_first_window(score: np.ndarray, wh: int, ww: int) -> tuple[int, int]:
    best, arg = -np.inf, (0, 0)
    for r, c in itertools.product(range(score.shape[0] - wh + 1), range(score.shape[1] - ww + 1)):
        v = score[r : r + wh, c : c + ww].mean()
        if v > best + 1e-12:
            best, arg = v, (r, c)
    return arg


def test_greedy_selection_returns_integer_rows_and_columns_on_glam_sized_maps() -> None:
    # The official GLAM code true-divides the flat index on current PyTorch (the spec reports (91.236, 0.0)
    # instead of (91, 21)); here the corner must be the brute-force best window, in integers.
    g = torch.Generator().manual_seed(0)
    maps = torch.rand(3, 2, 184, 120, generator=g)
    corners = greedy_windows(maps, 1, (32, 32))
    assert corners.dtype == torch.int64
    for b in range(3):
        m = maps[b].numpy()
        score = sum((m[c] - m[c].min()) / (m[c].max() - m[c].min()) for c in range(2))
        assert tuple(corners[b, 0].tolist()) == _brute_force_first_window(score, 32, 32)


def test_cell_corners_to_pixels() -> None:
    cells = torch.tensor([[[0, 0], [42, 26], [7, 3]]])
    # GMIC: round(i / 46 * 2944) = 64 i; the last window ends exactly at the border (42*64 + 256 = 2944).
    assert cells_to_pixels(cells, (46, 30), (2944, 1920), (256, 256)).tolist() == [[[0, 0], [2688, 1664], [448, 192]]]
    # GLAM: 16 i.
    assert cells_to_pixels(torch.tensor([[[152, 88]]]), (184, 120), (2944, 1920), (512, 512)).tolist() == [
        [[2432, 1408]]
    ]
    # Other sizes: a crop that would cross the border is moved back inside (round(4 / 5 * 100) = 80 -> 60).
    assert cells_to_pixels(torch.tensor([[[4, 1]]]), (5, 5), (100, 100), (40, 40)).tolist() == [[[60, 20]]]


def test_extract_crops_equals_slicing() -> None:
    g = torch.Generator().manual_seed(1)
    images = torch.randn(3, 1, 40, 30, generator=g)
    corners = torch.tensor([[[0, 0], [31, 22]], [[5, 7], [10, 1]], [[31, 0], [0, 21]]])
    crops = extract_crops(images, corners, (9, 8))
    assert crops.shape == (3, 2, 1, 9, 8)
    for b, k in itertools.product(range(3), range(2)):
        r, c = corners[b, k].tolist()
        assert torch.equal(crops[b, k], images[b, :, r : r + 9, c : c + 8])


def test_extract_crops_pads_images_smaller_than_the_crop_with_their_minimum() -> None:
    images = torch.arange(12.0).view(1, 1, 3, 4) + 5.0
    crops = extract_crops(images, torch.zeros(1, 1, 2, dtype=torch.long), (4, 5))
    expected = torch.full((4, 5), 5.0)
    expected[:3, :4] = images[0, 0]
    assert torch.equal(crops[0, 0, 0], expected)


def _paste_reference(
    maps: torch.Tensor, corners: torch.Tensor, crop: tuple[int, int], size: tuple[int, int]
) -> torch.Tensor:
    """The per-image, per-patch loop of the original description: nearest resize, then write in order."""
    out = torch.zeros(maps.shape[0], maps.shape[2], *size)
    for b in range(maps.shape[0]):
        for k in range(maps.shape[1]):
            r, c = corners[b, k].tolist()
            out[b, :, r : r + crop[0], c : c + crop[1]] = F.interpolate(maps[b, k][None], size=crop, mode="nearest")[0]
    return out


def test_paste_back_by_hand() -> None:
    patch = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 1, 2, 2)  # (B, K, C, 2, 2) for a 4x4 crop
    canvas = paste_patches(patch, torch.tensor([[[2, 4]]]), (4, 4), (8, 8))
    expected = torch.zeros(8, 8)
    expected[2:6, 4:8] = torch.tensor(np.kron([[1.0, 2.0], [3.0, 4.0]], np.ones((2, 2))), dtype=torch.float32)
    assert torch.equal(canvas[0, 0], expected)


def test_paste_back_of_overlapping_patches_matches_the_loop_and_later_patches_win() -> None:
    g = torch.Generator().manual_seed(2)
    maps = torch.rand(2, 3, 2, 4, 4, generator=g)  # (B, K, C, 4, 4) for 16x16 crops
    corners = torch.tensor([[[0, 0], [8, 8], [4, 4]], [[20, 10], [20, 14], [0, 0]]])
    got = paste_patches(maps, corners, (16, 16), (36, 30))
    assert torch.equal(got, _paste_reference(maps, corners, (16, 16), (36, 30)))
    # The third patch of image 0 overwrites the first two where they overlap.
    assert torch.equal(got[0, :, 4:20, 4:20], F.interpolate(maps[0, 2][None], size=(16, 16), mode="nearest")[0])


def test_paste_back_passes_gradients_to_the_patch_maps() -> None:
    maps = torch.rand(1, 1, 2, 4, 4, requires_grad=True)
    paste_patches(maps, torch.tensor([[[3, 5]]]), (8, 8), (20, 20)).sum().backward()
    assert maps.grad is not None and torch.equal(maps.grad, torch.full_like(maps, 4.0))  # each value covers 2x2 px


def test_tissue_fraction_counts_pixels_above_the_background_value() -> None:
    images = torch.full((1, 1, 8, 8), -0.7)  # air: the image's minimum
    images[0, 0, :, :3] = 1.0  # tissue in the first three columns
    images[0, 0, 0, 3] = 0.5
    frac = tissue_fraction(tissue_mask(images), (2, 2))  # cells of 4x4 pixels
    assert frac[0, 0].tolist() == [[(12 + 1) / 16, 0.0], [12 / 16, 0.0]]


def test_tissue_gate_silences_air_in_gmic_and_glam() -> None:
    from wsseg import create_method

    images = torch.randn(2, 1, 96, 64)
    images[..., 40:] = -5.0  # the right third is air
    for name in ("gmic", "glam"):
        torch.manual_seed(0)
        model = create_method(name, profile="tiny", tissue_gate=True).eval()
        with torch.no_grad():
            out = model(images)
        assert out.saliency[..., 48:].abs().max().item() == 0.0  # cells fully in air (map cells of 8 px)
        assert out.saliency[..., :40].amax().item() > 0.0
