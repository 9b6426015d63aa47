"""Self-supervised depth: the warp is exact for the true depth and pose, the loss prefers the
true depth, and the camera-height term measures the height of a flat road."""

from __future__ import annotations

import math

import torch

from perception.train.selfsup import (
    PoseNet,
    axis_angle_to_matrix,
    camera_height_loss,
    photometric_error,
    selfsup_depth_loss,
    warp,
)

H, W, F_PX, CAM_H = 48, 64, 40.0, 1.5


def _road_depth() -> torch.Tensor:
    """z-depth of a flat road below a level camera, sky (above the horizon) far away."""
    v = torch.arange(H, dtype=torch.float32)[:, None].expand(H, W)
    dv = v - (H - 1) / 2
    depth = torch.where(dv > 0.5, CAM_H * F_PX / dv.clamp(min=0.5), torch.full_like(dv, 100.0))
    return depth.clamp(max=100.0)[None, None]


def _K() -> torch.Tensor:
    return torch.tensor([[[F_PX, 0, (W - 1) / 2], [0, F_PX, (H - 1) / 2], [0, 0, 1]]])


def test_rotation_is_orthonormal():
    R = axis_angle_to_matrix(torch.tensor([[0.1, -0.2, 0.3]]))
    assert torch.allclose(R @ R.transpose(1, 2), torch.eye(3)[None], atol=1e-6)
    Rz = axis_angle_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))
    assert torch.allclose(Rz[0] @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)


def test_identity_pose_warp_returns_the_source():
    src = torch.rand(1, 3, H, W)
    out = warp(src, _road_depth(), _K(), torch.eye(4)[None])
    assert torch.allclose(out, src, atol=1e-4)


def test_true_depth_beats_wrong_depth_on_a_textured_road():
    torch.manual_seed(0)
    depth, K = _road_depth(), _K()
    texture = torch.rand(1, 3, H, W)
    T = torch.eye(4)[None].clone()
    T[0, 2, 3] = -1.0  # the source camera is 1 m behind... the target moved forward by 1 m
    source = texture
    target = warp(source, depth, K, T)  # what the target camera sees of the same world
    good = selfsup_depth_loss(target, [source], depth, K, [T])["photo"]
    bad = selfsup_depth_loss(target, [source], depth * 2.0, K, [T])["photo"]
    assert good < 0.5 * bad


def test_camera_height_from_a_flat_road():
    up_cam = torch.tensor([[0.0, -1.0, 0.0]])  # level camera: ego up = camera -y
    loss, est = camera_height_loss(_road_depth(), _K(), up_cam, torch.tensor([CAM_H]))
    assert abs(est.item() - CAM_H) < 0.05 and loss.item() < 0.03
    loss2, est2 = camera_height_loss(_road_depth() * 1.5, _K(), up_cam, torch.tensor([CAM_H]))
    assert abs(est2.item() - 1.5 * CAM_H) < 0.1 and loss2 > 0.3


def test_posenet_starts_near_identity_and_is_differentiable():
    net = PoseNet(width=8)
    a, b = torch.rand(2, 3, H, W), torch.rand(2, 3, H, W)
    T = net(a, b)
    assert torch.allclose(T, torch.eye(4).expand(2, 4, 4), atol=1e-6)
    photometric_error(warp(b, _road_depth().expand(2, 1, H, W), _K().expand(2, 3, 3), T), a).mean().backward()
    assert net.head.weight.grad is not None and net.head.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- video: data in the trainer
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

VIDEO_FRAMES, VIDEO_HW = 8, (64, 96)


@pytest.fixture(scope="module")
def tiny_video(tmp_path_factory) -> tuple[Path, Path, float]:
    """(mp4, calibration YAML, camera height): a few frames of the synthetic world's front camera."""
    import cv2

    from perception.data.synth import SynthDataset

    root = tmp_path_factory.mktemp("video")
    ds = SynthDataset("front_wide", size=VIDEO_HW, episode_frames=VIDEO_FRAMES, fps=10)
    path = root / "drive.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (VIDEO_HW[1], VIDEO_HW[0]))
    assert writer.isOpened()
    for i in range(VIDEO_FRAMES):
        writer.write(cv2.cvtColor(ds[i].images[0], cv2.COLOR_RGB2BGR))
    writer.release()
    ds.rig.save(root / "rig.yaml")
    return path, root / "rig.yaml", float(ds.rig.cameras[0].T_ego_cam[2, 3])


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    """Decoded frames go to tmp_path, never to runs/cache."""
    import perception.train.sources as sources

    monkeypatch.setattr(sources, "CACHE_ROOT", tmp_path / "cache")
    return tmp_path / "cache"


