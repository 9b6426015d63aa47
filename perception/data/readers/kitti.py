"""KITTI 3D object layout reader (+ KITTI depth maps).

Layout (``root`` or ``root/training``)::

    image_2/000008.png   calib/000008.txt   label_2/000008.txt (optional)   velodyne/000008.bin (optional)

``calib/*.txt``: lines ``P0: 12 floats`` .. ``P3``, ``R0_rect: 9``, ``Tr_velo_to_cam: 12``,
``Tr_imu_to_velo: 12``. ``label_2/*.txt``: ``type truncated occluded alpha x1 y1 x2 y2 h w l
x y z rotation_y [score]`` with ``(x, y, z)`` the bottom-face centre in rectified camera-0
coordinates. The folder layout of the shared sample (``000008.png``, ``000008.bin``,
``calib.json``, ``labels.json`` side by side) is read too.

Frames: the camera is camera 2 (left colour). Its frame is the rectified camera-0 frame
shifted by the baseline ``t2 = K2^-1 P2[:, 3]``, so ``K2 @ (p_rect + t2) = P2 @ p_rect``.
The ego frame (DESIGN.md: x forward, y left, z up, on the ground) is the Velodyne frame
shifted down by the Velodyne mounting height 1.73 m (KITTI setup; the Velodyne is already
x forward, y left, z up). KITTI has no rear-axle origin, so ego x = 0 is under the Velodyne.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from perception.data.classes import CLASSES
from perception.data.readers.common import DataError, class_index, read_depth_png, read_image, read_points
from perception.data.sample import Boxes2D, Boxes3D, Sample
from perception.geometry.camera import CalibrationError, Camera
from perception.geometry.lidar import lidar_depth_map
from perception.geometry.transforms import invert_transform, make_transform, orthonormalize, transform_points

log = logging.getLogger(__name__)

__all__ = ["KittiCalib", "KittiObject", "KittiReader", "read_kitti_calib", "read_kitti_calib_json",
           "read_kitti_labels", "write_kitti_calib", "write_kitti_labels", "kitti_camera",
           "VELODYNE_HEIGHT", "read_depth_png"]

VELODYNE_HEIGHT = 1.73  # m above the ground (KITTI sensor setup)

_CALIB_FIELDS = {"P0": 12, "P1": 12, "P2": 12, "P3": 12, "R0_rect": 9, "Tr_velo_to_cam": 12, "Tr_imu_to_velo": 12}
_ALIASES = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam", "Tr_imu_velo": "Tr_imu_to_velo"}


@dataclass
class KittiCalib:
    """KITTI object calibration: ``P[i]`` 3x4, ``R0_rect`` 3x3, ``Tr_velo_to_cam`` 3x4, ``Tr_imu_to_velo`` 3x4."""

    P: dict[int, np.ndarray]
    R0_rect: np.ndarray
    Tr_velo_to_cam: np.ndarray
    Tr_imu_to_velo: np.ndarray | None = None

    def T_rect_velo(self) -> np.ndarray:
        """4x4 Velodyne -> rectified camera-0 (``R0_rect @ Tr_velo_to_cam``)."""
        return make_transform(self.R0_rect, np.zeros(3)) @ np.vstack([self.Tr_velo_to_cam, [0, 0, 0, 1]])

    def baseline(self, cam: int = 2) -> np.ndarray:
        """Offset ``t`` with ``P_cam = K [I | t]``: rectified camera-0 -> camera ``cam`` translation."""
        P = self.P[cam]
        return np.linalg.solve(P[:, :3], P[:, 3])

    def T_cam_velo(self, cam: int = 2) -> np.ndarray:
        """4x4 Velodyne -> camera ``cam`` (rectified, OpenCV axes); exact: ``K @ T[:3] == P @ R0 @ Tr``."""
        T = self.T_rect_velo()
        T[:3, 3] += self.baseline(cam)
        return T


@dataclass
class KittiObject:
    """One label line. ``dimensions`` = (h, w, l), ``location`` = bottom-face centre (rect cam 0)."""

    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: np.ndarray
    dimensions: np.ndarray = field(default_factory=lambda: np.full(3, -1.0))
    location: np.ndarray = field(default_factory=lambda: np.full(3, -1000.0))
    rotation_y: float = -10.0
    score: float | None = None

    @property
    def has_3d(self) -> bool:
        return self.type != "DontCare" and bool(np.all(self.dimensions > 0))


# ---------------------------------------------------------------------------- calibration
def _calib_matrix(values: list[float], name: str, path: Path) -> np.ndarray:
    n = _CALIB_FIELDS[name]
    if len(values) != n:
        raise CalibrationError(f"{path}: field '{name}' has {len(values)} values, expected {n}")
    arr = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise CalibrationError(f"{path}: field '{name}' contains NaN or Inf")
    return arr.reshape(3, 3) if n == 9 else arr.reshape(3, 4)


def _calib_from_fields(fields: dict[str, np.ndarray], path: Path) -> KittiCalib:
    for key in ("P2", "R0_rect", "Tr_velo_to_cam"):
        if key not in fields:
            raise CalibrationError(f"{path}: missing field '{key}'")
    P = {i: fields[f"P{i}"] for i in range(4) if f"P{i}" in fields}
    if abs(np.linalg.det(P[2][:, :3])) < 1e-9:
        raise CalibrationError(f"{path}: field 'P2' has a singular left 3x3 block")
    return KittiCalib(P=P, R0_rect=fields["R0_rect"], Tr_velo_to_cam=fields["Tr_velo_to_cam"],
                      Tr_imu_to_velo=fields.get("Tr_imu_to_velo"))


def read_kitti_calib(path: str | Path) -> KittiCalib:
    """Parse a KITTI object ``calib/XXXXXX.txt``; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"{path}: calibration file not found")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise CalibrationError(f"{path}: not a text calibration file") from None
    fields: dict[str, np.ndarray] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if ":" not in line:
            raise CalibrationError(f"{path}:{lineno}: expected 'NAME: values', got {line.strip()[:40]!r}")
        key, _, rest = line.partition(":")
        key = _ALIASES.get(key.strip(), key.strip())
        if key not in _CALIB_FIELDS:
            continue
        try:
            values = [float(v) for v in rest.split()]
        except ValueError:
            raise CalibrationError(f"{path}: field '{key}' is not numeric") from None
        fields[key] = _calib_matrix(values, key, path)
    return _calib_from_fields(fields, path)


