"""Hostile input files: a planted checkpoint, state or info pickle must not run code, and a YAML
alias bomb must not exhaust memory; each is refused with an error naming the file."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from perception.compress import lottery
from perception.data.readers import DataError, NuScenesInfoReader
from perception.geometry import CalibrationError, Rig
from perception.train import TrainConfig, train
from perception.utils.safe_load import load_state

from tests.helpers import fake_folder


class _RunsCode:
    """Unpickling this calls ``exec`` on a snippet that writes ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


def test_resume_refuses_a_planted_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    cfg = TrainConfig(model="rep-n", out=str(tmp_path / "run"), data=[str(fake_folder(tmp_path / "d", frames=2))],
                      size=(64, 96), batch=2, steps=1, warmup_steps=1, workers=0, amp="none")
    (tmp_path / "run").mkdir()
    planted = {"model": {}, "config": {"model": "rep-n"}, "payload": _RunsCode(marker)}
    torch.save(planted, tmp_path / "run" / "last.ckpt")
    with pytest.raises(ValueError, match=r"last\.ckpt: refusing to load.*planted or foreign"):
        train(cfg, resume=True)
    assert not marker.exists()


def test_load_state_keeps_numpy_and_python_rng_state(tmp_path: Path) -> None:
    """What a resume needs besides tensors (the numpy and Python RNG states) still loads."""
    import random

    state = {"rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
             "step": 3, "config": {"size": [64, 96], "name": "x"}}
    torch.save(state, tmp_path / "s.pt")
    back = load_state(tmp_path / "s.pt")
    assert back["step"] == 3 and back["config"] == state["config"]
    assert back["rng"]["python"] == state["rng"]["python"]
    assert back["rng"]["numpy"][0] == "MT19937" and np.array_equal(back["rng"]["numpy"][1], state["rng"]["numpy"][1])
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])


def test_lottery_resume_refuses_a_planted_state(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    torch.save({"settings": {}, "rounds": [{"round": 0}], "x": _RunsCode(marker)}, tmp_path / lottery.STATE_FILE)
    with pytest.raises(ValueError, match=r"lottery-state\.pt: refusing to load"):
        lottery._load_state(tmp_path, {})
    assert not marker.exists()


def _info(arrays: bool) -> dict:
    """A tiny mmdetection3d-style info dict (plain containers, optionally numpy arrays / scalars)."""
    eye = np.eye(4, dtype=np.float32) if arrays else np.eye(4).tolist()
    return {"metainfo": {"categories": {"car": 0, "pedestrian": 1}, "version": "v1.0-mini"},
            "data_list": [{"sample_idx": np.int64(0) if arrays else 0, "token": "abc",
                           "lidar_points": {"lidar_path": "x.bin", "lidar2ego": eye, "num_pts_feats": 5},
                           "images": {"CAM_FRONT": {"img_path": "f.jpg", "cam2img": eye[:3], "timestamp": 1.5}},
                           "instances": [{"bbox_3d": [1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.1], "bbox_label_3d": 0}]}]}


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_nuscenes_info_pickle_runs_no_code(tmp_path: Path, protocol: int) -> None:
    good = tmp_path / "good"
    good.mkdir()
    info = _info(arrays=True)
    (good / "infos.pkl").write_bytes(pickle.dumps(info, protocol=protocol))
    reader = NuScenesInfoReader(good)
    assert len(reader) == 1 and reader.index_to_name == {0: "car", 1: "pedestrian"}
    got = reader.data_list[0]
    assert np.array_equal(got["lidar_points"]["lidar2ego"], np.eye(4)) and got["sample_idx"] == 0
    assert got["instances"] == info["data_list"][0]["instances"]

    bad = tmp_path / "bad"
    bad.mkdir()
    marker = tmp_path / "MARKER"
    planted = _info(arrays=False)
    planted["data_list"][0]["token"] = _RunsCode(marker)
    (bad / "infos.pkl").write_bytes(pickle.dumps(planted, protocol=protocol))
    refused = r"infos\.pkl: refusing to load: the pickle asks for (__)?builtin(s|__)\.exec\b"
    with pytest.raises(DataError, match=refused):
        NuScenesInfoReader(bad)
    assert not marker.exists()


def _alias_bomb(levels: int) -> str:
    """Nested aliases: ``levels`` levels of nine references each (9**levels numbers once expanded) as
    a camera's K. Seven levels keep the old, expanding loader's cost bounded (~5M numbers); nine
    are the classic billion laughs."""
    lines = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    prev = "a"
    for name in "bcdefghi"[:levels - 1]:
        lines.append(f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 9) + "]")
        prev = name
    return "\n".join(lines) + f"\ncameras:\n  - name: front\n    K: *{prev}\n    width: 1280\n    height: 720\n"


def test_yaml_alias_bomb_calibration_is_refused_fast(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text(_alias_bomb(7))
    assert len(path.read_bytes()) < 600
    t0 = time.perf_counter()
    with pytest.raises(CalibrationError, match=r"rig\.yaml: YAML aliases \(\*a\) are not allowed at line 2"):
        Rig.load(path)
    assert time.perf_counter() - t0 < 2.0


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "rig.yaml"
    path.write_text("cameras:\n  - name: front\n    K: [[1000, 0, 640], [0, 1000, 360]\n    width: 1280\n")
    with pytest.raises(CalibrationError, match=r"rig\.yaml: not valid YAML at line 4: "):
        Rig.load(path)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("model: rep-n\nsteps: [1, 2\nbatch: 4\n")
    with pytest.raises(ValueError, match=r"train\.yaml: not valid YAML at line 3"):
        TrainConfig.load(cfg)
