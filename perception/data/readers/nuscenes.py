"""nuScenes readers: the mmdetection3d 1.x info pickle, and the official JSON table layout.

Both return one :class:`Sample` per keyframe with the six cameras (``CAM_FRONT`` ...) in the
order of the source, ``T_ego_cam`` = the fixed mounting (``cam2ego`` / calibrated_sensor),
``Boxes3D`` in the ego frame *at the LiDAR timestamp* (geometric centre, (l, w, h), yaw about
ego +z), and ``extras``:

- ``lidar_points`` ``[N, 5]`` float32 in the LIDAR_TOP frame (x, y, z, intensity, ring),
- ``T_ego_lidar`` (lidar2ego), ``T_cam_lidar`` {camera: 4x4}: LiDAR -> camera *including* the
  ego motion between the LiDAR and camera timestamps (lidar -> ego(t_lidar) -> global ->
  ego(t_cam) -> cam), the transform to use for projecting this sweep (the cameras fire up to
  ~45 ms before the LiDAR at ~9 m/s, i.e. ~0.3 m),
- ``boxes3d_names`` (nuScenes detection name per 3D box), ``sample_token``.

``depth`` (``depth="lidar"``): sparse z-depth per camera from the sweep (self-returns within
1 m of the LiDAR dropped). Labels outside ``classes`` are kept with label -1 so the box count
equals the annotation count; ``Boxes2D.instance_ids`` index into ``Boxes3D``.

The official layout computes 2D boxes like the nuScenes devkit (``export_2d_annotation_as_json``
/ ``post_process_coords``): the 3D box corners in front of the camera are projected, and the
bounds of their convex hull intersected with the image are the box (``cv2.intersectConvexConvex``
instead of shapely).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from perception.data.classes import CLASSES
from perception.data.readers.common import DataError, class_index, read_image, read_points
from perception.data.sample import Boxes2D, Boxes3D, Sample
from perception.geometry.camera import CalibrationError, Camera
from perception.geometry.lidar import lidar_depth_map
from perception.utils.safe_load import load_data_pickle
from perception.geometry.transforms import (invert_transform, make_transform, orthonormalize,
                                            quaternion_to_matrix, transform_points)

log = logging.getLogger(__name__)

__all__ = ["NuScenesInfoReader", "NuScenesReader", "open_nuscenes", "DETECTION_NAMES",
           "category_to_detection_name", "box_to_2d"]

CAMERA_ORDER = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
DETECTION_NAMES = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle", "motorcycle",
                   "pedestrian", "traffic_cone", "barrier")
# nuScenes devkit ``category_to_detection_name``
_GENERAL_TO_DETECTION = {
    "movable_object.barrier": "barrier", "vehicle.bicycle": "bicycle", "vehicle.bus.bendy": "bus",
    "vehicle.bus.rigid": "bus", "vehicle.car": "car", "vehicle.construction": "construction_vehicle",
    "vehicle.motorcycle": "motorcycle", "human.pedestrian.adult": "pedestrian",
    "human.pedestrian.child": "pedestrian", "human.pedestrian.construction_worker": "pedestrian",
    "human.pedestrian.police_officer": "pedestrian", "movable_object.trafficcone": "traffic_cone",
    "vehicle.trailer": "trailer", "vehicle.truck": "truck",
}


def category_to_detection_name(name: str) -> str | None:
    """nuScenes category (``vehicle.car``) -> detection name (``car``), None for others."""
    if name in DETECTION_NAMES:
        return name
    return _GENERAL_TO_DETECTION.get(name)


def _mat(value: Any, shape: tuple[int, int], field: str, where: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: field '{field}' is not numeric") from None
    if arr.shape == (4, 4) and shape == (3, 3):
        arr = arr[:3, :3]
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{where}: field '{field}' has shape {arr.shape} (or NaN), expected {shape}")
    return arr


def _rigid(T: np.ndarray) -> np.ndarray:
    """Re-orthonormalise the rotation of a transform stored in float32."""
    T = T.copy()
    T[:3, :3] = orthonormalize(T[:3, :3])
    return T


def _yaw_in(T: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """Yaw (about +z) of headings ``(cos yaw, sin yaw, 0)`` after rotating by ``T``'s rotation."""
    d = np.stack([np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)], -1) @ T[:3, :3].T
    return np.arctan2(d[:, 1], d[:, 0])


def _resolve(root: Path, rel: str, subdir: str) -> Path:
    for cand in (root / rel, root / "samples" / subdir / Path(rel).name, root / Path(rel).name):
        if cand.is_file():
            return cand
    raise DataError(f"{root / rel}: file not found (also looked in samples/{subdir}/)")