def read_kitti_calib_json(path: str | Path) -> KittiCalib:
    """The ``calib.json`` of the shared ``kitti_000008`` folder (same matrices as nested lists)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise CalibrationError(f"{path}: calibration file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: not valid JSON ({exc})") from None
    fields = {}
    for key in _CALIB_FIELDS:
        if key in data:
            try:
                fields[key] = _calib_matrix(list(np.asarray(data[key], dtype=np.float64).ravel()), key, path)
            except (TypeError, ValueError):
                raise CalibrationError(f"{path}: field '{key}' is not numeric") from None
    return _calib_from_fields(fields, path)


def write_kitti_calib(calib: KittiCalib, path: str | Path) -> None:
    """Write the standard text format (``Tr_imu_to_velo`` as identity-free zeros when unknown)."""
    lines = []
    for i in range(4):
        P = calib.P.get(i, calib.P[2])
        lines.append(f"P{i}: " + " ".join(f"{v:.12e}" for v in P.ravel()))
    lines.append("R0_rect: " + " ".join(f"{v:.12e}" for v in calib.R0_rect.ravel()))
    lines.append("Tr_velo_to_cam: " + " ".join(f"{v:.12e}" for v in calib.Tr_velo_to_cam.ravel()))
    imu = calib.Tr_imu_to_velo if calib.Tr_imu_to_velo is not None else np.hstack([np.eye(3), np.zeros((3, 1))])
    lines.append("Tr_imu_to_velo: " + " ".join(f"{v:.12e}" for v in imu.ravel()))
    Path(path).write_text("\n".join(lines) + "\n")


def kitti_camera(calib: KittiCalib, width: int = 1242, height: int = 375, cam: int = 2, *,
                 velodyne_height: float = VELODYNE_HEIGHT, name: str | None = None) -> Camera:
    """The :class:`Camera` of KITTI camera ``cam`` (K from ``P[cam]``, mounting via R0_rect and
    Tr_velo_to_cam; ego = Velodyne frame shifted down by ``velodyne_height``)."""
    K = calib.P[cam][:, :3].copy()
    T_cam_velo = calib.T_cam_velo(cam)
    T_cam_velo[:3, :3] = orthonormalize(T_cam_velo[:3, :3])  # stored with ~1e-7 precision
    T_ego_velo = make_transform(np.eye(3), [0.0, 0.0, velodyne_height])
    T_ego_cam = T_ego_velo @ invert_transform(T_cam_velo)
    return Camera(name or f"cam{cam}", width, height, K, np.zeros(5), T_ego_cam)


# ---------------------------------------------------------------------------- labels
def read_kitti_labels(path: str | Path) -> list[KittiObject]:
    """Parse a KITTI ``label_2`` file (15 columns, or 16 with a score)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: label file not found")
    objects = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) not in (15, 16):
            raise DataError(f"{path}:{lineno}: expected 15 or 16 columns, got {len(parts)}")
        try:
            v = [float(x) for x in parts[1:]]
        except ValueError:
            raise DataError(f"{path}:{lineno}: non-numeric value in label line") from None
        objects.append(KittiObject(type=parts[0], truncated=v[0], occluded=int(v[1]), alpha=v[2],
                                   bbox=np.array(v[3:7]), dimensions=np.array(v[7:10]),
                                   location=np.array(v[10:13]), rotation_y=v[13],
                                   score=v[14] if len(v) == 15 else None))
    return objects


