"""`perception adapt`: the footage split, the prepared folders, exact resume and the end-to-end run
on the shared dashcam clip (no labels: teacher pseudo-labels + self-supervised depth)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from perception.adapt import AdaptOptions, adapt
from perception.adapt.footage import plan_footage
from perception.adapt.report import ground_depth
from perception.geometry.source_camera import default_camera


# ----------------------------------------------------------------------------- the split
@pytest.mark.parametrize("frames,fps", [(221, 25.0), (38, 25.0), (108_000, 30.0)])
def test_heldout_blocks_never_feed_training(frames: int, fps: float) -> None:
    plan = plan_footage(frames, fps, max_frames=2000, max_heldout=300)
    held_blocks = {plan.block_of(i) for i in plan.heldout}
    assert held_blocks and all(plan.is_heldout_block(b) for b in held_blocks)
    for c in plan.train_centres:  # every frame of every training triplet lies in a training block
        for i in (c - plan.gap, c, c + plan.gap):
            assert 0 <= i < frames and not plan.is_heldout_block(plan.block_of(i))
    assert len(plan.train_centres) <= 2000 and len(plan.heldout) <= 300
    assert len(held_blocks) >= 1 and plan.blocks >= plan.holdout_every


def test_long_footage_is_sampled_evenly_and_in_order() -> None:
    plan = plan_footage(108_000, 30.0, max_frames=500)   # an hour at 30 fps
    c = np.array(plan.train_centres)
    assert len(c) == 500 and np.all(np.diff(c) > 0)
    assert c[0] < 108_000 * 0.05 and c[-1] > 108_000 * 0.95   # spread over the whole hour
    assert plan.blocks == 60 and plan.gap == 3                 # a minute per block, 0.1 s between triplet frames


def test_too_short_footage_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too few"):
        plan_footage(12, 25.0)
    with pytest.raises(ValueError, match="holdout"):
        plan_footage(500, 25.0, holdout=1.5)


def test_ground_depth_of_a_level_camera() -> None:
    cam = default_camera(640, 360, height_m=1.5)
    g = ground_depth(cam)
    v = 300                                    # a row below the horizon (cy = 179.5)
    expected = cam.fx * 1.5 / (v - cam.K[1, 2])
    assert g[v, 320] == pytest.approx(expected, rel=1e-6)
    assert np.isinf(g[100, 320])               # above the horizon: no ground


# ----------------------------------------------------------------------------- end to end
def _opts(shared: Path, out: Path, **kw) -> AdaptOptions:
    base = dict(source=str(shared / "dashcam" / "solidWhiteRight.mp4"), out=out, model="rep-s", steps=4, batch=2,
                max_frames=10, max_heldout=6, synth_frames=4, teacher=str(shared / "weights" / "yolox_nano.onnx"),
                ckpt_minutes=60.0)
    base.update(kw)
    return AdaptOptions(**base)


@pytest.mark.slow
def test_adapt_end_to_end_and_exact_resume(shared_data: Path, tmp_path: Path) -> None:
    from perception.nn import resolve_model
    from perception.train.sources import resolve_video

    result = adapt(_opts(shared_data, tmp_path / "once"))
    out = tmp_path / "once"
    # the footage: training frames with teacher boxes, triplets listed, held-out frames apart
    footage = json.loads((out / "footage" / "footage.json").read_text())
    assert footage["train_frames"] == 10 and footage["heldout_frames"] == 6 and footage["triplets"] == 10
    videos = resolve_video([f"video:{out / 'footage' / 'triplets'}"], (224, 416))
    assert videos[0].triplet_indices() == [(3 * k, 3 * k + 1, 3 * k + 2) for k in range(10)]
    labels = [json.loads(p.read_text()) for p in sorted((out / "footage" / "train").glob("*/labels.json"))]
    assert sum(len(lab["boxes2d"][0]["boxes"]) for lab in labels) > 0   # the teacher found cars

    # the report: before and after on the held-out frames, with the headline figures
    report = json.loads((out / "report.json").read_text())
    for side in ("before", "after"):
        ta = report[side]["teacher_agreement"]
        assert report[side]["frames"] == 6 and ta["images"] == 6
        assert 0.0 <= ta["car_found_rate"] <= 1.0
        assert report[side]["road_depth"]["frames"] > 0
    assert "| figure | before | after |" in (out / "report.md").read_text()

    # the model: what `run --model` loads, and not the shipped weights any more
    adapted, shipped = resolve_model(result.model_path), resolve_model("rep-s")
    diff = max((a.float() - b.float()).abs().max().item()
               for a, b in zip(adapted.state_dict().values(), shipped.state_dict().values()) if a.is_floating_point())
    assert diff > 0

    # stopped after 2 steps and resumed: the same weights as the uninterrupted run
    opts = _opts(shared_data, tmp_path / "resumed")
    assert adapt(opts, stop_after=2) is None
    with pytest.raises(ValueError, match="--resume"):
        adapt(opts)
    resumed = adapt(opts, resume=True)
    a = resolve_model(resumed.model_path).state_dict()
    b = adapted.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)


@pytest.mark.slow
def test_adapted_model_runs_in_perception_run(shared_data: Path, tmp_path: Path) -> None:
    from perception.cli import app

    result = adapt(_opts(shared_data, tmp_path / "a", steps=2, synth_frames=0))
    res = CliRunner().invoke(app, ["run", "--source", str(shared_data / "dashcam" / "solidWhiteRight.mp4"),
                                   "--calib", str(tmp_path / "a" / "camera.yaml"), "--model", str(result.model_path),
                                   "--max-frames", "3", "--no-render", "--out", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["frames"] == 3


def test_adapt_cli_rejects_bad_options(tmp_path: Path) -> None:
    from perception.cli import app

    res = CliRunner().invoke(app, ["adapt", "--source", "x.mp4", "--out", str(tmp_path), "--holdout", "1.2"])
    assert res.exit_code == 1 and "--holdout" in res.output
    res = CliRunner().invoke(app, ["adapt", "--source", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o"),
                                   "--teacher", str(tmp_path / "none.onnx")])
    assert res.exit_code == 1 and "teacher" in res.output
    res = CliRunner().invoke(app, ["adapt", "--source", "x.mp4", "--out", str(tmp_path), "--blur-consistency", "-1"])
    assert res.exit_code == 1 and "--blur-consistency" in res.output


def test_adapt_blur_consistency_reaches_the_training_config(tmp_path: Path) -> None:
    from perception.adapt.adapter import train_config
    from perception.adapt.footage import Footage

    footage = Footage(tmp_path, default_camera(1280, 720), train_frames=100, triplets=50, heldout_frames=20,
                      source="x.mp4", plan={})
    cfg = train_config(AdaptOptions(source="x.mp4", out=tmp_path, blur_consistency=0.5), "rep-s", "init.safetensors",
                       footage, tmp_path / "synth", (224, 384))
    assert cfg.loss.blur_consistency == 0.5 and cfg.loss.blur_consistency_max_depth == 80.0
    assert train_config(AdaptOptions(source="x.mp4", out=tmp_path), "rep-s", "init.safetensors", footage, None,
                        (224, 384)).loss.blur_consistency == 0.0
