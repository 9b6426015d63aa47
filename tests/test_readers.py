"""Dataset readers on the shared real samples (nuScenes keyframe, KITTI 000008, dashcam)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from perception.data import Sample
from perception.data.readers import (DataError, KittiReader, NuScenesInfoReader, NuScenesReader, VideoReader,
                                     open_nuscenes, read_depth_png, read_image, read_points)
from perception.data.readers.kitti import (KittiCalib, KittiObject, read_kitti_calib, write_kitti_calib,
                                           write_kitti_labels)
from perception.geometry import CalibrationError, Rig
from perception.geometry.lidar import project_lidar
from perception.geometry.transforms import invert_transform, matrix_to_quaternion, rot_z

ROOT = Path(__file__).resolve().parents[1]

# README of the shared data: LiDAR points (depth > 0.5 m) landing in each 1600x900 image
NUSC_COUNTS = {"CAM_FRONT": 3067, "CAM_FRONT_RIGHT": 3079, "CAM_FRONT_LEFT": 3704, "CAM_BACK": 4826,
               "CAM_BACK_LEFT": 4097, "CAM_BACK_RIGHT": 3379}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


# --------------------------------------------------------------------------- nuScenes
@pytest.fixture(scope="module")
def nusc_dir(shared_data: Path) -> Path:
    return shared_data / "nuscenes_keyframe"


@pytest.fixture(scope="module")
def nusc(nusc_dir: Path) -> Sample:
    return NuScenesInfoReader(nusc_dir)[0]


def test_nuscenes_lidar_projection_matches_readme(nusc: Sample) -> None:
    pts = nusc.extras["lidar_points"]
    assert pts.shape == (34688, 5)
    in_any = np.zeros(len(pts), bool)
    for cam, depth in zip(nusc.cameras, nusc.depth):
        proj = project_lidar(pts, cam, nusc.extras["T_cam_lidar"][cam.name])
        assert abs(proj.count - NUSC_COUNTS[cam.name]) <= 0.01 * NUSC_COUNTS[cam.name], cam.name
        in_any |= proj.in_image
        # the sparse depth map holds one (nearest) point per pixel
        assert 0.97 * proj.count <= (depth > 0).sum() <= proj.count
        assert depth.dtype == np.float32 and depth.shape == (900, 1600) and depth.max() < 120
    assert abs(in_any.sum() - 20206) <= 202
    # self-returns within 1 m of the sensor never land in an image
    assert (np.linalg.norm(pts[:, :3], axis=1) < 1.0).sum() == 8029


def test_nuscenes_front_fraction(nusc: Sample) -> None:
    cam = nusc.cameras[nusc.camera_names.index("CAM_FRONT")]
    proj = project_lidar(nusc.extras["lidar_points"], cam, nusc.extras["T_cam_lidar"]["CAM_FRONT"])
    assert round(100 * proj.count / 34688, 2) == pytest.approx(8.84, abs=0.09)


def test_nuscenes_boxes(nusc: Sample, nusc_dir: Path) -> None:
    ref = json.loads((nusc_dir / "boxes.json").read_text())
    assert nusc.camera_names == ["CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT",
                                 "CAM_BACK_RIGHT"]
    assert all(img.shape == (900, 1600, 3) for img in nusc.images)
    assert len(nusc.boxes3d) == len(ref["lidar_boxes"]) == 69
    np.testing.assert_allclose(nusc.boxes3d.center, [b["center_xyz_ego"] for b in ref["lidar_boxes"]], atol=1e-4)
    dyaw = np.angle(np.exp(1j * (nusc.boxes3d.yaw - [b["yaw_ego"] for b in ref["lidar_boxes"]])))
    assert np.abs(dyaw).max() < 1e-4
    assert [len(b) for b in nusc.boxes2d] == [len(ref["camera_boxes"][c]) for c in nusc.camera_names]
    names = nusc.extras["boxes3d_names"]
    assert names.count("car") == (nusc.boxes3d.labels == 0).sum() > 0
    assert (nusc.boxes3d.labels[[i for i, n in enumerate(names) if n in ("barrier", "traffic_cone", None)]] == -1).all()
    # boxes stand on the ground (ego z = 0 under the rear axle)
    bottoms = nusc.boxes3d.center[:, 2] - nusc.boxes3d.size[:, 2] / 2
    assert abs(np.median(bottoms)) < 0.3


def test_nuscenes_box_centres_fall_in_their_2d_boxes(nusc: Sample) -> None:
    inside = total = 0
    for cam, b2 in zip(nusc.cameras, nusc.boxes2d):
        assert (b2.instance_ids >= 0).all()
        uv, depth = cam.project(nusc.boxes3d.center[b2.instance_ids])
        # centres projected with the static mounting differ from the motion-compensated ones by < 0.4 m
        vis = (depth > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
        for (u, v), box in zip(uv[vis], b2.boxes[vis]):
            total += 1
            inside += box[0] - 8 <= u <= box[2] + 8 and box[1] - 8 <= v <= box[3] + 8
    assert total >= 75 and inside == total


def _write_official(src: Path, dst: Path) -> None:
    """A one-sample official-layout dataset from rig.json / boxes.json (files symlinked)."""
    general = {"car": "vehicle.car", "truck": "vehicle.truck", "trailer": "vehicle.trailer", "bus": "vehicle.bus.rigid",
               "construction_vehicle": "vehicle.construction", "bicycle": "vehicle.bicycle",
               "motorcycle": "vehicle.motorcycle", "pedestrian": "human.pedestrian.adult",
               "traffic_cone": "movable_object.trafficcone", "barrier": "movable_object.barrier"}
    rig = json.loads((src / "rig.json").read_text())
    boxes = json.loads((src / "boxes.json").read_text())
    E_l, L = np.array(rig["ego2global"]), np.array(rig["lidar"]["lidar2ego"])
    t: dict[str, list] = {k: [] for k in NuScenesReader.TABLES}

    def pose(tok: str, T: np.ndarray) -> dict:
        return {"token": tok, "translation": T[:3, 3].tolist(), "rotation": matrix_to_quaternion(T[:3, :3]).tolist()}

    stok, ts_l = rig["sample_token"], int(round(rig["lidar_timestamp_s"] * 1e6))
    t["sample"].append({"token": stok, "timestamp": ts_l, "scene_token": "s0", "prev": "", "next": ""})

    def add(channel: str, modality: str, T_ego_sensor, K, E, ts: int, fname: str) -> None:
        (dst / "samples" / channel).mkdir(parents=True, exist_ok=True)
        os.symlink(src / fname, dst / "samples" / channel / fname)
        t["sensor"].append({"token": "s_" + channel, "channel": channel, "modality": modality})
        t["calibrated_sensor"].append({**pose("cs_" + channel, T_ego_sensor), "sensor_token": "s_" + channel,
                                       "camera_intrinsic": K})
        t["ego_pose"].append({**pose("ep_" + channel, E), "timestamp": ts})
        t["sample_data"].append({"token": "sd_" + channel, "sample_token": stok, "ego_pose_token": "ep_" + channel,
                                 "calibrated_sensor_token": "cs_" + channel, "timestamp": ts, "is_key_frame": True,
                                 "filename": f"samples/{channel}/{fname}", "prev": "", "next": ""})

    add("LIDAR_TOP", "lidar", L, [], E_l, ts_l, rig["lidar"]["file"])
    for c in rig["cameras"]:
        C, l2c = np.array(c["cam2ego"]), np.array(c["lidar2cam"])
        E_c = E_l @ L @ invert_transform(l2c) @ invert_transform(C)  # ego pose at the camera timestamp
        add(c["name"], "camera", C, c["K"], E_c, int(round(c["timestamp_s"] * 1e6)), c["image_file"])
    cats: dict[str, str] = {}
    for i, b in enumerate(boxes["lidar_boxes"]):
        name = general.get(b["class"], "animal")
        if name not in cats:
            cats[name] = f"c{len(cats)}"
            t["category"].append({"token": cats[name], "name": name})
        t["instance"].append({"token": f"i{i}", "category_token": cats[name]})
        M = E_l @ L  # annotations are upright in the global frame: keep the heading only
        head = M[:3, :3] @ [np.cos(b["yaw"]), np.sin(b["yaw"]), 0.0]
        G = np.eye(4)
        G[:3, :3], G[:3, 3] = rot_z(np.arctan2(head[1], head[0])), (M @ np.r_[b["center_xyz"], 1])[:3]
        l, w, h = b["size_lwh"]
        t["sample_annotation"].append({**pose(f"a{i}", G), "sample_token": stok, "instance_token": f"i{i}",
                                       "size": [w, l, h], "prev": "", "next": ""})
    (dst / "v1.0-mini").mkdir(parents=True)
    for k, v in t.items():
        (dst / "v1.0-mini" / f"{k}.json").write_text(json.dumps(v))


def test_nuscenes_official_layout_agrees_with_info_pickle(nusc: Sample, nusc_dir: Path, tmp_path: Path) -> None:
    _write_official(nusc_dir, tmp_path / "nuscenes")
    reader = open_nuscenes(tmp_path / "nuscenes")
    assert isinstance(reader, NuScenesReader) and len(reader) == 1
    off = reader[0]
    assert off.camera_names == nusc.camera_names
    np.testing.assert_allclose(off.boxes3d.center, nusc.boxes3d.center, atol=1e-3)
    np.testing.assert_allclose(off.boxes3d.size, nusc.boxes3d.size, atol=1e-6)
    assert np.abs(np.angle(np.exp(1j * (off.boxes3d.yaw - nusc.boxes3d.yaw)))).max() < 0.01
    np.testing.assert_array_equal(off.boxes3d.labels, nusc.boxes3d.labels)
    for ca, cb in zip(nusc.cameras, off.cameras):
        np.testing.assert_allclose(cb.K, ca.K)
        np.testing.assert_allclose(cb.T_ego_cam, ca.T_ego_cam, atol=1e-6)
        np.testing.assert_allclose(off.extras["T_cam_lidar"][cb.name], nusc.extras["T_cam_lidar"][ca.name], atol=1e-5)
    for name, a, b in zip(nusc.camera_names, nusc.boxes2d, off.boxes2d):
        # mmdetection3d drops objects outside the 10 detection classes from its 2D boxes
        keep = np.array([off.extras["boxes3d_names"][j] is not None for j in b.instance_ids], bool)
        assert sorted(a.instance_ids) == sorted(b.instance_ids[keep]), name
        for k, j in enumerate(a.instance_ids):
            other = b.boxes[list(b.instance_ids).index(j)]
            assert np.abs(a.boxes[k] - other).max() < 1.0, (name, j)   # devkit 2D boxes reproduced
    for da, db in zip(nusc.depth, off.depth):
        assert np.abs(da - db).max() < 1e-3


# --------------------------------------------------------------------------- KITTI
@pytest.fixture(scope="module")
def kitti_src(shared_data: Path) -> Path:
    return shared_data / "kitti_000008"


def _write_kitti(src: Path, dst: Path) -> None:
    """Standard KITTI object layout from the shared calib.json / labels.json / png / bin."""
    calib = json.loads((src / "calib.json").read_text())
    for d in ("image_2", "calib", "label_2", "velodyne"):
        (dst / d).mkdir(parents=True)
    write_kitti_calib(KittiCalib(P={i: np.array(calib[f"P{i}"]) for i in range(4)}, R0_rect=np.array(calib["R0_rect"]),
                                 Tr_velo_to_cam=np.array(calib["Tr_velo_to_cam"]),
                                 Tr_imu_to_velo=np.array(calib["Tr_imu_to_velo"])), dst / "calib" / "000008.txt")
    objs = []
    for o in json.loads((src / "labels.json").read_text())["objects"]:
        if o["class"] == "DontCare":
            objs.append(KittiObject("DontCare", -1, -1, -10, np.array(o["bbox_2d_xyxy"])))
        else:
            objs.append(KittiObject(o["class"], o["truncated"], o["occluded"], o["alpha"], np.array(o["bbox_2d_xyxy"]),
                                    np.array(o["dimensions_hwl_kitti"]), np.array(o["location_bottom_center_cam"]),
                                    o["rotation_y"]))
    write_kitti_labels(objs, dst / "label_2" / "000008.txt")
    (dst / "image_2" / "000008.png").write_bytes((src / "000008.png").read_bytes())
    (dst / "velodyne" / "000008.bin").write_bytes((src / "000008.bin").read_bytes())


def test_kitti_layout_round_trip(kitti_src: Path, tmp_path: Path) -> None:
    _write_kitti(kitti_src, tmp_path / "kitti")
    reader = KittiReader(tmp_path / "kitti")
    assert reader.ids == ["000008"]
    s = reader[0]
    cam = s.cameras[0]
    assert (cam.width, cam.height) == (1242, 375) and s.images[0].shape == (375, 1242, 3)
    pts = s.extras["lidar_points"]
    assert pts.shape == (17238, 4)
    proj = project_lidar(pts, cam, s.extras["T_cam_lidar"][cam.name], min_range=0.0)
    assert proj.count == 17238                               # the reduced cloud is all in view
    # the Camera's own (orthonormalised) mounting projects the same way
    proj_ego = project_lidar(pts, cam, T_ego_lidar=s.extras["T_ego_lidar"], min_range=0.0)
    assert np.nanmax(np.abs(proj_ego.uv - proj.uv)) < 0.05
    b2 = s.boxes2d[0]
    assert s.extras["kitti_types"].count("Car") == 6 and s.extras["kitti_types"].count("DontCare") == 4
    assert len(s.boxes3d) == 6 and (s.boxes3d.labels == 0).all()
    assert b2.ignore.sum() == 4 and (b2.labels[b2.ignore] == -1).all() and (b2.instance_ids[b2.ignore] == -1).all()
    corners = s.boxes3d.corners()
    for k in np.flatnonzero(~b2.ignore):
        uv, _ = cam.project(corners[b2.instance_ids[k]])
        rect = np.clip([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()], 0, [1242, 375, 1242, 375])
        assert iou(rect, b2.boxes[k]) > 0.9
        cu, cv_ = cam.project(s.boxes3d.center[b2.instance_ids[k]][None])[0][0]
        if 0 <= cu < 1242 and 0 <= cv_ < 375:
            assert b2.boxes[k][0] <= cu <= b2.boxes[k][2] and b2.boxes[k][1] <= cv_ <= b2.boxes[k][3]
    # cars stand on the ground (Velodyne 1.73 m above it); the far ones rise with the road
    bottoms = s.boxes3d.center[:, 2] - s.boxes3d.size[:, 2] / 2
    assert np.abs(np.median(bottoms)) < 0.1 and np.abs(bottoms).max() < 0.5
    # the shared folder read directly (calib.json / labels.json) gives the same sample
    flat = KittiReader(kitti_src)[0]
    np.testing.assert_allclose(flat.boxes3d.center, s.boxes3d.center, atol=0.01)
    np.testing.assert_allclose(flat.cameras[0].T_ego_cam, cam.T_ego_cam, atol=1e-6)
    np.testing.assert_array_equal(flat.depth[0] > 0, s.depth[0] > 0)


def test_shipped_kitti_rig_matches_reader(kitti_src: Path) -> None:
    cam = KittiReader(kitti_src)[0].cameras[0]
    rig_cam = Rig.load(ROOT / "data" / "rigs" / "kitti.yaml")[0]
    np.testing.assert_allclose(rig_cam.K, cam.K, atol=1e-4)
    np.testing.assert_allclose(rig_cam.T_ego_cam, cam.T_ego_cam, atol=1e-6)
    assert rig_cam.T_ego_cam[2, 3] == pytest.approx(1.73 - 0.0751, abs=0.01)   # camera ~1.65 m high


def test_kitti_depth_png(kitti_src: Path, tmp_path: Path) -> None:
    depth = np.zeros((375, 1242), np.uint16)
    depth[100, 200], depth[300, 1000] = 256 * 12, 256 * 40 + 128
    (tmp_path / "depth").mkdir()
    cv2.imwrite(str(tmp_path / "depth" / "000008.png"), depth)
    d = read_depth_png(tmp_path / "depth" / "000008.png")
    assert d[100, 200] == 12.0 and d[300, 1000] == 40.5 and (d > 0).sum() == 2
    s = KittiReader(kitti_src, depth="png", depth_dir=tmp_path / "depth")[0]
    assert s.depth[0][300, 1000] == 40.5


def test_kitti_calib_errors_name_file_and_field(tmp_path: Path) -> None:
    p = tmp_path / "000001.txt"
    p.write_text("P0: 1 0 0 0 0 1 0 0 0 0 1 0\nR0_rect: 1 0 0 0 1 0 0 0 1\nTr_velo_to_cam: 0 -1 0 0 0 0 -1 0 1 0 0 0\n")
    with pytest.raises(CalibrationError, match=r"000001.txt: missing field 'P2'"):
        read_kitti_calib(p)
    p.write_text("P2: 1 0 0 0 0 1 0\nR0_rect: 1 0 0 0 1 0 0 0 1\n")
    with pytest.raises(CalibrationError, match=r"000001.txt: field 'P2' has 7 values"):
        read_kitti_calib(p)


# --------------------------------------------------------------------------- video
def test_video_reader_frames_and_calibration(shared_data: Path, caplog) -> None:
    rig = ROOT / "data" / "rigs" / "dashcam_1280x720.yaml"
    frames = list(VideoReader(shared_data / "dashcam" / "test_video.mp4", rig))
    assert len(frames) == 38 and frames[-1].timestamp == pytest.approx(37 / 25)
    assert frames[0].images[0].shape == (720, 1280, 3) and frames[0].boxes3d is None and frames[0].depth is None
    # a 960x540 source with the 1280x720 calibration: K scaled, with a warning
    with caplog.at_level(logging.WARNING):
        s = next(iter(VideoReader(shared_data / "dashcam" / "solidWhiteRight.mp4", rig, max_frames=2)))
    assert "differs from the calibration" in caplog.text
    np.testing.assert_allclose(s.cameras[0].K[0, 0], Rig.load(rig)[0].K[0, 0] * 0.75)
    assert s.cameras[0].size == (960, 540)


def test_image_folder_and_glob_natural_order(tmp_path: Path, caplog) -> None:
    for i in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.full((48, 64, 3), i, np.uint8))
    cal = tmp_path / "cam.yaml"
    cal.write_text("width: 64\nheight: 48\nK: [[50, 0, 32], [0, 50, 24], [0, 0, 1]]\n")
    frames = list(VideoReader(tmp_path, cal))
    assert [int(f.images[0][0, 0, 0]) for f in frames] == [1, 2, 10]
    assert [f.frame_id for f in VideoReader(str(tmp_path / "f1*.png"), cal)] == ["f1.png#0", "f10.png#1"]
    with caplog.at_level(logging.WARNING):
        guessed = next(iter(VideoReader(tmp_path)))
    assert "no calibration" in caplog.text and guessed.cameras[0].size == (64, 48)


# --------------------------------------------------------------------------- corrupt input
def test_truncated_jpeg_is_a_data_error(shared_data: Path, tmp_path: Path) -> None:
    data = (shared_data / "dashcam" / "test_images" / "test1.jpg").read_bytes()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="cut.jpg.*truncated"):
        read_image(bad)
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="junk.png"):
        read_image(tmp_path / "junk.png")
    with pytest.raises(DataError, match="cut.jpg"):
        list(VideoReader(tmp_path / "*.jpg"))


def test_corrupt_video_point_cloud_and_pickle(tmp_path: Path) -> None:
    (tmp_path / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    with pytest.raises(DataError, match="broken.mp4"):
        VideoReader(tmp_path / "broken.mp4")
    pts = np.arange(40, dtype=np.float32)
    (tmp_path / "cut.bin").write_bytes(pts.tobytes()[:-6])
    with pytest.raises(DataError, match="cut.bin.*not a multiple"):
        read_points(tmp_path / "cut.bin", 4)
    (tmp_path / "ok.bin").write_bytes(pts.tobytes())
    assert read_points(tmp_path / "ok.bin", 4).shape == (10, 4)
    (tmp_path / "info.pkl").write_bytes(b"garbage")
    with pytest.raises(DataError, match="info.pkl"):
        NuScenesInfoReader(tmp_path)


def test_nuscenes_missing_table_names_it(tmp_path: Path) -> None:
    (tmp_path / "v1.0-mini").mkdir()
    (tmp_path / "v1.0-mini" / "sample.json").write_text("[]")
    with pytest.raises(DataError, match="sample_data.json"):
        NuScenesReader(tmp_path)
