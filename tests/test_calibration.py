"""Chessboard calibration (library + `perception calibrate`) and calibration-file errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from perception.cli import app
from perception.geometry import CalibrationError, Rig
from perception.geometry import Camera, camera_pose
from perception.geometry.calibration import calibrate_chessboard, parse_pattern, pitch_from_horizon

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def chessboards(shared_data: Path) -> list[str]:
    return sorted(str(p) for p in (shared_data / "dashcam" / "camera_cal").glob("*.jpg"))


@pytest.fixture(scope="module")
def result(chessboards):
    return calibrate_chessboard(chessboards, (9, 6))


def test_calibration_reaches_reference(result, shared_data: Path) -> None:
    ref = json.loads((shared_data / "dashcam" / "calibration.json").read_text())
    assert result.rms <= 1.0
    assert result.rms == pytest.approx(ref["rms_reprojection_error_px"], abs=0.02)
    assert len(result.used) == 15 and result.image_size == (1280, 720)
    np.testing.assert_allclose(result.camera.K, ref["K"], rtol=2e-3, atol=1.0)
    np.testing.assert_allclose(result.camera.dist, ref["dist_coeffs"], atol=5e-3)
    reasons = {Path(p).name: r for p, r in result.skipped}
    assert set(reasons) == {"calibration1.jpg", "calibration4.jpg", "calibration5.jpg",
                            "calibration7.jpg", "calibration15.jpg"}
    assert "not found" in reasons["calibration4.jpg"] and "1281x721" in reasons["calibration7.jpg"]
    assert max(result.per_image_rms.values()) < 1.5


def test_calibrate_cli_writes_loadable_rig(chessboards, tmp_path: Path) -> None:
    out = tmp_path / "cam.yaml"
    res = CliRunner().invoke(app, ["calibrate", "--images", str(Path(chessboards[0]).parent / "*.jpg"),
                                   "--pattern", "9x6", "--out", str(out), "--height", "1.3"])
    assert res.exit_code == 0, res.output
    assert "RMS reprojection error: 0.85" in res.output and "15 of 20 images" in res.output
    assert "calibration7.jpg" in res.output and "differs from the majority" in res.output
    cam = Rig.load(out)[0]
    assert (cam.width, cam.height) == (1280, 720) and cam.has_distortion
    assert cam.T_ego_cam[2, 3] == pytest.approx(1.3)
    assert cam.T_ego_cam[:3, 2] @ [1, 0, 0] > 0.99        # optical axis points forward


def _horizon_row(cam: Camera) -> float:
    """Row where a ground point 10 km straight ahead lands (undistorted pixels)."""
    far = np.array([[cam.T_ego_cam[0, 3] + 1e4, cam.T_ego_cam[1, 3], 0.0]])
    uv, _ = cam.project(far, apply_distortion=False)
    return float(uv[0, 1])


@pytest.mark.parametrize("row", [300.0, 388.0, 424.0, 500.0])
def test_pitch_from_horizon_puts_the_horizon_on_that_row(row: float) -> None:
    K = np.array([[1158.8, 0, 669.6], [0, 1154.1, 388.0], [0, 0, 1]])
    pitch = pitch_from_horizon(K, row)
    assert np.sign(pitch) == np.sign(388.0 - row)             # horizon above cy: looking down
    cam = Camera(name="c", width=1280, height=720, K=K,
                 T_ego_cam=camera_pose(1.5, 0.0, 1.4, 0.0, pitch=np.radians(pitch)))
    assert _horizon_row(cam) == pytest.approx(row, abs=0.3)  # 1.4 m below the axis at 10 km: 0.16 px


def test_calibrate_cli_horizon_row_sets_pitch(chessboards, tmp_path: Path) -> None:
    out = tmp_path / "cam.yaml"
    args = ["calibrate", "--images", str(Path(chessboards[0]).parent / "*.jpg"), "--out", str(out)]
    res = CliRunner().invoke(app, args + ["--horizon-row", "424"])
    assert res.exit_code == 0, res.output
    assert "pitch -1.7" in res.output and "from the horizon row" in res.output
    assert _horizon_row(Rig.load(out)[0]) == pytest.approx(424, abs=0.3)
    res = CliRunner().invoke(app, args + ["--horizon-row", "424", "--pitch-deg", "2"])
    assert res.exit_code == 1 and "only one of" in res.output


def test_shipped_dashcam_rig_matches_calibration(shared_data: Path) -> None:
    ref = json.loads((shared_data / "dashcam" / "calibration.json").read_text())
    cam = Rig.load(ROOT / "data" / "rigs" / "dashcam_1280x720.yaml")[0]
    np.testing.assert_allclose(cam.K, ref["K"], atol=0.05)
    assert 1.2 <= cam.T_ego_cam[2, 3] <= 1.5
    # the lane vanishing points of the stills and the clip lie 30-42 px below cy: the camera looks up
    assert 415 <= _horizon_row(cam) <= 435


def test_calibrate_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["calibrate", "--images", str(tmp_path / "none*.jpg"), "--out", str(tmp_path / "c.yaml")])
    assert res.exit_code == 1 and "no files match" in res.output
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)      # truncated JPEG
    res = runner.invoke(app, ["calibrate", "--images", str(tmp_path / "*.jpg"), "--out", str(tmp_path / "c.yaml")])
    assert res.exit_code == 1 and "broken.jpg" in res.output and "truncated" in res.output
    res = runner.invoke(app, ["calibrate", "--images", str(bad), "--pattern", "9by6", "--out", str(tmp_path / "c.yaml")])
    assert res.exit_code == 1 and "9x6" in res.output
    assert not (tmp_path / "c.yaml").exists()


def test_too_few_boards_is_a_calibration_error(tmp_path: Path) -> None:
    import cv2

    paths = []
    for i in range(3):
        p = tmp_path / f"blank{i}.png"
        cv2.imwrite(str(p), np.full((120, 160), 128, np.uint8))
        paths.append(p)
    with pytest.raises(CalibrationError, match="only 0 usable"):
        calibrate_chessboard(paths, (9, 6))


def test_parse_pattern() -> None:
    assert parse_pattern("9x6") == (9, 6) and parse_pattern("7X5") == (7, 5)
    with pytest.raises(ValueError):
        parse_pattern("9")


# --------------------------------------------------------------------------- calibration files
def test_garbage_yaml_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "garbage.yaml"
    p.write_text("cameras: [ {width: 3\n  ::: }}}\n")
    with pytest.raises(CalibrationError, match="garbage.yaml"):
        Rig.load(p)
    p.write_bytes(b"\x89\xff\x00\x12")
    with pytest.raises(CalibrationError, match="garbage.yaml"):
        Rig.load(p)


def test_yaml_missing_K_names_file_and_field(tmp_path: Path) -> None:
    p = tmp_path / "noK.yaml"
    p.write_text("name: r\ncameras:\n  - name: front\n    width: 640\n    height: 480\n")
    with pytest.raises(CalibrationError) as exc:
        Rig.load(p)
    assert "noK.yaml" in str(exc.value) and "'K'" in str(exc.value)
    p.write_text("name: r\ncameras:\n  - name: front\n    width: 640\n    height: 480\n    K: [[1, 0], [0, 1]]\n")
    with pytest.raises(CalibrationError, match=r"noK.yaml.*'K' has shape"):
        Rig.load(p)
    # a single-camera file (as `perception calibrate` writes) names the missing field too
    p.write_text("name: dashcam\nwidth: 1280\nheight: 720\ndist: [0, 0, 0, 0, 0]\n")
    with pytest.raises(CalibrationError, match=r"noK.yaml.*missing field 'K'"):
        Rig.load(p)


def test_missing_calibration_file() -> None:
    with pytest.raises(CalibrationError, match="not found"):
        Rig.load("/nonexistent/cam.yaml")