def box_to_2d(corners_cam: np.ndarray, K: np.ndarray, width: int, height: int) -> np.ndarray | None:
    """nuScenes-devkit 2D box of a 3D box: corners ``[8, 3]`` (camera frame) with z > 0 projected
    with ``K``; bounds of (convex hull ∩ image). None when it does not intersect the image."""
    c = corners_cam[corners_cam[:, 2] > 0]
    if len(c) == 0:
        return None
    uv = (c @ K.T)[:, :2] / c[:, 2:3]
    hull = cv2.convexHull(uv.astype(np.float32))
    img = np.array([[0, 0], [width, 0], [width, height], [0, height]], np.float32).reshape(-1, 1, 2)
    if len(hull) < 3:
        return None
    area, inter = cv2.intersectConvexConvex(hull, img)
    if inter is None or area <= 0:
        return None
    inter = inter.reshape(-1, 2)
    return np.array([inter[:, 0].min(), inter[:, 1].min(), inter[:, 0].max(), inter[:, 1].max()])


def _cam_corners(center: np.ndarray, size_lwh: np.ndarray, R: np.ndarray) -> np.ndarray:
    """[8, 3] corners of a box with rotation R (columns: length, width, height axes)."""
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1]) * 0.5
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1]) * 0.5
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1]) * 0.5
    local = np.stack([sx * size_lwh[0], sy * size_lwh[1], sz * size_lwh[2]], -1)
    return local @ R.T + center


class _Base:
    def __init__(self, depth: str | None, load_lidar: bool, classes: tuple[str, ...],
                 cameras: tuple[str, ...] | None, min_range: float) -> None:
        if depth not in (None, "lidar"):
            raise ValueError(f"nuScenes reader: depth must be 'lidar' or None, got {depth!r}")
        self.depth, self.load_lidar, self.classes = depth, load_lidar, classes
        self.camera_filter, self.min_range = cameras, min_range

    def _label(self, name: str | None) -> int:
        return -1 if name is None else class_index("nuscenes", name, self.classes)

    def _finish(self, images, cams, T_cam_lidar, points, boxes2d, boxes3d, names, ts, token, T_ego_lidar) -> Sample:
        depth = None
        if self.depth == "lidar" and points is not None:
            depth = [lidar_depth_map(points, c, T_cam_lidar[c.name], min_range=self.min_range) for c in cams]
        extras = {"T_ego_lidar": T_ego_lidar, "T_cam_lidar": T_cam_lidar, "boxes3d_names": names,
                  "sample_token": token}
        if points is not None:
            extras["lidar_points"] = points
        return Sample(images=images, cameras=cams, timestamp=ts, depth=depth, boxes2d=boxes2d,
                      boxes3d=boxes3d, frame_id=f"nuscenes/{token}", extras=extras)


