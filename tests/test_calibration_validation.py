"""Calibrations that no real camera has are refused at load time, naming file, camera and field."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import yaml

from perception.geometry import CalibrationError, Rig, camera_pose

GOOD_K = [[800.0, 0, 640.0], [0, 800.0, 360.0], [0, 0, 1]]


def _rig_file(tmp_path: Path, K=None, T=None) -> Path:
    cam = {"name": "front", "width": 1280, "height": 720, "K": K or GOOD_K, "dist": [0, 0, 0, 0, 0],
           "T_ego_cam": T if T is not None else camera_pose(1.5, 0, 1.4, 0).tolist()}
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump({"name": "r", "cameras": [cam]}))
    return path


@pytest.mark.parametrize("K, field", [
    ([[800.0, 0, 640.0], [0, 800.0, 360.0], [0, 0, 0]], "must be"),           # singular: last row zero
    ([[1e-9, 0, 640.0], [0, 1e-9, 360.0], [0, 0, 1]], "fx = 1e-09"),
    ([[1e12, 0, 640.0], [0, 1e12, 360.0], [0, 0, 1]], r"fx = 1e\+12"),
    ([[800.0, 0, 640.0], [0, 8000.0, 360.0], [0, 0, 1]], "fy/fx"),
    ([[800.0, 0, 1e6], [0, 800.0, 360.0], [0, 0, 1]], "principal point"),
])
def test_absurd_intrinsics_are_refused(tmp_path: Path, K, field) -> None:
    path = _rig_file(tmp_path, K=K)
    with pytest.raises(CalibrationError, match=field) as err:
        Rig.load(path)
    assert str(path) in str(err.value) and "'K'" in str(err.value)


def test_non_rigid_or_absurd_pose_is_refused(tmp_path: Path) -> None:
    T = camera_pose(1.5, 0, 1.4, 0)
    bad_row = T.copy()
    bad_row[3] = [0, 0, 1, 1]
    far = T.copy()
    far[:3, 3] = [1e30, 0, 0]
    scaled = T.copy()
    scaled[:3, :3] *= 2
    for bad, text in ((bad_row, "bottom row"), (far, "from the ego origin"), (scaled, "not orthonormal")):
        path = _rig_file(tmp_path, T=bad.tolist())
        with pytest.raises(CalibrationError, match=text) as err:
            Rig.load(path)
        assert "front" in str(err.value) and "T_ego_cam" in str(err.value)


def test_unusual_but_possible_values_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    T = camera_pose(1.5, 0, 1.4, 0)
    T[:3, 3] = [45.0, 0, 1.4]                                   # 45 m away: possible, suspicious
    with caplog.at_level(logging.WARNING):
        rig = Rig.load(_rig_file(tmp_path, K=[[50.0, 0, 640.0], [0, 50.0, 360.0], [0, 0, 1]], T=T.tolist()))
    assert np.isclose(rig.cameras[0].fx, 50.0)
    assert "unusual intrinsics" in caplog.text and "check that T_ego_cam is in metres" in caplog.text


def test_shipped_rigs_load_without_warnings(caplog: pytest.LogCaptureFixture) -> None:
    root = Path(__file__).resolve().parents[1]
    with caplog.at_level(logging.WARNING, logger="perception.geometry.camera"):
        for path in sorted((root / "data" / "rigs").glob("*.yaml")) + sorted((root / "demo").glob("*.yaml")):
            data = yaml.safe_load(path.read_text())
            if isinstance(data, dict) and ("cameras" in data or "K" in data):
                Rig.load(path)
    assert caplog.text == ""


def test_the_cli_prints_the_matrix_in_the_error_as_it_is(tmp_path: Path) -> None:
    """Error messages quote matrices like [[fx, s, cx], ...]: the terminal must not eat them as markup."""
    from typer.testing import CliRunner

    from perception.cli.app import app

    path = _rig_file(tmp_path, K=[[800.0, 0, 640.0], [0, 800.0, 360.0], [0, 0, 0]])
    res = CliRunner().invoke(app, ["run", "--source", "x.mp4", "--calib", str(path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 1 and "[[fx, s, cx], [0, fy, cy], [0, 0, 1]]" in res.output.replace("\n", "")
