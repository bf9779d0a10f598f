"""Post-hoc maps on any trained classifier: `wsseg run --method gradcam --from-run <a cam, gmic, glam or has run>`.

Real tiny-profile runs: the post-hoc run explains the source run's classifier (its own CAM classifier for a CAM
run, the global network for GMIC and GLAM, the CAM classifier HaS trained), records which, is rebuilt from its own
folder, and is labelled ``gradcam@<method>`` in leaderboards; sources it cannot read are refused with the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from wsseg.cli import app
from wsseg.config import RunConfig
from wsseg.pipelines.run import build_method, gallery_for_run

runner = CliRunner()
SOURCES = ("cam", "gmic", "glam", "has")
FAST = ["--set", "eval.bootstrap_resamples=0"]  # no confidence intervals: not what these tests are about


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Path:
    """One tiny run of each source method (one epoch each) and of the parameter-free uniform map."""
    out = tmp_path_factory.mktemp("sources")
    for method in (*SOURCES, "uniform"):
        args = ["run", "--method", method, "--run-id", method, "--epochs", "1", "--profile", "tiny", *FAST]
        result = runner.invoke(app, [*args, "--out", str(out), "--cache-dir", str(cache_dir), "-q"])
        assert result.exit_code == 0, result.output
    return out


def posthoc(trained: Path, cache_dir: Path, method: str, source: str) -> tuple[int, str, Path]:
    run_id = f"{method}-on-{source}"
    args = [
        "run",
        "--method",
        method,
        "--from-run",
        str(trained / source),
        "--run-id",
        run_id,
        "--profile",
        "tiny",
        *FAST,
    ]
    result = runner.invoke(app, [*args, "--out", str(trained), "--cache-dir", str(cache_dir), "-q"])
    return result.exit_code, result.output, trained / run_id


@pytest.mark.parametrize("source", SOURCES)
def test_gradcam_explains_the_classifier_of_the_source_run(trained: Path, cache_dir: Path, source: str) -> None:
    code, output, run_dir = posthoc(trained, cache_dir, "gradcam", source)
    assert code == 0, output
    record = json.loads((run_dir / "record.json").read_text())
    assert record["training"]["from_run"] == str(trained / source) and record["training"]["history"] == []
    assert "no training" in output
    label = "gradcam" if source == "cam" else f"gradcam@{source}"
    assert f"\n{label} on phantom" in output
    cfg = RunConfig.read(run_dir / "config.json")
    # The training settings are those that made the weights (1 epoch, not the tiny profile's 2): the budget.
    assert cfg.train == RunConfig.read(trained / source / "config.json").train and cfg.train.epochs == 1
    if source == "cam":  # its own classifier: CAM's weights load into the post-hoc method itself
        assert record["explains"] is None and cfg.explains is None
    else:
        assert record["explains"] == source and cfg.explains is not None and cfg.explains["method"] == source
        assert cfg.explains["method_config"] == RunConfig.read(trained / source / "config.json").method_config
    # The run folder rebuilds the method: the explained network's weights are those of the source run.
    method = build_method(cfg)
    method.load_state_dict(torch.load(run_dir / "best.pt", weights_only=True)["model"])
    source_state = torch.load(trained / source / "best.pt", weights_only=True)["model"]
    prefix = "" if source == "cam" else "network."
    for key, value in source_state.items():
        torch.testing.assert_close(method.state_dict()[prefix + key], value, rtol=0, atol=0)
    assert gallery_for_run(run_dir, cache_dir=str(cache_dir)).is_file()  # what `wsseg gallery --run` does


def test_the_leaderboard_labels_rows_with_the_explained_classifier(trained: Path, cache_dir: Path) -> None:
    for source in ("cam", "gmic"):
        code, output, _ = posthoc(trained, cache_dir, "xgradcam", source)
        assert code == 0, output
    runs = [trained / name for name in ("cam", "gmic", "xgradcam-on-cam", "xgradcam-on-gmic")]
    result = runner.invoke(app, ["leaderboard", *map(str, runs), "--out", str(trained / "lb"), "--format", "md"])
    assert result.exit_code == 0, result.output
    # One table (the post-hoc runs have their sources' training budget), beside its lesion breakdown.
    (md,) = (p for p in (trained / "lb").glob("*.md") if not p.name.endswith("-lesions.md"))
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in md.read_text().splitlines()]
    rows = {r[1]: r for r in cells if len(r) > 3}
    for row in ("cam", "gmic", "xgradcam", "xgradcam@gmic"):
        assert rows[row][2:4] == ["weak", "1"], md.read_text()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("uniform", "gradcam explains runs of cam, has, cutmix, adl, acol, spg, gmic, glam"),
        ("gradcam-on-gmic", "pass the gmic run itself"),
    ],
)
def test_sources_a_posthoc_method_cannot_read_are_refused(
    trained: Path, cache_dir: Path, source: str, message: str
) -> None:
    if source == "gradcam-on-gmic" and not (trained / source / "record.json").is_file():
        assert posthoc(trained, cache_dir, "gradcam", "gmic")[0] == 0
    code, output, _ = posthoc(trained, cache_dir, "gradcam", source)
    assert code == 2 and message in " ".join(output.split()), output


def test_a_saved_explains_is_checked_when_the_config_is_read() -> None:
    from wsseg.config import make_run_config
    from wsseg.registry import make_config

    saved = make_run_config("gradcam", "tiny").to_dict()
    gmic = make_config("gmic", "tiny").to_dict()
    assert RunConfig.from_dict({**saved, "explains": {"method": "gmic", "method_config": gmic}}).explains == {
        "method": "gmic",
        "method_config": gmic,
    }
    older = {k: v for k, v in saved.items() if k != "explains"}  # configs saved before the field existed
    assert RunConfig.from_dict(older).explains is None
    for explains, message in [
        ("gmic", "explains must be null or an object with the keys method and method_config"),
        ({"method": "unet", "method_config": {}}, "explains.method is 'unet', which gradcam cannot explain"),
        ({"method": "gmic", "method_config": {"num_crops": "6"}}, "explains.method_config.num_crops must be int"),
        ({"method": "gmic", "method_config": {"num_crops": 0}}, "the gmic classifier: method.num_crops must be"),
    ]:
        with pytest.raises(ValueError, match=message):
            RunConfig.from_dict({**saved, "explains": explains})
    cam = make_run_config("cam", "tiny").to_dict()
    with pytest.raises(ValueError, match="cam cannot explain; it is not a post-hoc method"):
        RunConfig.from_dict({**cam, "explains": {"method": "gmic", "method_config": gmic}})
