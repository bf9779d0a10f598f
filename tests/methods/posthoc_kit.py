"""What the post-hoc method tests share: the image size, a tiny method built from its preset, seeded images, and a
fixture running torch on one thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from wsseg import create_method
from wsseg.method import PostHocCAMMethod

SIZE = (128, 96)  # (H, W): 8x6 feature maps at the tiny preset's stride 16


@pytest.fixture(scope="module")
def one_thread() -> Iterator[None]:
    """The models are tiny: one intra-op thread is several times faster than two on a busy 2-core CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, seed: int = 0) -> PostHocCAMMethod:
    """The post-hoc method ``name`` at the tiny preset, its weights drawn from ``seed``, in eval mode."""
    torch.manual_seed(seed)
    method = create_method(name, profile="tiny").eval()
    assert isinstance(method, PostHocCAMMethod)
    return method


def images(batch: int = 3, seed: int = 1, size: tuple[int, int] = SIZE) -> Tensor:
    """(batch, 1, H, W) standard normal images drawn from ``seed``."""
    return torch.randn(batch, 1, *size, generator=torch.Generator().manual_seed(seed))
