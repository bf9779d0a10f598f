"""method.pretrained=imagenet: timm's own hub loading, offline, from a local Hugging Face cache made here.

Every test that loads weights runs wsseg in a subprocess with ``HF_HUB_OFFLINE=1`` and ``HF_HUB_CACHE`` pointing at a
cache written by :func:`hub_cache` in the layout ``huggingface_hub`` reads (``models--timm--<name>/refs/main`` and
``snapshots/<commit>/model.safetensors``), the way a user works without internet after one download: the real
``timm.create_model(pretrained=True)`` path runs, and nothing is fetched from the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from wsseg.registry import create_method

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def hub_cache(root: Path, repo: str, state: dict[str, torch.Tensor]) -> Path:
    """Write ``state`` as ``repo``'s ``model.safetensors`` in a Hugging Face hub cache at ``root``; return the file."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True, exist_ok=True)
    (folder / "refs" / "main").write_text(COMMIT)
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def hub_state(model_name: str, seed: int) -> dict[str, torch.Tensor]:
    """A state dict in the hub's format for ``model_name`` (three input channels, 1,000 classes), seeded."""
    torch.manual_seed(seed)
    return timm.create_model(model_name, pretrained=False).state_dict()


def offline(tmp_path: Path, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code args`` with the hub offline, its cache under ``tmp_path/hub`` and an empty TORCH_HOME."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(tmp_path / "hub"),
        "HF_HOME": str(tmp_path / "hf"),
        "TORCH_HOME": str(tmp_path / "torch"),
        "WSSEG_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("TIMM_USE_OLD_CACHE", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=1800, check=False
    )


BUILD = """
import sys, torch
from wsseg.registry import create_method
method = create_method(sys.argv[1], profile=sys.argv[2], pretrained="imagenet", **eval(sys.argv[3]))
torch.save({"state": method.state_dict(), "init": method.initialisation()}, sys.argv[4])
"""


