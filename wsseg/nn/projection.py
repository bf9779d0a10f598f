"""The first-principal-component projection of feature maps behind Eigen-CAM and Eigen-Grad-CAM."""

from __future__ import annotations

import torch
from torch import Tensor


def principal_projection(x: Tensor) -> Tensor:
    """(N, C, h, w) -> (N, h, w): each location's centred C-vector projected on the first principal axis.

    As pytorch-grad-cam's ``get_2d_projection``: the (h w, C) matrix of each map, centred over the locations, is
    decomposed by SVD and projected on its first right singular vector; NaNs count as 0. A singular vector's sign is
    arbitrary, so the projection is negated when its minimum is larger in magnitude than its maximum (Seg-Eigen-CAM's
    correction, pytorch-grad-cam's ``get_2d_projection_with_sign_correction``): the result is the same on every
    device and library.
    """
    n, c, h, w = x.shape
    rows = torch.nan_to_num(x).flatten(2).transpose(1, 2)  # (N, h w, C)
    rows = rows - rows.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)  # vh: (N, min(h w, C), C)
    projection = (rows @ vh[:, 0, :, None]).view(n, h, w)  # (N, h, w)
    flip = projection.amin(dim=(1, 2)).abs() > projection.amax(dim=(1, 2)).abs()  # (N,)
    return torch.where(flip[:, None, None], -projection, projection)