def test_video_spec_parsing(monkeypatch):
    import perception.train.sources as sources

    monkeypatch.setattr(sources, "SHARED_DATA", Path("/data/shared"))
    src, opts = sources.parse_video_spec("video:$SHARED_DATA/dashcam/a.mp4,calib=c.yaml,height=1.6,every=2,repeat=3")
    assert src == "/data/shared/dashcam/a.mp4"
    assert opts["calib"] == "c.yaml" and opts["height"] == 1.6 and opts["every"] == 2 and opts["repeat"] == 3
    assert sources.parse_video_spec("video:a.mp4")[1]["every"] == 1
    with pytest.raises(ValueError, match="unknown key"):
        sources.parse_video_spec("video:a.mp4,hieght=1.5")
    with pytest.raises(ValueError, match="plausible"):
        sources.parse_video_spec("video:a.mp4,height=140")
    # video specs are not labelled sample folders
    assert sources.resolve_data(["video:a.mp4"], (64, 96), render=False) == []


def test_video_is_decoded_once_at_network_size(tiny_video, cache, monkeypatch, caplog):
    import cv2

    import perception.data.readers.video as video_reader
    from perception.geometry import Rig
    from perception.train.sources import resolve_video

    path, calib, cam_h = tiny_video
    size = (48, 64)  # cover of 64x96 at scale 0.75: 72x48
    (v,) = resolve_video([f"video:{path},calib={calib}"], size)
    assert v.count == VIDEO_FRAMES and v.height == pytest.approx(cam_h)
    assert cv2.imread(str(v.frame_path(0))).shape == (48, 72, 3)
    assert np.allclose(v.K, Rig.load(calib).cameras[0].scaled(72, 48).K)
    assert not (cache / "frames").exists() and path.is_file()  # decoded beside, the video stays where it is

    def no_decoding(*args, **kwargs):
        raise AssertionError("the video was decoded again")

    monkeypatch.setattr(video_reader.cv2, "VideoCapture", no_decoding)
    (again,) = resolve_video([f"video:{path},calib={calib},height=1.7"], size)
    assert again.root == v.root and again.height == 1.7  # height= overrides, same cache
    monkeypatch.undo()

    caplog.set_level(logging.WARNING)
    (guessed,) = resolve_video([f"video:{path}"], size)
    assert guessed.height == pytest.approx(1.4) and guessed.root != v.root
    assert any("guessed camera" in r.message for r in caplog.records)
    assert guessed.K[0, 0] == pytest.approx((72 / 2) / math.tan(math.radians(30)), rel=1e-6)  # 60 deg default


def test_triplet_augmentation_is_shared_by_the_three_frames():
    """A ground point projected with the item's K lands on the marker in all three frames,
    whatever the random zoom/crop/flip; colour jitter is shared, sensor noise is not."""
    from perception.train.data import AugmentConfig, make_triplet

    K = np.array([[60.0, 0, 47.5], [0, 60.0, 31.5], [0, 0, 1]])
    X = np.array([0.8, 1.2, 9.0])  # a point in the camera frame
    u, v = K[0, 0] * X[0] / X[2] + K[0, 2], K[1, 1] * X[1] / X[2] + K[1, 2]
    frame = np.full((64, 96, 3), 60, np.uint8)
    frame[int(round(v)) - 1:int(round(v)) + 2, int(round(u)) - 1:int(round(u)) + 2] = 255
    up = np.array([0.1, -0.99, 0.05])
    aug = AugmentConfig(scale=(0.8, 1.4), brightness=0, contrast=0, saturation=0, noise=0)
    flipped = 0
    for seed in range(8):
        it = make_triplet([frame] * 3, K, up, (48, 80), np.random.default_rng(seed), aug)
        k = it["K"]
        u2, v2 = k[0, 0] * X[0] / X[2] + k[0, 2], k[1, 1] * X[1] / X[2] + k[1, 2]
        flip = it["up_cam"][0] < 0
        if flip:
            u2 = k[0, 0] * -X[0] / X[2] + k[0, 2]  # the mirrored world
        flipped += int(flip)
        assert it["frames"].shape == (3, 48, 80, 3)
        assert (it["frames"] > 0).all()  # zoom >= 1: no padded border
        for f in it["frames"]:
            ys, xs = np.nonzero(f[..., 0] > 180)
            assert len(xs) and abs(xs.mean() - u2) < 1.0 and abs(ys.mean() - v2) < 1.0, (seed, xs.mean(), u2)
    assert 0 < flipped < 8
    jitter = AugmentConfig(scale=(1.0, 1.0), flip=0.0)
    it = make_triplet([frame] * 3, K, up, (48, 80), np.random.default_rng(3), jitter)
    assert np.array_equal(it["frames"][0], it["frames"][2])  # the loss compares clean frames
    assert not np.array_equal(it["frames_aug"][0], it["frames_aug"][2])  # independent noise
    mean_shift = it["frames_aug"].reshape(3, -1).mean(1) - it["frames"].reshape(3, -1).mean(1)
    assert np.ptp(mean_shift) < 1.0 and abs(mean_shift[0]) > 0.5  # one colour change for all three