def test_cam_backbone_gets_timms_weights_with_the_stem_summed_to_one_channel(tmp_path: Path) -> None:
    state = hub_state("test_resnet", seed=1)
    hub_cache(tmp_path / "hub", "timm/test_resnet.r160_in1k", state)
    out = tmp_path / "cam.pt"
    proc = offline(tmp_path, BUILD, "cam", "tiny", "{}", str(out))
    assert proc.returncode == 0, proc.stderr
    got = torch.load(out, weights_only=True)
    assert got["init"] == {"backbone": "imagenet:test_resnet.r160_in1k", "classifier": "random"}
    loaded = {k.removeprefix("backbone.model."): v for k, v in got["state"].items() if k.startswith("backbone.")}
    # timm's in_chans=1 adaptation: the RGB filters of the stem summed; everything else as in the file, no classifier.
    torch.testing.assert_close(loaded.pop("conv1.0.weight"), state["conv1.0.weight"].sum(dim=1, keepdim=True))
    assert "fc.weight" not in loaded
    assert loaded.keys() == {k for k in state if k not in ("conv1.0.weight", "fc.weight", "fc.bias")}
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key], msg=key)
    random = create_method("cam", profile="tiny").backbone.model.state_dict()
    assert not torch.equal(random["layer1.0.conv1.weight"], loaded["layer1.0.conv1.weight"])
    # The U-Net's tu- encoder goes through smp's timm encoder, which calls timm the same way; the decoder is random.
    # (the paper preset: timm's own encoder widths, here on the test network)
    proc = offline(tmp_path, BUILD, "unet", "paper", "{'encoder': 'tu-test_resnet'}", str(out))
    assert proc.returncode == 0, proc.stderr
    got = torch.load(out, weights_only=True)
    assert got["init"] == {"net.encoder": "imagenet:test_resnet.r160_in1k", "net (rest)": "random"}
    encoder = {k.removeprefix("net.encoder.model."): v for k, v in got["state"].items() if k.startswith("net.encoder.")}
    torch.testing.assert_close(encoder["conv1.0.weight"], state["conv1.0.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(encoder["layer2.0.conv2.weight"], state["layer2.0.conv2.weight"])


def test_acol_backbone_gets_timms_weights_and_its_two_heads_stay_random(tmp_path: Path) -> None:
    # ACoL builds its own backbone (two classifier heads instead of CAM's one); it must honour method.pretrained too.
    state = hub_state("test_resnet", seed=4)
    hub_cache(tmp_path / "hub", "timm/test_resnet.r160_in1k", state)
    out = tmp_path / "acol.pt"
    proc = offline(tmp_path, BUILD, "acol", "tiny", "{}", str(out))
    assert proc.returncode == 0, proc.stderr
    got = torch.load(out, weights_only=True)
    assert got["init"] == {
        "backbone": "imagenet:test_resnet.r160_in1k",
        "classifier_a": "random",
        "classifier_b": "random",
    }
    loaded = {k.removeprefix("backbone.model."): v for k, v in got["state"].items() if k.startswith("backbone.")}
    torch.testing.assert_close(loaded["conv1.0.weight"], state["conv1.0.weight"].sum(dim=1, keepdim=True))
    torch.testing.assert_close(loaded["layer2.0.conv2.weight"], state["layer2.0.conv2.weight"])


def test_gmic_and_glam_local_resnets_load_torchvision_imagenet_weights_and_the_global_network_stays_random(
    tmp_path: Path,
) -> None:
    state = hub_state("resnet18", seed=2)
    hub_cache(tmp_path / "hub", "timm/resnet18.tv_in1k", state)
    full = "{'local_channels': (64, 128, 256, 512), 'local_stem_width': 64, 'local_depth': 18}"
    for method, extra in (("gmic", full.replace(", 'local_depth': 18", "")), ("glam", full)):
        out = tmp_path / f"{method}.pt"
        proc = offline(tmp_path, BUILD, method, "tiny", extra, str(out))
        assert proc.returncode == 0, proc.stderr
        got = torch.load(out, weights_only=True)
        assert got["init"]["local_backbone"] == "imagenet:resnet18.tv_in1k"
        assert got["init"]["global_backbone"] == "random"
        assert {v for k, v in got["init"].items() if k != "local_backbone"} == {"random"}
        local = {
            k.removeprefix("local_backbone."): v for k, v in got["state"].items() if k.startswith("local_backbone.")
        }
        # The three-channel stem is kept (official files still load); GrayInputConv sums it at forward time.
        assert local.keys() == {k for k in state if not k.startswith("fc.")}
        for key, value in local.items():
            torch.testing.assert_close(value, state[key], msg=f"{method} {key}")


def test_without_a_cached_copy_offline_the_error_says_how_to_get_the_weights(tmp_path: Path) -> None:
    proc = offline(tmp_path, BUILD, "cam", "tiny", "{}", str(tmp_path / "x.pt"))
    assert proc.returncode != 0
    message = proc.stderr.strip().splitlines()[-1]
    assert "cannot load timm's pretrained weights test_resnet.r160_in1k" in message
    assert "huggingface-cli download timm/test_resnet.r160_in1k" in message and "HF_HUB_OFFLINE=1" in message


def test_a_run_records_the_initialisation_and_a_missing_cache_is_a_one_line_error(tmp_path: Path) -> None:
    hub_cache(tmp_path / "hub", "timm/test_resnet.r160_in1k", hub_state("test_resnet", seed=3))
    run = "import sys; from wsseg.cli import main; sys.argv = ['wsseg', *sys.argv[1:]]; main()"
    args = ["run", "--method", "cam", "--profile", "tiny", "--epochs", "1", "--out", str(tmp_path / "runs"), "-q"]
    args += ["--set", "method.pretrained=imagenet", "--set", "eval.bootstrap_resamples=0", "--run-id", "pre"]
    proc = offline(tmp_path, run, *args)
    assert proc.returncode == 0, proc.stderr
    record = json.loads((tmp_path / "runs" / "pre" / "record.json").read_text())
    assert record["initialisation"] == {"backbone": "imagenet:test_resnet.r160_in1k", "classifier": "random"}
    assert record["config"]["method_config"]["pretrained"] == "imagenet"
    (tmp_path / "hub" / "models--timm--test_resnet.r160_in1k").rename(tmp_path / "gone")
    proc = offline(tmp_path, run, *args[:-2], "--run-id", "offline")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().startswith("error: cannot load timm's pretrained weights"), proc.stderr


@pytest.mark.parametrize(
    ("method", "options", "named"),
    [
        ("cam", {"profile": "quick"}, "'resnet18-w16' is wsseg's narrow resnet18"),
        ("gradcam", {"profile": "quick"}, "method.backbone=resnet18"),
        ("gmic", {"profile": "quick"}, "gmic local_backbone is a narrow ResNet-18"),
        ("glam", {"profile": "tiny"}, "glam local_backbone is a narrow ResNet-18"),
        ("unet", {"profile": "quick"}, "unet encoder 'tu-resnet18' (encoder_width=16) has no pretrained weights"),
        ("cam", {"profile": "tiny", "backbone": "resnet18-w32"}, "use method.backbone=resnet18"),
        ("cam", {"profile": "tiny", "backbone_weights": "x.pth"}, "pass one"),
    ],
)
def test_networks_without_pretrained_weights_are_refused_before_any_download(
    method: str, options: dict[str, str], named: str
) -> None:
    profile = options.pop("profile")
    with pytest.raises(ValueError) as err:
        create_method(method, profile=profile, pretrained="imagenet", **options)
    assert named in str(err.value)
    assert "method.pretrained=none" in str(err.value) or "pass one" in str(err.value)


def test_pretrained_takes_none_or_imagenet_only() -> None:
    from wsseg.config import make_run_config

    assert make_run_config("cam", "tiny").method_config["pretrained"] == "none"
    with pytest.raises(ValueError, match=r"method.pretrained must be one of \['none', 'imagenet'\]"):
        make_run_config("cam", "tiny", overrides=["method.pretrained=imagenet21k"])


def test_a_local_weights_file_is_recorded_by_its_sha256(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    torch.save(timm.create_model("test_resnet", num_classes=0, in_chans=1).state_dict(), path)
    method = create_method("cam", profile="tiny", backbone_weights=str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert method.initialisation() == {"backbone": f"file:{digest}", "classifier": "random"}
    assert create_method("gmic", profile="tiny").initialisation()["local_backbone"] == "random"
    assert create_method("uniform", profile="tiny").initialisation() == {}


def test_list_backbones_names_the_weights_imagenet_loads() -> None:
    from typer.testing import CliRunner

    from wsseg.cli import app

    result = CliRunner().invoke(app, ["list", "backbones"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line for line in result.output.splitlines()[2:]}
    assert lines["resnet18-w16"].endswith("none (narrow)") and lines["test-resnet"].endswith("test_resnet.r160_in1k")
