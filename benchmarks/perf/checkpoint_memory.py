"""GLAM's ``checkpoint_local`` on CPU: peak resident memory and time of one paper-preset training step.

Usage: ``python benchmarks/perf/checkpoint_memory.py 0`` (off) and ``... 1`` (on), each in its own process so the
peak RSS belongs to one setting. Joint stage (both networks train), batch 2, random weights and images.
"""

from __future__ import annotations

import resource
import sys
import time

import torch

from wsseg import create_method


def main() -> None:
    """Measure one training step with the setting given on the command line."""
    checkpoint = sys.argv[1] == "1"
    torch.manual_seed(0)
    method = create_method("glam", profile="paper", checkpoint_local=checkpoint).train()  # stage "joint"
    x = torch.randn(2, 1, 2944, 1920)  # (B, 1, H, W)
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    t0 = time.perf_counter()
    loss = method.loss(method(x), {"labels": labels})["loss"]
    loss.backward()
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(
        f"checkpoint_local={checkpoint}: step {seconds:.1f} s, peak RSS {peak:.2f} GiB (before the step {before:.2f})"
    )


if __name__ == "__main__":
    main()
