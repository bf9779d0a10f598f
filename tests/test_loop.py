"""The training loop: checkpoints, exact resume, and no masks reaching a weakly supervised method."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from wsseg import create_method
from wsseg.config import TrainConfig, make_run_config
from wsseg.data.dataset import MammogramDataset
from wsseg.training.checkpoint import load_checkpoint
from wsseg.training.loop import train


def _cfg(**kw: Any) -> TrainConfig:
    base = {"epochs": 2, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 1, "device": "cpu"}
    return dataclasses.replace(TrainConfig(), **{**base, **kw})


def _train(root: Path, run_dir: Path, cfg: TrainConfig, resume: bool = False, method: Any = None) -> Any:
    method = method or _fresh_cam()
    result = train(
        method,
        MammogramDataset(root, "train", with_masks=False),
        MammogramDataset(root, "val", with_masks=True),
        cfg,
        run_dir,
        seed=7,
        run_config={"test": True},
        resume=resume,
        progress=False,
    )
    return method, result


def _fresh_cam() -> Any:
    torch.manual_seed(123)  # identical initial weights in every call
    return create_method("cam", profile="tiny")


class _Crash(Exception):
    pass


def test_checkpoints_hold_the_full_state(tiny_root: Path, tmp_path: Path) -> None:
    _, result = _train(tiny_root, tmp_path, _cfg())
    state = load_checkpoint(result.last_checkpoint)
    for key in ("model", "optimizer", "rng", "epoch", "step", "history", "config", "best_val_auroc"):
        assert key in state
    assert state["epoch"] == 2 and state["step"] == 8 and len(state["history"]) == 2
    assert result.best_checkpoint.exists() and 1 <= result.best_epoch <= 2


@pytest.mark.parametrize("augment", ["none", "window"])
def test_resume_after_a_crash_mid_epoch_matches_an_uninterrupted_run(
    tiny_root: Path, tmp_path: Path, augment: str
) -> None:
    reference, ref_result = _train(tiny_root, tmp_path / "straight", _cfg(augment=augment))

    # Crash in the middle of epoch 2 (step 6 of 8); the loop has checkpointed after step 5.
    crashing = _fresh_cam()
    original_loss, calls = crashing.loss, {"n": 0}

    def loss(out: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        calls["n"] += 1
        if calls["n"] == 6:
            raise _Crash
        return original_loss(out, batch)

    crashing.loss = loss  # type: ignore[method-assign]
    with pytest.raises(_Crash):
        _train(tiny_root, tmp_path / "crash", _cfg(augment=augment), method=crashing)
    state = load_checkpoint(tmp_path / "crash" / "last.pt")
    assert (state["epoch"], state["micro"], state["step"]) == (1, 1, 5)

    resumed, res_result = _train(tiny_root, tmp_path / "crash", _cfg(augment=augment), resume=True)
    for (name, a), b in zip(reference.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=f"{name} differs after resume")
    assert [h["epoch"] for h in res_result.history] == [1, 2]
    assert res_result.history[-1]["val_auroc"] == pytest.approx(ref_result.history[-1]["val_auroc"])


def test_a_weak_method_never_sees_training_masks(tiny_root: Path, tmp_path: Path) -> None:
    method = create_method("cam", profile="tiny")
    seen_keys: set[str] = set()
    original_loss = method.loss

    def loss(out: Any, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        seen_keys.update(batch)
        return original_loss(out, batch)

    method.loss = loss  # type: ignore[method-assign]
    _train(tiny_root, tmp_path, _cfg(epochs=1), method=method)
    assert "labels" in seen_keys and "masks" not in seen_keys


def test_the_loop_refuses_masks_for_a_weak_method(tiny_root: Path, tmp_path: Path) -> None:
    method = create_method("cam", profile="tiny")
    with pytest.raises(RuntimeError, match="masks"):
        train(
            method,
            MammogramDataset(tiny_root, "train", with_masks=True),
            MammogramDataset(tiny_root, "val", with_masks=True),
            _cfg(epochs=1),
            tmp_path,
            seed=0,
            run_config={},
            progress=False,
        )


def test_run_config_overrides_are_checked() -> None:
    cfg = make_run_config("cam", "tiny", 0, ["train.lr=0.01", "method.output_stride=32", "train.clip_grad=none"])
    assert cfg.train.lr == 0.01 and cfg.method_config["output_stride"] == 32 and cfg.train.clip_grad is None
    with pytest.raises(ValueError, match="valid fields"):
        make_run_config("cam", "tiny", 0, ["train.nope=1"])
    with pytest.raises(ValueError, match="must be int"):
        make_run_config("cam", "tiny", 0, ["train.epochs=two"])
    with pytest.raises(ValueError, match="one of"):
        make_run_config("cam", "tiny", 0, ["train.device=tpu"])


def test_the_unet_ceiling_is_evaluated_at_its_last_epoch(tiny_root: Path, tmp_path: Path) -> None:
    # Its image AUROC is a by-product of segmentation, so validation AUROC must not pick an earlier epoch.
    torch.manual_seed(0)
    unet = create_method("unet", profile="tiny")
    result = train(
        unet,
        MammogramDataset(tiny_root, "train", with_masks=True),
        MammogramDataset(tiny_root, "val", with_masks=True),
        _cfg(epochs=3),
        tmp_path,
        seed=7,
        run_config={"test": True},
        progress=False,
    )
    assert result.best_epoch == 3 and load_checkpoint(result.best_checkpoint)["epoch"] == 3
    last = load_checkpoint(result.last_checkpoint)["model"]
    best = load_checkpoint(result.best_checkpoint)["model"]
    assert all(torch.equal(last[k], best[k]) for k in last)
    # Validation only picks the best checkpoint: the epochs that cannot provide it are not validated.
    aurocs = [h["val_auroc"] for h in result.history]
    assert [math.isnan(a) for a in aurocs] == [True, True, False]
    assert result.best_val_auroc == aurocs[-1]


def test_every_epoch_that_may_be_the_best_is_validated(tiny_root: Path, tmp_path: Path) -> None:
    _, result = _train(tiny_root, tmp_path, _cfg(epochs=3))
    assert len(result.history) == 3 and all(math.isfinite(h["val_auroc"]) for h in result.history)
    assert result.best_val_auroc == max(h["val_auroc"] for h in result.history)
