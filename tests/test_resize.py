"""One resize of a frame and its K, and one calibration policy, for run, eval and training."""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.data.sample import Sample
from perception.geometry import Camera, Rig, camera_for_source, camera_pose, default_camera, plan_resize, \
    resize_frame_and_K


def _frame(w: int = 1280, h: int = 720, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))


def _camera(w: int = 1280, h: int = 720) -> Camera:
    return Camera("front", w, h, [[900.0, 0, 640.0], [0, 910.0, 355.0], [0, 0, 1]], [0, 0, 0, 0, 0],
                  camera_pose(0, 0, 1.4, 0))


def test_pipeline_eval_and_training_resize_identically() -> None:
    """The network sees the same pixels and K in perception run, eval and training (no augmentation)."""
    import torch

    from perception.eval.runner import preprocess
    from perception.pipeline.engine import Frame, Preprocess
    from perception.train.data import make_item

    img, cam, size = _frame(), _camera(), (224, 384)
    sample = Sample(images=[img], cameras=[cam])
    item = make_item(sample, 0, size, rng=None)
    pre = preprocess(sample, 0, size, dense_depth=True)
    frame = Preprocess(Rig("r", [cam]), size)(Frame(0, 0.0, ["front"], [img], [False]))
    net_img, net_cam, plan = resize_frame_and_K(img, cam, size)
    run_img = (frame.batch[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    for image in (item["image"], pre.image, run_img):
        assert np.array_equal(image, net_img)
    for K in (item["K"], pre.camera.K, frame.net_cameras[0].K, frame.intrinsics[0].numpy()):
        np.testing.assert_allclose(K, net_cam.K, rtol=1e-5, atol=1e-4)
    assert frame.resizes[0] == plan == pre.resize
    assert isinstance(frame.batch, torch.Tensor) and frame.batch.shape == (1, 3, 224, 384)


def test_resize_keeps_pixels_square_and_maps_boxes_both_ways() -> None:
    cam = _camera()
    _, net, plan = resize_frame_and_K(_frame(), cam, (224, 384))
    assert plan.sx == pytest.approx(plan.sy, rel=0.01)              # one scale: no stretch
    assert net.K[0, 0] / net.K[1, 1] == pytest.approx(cam.K[0, 0] / cam.K[1, 1], rel=0.01)
    assert plan.kept_fraction > 0.95                                # 16:9 into 384x224: a thin crop
    # a ground point projects to the same ray through either camera
    p = np.array([[3.0, -1.0, 20.0]])
    uv_src = (cam.K @ p.T).T[:, :2] / p[:, 2:]
    uv_net = (net.K @ p.T).T[:, :2] / p[:, 2:]
    # box edges are continuous coordinates (pixel i spans [i, i + 1]): a 1 px box on the point
    box_src = np.array([[uv_src[0, 0], uv_src[0, 1], uv_src[0, 0] + 1, uv_src[0, 1] + 1]])
    box_net = plan.to_network(box_src)
    np.testing.assert_allclose((box_net[0, :2] + box_net[0, 2:]) / 2 - 0.5, uv_net[0], atol=1e-6)
    np.testing.assert_allclose(plan.to_source(box_net), box_src, atol=1e-9)


def test_mismatched_size_crops_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    from perception.pipeline.engine import Frame, Preprocess

    assert plan_resize(1280, 720, (384, 384)).kept_fraction == pytest.approx(720 / 1280, rel=0.01)
    with caplog.at_level(logging.WARNING):
        Preprocess(Rig("r", [_camera()]), (384, 384))(Frame(0, 0.0, ["front"], [_frame()], [False]))
    assert "only 56% of the image is analysed" in caplog.text


def test_jsonl_boxes_are_in_source_pixels() -> None:
    from types import SimpleNamespace

    from perception.pipeline.sinks import frame_record

    plan = plan_resize(1280, 720, (224, 384))
    src_box = np.array([100.0, 200.0, 300.0, 400.0])
    obj = SimpleNamespace(camera="front", box=plan.to_network(src_box)[0], score=0.9, label="car")
    frame = SimpleNamespace(names=["front"], resizes=[plan], valid=[True], objects=[obj], tracks=[], index=0,
                            timestamp=0.0)
    np.testing.assert_allclose(frame_record(frame)["cameras"]["front"][0]["box"], src_box, atol=0.1)


def _video(path: Path, w: int = 320, h: int = 180, frames: int = 3) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    for i in range(frames):
        vw.write(cv2.cvtColor(_frame(w, h, i), cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def test_camera_policy_file_then_beside_then_default(tmp_path: Path) -> None:
    video = _video(tmp_path / "clip.mp4")
    default = camera_for_source(video, auto_mount=True)           # no lane lines: level default
    ref = default_camera(320, 180)
    np.testing.assert_allclose(default.K, ref.K)
    np.testing.assert_allclose(default.T_ego_cam, ref.T_ego_cam)
    assert default.K[0, 0] == pytest.approx(160 / np.tan(np.radians(30)))  # 60 deg horizontal FOV
    # a calibration for twice the frame size is scaled to the frames
    calib = tmp_path / "cam.yaml"
    Rig("r", [_camera(640, 360)]).save(calib)
    cam = camera_for_source(video, calib)
    assert cam.size == (320, 180) and cam.K[0, 0] == pytest.approx(450.0)
    # <video>.yaml next to the clip is used without --calib
    Rig("r", [_camera(320, 180)]).save(tmp_path / "clip.yaml")
    assert camera_for_source(video).K[0, 0] == pytest.approx(900.0)
    # a live source needs its frame size; a missing file is a clear error
    from perception.utils.image_io import DataError
    with pytest.raises(DataError, match="no such file"):
        camera_for_source(tmp_path / "nothing.mp4")
    live = camera_for_source("rtsp://127.0.0.1:9/x", frame_size=(640, 480))
    assert live.size == (640, 480)


def test_eval_and_run_use_the_same_default_camera(tmp_path: Path) -> None:
    """Without --calib, eval's video reader and run's rig get the same camera."""
    from perception.cli.run import single_camera_rig
    from perception.data.readers import VideoReader

    video = _video(tmp_path / "clip.mp4")
    run_cam = single_camera_rig(str(video), None, None, auto_mount=False).cameras[0]
    eval_cam = next(iter(VideoReader(video))).cameras[0]
    np.testing.assert_allclose(run_cam.K, eval_cam.K)
    np.testing.assert_allclose(run_cam.T_ego_cam, eval_cam.T_ego_cam)


@pytest.mark.parametrize("text", ["8192x8192", "4096x64", "100x100", "0x64", "axb", "256"])
def test_network_size_is_checked_and_capped(text: str) -> None:
    from perception.geometry.resize import parse_size

    with pytest.raises(ValueError, match="size"):
        parse_size(text)
    assert parse_size("224x384") == (224, 384) and parse_size("2048x2048") == (2048, 2048)


def test_run_refuses_a_huge_size_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from perception.cli.app import app

    video = _video(tmp_path / "clip.mp4")
    res = CliRunner().invoke(app, ["run", "--source", str(video), "--size", "8192x8192", "--out", str(tmp_path / "o")])
    assert res.exit_code != 0 and "2048" in res.output
    assert not (tmp_path / "o" / "summary.json").exists()
