"""Pipeline: sources, sync, faults, lifting, BEV, tracking, sinks, server, CLI."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from perception.geometry import Camera, Rig
from perception.geometry.transforms import camera_pose
from perception.nn import create_model
from perception.nn.postprocess import Detections
from perception.pipeline.backends import create_backend, list_backends
from perception.pipeline.bench_inputs import MemorySource, surround_rig, synthetic_image, write_clip
from perception.pipeline.bev import BEVConfig, GroundMosaic, OccupancyGrid, fuse_objects
from perception.pipeline.capture import Backoff, CaptureThread, Synchronizer
from perception.pipeline.lifting import LiftedObject, lift_detections
from perception.pipeline.runner import Pipeline, PipelineOptions, build_rig
from perception.pipeline.server import MJPEGServer
from perception.pipeline.sinks import SUMMARY_KEYS, gui_available
from perception.pipeline.sources import (ImageFolderSource, Source, SourceError, VideoFileSource, open_source,
                                         source_kind)
from perception.pipeline.tracking import Tracker

ROOT = Path(__file__).resolve().parents[1]
SMALL = (64, 96)  # network size for fast tests


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return create_model("rep-n")


def _opts(tmp: Path, **kw) -> PipelineOptions:
    base = dict(model="rep-n", size=SMALL, out=tmp, bev=BEVConfig(range_m=40, resolution=0.5),
                backoff=Backoff(0.02, 2.0, 0.1))
    base.update(kw)
    return PipelineOptions(**base)


def _write_video(path: Path, frames: int, size=(96, 64), fps=10.0, codec="mp4v") -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    for i in range(frames):
        vw.write(synthetic_image(size[0], size[1], i / fps))
    vw.release()
    return path


def _small_cam(name="front", w=96, h=64, yaw=0.0) -> Camera:
    f = w / 2 / math.tan(math.radians(35))
    return Camera(name, w, h, [[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], np.zeros(5),
                  camera_pose(1.5, 0, 1.5, yaw, pitch=math.radians(3)))


# ----------------------------------------------------------------------------- sources
def test_source_kinds():
    assert source_kind("synth://?seed=1") == "synth"
    assert source_kind("nvarguscamerasrc ! nvvidconv ! appsink") == "gstreamer"
    assert source_kind("rtsp://10.0.0.2/stream") == "url"
    assert source_kind("0") == "camera" and source_kind("/dev/video2") == "camera"
    assert source_kind("frames/*.jpg") == "images"
    assert source_kind("drive.mp4") == "video"
    assert open_source("rtsp://x/y").live and not open_source("a.mp4").live


def test_gstreamer_without_support_fails_clearly():
    if "GStreamer:                   YES" in cv2.getBuildInformation():
        pytest.skip("this OpenCV has GStreamer")
    src = open_source("videotestsrc num-buffers=2 ! videoconvert ! appsink")
    with pytest.raises(SourceError, match="GStreamer"):
        src.open()


def test_image_folder_skips_unreadable(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), synthetic_image(32, 32, i))
    (tmp_path / "img10.png").write_bytes(b"not a png")
    src = ImageFolderSource(str(tmp_path))
    src.open()
    got = []
    while (r := src.read())[0]:
        got.append(r[2])
    assert len(got) == 3 and src.errors["decode"] == 1 and src.finished


def test_truncated_and_corrupt_video_keep_readable_frames(tmp_path):
    good = _write_video(tmp_path / "a.avi", 40, codec="MJPG")
    data = good.read_bytes()
    trunc = tmp_path / "trunc.avi"
    trunc.write_bytes(data[: int(len(data) * 0.6)])
    src = VideoFileSource(str(trunc))
    src.open()
    n = 0
    while src.read()[0]:
        n += 1
    assert 5 < n < 40 and src.errors["truncated"] == 1
    bad = bytearray(_write_video(tmp_path / "b.mp4", 40).read_bytes())
    bad[len(bad) // 3: len(bad) // 3 + 1500] = os.urandom(1500)
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(bytes(bad))
    src = VideoFileSource(str(corrupt))
    src.open()
    n = 0
    while src.read()[0]:
        n += 1
    assert 10 < n < 40 and sum(src.errors.values()) >= 1


def test_pipeline_runs_over_truncated_video_and_counts(tmp_path, small_model):
    data = _write_video(tmp_path / "a.avi", 30, codec="MJPG").read_bytes()
    (tmp_path / "t.avi").write_bytes(data[: len(data) // 2])
    rig = Rig("one", [_small_cam()])
    s = Pipeline(rig, [str(tmp_path / "t.avi")], _opts(tmp_path / "out"), model=small_model).run()
    assert 3 < s["frames"] < 30 and s["errors"].get("truncated") == 1
    assert set(json.loads((tmp_path / "out/summary.json").read_text())) == set(SUMMARY_KEYS)


# ----------------------------------------------------------------------------- sync
def _captures(*sources):
    return [CaptureThread(i, s, queue_size=4, backoff=Backoff(0.02, 2, 0.1)) for i, s in enumerate(sources)]


def test_sync_nearest_within_tolerance_and_drops():
    class Offset(MemorySource):
        def _read(self):
            ok, img, ts = super()._read()
            return ok, img, ts + 0.013

    a, b = MemorySource(32, 32, 10, fps=10, name="a"), Offset(32, 32, 20, fps=20, name="b")
    sync = Synchronizer(_captures(a, b), tolerance=0.02)
    sync.start()
    sets = []
    while (s := sync.next()) is not None:
        sets.append(s)
    full = [s for s in sets if s.images[0] is not None]
    assert len(full) == 10  # one set per reference frame (b's frames left after a ended come alone)
    for s in full:  # b's frame at t+0.013 is matched; its in-between frames (t+0.063) are dropped
        assert s.images[1] is not None and abs(s.timestamps[1] - s.timestamp - 0.013) < 1e-6
    assert sync.dropped >= 8 and sync.missing["b"] == 0


def test_slow_live_camera_does_not_stall_others():
    class Slow(MemorySource):
        def _read(self):
            time.sleep(0.5)
            return True, self._cache[0], time.monotonic()

    class Fast(MemorySource):
        def _read(self):
            time.sleep(0.02)
            ok, img, _ = super()._read()
            return ok, img, time.monotonic()

    fast, slow = Fast(32, 32, 1000, name="fast", live=True), Slow(32, 32, 1000, name="slow", live=True)
    sync = Synchronizer(_captures(fast, slow), tolerance=0.01, wait=0.03)
    sync.start()
    t0 = time.monotonic()
    got = [sync.next() for _ in range(10)]
    elapsed = time.monotonic() - t0
    sync.stop()
    assert elapsed < 3.0, elapsed  # 10 frames at ~20 ms (slack for a loaded machine), not 10 x 500 ms
    assert sum(s.images[1] is None for s in got) >= 8 and sync.missing["slow"] >= 8


class Flaky(Source):
    """A live camera that disconnects after ``ok_frames`` and refuses ``refusals`` reopen attempts."""

    live = True

    def __init__(self, ok_frames=5, refusals=2, name="flaky"):
        super().__init__("flaky://", name)
        self.ok_frames, self.refusals, self.opens, self.n = ok_frames, refusals, 0, 0
        self.img = synthetic_image(96, 64, 0)

    def _open(self):
        self.opens += 1
        if 1 < self.opens <= 1 + self.refusals:
            raise SourceError("device busy")
        self.fps = 20

    def _read(self):
        time.sleep(0.03)
        self.n += 1
        if self.n == self.ok_frames:
            return False, None, time.monotonic()
        if self.n > 60:
            self.finished = True
            return False, None, 0.0
        return True, self.img, time.monotonic()


def test_disconnect_retries_with_backoff_and_bev_marks_stale(tmp_path, small_model):
    class LiveMem(MemorySource):
        def _read(self):
            time.sleep(0.03)
            ok, img, _ = super()._read()
            return ok, img, time.monotonic()

    rig = Rig("two", [_small_cam("front"), _small_cam("back", yaw=math.pi)])
    flaky = Flaky()
    srcs = [LiveMem(96, 64, 40, name="front", live=True), flaky]
    pipe = Pipeline(rig, srcs, _opts(tmp_path, sync_tolerance=0.02, live_wait=0.02), model=small_model)
    stale_frames = []
    pipe.engine.on_frame = lambda f: stale_frames.append((f.bev.stale_cameras, bool(f.bev.stale.any())))
    s = pipe.run()
    cap = pipe.captures[1]
    assert cap.reconnects == 1 and flaky.opens == 4  # first open, 2 refused, 1 good
    assert s["errors"]["disconnect"] >= 1
    assert s["frames"] >= 15  # the front camera went on (40 frames; a loaded machine may drop some)
    assert any("back" in names and any_stale for names, any_stale in stale_frames)
    assert any(names == [] for names, _ in stale_frames)


# ----------------------------------------------------------------------------- faults
def test_image_size_differs_from_calibration_rescales_K(tmp_path, small_model, caplog):
    big = _small_cam(w=192, h=128)
    rig = Rig("one", [big])
    seen = []
    pipe = Pipeline(rig, [MemorySource(96, 64, 3)], _opts(tmp_path, write_outputs=False), model=small_model)
    pipe.engine.on_frame = lambda f: seen.append(f.cameras[0])
    with caplog.at_level(logging.WARNING):
        pipe.run()
    assert "rescaling K" in caplog.text and "192x128" in caplog.text
    assert seen and seen[0].width == 96 and seen[0].K[0, 0] == pytest.approx(big.K[0, 0] / 2)


def test_nonfinite_model_output_marks_frame_invalid(tmp_path, small_model):
    rig = Rig("two", [_small_cam("front"), _small_cam("back", yaw=math.pi)])
    pipe = Pipeline(rig, [MemorySource(96, 64, 4, seed=0), MemorySource(96, 64, 4, seed=1)],
                    _opts(tmp_path), model=small_model)
    real = pipe.backend.infer

    def poisoned(images, K):
        out = {k: v.clone() for k, v in real(images, K).items()}
        out["depth"][1] = float("nan")
        out["det"][1, 0, 0] = float("inf")
        return out

    pipe.backend.infer = poisoned
    valid = []
    pipe.engine.on_frame = lambda f: valid.append(list(f.valid))
    s = pipe.run()
    assert s["frames"] == 4 and valid == [[True, False]] * 4
    assert s["errors"]["nonfinite_output"] == 4
    lines = (tmp_path / "detections.jsonl").read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[0])["cameras"]["back"] == []


def _calib(tmp_path: Path, **drop) -> Path:
    cam = _small_cam().to_dict()
    for k in drop:
        cam.pop(k)
    p = tmp_path / "cam.yaml"
    p.write_text(yaml.safe_dump(cam))
    return p


def _cli(*args):
    """Run the CLI in-process (a subprocess costs seconds of imports per call)."""
    from typer.testing import CliRunner

    from perception.cli import app
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_missing_calibration_field_is_one_line_error(tmp_path):
    video = _write_video(tmp_path / "v.mp4", 3)
    r = _cli("run", "--source", str(video), "--calib", str(_calib(tmp_path, K=1)), "--out", str(tmp_path / "o"))
    assert r.exit_code == 1
    err = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("error") and "'K'" in err[0], r.stderr


def test_rig_without_source_names_the_field(tmp_path):
    rig = Rig("r", [_small_cam()])
    rig.save(tmp_path / "rig.yaml")
    with pytest.raises(ValueError, match="'source'"):
        build_rig(tmp_path / "rig.yaml")


def test_show_fails_clearly_on_headless_opencv(tmp_path):
    if gui_available():
        pytest.skip("this OpenCV build has a GUI")
    video = _write_video(tmp_path / "v.mp4", 3)
    r = _cli("run", "--source", str(video), "--show", "--model", "rep-n", "--out", str(tmp_path / "o"))
    assert r.exit_code == 1 and "GUI" in r.stderr


def test_sigint_and_sigterm_finalise_outputs(tmp_path):
    """Both signals, in two `perception run` subprocesses at once (saves a start-up); Ctrl-C
    twice within 10 ms. Outputs are complete, the exit status says interrupted (130 / 143)."""
    video = _write_video(tmp_path / "v.mp4", 20)
    calib = _calib(tmp_path)
    procs = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        out = tmp_path / f"out{int(sig)}"
        procs[sig] = (out, subprocess.Popen(
            [sys.executable, "-m", "perception", "run", "--source", str(video), "--calib", str(calib),
             "--model", "rep-n", "--size", "64x96", "--loop", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for sig, (out, proc) in procs.items():
        jsonl = out / "detections.jsonl"
        t0 = time.time()
        while time.time() - t0 < 60 and proc.poll() is None:
            if jsonl.exists() and len(jsonl.read_text().splitlines()) >= 5:
                break
            time.sleep(0.1)
        proc.send_signal(sig)
        if sig == signal.SIGINT:  # an impatient second Ctrl-C
            time.sleep(0.01)
            proc.send_signal(sig)
    for sig, (out, proc) in procs.items():
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 128 + int(sig), err[-2000:]
        assert "terminate called" not in err and "Traceback" not in err
        text = (out / "detections.jsonl").read_text()
        assert text.endswith("\n")
        lines = [json.loads(ln) for ln in text.splitlines()]  # every line complete
        cap = cv2.VideoCapture(str(out / "video.mp4"))
        n = 0
        while cap.read()[0]:
            n += 1
        assert n == len(lines) >= 5, sig
        summary = json.loads((out / "summary.json").read_text())
        assert summary["frames"] == len(lines) and (out / "bev.png").exists()
        assert summary["interrupted"] is True


def test_synth_source_shares_one_world_per_rig():
    from perception.pipeline.sources import SynthSource
    front = SynthSource("synth://?seed=1&camera=front&size=64x112&frames=1")
    back = SynthSource("synth://?seed=1&camera=back&size=64x112&frames=1")
    front.open()
    back.open()
    assert front._world is back._world and front.camera_model.width == 112
    ok_f, img_f, ts = front.read()
    ok_b, img_b, _ = back.read()
    assert ok_f and ok_b and img_f.shape == (64, 112, 3) and ts == 0.0
    assert (img_f != img_b).mean() > 0.5  # two different cameras of the same instant
    assert not front.read()[0] and front.finished
    with pytest.raises(SourceError, match="no camera"):
        SynthSource("synth://?seed=1&camera=roof&size=64x112").open()


# ----------------------------------------------------------------------------- lifting
def _det(center_cam, box, size=(4.5, 1.8, 1.5), yaw=0.0, label=0, score=0.9) -> Detections:
    t = lambda v: torch.tensor(np.asarray([v], dtype=np.float32))  # noqa: E731
    return Detections(t(box), torch.tensor([score]), torch.tensor([label]), t(center_cam), t(size),
                      torch.tensor([yaw]), ("car", "truck", "bus", "pedestrian", "cyclist"))


def test_lift_to_ego_and_cross_check():
    cam = Camera("front", 640, 384, [[400, 0, 319.5], [0, 400, 191.5], [0, 0, 1]], np.zeros(5),
                 camera_pose(1.5, 0.0, 1.5, 0.0))
    z = 20.0  # car centre 20 m ahead, on the ground (centre 0.75 m high -> camera y = 0.75)
    c = np.array([0.0, 0.75, z])
    uv = cam.K @ c / z
    # box bottom = ground contact of the front face at z - 0.9 (half width), depth map = front face
    zb = z - 0.9
    v_bottom = cam.K[1, 1] * 1.5 / zb + cam.K[1, 2]
    box = [uv[0] - 40, uv[1] - 30, uv[0] + 40, v_bottom]
    depth = np.full((384, 640), zb, np.float32)
    obj = lift_detections(_det(c, box), depth, cam)[0]
    assert obj.consistent and obj.estimates["dense"] == pytest.approx(z, rel=0.01)
    assert obj.estimates["ground"] == pytest.approx(z, rel=0.02)
    assert obj.center == pytest.approx([1.5 + z, 0.0, 0.75], abs=0.05)
    assert obj.yaw == pytest.approx(-math.pi / 2)  # KITTI yaw 0: length along camera +x = ego -y
    # a head that is off by 2x is overruled by the two other cues
    bad = lift_detections(_det(c * 2, box), depth, cam)[0]
    assert not bad.consistent and bad.depth == pytest.approx(z, rel=0.05)
    # a head 15 % too far still counts as consistent, but the distance is the median of the three
    # estimates, so the two that agree win (the head alone was 1.13x on the nuScenes keyframe)
    off = lift_detections(_det(c * 1.15, box), depth, cam)[0]
    assert off.consistent and off.depth == pytest.approx(z, rel=0.02)


def test_ground_gate_drops_floating_boxes_and_keeps_grounded_ones():
    from perception.pipeline.engine import Frame, Lift
    from perception.pipeline.lifting import GroundGate
    cam = Camera("front", 640, 384, [[400, 0, 319.5], [0, 400, 191.5], [0, 0, 1]], np.zeros(5),
                 camera_pose(1.5, 0.0, 1.5, 0.0))
    gate = GroundGate()
    size = np.array([8.0, 2.5, 3.2])
    on_road = LiftedObject("front", "truck", 0.9, np.zeros(4), np.array([9.0, 0, 1.6]), size, 0.0, 9.0)
    floating = LiftedObject("front", "truck", 0.9, np.zeros(4), np.array([9.0, 0, 2.8]), size, 0.0, 9.0)  # 1.2 m up
    uphill = LiftedObject("front", "car", 0.9, np.zeros(4), np.array([50.0, 0, 2.75]), np.array([4.5, 1.8, 1.5]),
                          0.0, 50.0)  # 2 m up at 50 m: a 4 % climb, within 0.5 + 0.06 * 50 = 3.5 m
    assert floating.bottom_height == pytest.approx(1.2) and on_road.bottom_height == pytest.approx(0.0)
    kept, dropped = gate([on_road, floating, uphill])
    assert kept == [on_road, uphill] and dropped == [floating]
    # the Lift stage applies the gate and counts; ground_gate=None keeps everything
    z = 9.0
    c = np.array([0.0, 1.5 - 2.8, z])            # centre 2.8 m above the ground, camera at 1.5 m
    uv = cam.K @ c / z
    box = [uv[0] - 60, uv[1] - 40, uv[0] + 60, uv[1] + 40]
    frame = Frame(0, 0.0, ["front"], [np.zeros((384, 640, 3), np.uint8)], [False], net_cameras=[cam],
                  valid=[True], detections=[_det(c, box, size=tuple(size), label=1)],
                  depth=[np.full((384, 640), z - 1.25, np.float32)])
    lift = Lift()
    assert lift(frame).objects == [] and lift.floating_dropped == 1
    assert len(Lift(ground_gate=None)(frame).objects) == 1
    # shown_mask (what evaluation counts) agrees with the Lift stage, detection by detection
    from perception.pipeline.lifting import shown_mask
    zg = 20.0
    cg = np.array([0.0, 0.75, zg])
    uvg = cam.K @ cg / zg
    grounded = _det(cg, [uvg[0] - 40, uvg[1] - 30, uvg[0] + 40, cam.K[1, 1] * 1.5 / (zg - 0.9) + cam.K[1, 2]])
    both = Detections(*(torch.cat([getattr(frame.detections[0], k), getattr(grounded, k)]) for k in
                        ("boxes", "scores", "labels", "center_cam", "size", "yaw")), grounded.classes)
    depth = np.full((384, 640), z - 1.25, np.float32)
    assert shown_mask(both, depth, cam).tolist() == [False, True]
    assert shown_mask(both, depth, cam, gate=None).tolist() == [True, True]


def test_yaw_conversion_kitti_to_ego():
    from perception.pipeline.lifting import yaw_cam_to_ego
    T = camera_pose(0, 0, 1.5, 0.0)
    # camera yaw 0: length along camera +x = ego -y (right) -> ego yaw -pi/2
    assert yaw_cam_to_ego(np.array([0.0]), T)[0] == pytest.approx(-math.pi / 2)
    # camera yaw -pi/2: length along camera +z = ego +x -> ego yaw 0
    assert yaw_cam_to_ego(np.array([-math.pi / 2]), T)[0] == pytest.approx(0.0, abs=1e-9)


# ----------------------------------------------------------------------------- BEV
def _obj(cam, xy, score=0.9, label="car"):
    return LiftedObject(cam, label, score, np.zeros(4), np.array([xy[0], xy[1], 0.8]), np.array([4.5, 1.8, 1.5]),
                        0.0, 10.0)


def test_same_car_in_two_cameras_is_one_object():
    fused = fuse_objects([_obj("front", (10, 5)), _obj("front_left", (10.6, 5.3), 0.6), _obj("back", (-12, 0))])
    assert len(fused) == 2
    both = [f for f in fused if len(f.cameras) == 2][0]
    assert set(both.cameras) == {"front", "front_left"} and both.center[0] == pytest.approx(10.24, abs=0.01)
    # a pedestrian next to a car is not merged into it
    assert len(fuse_objects([_obj("front", (10, 5)), _obj("front", (10.5, 5), label="pedestrian")])) == 2


def test_ground_mosaic_blends_overlap():
    spec = BEVConfig(range_m=40, resolution=0.5).spec()
    a = Camera("a", 96, 64, [[50, 0, 47.5], [0, 50, 31.5], [0, 0, 1]], np.zeros(5), camera_pose(0, 0, 1.5, 0.3, 0.3))
    b = Camera("b", 96, 64, [[50, 0, 47.5], [0, 50, 31.5], [0, 0, 1]], np.zeros(5), camera_pose(0, 0, 1.5, -0.3, 0.3))
    red, blue = np.zeros((64, 96, 3), np.uint8), np.zeros((64, 96, 3), np.uint8)
    red[..., 0], blue[..., 2] = 255, 255
    m = GroundMosaic(spec)
    out = m([red, blue], [a, b])
    both = m.footprint(a) & m.footprint(b)
    only_a = m.footprint(a) & ~m.footprint(b)
    assert both.sum() > 20 and only_a.sum() > 20
    blend = out[both]
    assert ((blend[:, 0] > 20) & (blend[:, 2] > 20)).mean() > 0.8  # mixed colours in the overlap
    assert (out[only_a][:, 2] < 5).all() and (out[~(m.footprint(a) | m.footprint(b))] == 0).all()
    t0 = time.perf_counter()
    m([red, blue], [a, b])
    assert time.perf_counter() - t0 < 0.05  # tables cached


def test_occupancy_free_occupied_unknown_and_smoothing():
    cfg = BEVConfig(range_m=40, resolution=0.5)
    grid = OccupancyGrid(cfg.spec(), cfg)
    pts = np.array([[10.0, 0.0, 1.0], [5.0, 2.0, 0.0]], np.float32)
    for _ in range(3):
        grid.update(pts)
    cls = grid.classes()
    spec = cfg.spec()
    (c_occ, r_occ), (c_free, r_free) = np.round(spec.ego_to_pixel(pts[:, :2])).astype(int)
    assert cls[r_occ, c_occ] == 2 and cls[r_free, c_free] == 1 and cls[0, 0] == 0
    grid.update(np.zeros((0, 3), np.float32))  # one frame without evidence: no flicker
    assert grid.classes()[r_occ, c_occ] == 2
    for _ in range(10):
        grid.update(np.zeros((0, 3), np.float32))
    assert grid.classes()[r_occ, c_occ] == 0  # stale evidence fades to unknown


# ----------------------------------------------------------------------------- tracking
def test_tracker_stable_ids_and_velocity():
    from perception.pipeline.bev import FusedObject
    tr = Tracker()
    for k in range(15):
        t = k * 0.1
        objs = [FusedObject("car", 0.9, np.array([10 + 5 * t, 3.0, 0.8]), np.array([4.5, 1.8, 1.5]), 0.0, ["front"]),
                FusedObject("pedestrian", 0.8, np.array([6.0, -4 + 1.0 * t, 0.9]), np.array([0.6, 0.6, 1.7]), 0.0,
                            ["front"])]
        tracks = tr.update(objs, t)
    assert sorted(t.id for t in tracks) == [1, 2]
    car = [t for t in tracks if t.label == "car"][0]
    ped = [t for t in tracks if t.label == "pedestrian"][0]
    assert car.velocity == pytest.approx([5.0, 0.0], abs=0.3) and ped.velocity == pytest.approx([0.0, 1.0], abs=0.2)
    assert objs[0].track_id == car.id


# ----------------------------------------------------------------------------- backends
def test_backends(small_model, monkeypatch):
    import perception.deploy  # noqa: F401  (registers onnx, onnxruntime, tensorrt with the pipeline)
    from perception.pipeline import backends

    assert {"onnx", "onnxruntime", "tensorrt", "torch"} <= set(list_backends())
    with pytest.raises(ValueError, match="unknown backend 'nope'; registered: .*torch"):
        create_backend("nope", small_model)
    # the pipeline never imports the deploy layer: without it, asking for onnx says what registers it
    monkeypatch.delitem(backends._BACKENDS, "onnx")
    with pytest.raises(ValueError, match="unknown backend 'onnx'.*`import perception.deploy`"):
        create_backend("onnx", small_model)
    b = create_backend("torch", small_model)
    assert b.model.is_reparameterized
    x = torch.rand(2, 3, 64, 96)
    K = torch.tensor([[80.0, 0, 48], [0, 80, 32], [0, 0, 1]]).expand(2, 3, 3)
    with torch.inference_mode():
        ref = small_model(x, K)
    out = b(x, K)
    assert torch.allclose(out["depth"], ref["depth"], rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- server
def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type"), r.read()


def test_mjpeg_server_endpoints():
    srv = MJPEGServer(0)
    try:
        assert srv.host == "127.0.0.1"
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, :32] = (0, 0, 255)
        srv.update(img, {"frames": 3, "fps": 7.5, "latency_ms": {"model": 12.0}})
        st, ct, body = _get(srv.url)
        assert st == 200 and "text/html" in ct and b"/stream.mjpg" in body and b"/stats.json" in body
        st, ct, body = _get(srv.url + "stats.json")
        assert json.loads(body)["fps"] == 7.5
        st, ct, body = _get(srv.url + "frame.jpg")
        dec = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert dec.shape == (48, 64, 3) and dec[10, 5, 2] > 200 and dec[10, 50, 2] < 50
        with urllib.request.urlopen(srv.url + "stream.mjpg", timeout=5) as r:
            assert r.headers.get("Content-Type").startswith("multipart/x-mixed-replace")
            threading.Timer(0.2, lambda: srv.update(img)).start()
            chunk = r.read(200)
            assert chunk.startswith(b"--perceptionframe") and b"\xff\xd8" in chunk
        with pytest.raises(urllib.error.HTTPError):
            _get(srv.url + "nope")
    finally:
        srv.close()
    with pytest.raises(ValueError):
        MJPEGServer(0, host="0.0.0.0")


def test_pipeline_serves_live_stats(tmp_path, small_model):
    rig = Rig("one", [_small_cam()])
    pipe = Pipeline(rig, [MemorySource(96, 64, 10 ** 6)], _opts(tmp_path, serve=0), model=small_model)
    th = threading.Thread(target=pipe.run, daemon=True)
    th.start()
    try:
        t0, stats = time.time(), {}
        while time.time() - t0 < 30:
            try:
                stats = json.loads(_get(pipe.server.url + "stats.json")[2])
            except OSError:
                stats = {}
            if stats.get("frames", 0) >= 3:
                break
            time.sleep(0.1)
        assert stats["frames"] >= 3 and "model" in stats["latency_ms"]
        jpg = _get(pipe.server.url + "frame.jpg")[2]
        assert cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR).shape[1] > 96
    finally:
        pipe.stop()
        th.join(10)
        pipe.close()
    assert not th.is_alive() and (tmp_path / "summary.json").exists()


def test_serve_screenshot_with_chromium(tmp_path, small_model):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium not installed")
    srv = MJPEGServer(0)
    try:
        srv.update(synthetic_image(320, 180, 0)[..., ::-1].copy(), {"frames": 1, "fps": 1.0, "latency_ms": {}})
        shot = tmp_path / "shot.png"
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--window-size=800,600",
                        "--timeout=3000",  # the MJPEG stream never finishes loading
                        f"--screenshot={shot}", srv.url], capture_output=True, timeout=60)
        img = cv2.imread(str(shot))
        assert img is not None and img.shape[0] > 100
    finally:
        srv.close()


# ----------------------------------------------------------------------------- end to end
def test_multicamera_clip_outputs(tmp_path, small_model):
    rig_path = write_clip(tmp_path / "clip", surround_rig(3, 96, 64), 6)
    rig, sources = build_rig(rig_path)
    s = Pipeline(rig, sources, _opts(tmp_path / "out"), model=small_model).run()
    out = tmp_path / "out"
    assert s["frames"] == 6 and s["dropped_frames"] == 0 and s["errors"] == {}
    assert list(json.loads((out / "summary.json").read_text())) == list(SUMMARY_KEYS)
    rec = json.loads((out / "detections.jsonl").read_text().splitlines()[-1])
    assert set(rec) == {"frame", "timestamp", "cameras", "objects"} and set(rec["cameras"]) == set(rig.names)
    assert rec["frame"] == 5 and rec["timestamp"] == pytest.approx(0.5)
    bev = cv2.imread(str(out / "bev.png"))
    assert bev.shape[:2] == (80, 80)
    assert {"preprocess", "model", "decode", "lift", "bev", "track", "render", "sinks", "total"} <= set(s["latency_ms"])


def test_cli_demo_with_config(tmp_path):
    rig_path = write_clip(tmp_path / "drive", surround_rig(2, 96, 64), 4)
    cfg = tmp_path / "demo.yaml"
    cfg.write_text(yaml.safe_dump({"rig": "drive/rig.yaml", "model": "rep-n", "size": "64x96",
                                   "bev": {"range_m": 40, "resolution": 0.5},
                                   "display": {"layout": [["front", "front_left"]], "tile_width": 160}}))
    r = _cli("demo", "--config", str(cfg), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.stderr[-2000:]
    assert "outputs in" in r.stderr and json.loads((tmp_path / "o/summary.json").read_text())["frames"] == 4


def test_cli_run_without_calib_warns_default_fov(tmp_path, caplog):
    video = _write_video(tmp_path / "v.mp4", 3)
    with caplog.at_level(logging.WARNING):
        r = _cli("run", "--source", str(video), "--model", "rep-n", "--size", "64x96", "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.stderr[-2000:]
    assert "60 deg horizontal field of view" in caplog.text
    assert len((tmp_path / "o/detections.jsonl").read_text().splitlines()) == 3


# ----------------------------------------------------------------------------- real data
@pytest.mark.shared_data
def test_dashcam_test_video(shared_data, tmp_path):
    video = shared_data / "dashcam" / "test_video.mp4"
    if not video.exists():
        pytest.skip("dashcam video absent")
    r = _cli("run", "--source", str(video), "--calib", str(ROOT / "data/rigs/dashcam_1280x720.yaml"),
             "--model", "rep-n", "--size", "192x320", "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.stderr[-2000:]
    out = tmp_path / "o"
    assert json.loads((out / "summary.json").read_text())["frames"] == 38
    assert len((out / "detections.jsonl").read_text().splitlines()) == 38
    cap = cv2.VideoCapture(str(out / "video.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 38 and (out / "bev.png").stat().st_size > 1000


@pytest.mark.shared_data
def test_nuscenes_keyframe_through_rig(shared_data, tmp_path, small_model):
    root = shared_data / "nuscenes_keyframe"
    if not (root / "rig.json").exists():
        pytest.skip("nuScenes keyframe absent")
    meta = json.loads((root / "rig.json").read_text())
    cams = [Camera(c["name"], c["width"], c["height"], c["K"], np.zeros(5), c["cam2ego"],
                   source=str(root / c["image_file"])) for c in meta["cameras"]]
    Rig("nuscenes", cams).save(tmp_path / "rig.yaml")
    rig, sources = build_rig(tmp_path / "rig.yaml")
    frames = []
    pipe = Pipeline(rig, sources, _opts(tmp_path / "out", size=(224, 384), bev=BEVConfig()), model=small_model)
    pipe.engine.on_frame = lambda f: frames.append(f)
    s = pipe.run()
    assert s["frames"] == 1 and s["errors"] == {} and all(frames[0].valid)
    ground = frames[0].bev.ground
    assert (ground.sum(-1) > 0).mean() > 0.2  # six cameras cover the ground around the car
    assert cv2.imread(str(tmp_path / "out/bev.png")).shape[:2] == (400, 400)


def test_precision_choice_and_bf16_backend_agrees(small_model):
    from perception.pipeline.backends import cpu_has_native_bf16, resolve_precision

    assert resolve_precision("auto", "cuda") == "fp16"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("fp32", "cpu") == "fp32"
    with pytest.raises(ValueError, match="CUDA"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int4", "cpu")
    x = torch.rand(2, 3, 64, 96)
    K = torch.tensor([[80.0, 0, 48], [0, 80, 32], [0, 0, 1]]).expand(2, 3, 3)
    ref = create_backend("torch", small_model)(x, K)
    out = create_backend("torch", small_model, dtype="bf16")(x, K)
    assert out["depth"].dtype == torch.float32  # outputs come back as fp32 for the later stages
    rel = (out["depth"] - ref["depth"]).abs().max() / ref["depth"].abs().max()
    assert rel < 0.05  # bf16 keeps 8 bits of mantissa: about 1% here, not a different answer


def test_bf16_backend_stores_weights_once_with_the_same_rounding_as_autocast(small_model):
    """The backend keeps bf16 copies of the conv weights (autocast would cast them on every
    forward); the outputs are bit-identical to autocast over fp32 weights, and the caller's
    model keeps its fp32 weights."""
    from perception.nn import reparameterize_model

    x = torch.rand(2, 3, 64, 96)
    K = torch.tensor([[80.0, 0, 48], [0, 80, 32], [0, 0, 1]]).expand(2, 3, 3)
    backend = create_backend("torch", small_model, dtype="bf16")
    convs = [m for m in backend.model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.dtype == torch.bfloat16 for c in convs)
    assert all(p.dtype == torch.float32 for p in small_model.parameters())
    ref_model = reparameterize_model(small_model, inplace=False).eval().to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        ref = ref_model(x.contiguous(memory_format=torch.channels_last), K)
    out = backend(x, K)
    assert torch.equal(out["depth"], ref["depth"].float()) and torch.equal(out["det"], ref["det"].float())


def test_parallel_copies_of_a_stage_group_hand_frames_on_in_order_and_survive_failures():
    """Two copies of a slow stateless group finish frames out of order; the next group still gets
    every frame in the order it was produced, a frame that fails in a copy is dropped without
    stalling the ones behind it, and the run ends when the producer does."""
    from perception.pipeline.engine import Engine, Frame, StageGroup

    n = 40
    produced = iter(range(n))

    def produce():
        k = next(produced, None)
        return None if k is None else Frame(k, k / 10, ["cam"], [None], [True])

    class Slow:
        name, essential = "slow", True

        def __init__(self):
            self.threads = set()

        def __call__(self, frame):
            self.threads.add(threading.get_ident())
            if frame.index == 7:
                raise ValueError("corrupt frame")
            time.sleep(0.004 if frame.index % 3 else 0.02)  # copies overtake each other
            return frame

    class Record:
        name = "record"

        def __init__(self):
            self.seen = []

        def __call__(self, frame):
            self.seen.append(frame.index)
            return frame

    slow, record, started = Slow(), Record(), []
    engine = Engine(produce, [StageGroup([slow], workers=2, on_start=lambda: started.append(1)), [record]])
    engine.run()
    assert record.seen == [k for k in range(n) if k != 7]
    assert engine.frames == n - 1 and engine.errors["stage_slow"] == 1
    assert len(slow.threads) == 2 and len(started) == 2
    with pytest.raises(ValueError, match="at least one worker"):
        StageGroup([slow], workers=0)


def test_model_copies_one_per_core_on_a_small_cpu():
    from perception.pipeline.runner import model_parallelism

    assert model_parallelism(6, "cpu", "torch", cores=2) == (2, 1)        # one copy per core, one thread each
    assert model_parallelism(1, "cpu", "torch", cores=2) == (2, 1)        # the dashcam too
    assert model_parallelism(1, "cpu", "torch", workers=1, cores=2) == (1, 1)   # one copy: a core left
    assert model_parallelism(6, "cpu", "onnx", cores=2) == (1, 2)         # other runtimes: one session
    assert model_parallelism(6, "cuda", "torch", cores=2)[0] == 1
    assert model_parallelism(6, "cpu", "torch", cores=16)[0] == 1
    assert model_parallelism(6, "cpu", "torch", threads=2, cores=2) == (1, 2)   # --threads: one copy
    assert model_parallelism(6, "cpu", "torch", workers=2, threads=4, cores=4) == (2, 2)


def test_default_torch_threads_leave_a_core_for_the_other_stages_with_few_cameras():
    from perception.pipeline.runner import default_torch_threads

    assert default_torch_threads(1, "cpu", cores=2) == 1
    assert default_torch_threads(6, "cpu", cores=2) == 2
    assert default_torch_threads(2, "cpu", cores=4) == 3
    assert default_torch_threads(1, "cpu", cores=1) == 1
    assert default_torch_threads(1, "cpu", cores=16) == torch.get_num_threads()  # big machines: torch's choice


def test_shipped_nuscenes_rig_finds_the_shared_images(shared_data, monkeypatch):
    monkeypatch.setenv("PERCEPTION_SHARED_DATA", str(shared_data))
    rig, sources = build_rig(Path(__file__).resolve().parents[1] / "demo" / "nuscenes_keyframe.yaml")
    assert len(rig) == 6 and all(Path(s).is_file() for s in sources)
    assert all(str(shared_data) in s for s in sources)  # read in place, never copied


def test_auto_size_matches_the_training_focal_length():
    from perception.nn.registry import TRAIN_FOCAL_PX
    from perception.pipeline.runner import auto_size

    # no focal length known: the long side is capped at 640, never upscaled
    assert auto_size(1280, 720) == (352, 640)
    assert auto_size(448, 256) == (256, 448)
    # the narrow 1280x720 dashcam (fx 1159 px): resized so fx is near the training focal length
    h, w = auto_size(1280, 720, fx=1158.8)
    assert (h, w) == (224, 384) and abs(1158.8 * w / 1280 - TRAIN_FOCAL_PX) < 0.05 * TRAIN_FOCAL_PX
    # a nuScenes camera (fx 1266 px at 1600 wide) lands on the training size itself
    assert auto_size(1600, 900, fx=1266.4) == (256, 448)
    # a wide camera (short focal length) keeps the 640 cap; a telephoto one stops at min_long_side
    assert auto_size(1920, 1080, fx=554.3) == (352, 640)
    assert auto_size(1920, 1080, fx=5000.0) == (192, 320)


def test_a_render_failure_keeps_every_frame_in_the_jsonl(tmp_path, small_model, monkeypatch):
    """Rendering is not essential: a frame it fails on is still logged, counted and in the video."""
    from perception.pipeline.render import Renderer

    real = Renderer.__call__

    def flaky(self, frame):
        if frame.index in (1, 3, 4):
            raise RuntimeError("render broke")
        return real(self, frame)

    monkeypatch.setattr(Renderer, "__call__", flaky)
    rig = Rig("one", [_small_cam()])
    s = Pipeline(rig, [str(_write_video(tmp_path / "v.mp4", 5))], _opts(tmp_path / "out"), model=small_model).run()
    lines = [json.loads(ln) for ln in (tmp_path / "out/detections.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in lines] == [0, 1, 2, 3, 4]
    assert s["frames"] == 5 and s["errors"].get("stage_render") == 3
    cap = cv2.VideoCapture(str(tmp_path / "out/video.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 5  # the last good picture stands in for a failed one


def test_busy_serve_port_is_named_and_leaves_no_outputs(tmp_path, small_model):
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    try:
        with pytest.raises(OSError, match=f"--serve {port}"):
            Pipeline(Rig("one", [_small_cam()]), [MemorySource(96, 64, 3)], _opts(tmp_path / "o", serve=port),
                     model=small_model)
    finally:
        busy.close()
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_rerun_into_the_same_out_replaces_the_old_outputs(tmp_path, small_model):
    rig = Rig("one", [_small_cam()])
    Pipeline(rig, [MemorySource(96, 64, 3)], _opts(tmp_path / "o"), model=small_model).run()
    assert (tmp_path / "o/video.mp4").exists()
    Pipeline(rig, [MemorySource(96, 64, 2)], _opts(tmp_path / "o", render=False), model=small_model).run()
    assert not (tmp_path / "o/video.mp4").exists() and not (tmp_path / "o/bev.png").exists()
    assert len((tmp_path / "o/detections.jsonl").read_text().splitlines()) == 2


def test_a_rig_whose_only_live_camera_never_opens_fails_instead_of_hanging(tmp_path, small_model):
    from perception.pipeline.sources import SourceError

    rig = Rig("one", [_small_cam()])
    pipe = Pipeline(rig, ["rtsp://127.0.0.1:9/x"], _opts(tmp_path / "o", first_frame_timeout=1.5, max_frames=5),
                    model=small_model)
    t0 = time.monotonic()
    with pytest.raises(SourceError, match="no camera delivered a frame within 2 s"):
        pipe.run()
    assert time.monotonic() - t0 < 15
    summary = json.loads((tmp_path / "o/summary.json").read_text())
    assert summary["frames"] == 0 and summary["errors"].get("open", 0) >= 1


def test_mjpeg_server_refuses_foreign_hosts_and_frees_idle_connections(monkeypatch, capfd):
    import socket

    import perception.pipeline.server as server_mod

    monkeypatch.setattr(server_mod, "IDLE_TIMEOUT_S", 0.5)
    srv = MJPEGServer(0)
    try:
        srv.update(np.zeros((48, 64, 3), np.uint8), {"frames": 1})
        # DNS rebinding: a foreign site's name resolved to 127.0.0.1 carries its own Host header
        req = urllib.request.Request(srv.url + "stats.json", headers={"Host": "evil.example:80"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=5)
        assert err.value.code == 421
        assert _get(srv.url.replace("127.0.0.1", "localhost") + "stats.json")[0] == 200
        # an idle connection is closed by the server instead of holding a thread
        idle = socket.create_connection((srv.host, srv.port), timeout=5)
        t0 = time.monotonic()
        assert idle.recv(1) == b"" and time.monotonic() - t0 < 4
        idle.close()
        # a client that leaves mid-stream leaves no traceback
        s = socket.create_connection((srv.host, srv.port), timeout=5)
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.recv(100)
        s.close()
        for _ in range(5):
            srv.update(np.zeros((48, 64, 3), np.uint8))
            time.sleep(0.05)
        assert srv.httpd.request_queue_size >= 50
    finally:
        srv.close()
    assert "Traceback" not in capfd.readouterr().err


def test_full_disk_stops_cleanly_keeping_complete_lines(tmp_path, small_model, monkeypatch):
    """Writes fail with ENOSPC from the third frame on: the run stops with one clear error,
    detections.jsonl holds only complete lines, no summary.tmp is left behind."""
    import errno

    from perception.pipeline.sinks import JsonlSink, OutputWriteError

    class FillingFile:
        """The real file until two lines are in; then part of a line lands and the disk is full."""

        def __init__(self, fh):
            self.fh, self.writes = fh, 0

        def write(self, data):
            self.writes += 1
            if self.writes > 2:
                self.fh.write(data[:10])
                self.fh.flush()
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.fh.write(data)

        def __getattr__(self, name):
            return getattr(self.fh, name)

    real_init = JsonlSink.__init__

    def init(self, path):
        real_init(self, path)
        self.fh = FillingFile(self.fh)

    monkeypatch.setattr(JsonlSink, "__init__", init)
    rig = Rig("one", [_small_cam()])
    pipe = Pipeline(rig, [MemorySource(96, 64, 50)], _opts(tmp_path / "o"), model=small_model)
    with pytest.raises(OutputWriteError, match="No space left on device"):
        pipe.run()
    text = (tmp_path / "o/detections.jsonl").read_text()
    assert text.endswith("\n") and [json.loads(ln)["frame"] for ln in text.splitlines()] == [0, 1]
    assert not (tmp_path / "o/summary.tmp").exists()
    summary = json.loads((tmp_path / "o/summary.json").read_text())
    assert summary["errors"].get("stage_sinks") == 1 and summary["frames"] >= 2


def test_video_stops_while_it_can_still_be_finalised_on_a_full_disk(tmp_path, small_model, monkeypatch):
    import shutil as shutil_mod

    from perception.pipeline import sinks
    from perception.pipeline.sinks import OutputWriteError

    real = shutil_mod.disk_usage
    state = {"calls": 0}

    def filling(path):
        state["calls"] += 1
        usage = real(path)
        return usage._replace(free=0) if state["calls"] > 1 else usage  # full from the 11th frame on

    monkeypatch.setattr(sinks.shutil, "disk_usage", filling)
    rig = Rig("one", [_small_cam()])
    with pytest.raises(OutputWriteError, match="disk almost full"):
        Pipeline(rig, [MemorySource(96, 64, 40)], _opts(tmp_path / "o"), model=small_model).run()
    cap = cv2.VideoCapture(str(tmp_path / "o/video.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 10  # a playable video of the frames written before the stop
    assert len((tmp_path / "o/detections.jsonl").read_text().splitlines()) >= 10


def test_mjpeg_server_serves_fifty_clients_on_loopback():
    """A bounded load test: 50 concurrent clients (stats, frame, a short stream read) on 127.0.0.1."""
    from concurrent.futures import ThreadPoolExecutor

    srv = MJPEGServer(0)
    img = np.zeros((48, 64, 3), np.uint8)
    srv.update(img, {"frames": 1})
    stop = threading.Event()

    def feed():
        while not stop.is_set():
            srv.update(img)
            time.sleep(0.02)

    def client(i: int) -> bool:
        if i % 3 == 0:
            with urllib.request.urlopen(srv.url + "stream.mjpg", timeout=10) as r:
                return r.read(64).startswith(b"--perceptionframe")
        return _get(srv.url + ("stats.json" if i % 3 == 1 else "frame.jpg"), timeout=10)[0] == 200

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    try:
        with ThreadPoolExecutor(50) as pool:
            results = list(pool.map(client, range(50), timeout=60))
    finally:
        stop.set()
        feeder.join(5)
        srv.close()
    assert all(results) and len(results) == 50


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_stopped_by_a_failing_output_ends_even_when_the_queues_are_full(workers):
    """An output that cannot be written stops the run while the stages before it are blocked on a
    full queue: the run must end with that error (and the caller closes its sinks), not wait
    forever for an end-of-stream mark that a full queue refused."""
    from perception.pipeline.engine import Engine, Frame, StageGroup

    class DiskFull(OSError):
        stops_run = True

    produced = iter(range(1000))

    def produce():
        k = next(produced, None)
        return None if k is None else Frame(k, k / 10, ["cam"], [None], [True])

    class Fast:
        name, essential = "fast", True

        def __call__(self, frame):
            return frame

    class SlowWriter:
        name, essential = "write", True

        def __call__(self, frame):
            time.sleep(0.3)  # longer than the engine's 0.1 s put timeout
            if frame.index == 3:
                raise DiskFull("no space left on device")
            return frame

    engine = Engine(produce, [StageGroup([Fast()], workers=workers), [SlowWriter()]], queue_size=1)
    errors = []

    def run():
        try:
            engine.run()
        except DiskFull as exc:
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "the run hung after its output failed"
    assert len(errors) == 1 and 3 <= engine.frames < 10  # the frames in flight finish
