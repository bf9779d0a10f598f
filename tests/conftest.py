"""Shared fixtures: a tiny phantom dataset built once per test session, and the test device."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from wsseg.config import phantom_config
from wsseg.data.dataset import prepare_phantom

TINY_COUNTS = {"train": 16, "val": 8, "test": 8}


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device tests run on: $WSSEG_TEST_DEVICE, CPU by default."""
    return torch.device(os.environ.get("WSSEG_TEST_DEVICE", "cpu"))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide dataset cache, so tests never touch the user's cache."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_root(cache_dir: Path) -> Path:
    """The tiny-profile phantom (16/8/8 images at 184x120), prepared once."""
    return prepare_phantom(phantom_config("tiny"), 0, TINY_COUNTS, cache_dir, workers=2, progress=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests where there is no CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One line with the size of the bad-input suite (tests/test_bad_inputs.py) and how its cases ended."""
    outcomes: dict[str, str] = {}
    for key in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(key, []):
            nodeid = getattr(report, "nodeid", "")
            if "test_bad_inputs.py::" in nodeid and outcomes.get(nodeid) not in ("failed", "error"):
                outcomes[nodeid] = key
    if outcomes:
        counts = {k: sum(v == k for v in outcomes.values()) for k in ("passed", "failed", "error", "skipped")}
        detail = ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        terminalreporter.write_line(f"bad-input suite: {len(outcomes)} cases ({detail})")
