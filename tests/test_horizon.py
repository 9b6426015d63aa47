"""Horizon row (camera pitch) from lane lines: drawn roads with a known vanishing point, and
the shared dashcam stills against the hand-measured vanishing point."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from perception.cli import app
from perception.geometry import Rig
from perception.geometry.horizon import estimate_horizon_row, horizon_row_in_image

ROOT = Path(__file__).resolve().parents[1]


def road_image(vp_row: float, vp_col: float = 640.0, w: int = 1280, h: int = 720, dashed: bool = False,
               seed: int = 0) -> np.ndarray:
    """A grey road with a solid yellow left line and a white right line meeting at (vp_col, vp_row)."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 90, np.uint8)
    img[: int(vp_row)] = (140, 170, 210)                                     # sky
    img = np.clip(img.astype(int) + rng.integers(-8, 9, img.shape), 0, 255).astype(np.uint8)
    for x_bottom, colour in ((150.0, (230, 200, 40)), (1150.0, (240, 240, 240))):
        for t0 in np.arange(0.0, 0.97, 0.08 if dashed else 0.97):
            t1 = t0 + (0.05 if dashed else 0.97)
            p0 = (x_bottom + (vp_col - x_bottom) * t0, h - 1 + (vp_row - h + 1) * t0)
            p1 = (x_bottom + (vp_col - x_bottom) * t1, h - 1 + (vp_row - h + 1) * t1)
            cv2.line(img, tuple(int(round(v)) for v in p0), tuple(int(round(v)) for v in p1), colour, 6)
    return img


@pytest.mark.parametrize("vp_row", [330.0, 388.0, 424.0])
@pytest.mark.parametrize("dashed", [False, True])
def test_vanishing_row_of_a_drawn_road(vp_row: float, dashed: bool) -> None:
    row = horizon_row_in_image(road_image(vp_row, dashed=dashed))
    assert row == pytest.approx(vp_row, abs=3.0)


def test_median_over_frames_ignores_an_outlier_frame() -> None:
    frames = [road_image(424.0, seed=i) for i in range(4)] + [road_image(340.0, seed=9)]
    est = estimate_horizon_row(frames)
    assert est.row == pytest.approx(424.0, abs=3.0)
    assert (est.images_used, est.images_seen) == (5, 5)


def test_no_lane_lines_is_a_clear_error() -> None:
    blank = np.full((360, 640, 3), 100, np.uint8)
    assert horizon_row_in_image(blank) is None
    with pytest.raises(ValueError, match="no lane lines found in 2 image"):
        estimate_horizon_row([blank, blank])


def test_shared_dashcam_stills_agree_with_the_hand_measurement(shared_data: Path) -> None:
    cam = Rig.load(ROOT / "data" / "rigs" / "dashcam_1280x720.yaml")[0]
    stills = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
              for p in sorted((shared_data / "dashcam" / "test_images").glob("*.jpg"))]
    est = estimate_horizon_row(stills, cam)
    # lane lines picked by hand (undistorted): ~418 in test1.jpg, ~430 in test_video.mp4 frame 0
    assert 415 <= est.row <= 432 and est.images_used >= 5 and est.spread < 8


def test_calibrate_horizon_from_sets_the_pitch(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cam.yaml"
    res = CliRunner().invoke(app, ["calibrate", "--images", str(shared_data / "dashcam" / "camera_cal" / "*.jpg"),
                                   "--out", str(out), "--horizon-from",
                                   str(shared_data / "dashcam" / "test_images" / "*.jpg")])
    assert res.exit_code == 0, res.output
    assert "from the lane lines of 6 of 6 frames" in res.output
    T = Rig.load(out)[0].T_ego_cam
    assert T[2, 2] > 0.02          # the optical axis points slightly up (horizon below cy)


def _road_video(path: Path, vp_row: float, frames: int = 8) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (1280, 720))
    for i in range(frames):
        vw.write(cv2.cvtColor(road_image(vp_row, dashed=bool(i % 2), seed=i), cv2.COLOR_RGB2BGR))
    vw.release()
    return path


def _drawn_road_height(vp_row: float, lane_width: float = 3.5, row: float = 662.0) -> float:
    """Camera height at which road_image's ego lane is ``lane_width`` wide between the lines'
    inner edges (6 px lines from x 150 and 1150 at the bottom row to x 640 at the vanishing point;
    a level pinhole sees a ground point X m aside at x - cx = X (y - vp_row) / h)."""
    t = (719.0 - row) / (719.0 - vp_row)
    x_left, x_right = 150 + (640 - 150) * t + 3, 1150 - (1150 - 640) * t - 3
    return lane_width * (row - vp_row) / (x_right - x_left)


