"""Numeric precision: bf16 autocast on CUDA when asked, fp32 everywhere else."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch


def use_bf16(precision: str, device: torch.device) -> bool:
    """bf16 autocast on CUDA unless fp32 is asked for; CPU always runs fp32."""
    if precision == "bf16" and device.type != "cuda":
        raise ValueError("precision bf16 needs a CUDA device; use precision fp32 on CPU")
    return device.type == "cuda" and precision in ("auto", "bf16")


def autocast(device: torch.device, bf16: bool) -> Any:
    """bf16 autocast on CUDA when asked; a no-op context otherwise."""
    if bf16 and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()
