"""GMIC's and GLAM's forward passes hold no host synchronisation (issue 10: nothing that waits for the GPU).

A value read back to Python (``.item()``, ``.tolist()``, a tensor in an ``if``) forces the host to wait for the
device; TorchDynamo cannot trace through one without a graph break, so tracing the whole forward with
``fullgraph=True`` fails on any of them. The ``eager`` backend traces without
generating kernels, so this runs on CPU in seconds.
"""

from __future__ import annotations

import pytest
import torch

from wsseg import create_method
from wsseg.config import phantom_config


@pytest.mark.parametrize("name", ["gmic", "glam"])
@pytest.mark.parametrize("training", [False, True])
def test_the_forward_pass_traces_as_one_graph(name: str, training: bool) -> None:
    torch._dynamo.reset()
    torch.manual_seed(0)
    method = create_method(name, profile="tiny").train(training)
    size = phantom_config("tiny")
    x = torch.randn(2, 1, size.height, size.width)  # (B, 1, H, W)
    compiled = torch.compile(method.forward, fullgraph=True, backend="eager")
    with torch.set_grad_enabled(training):
        out = compiled(x)
    eager = method.forward(x)
    torch.testing.assert_close(out.logits, eager.logits)
    torch.testing.assert_close(out.saliency, eager.saliency)
    torch._dynamo.reset()