class NuScenesInfoReader(_Base):
    """mmdetection3d 1.x info pickle (``{'metainfo', 'data_list'}``) next to its images / sweep.

    Lidar boxes ``bbox_3d = [x, y, z, l, w, h, yaw]`` (geometric centre, LIDAR_TOP frame) are
    moved to the ego frame with ``lidar2ego``; 2D boxes come from ``cam_instances`` (the devkit
    boxes stored by mmdetection3d).
    """

    def __init__(self, root: str | Path, info_file: str | Path | None = None, *, depth: str | None = "lidar",
                 load_lidar: bool = True, classes: tuple[str, ...] = CLASSES,
                 cameras: tuple[str, ...] | None = None, min_range: float = 1.0) -> None:
        super().__init__(depth, load_lidar, classes, cameras, min_range)
        self.root = Path(root)
        if info_file is None:
            pkls = sorted(self.root.glob("*.pkl"))
            if len(pkls) != 1:
                raise DataError(f"{self.root}: expected exactly one .pkl info file, found {len(pkls)}; pass info_file")
            info_file = pkls[0]
        self.info_file = Path(info_file)
        try:  # plain data and numpy arrays only: a planted pickle must not run code
            info = load_data_pickle(self.info_file)
        except FileNotFoundError:
            raise DataError(f"{self.info_file}: info file not found") from None
        if not isinstance(info, dict) or "data_list" not in info:
            raise DataError(f"{self.info_file}: not an mmdetection3d 1.x info file (no 'data_list')")
        self.data_list = info["data_list"]
        cats = info.get("metainfo", {}).get("categories", {n: i for i, n in enumerate(DETECTION_NAMES)})
        self.index_to_name = {int(v): k for k, v in cats.items()}

    def __len__(self) -> int:
        return len(self.data_list)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def __getitem__(self, index: int) -> Sample:
        info = self.data_list[index]
        where = f"{self.info_file}[{index}]"
        try:
            lidar_info = info["lidar_points"]
            T_ego_lidar = _rigid(_mat(lidar_info["lidar2ego"], (4, 4), "lidar2ego", where))
            cam_infos = info["images"]
        except KeyError as exc:
            raise CalibrationError(f"{where}: missing field {exc}") from None
        names = [n for n in cam_infos if self.camera_filter is None or n in self.camera_filter]
        images, cams, T_cam_lidar = [], [], {}
        for name in names:
            ci = cam_infos[name]
            cw = f"{where}.images.{name}"
            for key in ("img_path", "cam2img", "cam2ego", "lidar2cam"):
                if key not in ci:
                    raise CalibrationError(f"{cw}: missing field '{key}'")
            img = read_image(_resolve(self.root, ci["img_path"], name))
            cam = Camera(name, img.shape[1], img.shape[0], _mat(ci["cam2img"], (3, 3), "cam2img", cw),
                         np.zeros(5), _rigid(_mat(ci["cam2ego"], (4, 4), "cam2ego", cw)))
            images.append(img)
            cams.append(cam)
            T_cam_lidar[name] = _mat(ci["lidar2cam"], (4, 4), "lidar2cam", cw)

        points = None
        if self.load_lidar or self.depth == "lidar":
            nf = int(lidar_info.get("num_pts_feats", 5))
            points = read_points(_resolve(self.root, lidar_info["lidar_path"], "LIDAR_TOP"), nf)

        inst = info.get("instances", [])
        b = np.array([i["bbox_3d"] for i in inst], dtype=np.float64).reshape(-1, 7)
        label_src = [int(i.get("bbox_label_3d", i.get("bbox_label", -1))) for i in inst]
        det_names = [self.index_to_name.get(lbl) for lbl in label_src]
        vel = np.array([i.get("velocity", [np.nan, np.nan]) for i in inst], dtype=np.float64).reshape(-1, 2)
        center = transform_points(T_ego_lidar, b[:, :3])
        vel_ego = (np.c_[vel, np.zeros(len(vel))] @ T_ego_lidar[:3, :3].T)[:, :2]
        boxes3d = Boxes3D(center=center, size=b[:, 3:6].copy(), yaw=_yaw_in(T_ego_lidar, b[:, 6]),
                          labels=np.array([self._label(n) for n in det_names], np.int64),
                          velocity=vel_ego, instance_ids=np.arange(len(b), dtype=np.int64))

        boxes2d = []
        for cam in cams:
            rows = info.get("cam_instances", {}).get(cam.name, [])
            centers_lidar_in_cam = transform_points(T_cam_lidar[cam.name], b[:, :3]) if len(b) else np.zeros((0, 3))
            bb = np.array([r["bbox"] for r in rows], np.float32).reshape(-1, 4)
            b3 = np.array([r["bbox_3d"] for r in rows], np.float64).reshape(-1, 7)
            ids = np.full(len(rows), -1, np.int64)
            for k in range(len(rows)):  # link to the 3D box: same centre in this camera's frame
                if len(b):
                    dist = np.linalg.norm(centers_lidar_in_cam - b3[k, :3], axis=1)
                    j = int(np.argmin(dist))
                    ids[k] = j if dist[j] < 0.05 else -1
            lbls = [self._label(self.index_to_name.get(int(r.get("bbox_label", -1)))) for r in rows]
            boxes2d.append(Boxes2D(boxes=bb, labels=np.array(lbls, np.int64).reshape(-1), instance_ids=ids,
                                   depth=np.array([r.get("depth", np.nan) for r in rows], np.float32).reshape(-1),
                                   center_cam=b3[:, :3].copy(), size=b3[:, [3, 5, 4]].copy(), yaw_cam=b3[:, 6].copy()))
        return self._finish(images, cams, T_cam_lidar, points, boxes2d, boxes3d, det_names,
                            float(info.get("timestamp", 0.0)), str(info.get("token", index)), T_ego_lidar)