def _video_cfg(tmp_path, tiny_video, **kw):
    from perception.train.config import TrainConfig
    from tests.helpers import fake_folder

    path, calib, _ = tiny_video
    data = fake_folder(tmp_path / "d", frames=4)  # 8 images: 2 steps per epoch of batch 4
    base = dict(model="rep-n", out=str(tmp_path / "run"), data=[str(data), f"video:{path},calib={calib}"],
                size=(64, 96), batch=4, steps=5, warmup_steps=2, workers=0, amp="bf16", log_every=1,
                ckpt_minutes=100.0, ema_decay=0.9, selfsup_batch=2)  # 6 triplets: 3 steps per video epoch
    base.update(kw)
    return TrainConfig(**base)


def test_training_with_video_logs_selfsup_and_ships_no_posenet(tmp_path, tiny_video, cache):
    import csv

    from safetensors import safe_open

    from perception.nn import create_model
    from perception.train.trainer import SELFSUP_COLUMNS, train

    out = train(_video_cfg(tmp_path, tiny_video, steps=3))
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert len(rows) == 3
    for row in rows:
        for key in SELFSUP_COLUMNS:
            assert math.isfinite(float(row[key])), (key, row)
        assert float(row["ss_photo"]) > 0 and 0 < float(row["ss_automask"]) <= 1
        assert 0.05 < float(row["ss_est_height"]) < 100
        assert float(row["selfsup"]) == pytest.approx(
            float(row["ss_photo"]) + float(row["ss_smooth"]) + float(row["ss_height"]), rel=1e-4)
    state = torch.load(out / "last.ckpt", weights_only=False)
    assert state["pose_net"]["head.weight"].abs().sum() > 0  # zero at init: the optimizer trained it
    assert len(state["optimizer"]["param_groups"]) == 4  # model + PoseNet groups
    model_keys = set(create_model("rep-n").state_dict())
    with safe_open(str(out / "rep-n.safetensors"), framework="pt") as f:
        assert set(f.keys()) == model_keys


@pytest.mark.slow
def test_resume_is_exact_with_video(tmp_path, tiny_video, cache):
    from perception.train.trainer import train

    straight = train(_video_cfg(tmp_path / "a", tiny_video, steps=4, amp="none"))
    cfg = _video_cfg(tmp_path / "b", tiny_video, steps=4, amp="none")
    train(cfg, stop_after=3)  # mid-epoch of the labelled data, at a video-epoch boundary
    resumed = train(cfg, resume=True)
    s1 = torch.load(straight / "last.ckpt", weights_only=False)
    s2 = torch.load(resumed / "last.ckpt", weights_only=False)
    assert s1["step"] == s2["step"] == 4
    for part in ("model", "pose_net", "ema"):
        for k in s1[part]:
            assert torch.equal(s1[part][k], s2[part][k]), (part, k)
    log1 = [r.split(",")[:-2] for r in (straight / "log.csv").read_text().splitlines()]  # minus img/s, time
    log2 = [r.split(",")[:-2] for r in (resumed / "log.csv").read_text().splitlines()]
    assert log1 == log2 and len(log1) == 1 + 4 and "ss_photo" in log1[0]