def estimate_mount_from_lanes(path: str, camera, **kwargs):
    """The lane-measured mount over the frames camera_for_source samples from a file."""
    from perception.geometry.horizon import estimate_mount
    from perception.geometry.source_camera import MOUNT_FRAMES, MOUNT_SCAN_FRAMES
    from perception.utils.video_io import FileFrames

    return estimate_mount(FileFrames(path).sample(MOUNT_FRAMES, MOUNT_SCAN_FRAMES), camera, **kwargs)


def test_auto_mount_of_an_uncalibrated_video(tmp_path: Path) -> None:
    from perception.geometry import default_camera

    cam = default_camera(1280, 720)                  # horizon at cy = 359.5 when level
    mount = estimate_mount_from_lanes(str(_road_video(tmp_path / "up.mp4", 424.0)), cam)
    assert mount is not None
    assert mount.pitch_deg == pytest.approx(np.degrees(np.arctan2(359.5 - 424.0, cam.K[1, 1])), abs=0.2)
    assert mount.pitch_deg < 0                       # horizon below the centre: looking up
    assert mount.height_m == pytest.approx(_drawn_road_height(424.0), rel=0.05)     # ~0.82 m
    tilted = default_camera(1280, 720, pitch_deg=mount.pitch_deg)
    assert tilted.T_ego_cam[2, 2] > 0.05             # the optical axis points up, as in the rig files
    narrow = estimate_mount_from_lanes(str(tmp_path / "up.mp4"), cam, lane_width_m=2.8)
    assert narrow.height_m == pytest.approx(mount.height_m * 2.8 / 3.5, rel=1e-6)


def test_auto_mount_refuses_what_it_cannot_trust(tmp_path: Path) -> None:
    from perception.geometry import camera_for_source, default_camera
    from perception.utils.image_io import DataError

    cam = default_camera(1280, 720)
    blank = tmp_path / "blank.mp4"
    vw = cv2.VideoWriter(str(blank), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (1280, 720))
    for _ in range(5):
        vw.write(np.full((720, 1280, 3), 100, np.uint8))
    vw.release()
    assert estimate_mount_from_lanes(str(blank), cam) is None                       # no lane lines
    assert estimate_mount_from_lanes(str(_road_video(tmp_path / "steep.mp4", 650.0)), cam) is None  # > 8 deg
    with pytest.raises(DataError, match="missing.mp4"):                             # a clear error
        camera_for_source(tmp_path / "missing.mp4")
    # a lane so narrow that the camera would be 0.5 m high: pitch kept, height not trusted
    low = estimate_mount_from_lanes(str(_road_video(tmp_path / "low.mp4", 424.0)), cam, lane_width_m=2.0)
    assert low is not None and low.height_m is None


def test_run_without_calib_measures_the_mount(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    video = _road_video(tmp_path / "road.mp4", 424.0, frames=3)
    args = ["run", "--source", str(video), "--model", "rep-n", "--size", "64x96", "--no-render", "--out"]
    with caplog.at_level(logging.WARNING):
        res = CliRunner().invoke(app, args + [str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "(from the lane width), tilted 3.3 deg up (from the lane lines)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        res = CliRunner().invoke(app, args + [str(tmp_path / "b"), "--no-auto-mount"])
    assert res.exit_code == 0, res.output
    assert "1.40 m above the ground (assumed), looking straight ahead" in caplog.text


def test_shared_dashcam_height_from_the_lane_width(shared_data: Path) -> None:
    """The rig's 1.2 m was measured by hand on the same stills (data/rigs/make_rigs.py)."""
    from perception.geometry.horizon import camera_height_from_lanes

    cam = Rig.load(ROOT / "data" / "rigs" / "dashcam_1280x720.yaml")[0]
    stills = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB)
              for p in sorted((shared_data / "dashcam" / "test_images").glob("*.jpg"))]
    h = camera_height_from_lanes(cam, estimate_horizon_row(stills, cam).observations)
    assert h is not None and h.images_used >= 5 and 1.05 <= h.height <= 1.3


def test_calibrate_lane_width_sets_the_height(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "cam.yaml"
    res = CliRunner().invoke(app, ["calibrate", "--images", str(shared_data / "dashcam" / "camera_cal" / "*.jpg"),
                                   "--out", str(out), "--horizon-from",
                                   str(shared_data / "dashcam" / "test_images" / "*.jpg"), "--lane-width", "3.5"])
    assert res.exit_code == 0, res.output
    assert "(from the lane width)" in res.output
    assert 1.05 <= Rig.load(out)[0].T_ego_cam[2, 3] <= 1.3
    bad = CliRunner().invoke(app, ["calibrate", "--images", "x*.jpg", "--out", str(out), "--lane-width", "3.5"])
    assert bad.exit_code == 1 and "--lane-width needs --horizon-from" in bad.output