class NuScenesReader(_Base):
    """Official nuScenes layout: ``root/v1.0-*/{sample,sample_data,calibrated_sensor,ego_pose,
    sample_annotation,instance,category,sensor}.json`` and ``root/samples/...`` files.

    One :class:`Sample` per keyframe (``sample.json`` order). Annotations (global frame) are moved
    into the ego frame of the LIDAR_TOP keyframe (or of the first camera when there is no LiDAR);
    2D boxes per camera use the ego pose at that camera's timestamp, as the devkit does.
    """

    TABLES = ("sample", "sample_data", "calibrated_sensor", "ego_pose", "sample_annotation", "instance",
              "category", "sensor")

    def __init__(self, root: str | Path, version: str | None = None, *, depth: str | None = "lidar",
                 load_lidar: bool = True, classes: tuple[str, ...] = CLASSES,
                 cameras: tuple[str, ...] | None = None, min_range: float = 1.0) -> None:
        super().__init__(depth, load_lidar, classes, cameras, min_range)
        self.root = Path(root)
        if version is None:
            found = sorted(p.name for p in self.root.glob("v1.0-*") if p.is_dir())
            if not found:
                raise DataError(f"{self.root}: no v1.0-* table folder found")
            version = found[0]
        self.table_dir = self.root / version
        t = {name: self._load(name) for name in self.TABLES}
        self.samples = sorted(t["sample"], key=lambda s: s["timestamp"])
        self.sample_ts = {s["token"]: s["timestamp"] for s in self.samples}
        self.calib = {r["token"]: r for r in t["calibrated_sensor"]}
        self.pose = {r["token"]: r for r in t["ego_pose"]}
        self.sensor = {r["token"]: r for r in t["sensor"]}
        self.instance = {r["token"]: r for r in t["instance"]}
        self.category = {r["token"]: r for r in t["category"]}
        self.ann = {r["token"]: r for r in t["sample_annotation"]}
        self.sd_by_sample: dict[str, list[dict]] = {}
        for sd in t["sample_data"]:
            if sd.get("is_key_frame", True):
                self.sd_by_sample.setdefault(sd["sample_token"], []).append(sd)
        self.ann_by_sample: dict[str, list[dict]] = {}
        for a in t["sample_annotation"]:
            self.ann_by_sample.setdefault(a["sample_token"], []).append(a)

    def _load(self, name: str) -> list[dict]:
        path = self.table_dir / f"{name}.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"{path}: table not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records")
        return data

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def _T(self, rec: dict, table: str) -> np.ndarray:
        where = f"{self.table_dir / table}.json[{rec.get('token', '?')}]"
        for key in ("translation", "rotation"):
            if key not in rec:
                raise CalibrationError(f"{where}: missing field '{key}'")
        q = np.asarray(rec["rotation"], dtype=np.float64)
        if q.shape != (4,) or not np.isfinite(q).all() or np.linalg.norm(q) < 1e-9:
            raise CalibrationError(f"{where}: field 'rotation' must be a unit quaternion (w, x, y, z)")
        return make_transform(quaternion_to_matrix(q), np.asarray(rec["translation"], dtype=np.float64))

    def _ann_velocity(self, a: dict) -> np.ndarray:
        """Global-frame velocity from neighbouring annotations (devkit ``box_velocity``)."""
        prev, nxt = self.ann.get(a.get("prev", "")), self.ann.get(a.get("next", ""))
        first, last = prev or a, nxt or a
        if first is last:
            return np.full(3, np.nan)
        ts = self.sample_ts
        if first["sample_token"] not in ts or last["sample_token"] not in ts:
            return np.full(3, np.nan)
        dt = (ts[last["sample_token"]] - ts[first["sample_token"]]) * 1e-6
        if dt <= 0 or dt > (3.0 if prev and nxt else 1.5):
            return np.full(3, np.nan)
        return (np.asarray(last["translation"]) - np.asarray(first["translation"])) / dt

    def __getitem__(self, index: int | str) -> Sample:
        s = self.samples[index] if isinstance(index, int) else next(x for x in self.samples if x["token"] == index)
        sds = self.sd_by_sample.get(s["token"], [])
        by_channel = {}
        for sd in sds:
            cs = self.calib.get(sd["calibrated_sensor_token"])
            if cs is None:
                raise CalibrationError(f"{self.table_dir}/sample_data.json[{sd['token']}]: "
                                       f"field 'calibrated_sensor_token' refers to no calibrated_sensor")
            by_channel[self.sensor[cs["sensor_token"]]["channel"]] = (sd, cs)
        cam_names = [c for c in CAMERA_ORDER if c in by_channel] + sorted(
            c for c in by_channel if c.startswith("CAM") and c not in CAMERA_ORDER)
        if self.camera_filter is not None:
            cam_names = [c for c in cam_names if c in self.camera_filter]

        # reference ego pose: the LiDAR keyframe (as mmdetection3d), else the first camera
        ref = by_channel.get("LIDAR_TOP") or by_channel[cam_names[0]]
        T_global_ego_ref = self._T(self.pose[ref[0]["ego_pose_token"]], "ego_pose")
        T_ego_ref_global = invert_transform(T_global_ego_ref)
        T_ego_lidar = self._T(by_channel["LIDAR_TOP"][1], "calibrated_sensor") if "LIDAR_TOP" in by_channel else None

        images, cams, T_cam_lidar, T_cam_global = [], [], {}, {}
        for name in cam_names:
            sd, cs = by_channel[name]
            where = f"{self.table_dir}/calibrated_sensor.json[{cs['token']}]"
            if "camera_intrinsic" not in cs or not cs["camera_intrinsic"]:
                raise CalibrationError(f"{where}: missing field 'camera_intrinsic'")
            img = read_image(_resolve(self.root, sd["filename"], name))
            T_ego_cam = self._T(cs, "calibrated_sensor")
            cam = Camera(name, img.shape[1], img.shape[0], _mat(cs["camera_intrinsic"], (3, 3), "camera_intrinsic", where),
                         np.zeros(5), T_ego_cam)
            T_cam_global[name] = cam.T_cam_ego @ invert_transform(self._T(self.pose[sd["ego_pose_token"]], "ego_pose"))
            if T_ego_lidar is not None:
                T_cam_lidar[name] = T_cam_global[name] @ T_global_ego_ref @ T_ego_lidar
            images.append(img)
            cams.append(cam)

        points = None
        if (self.load_lidar or self.depth == "lidar") and "LIDAR_TOP" in by_channel:
            points = read_points(_resolve(self.root, by_channel["LIDAR_TOP"][0]["filename"], "LIDAR_TOP"), 5)

        anns = self.ann_by_sample.get(s["token"], [])
        centers, sizes, yaws, labels, vels, names, R_globals, c_globals = [], [], [], [], [], [], [], []
        for a in anns:
            cat = self.category[self.instance[a["instance_token"]]["category_token"]]["name"]
            det = category_to_detection_name(cat)
            R_g = quaternion_to_matrix(a["rotation"])
            c_g = np.asarray(a["translation"], dtype=np.float64)
            w, l, h = a["size"]
            R_e = T_ego_ref_global[:3, :3] @ R_g
            centers.append(transform_points(T_ego_ref_global, c_g[None])[0])
            sizes.append((l, w, h))
            yaws.append(float(np.arctan2(R_e[1, 0], R_e[0, 0])))
            labels.append(self._label(det))
            vels.append((T_ego_ref_global[:3, :3] @ self._ann_velocity(a))[:2])
            names.append(det)
            R_globals.append(R_g)
            c_globals.append(c_g)
        n = len(anns)
        boxes3d = Boxes3D(center=np.array(centers).reshape(-1, 3), size=np.array(sizes, float).reshape(-1, 3),
                          yaw=np.array(yaws, float), labels=np.array(labels, np.int64),
                          velocity=np.array(vels, float).reshape(-1, 2), instance_ids=np.arange(n, dtype=np.int64))

        boxes2d = []
        for cam in cams:
            T = T_cam_global[cam.name]
            rows = []
            for j in range(n):
                R_c = T[:3, :3] @ R_globals[j]
                c_c = transform_points(T, c_globals[j][None])[0]
                box = box_to_2d(_cam_corners(c_c, np.array(sizes[j]), R_c), cam.K, cam.width, cam.height)
                if box is None:
                    continue
                head = R_c[:, 0]
                rows.append((box, labels[j], j, c_c, sizes[j], float(np.arctan2(-head[2], head[0]))))
            boxes2d.append(Boxes2D(
                boxes=np.array([r[0] for r in rows], np.float32).reshape(-1, 4),
                labels=np.array([r[1] for r in rows], np.int64), instance_ids=np.array([r[2] for r in rows], np.int64),
                depth=np.array([r[3][2] for r in rows], np.float32), center_cam=np.array([r[3] for r in rows]).reshape(-1, 3),
                size=np.array([r[4] for r in rows], float).reshape(-1, 3), yaw_cam=np.array([r[5] for r in rows], float)))
        return self._finish(images, cams, T_cam_lidar, points, boxes2d, boxes3d, names,
                            s["timestamp"] * 1e-6, s["token"], T_ego_lidar)


def open_nuscenes(root: str | Path, **kwargs: Any) -> NuScenesInfoReader | NuScenesReader:
    """The right reader for a folder: official tables (``v1.0-*``) or an info pickle."""
    root = Path(root)
    if any(p.is_dir() for p in root.glob("v1.0-*")):
        return NuScenesReader(root, **kwargs)
    if any(root.glob("*.pkl")):
        return NuScenesInfoReader(root, **kwargs)
    raise DataError(f"{root}: neither a nuScenes table layout (v1.0-*/) nor an mmdetection3d info .pkl")