def write_kitti_labels(objects: list[KittiObject], path: str | Path) -> None:
    lines = []
    for o in objects:
        vals = [o.truncated, o.occluded, o.alpha, *o.bbox, *o.dimensions, *o.location, o.rotation_y]
        lines.append(o.type + " " + " ".join(f"{x:.2f}" if i != 1 else str(int(x)) for i, x in enumerate(vals)))
    Path(path).write_text("\n".join(lines) + ("\n" if lines else ""))


def _labels_from_json(path: Path) -> list[KittiObject]:
    try:
        data = json.loads(path.read_text())
        out = []
        for o in data["objects"]:
            if o["class"] == "DontCare":
                out.append(KittiObject("DontCare", -1.0, -1, -10.0, np.asarray(o["bbox_2d_xyxy"], float)))
            else:
                out.append(KittiObject(o["class"], float(o["truncated"]), int(o["occluded"]), float(o["alpha"]),
                                       np.asarray(o["bbox_2d_xyxy"], float),
                                       np.asarray(o["dimensions_hwl_kitti"], float),
                                       np.asarray(o["location_bottom_center_cam"], float), float(o["rotation_y"])))
        return out
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{path}: malformed labels JSON ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------- reader
class KittiReader:
    """Iterate a KITTI object folder as :class:`Sample` (camera 2 only).

    ``depth``: ``"lidar"`` (sparse z-depth from the Velodyne cloud, nearest point per pixel),
    ``"png"`` (KITTI depth maps ``depth_dir/XXXXXX.png``, uint16 / 256, 0 = invalid) or None.
    ``Boxes2D``: every label line, DontCare with ``ignore=True`` and label -1; classes outside
    ``classes`` get label -1. ``Boxes3D``: objects with a 3D box, in the ego frame;
    ``Boxes2D.instance_ids`` index into ``Boxes3D`` (-1 for DontCare). ``extras``:
    ``lidar_points`` (Velodyne frame), ``T_ego_lidar``, ``T_cam_lidar`` {camera: 4x4},
    ``kitti_types`` (type per 2D box), ``boxes3d_names``, ``calib``.
    """

    def __init__(self, root: str | Path, *, depth: str | None = "lidar", depth_dir: str | Path | None = None,
                 load_lidar: bool = True, classes: tuple[str, ...] = CLASSES,
                 velodyne_height: float = VELODYNE_HEIGHT) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"{root}: KITTI folder not found")
        if not (root / "image_2").is_dir() and (root / "training" / "image_2").is_dir():
            root = root / "training"
        self.root = root
        self.flat = not (root / "image_2").is_dir()
        self.depth = depth
        self.depth_dir = Path(depth_dir) if depth_dir is not None else None
        if depth == "png" and self.depth_dir is None:
            raise ValueError("KittiReader: depth='png' needs depth_dir")
        if depth not in (None, "lidar", "png"):
            raise ValueError(f"KittiReader: depth must be 'lidar', 'png' or None, got {depth!r}")
        self.load_lidar = load_lidar
        self.classes = classes
        self.velodyne_height = velodyne_height
        if self.flat:
            if not (root / "calib.json").is_file():
                raise DataError(f"{root}: neither a KITTI object layout (image_2/, calib/) nor a folder with calib.json")
            self.ids = sorted(p.stem for p in root.glob("*.png"))
        else:
            self.ids = sorted(p.stem for p in (root / "image_2").glob("*.png"))
        if not self.ids:
            raise DataError(f"{root}: no images found")

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def _paths(self, fid: str) -> dict[str, Path]:
        r = self.root
        if self.flat:
            return {"image": r / f"{fid}.png", "calib": r / "calib.json", "label": r / "labels.json",
                    "velodyne": r / f"{fid}.bin"}
        return {"image": r / "image_2" / f"{fid}.png", "calib": r / "calib" / f"{fid}.txt",
                "label": r / "label_2" / f"{fid}.txt", "velodyne": r / "velodyne" / f"{fid}.bin"}

    def __getitem__(self, index: int | str) -> Sample:
        fid = index if isinstance(index, str) else self.ids[index]
        paths = self._paths(fid)
        calib = read_kitti_calib_json(paths["calib"]) if self.flat else read_kitti_calib(paths["calib"])
        image = read_image(paths["image"])
        h, w = image.shape[:2]
        cam = kitti_camera(calib, w, h, velodyne_height=self.velodyne_height, name="cam2")
        T_cam_velo = calib.T_cam_velo(2)  # exact P2 @ R0 @ Tr (not orthonormalised) for the LiDAR
        T_ego_velo = make_transform(np.eye(3), [0.0, 0.0, self.velodyne_height])
        extras: dict = {"calib": calib, "T_ego_lidar": T_ego_velo, "T_cam_lidar": {cam.name: T_cam_velo}}

        points = None
        if (self.load_lidar or self.depth == "lidar") and paths["velodyne"].is_file():
            points = read_points(paths["velodyne"], 4)
            extras["lidar_points"] = points
        depth = None
        if self.depth == "lidar" and points is not None:
            depth = [lidar_depth_map(points, cam, T_cam_velo, min_range=0.0)]
        elif self.depth == "png":
            d = read_depth_png(self.depth_dir / f"{fid}.png")
            if d.shape != (h, w):
                raise DataError(f"{self.depth_dir / (fid + '.png')}: depth map is {d.shape[1]}x{d.shape[0]}, image {w}x{h}")
            depth = [d]

        boxes2d = boxes3d = None
        if paths["label"].is_file():
            objects = _labels_from_json(paths["label"]) if self.flat else read_kitti_labels(paths["label"])
            boxes2d, boxes3d, names3d = self._boxes(objects, calib, cam)
            extras["kitti_types"] = [o.type for o in objects]
            extras["boxes3d_names"] = names3d
        return Sample(images=[image], cameras=[cam], timestamp=0.0, depth=depth,
                      boxes2d=[boxes2d] if boxes2d is not None else None, boxes3d=boxes3d,
                      frame_id=f"kitti/{fid}", extras=extras)

    def _boxes(self, objects: list[KittiObject], calib: KittiCalib, cam: Camera
               ) -> tuple[Boxes2D, Boxes3D, list[str]]:
        t2 = calib.baseline(2)
        n = len(objects)
        labels = np.array([class_index("kitti", o.type, self.classes) for o in objects], dtype=np.int64)
        ignore = np.array([o.type == "DontCare" for o in objects], bool)
        center_cam = np.full((n, 3), np.nan)
        size = np.full((n, 3), np.nan)
        yaw_cam = np.full(n, np.nan)
        inst = np.full(n, -1, np.int64)
        c3, s3, y3, l3, names = [], [], [], [], []
        for i, o in enumerate(objects):
            if not o.has_3d:
                continue
            h_, w_, l_ = o.dimensions
            c = o.location - np.array([0.0, h_ / 2, 0.0]) + t2  # gravity centre, camera-2 frame
            center_cam[i], size[i], yaw_cam[i] = c, (l_, w_, h_), o.rotation_y
            heading_cam = np.array([np.cos(o.rotation_y), 0.0, -np.sin(o.rotation_y)])
            d = cam.T_ego_cam[:3, :3] @ heading_cam
            inst[i] = len(c3)
            c3.append(transform_points(cam.T_ego_cam, c[None])[0])
            s3.append((l_, w_, h_))
            y3.append(float(np.arctan2(d[1], d[0])))
            l3.append(labels[i])
            names.append(o.type)
        boxes2d = Boxes2D(boxes=np.array([o.bbox for o in objects], np.float32).reshape(-1, 4), labels=labels,
                          truncation=np.array([o.truncated for o in objects], np.float32),
                          occlusion=np.array([o.occluded for o in objects], np.int64),
                          instance_ids=inst, depth=center_cam[:, 2].astype(np.float32), center_cam=center_cam,
                          size=size, yaw_cam=yaw_cam, ignore=ignore)
        boxes3d = Boxes3D(center=np.array(c3).reshape(-1, 3), size=np.array(s3, float).reshape(-1, 3),
                          yaw=np.array(y3, float), labels=np.array(l3, np.int64),
                          instance_ids=np.arange(len(c3), dtype=np.int64))
        return boxes2d, boxes3d, names
