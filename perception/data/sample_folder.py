"""Sample folders: a simple on-disk format for `Sample`s with random access.

Training reads thousands of camera images in random order; per-camera videos cannot be
seeked cheaply, so rendered (or pseudo-labelled) frames are cached as one folder per frame::

    ROOT/meta.json                   {"format": "perception-samples", "version": 1, "count": N, ...}
    ROOT/000042/labels.json          cameras (K, dist, size, T_ego_cam), 2D boxes per camera, 3D boxes
    ROOT/000042/<camera>.jpg         RGB image
    ROOT/000042/<camera>_depth.png   optional uint16 z-depth, value / 256 = metres, 0 = invalid
                                     (KITTI depth convention; up to 256 m at 4 mm)

Writers finalise a frame atomically (labels.json written last), so a killed writer never
leaves a frame that reads as complete.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator

import cv2
import numpy as np

from perception.data.readers.common import DataError, read_image
from perception.data.sample import Boxes2D, Boxes3D, Sample
from perception.geometry import Camera
from perception.utils.image_io import write_jpeg

FORMAT = "perception-samples"
_BOX2D_FIELDS = ("truncation", "occlusion", "visibility", "instance_ids", "depth", "center_cam", "size", "yaw_cam",
                 "ignore")
_BOX3D_FIELDS = ("velocity", "instance_ids")


def _arr(v: np.ndarray | None) -> Any:
    return None if v is None else np.asarray(v).tolist()


def _boxes2d_to_json(b: Boxes2D) -> dict[str, Any]:
    d = {"boxes": _arr(b.boxes), "labels": _arr(b.labels)}
    d.update({k: _arr(getattr(b, k)) for k in _BOX2D_FIELDS if getattr(b, k) is not None})
    return d


def _boxes2d_from_json(d: dict[str, Any]) -> Boxes2D:
    kw = {k: np.asarray(d[k]) for k in _BOX2D_FIELDS if d.get(k) is not None}
    for k in ("center_cam", "size"):
        if k in kw:
            kw[k] = kw[k].reshape(-1, 3)
    boxes = np.asarray(d["boxes"], np.float32).reshape(-1, 4)
    return Boxes2D(boxes=boxes, labels=np.asarray(d["labels"], np.int64).reshape(-1), **kw)


def _boxes3d_to_json(b: Boxes3D) -> dict[str, Any]:
    d = {"center": _arr(b.center), "size": _arr(b.size), "yaw": _arr(b.yaw), "labels": _arr(b.labels)}
    d.update({k: _arr(getattr(b, k)) for k in _BOX3D_FIELDS if getattr(b, k) is not None})
    return d


def _boxes3d_from_json(d: dict[str, Any]) -> Boxes3D:
    kw = {k: np.asarray(d[k]) for k in _BOX3D_FIELDS if d.get(k) is not None}
    if "velocity" in kw:
        kw["velocity"] = kw["velocity"].reshape(-1, 2)
    return Boxes3D(center=np.asarray(d["center"], np.float64).reshape(-1, 3),
                   size=np.asarray(d["size"], np.float64).reshape(-1, 3),
                   yaw=np.asarray(d["yaw"], np.float64).reshape(-1),
                   labels=np.asarray(d["labels"], np.int64).reshape(-1), **kw)


def write_sample(sample: Sample, folder: str | Path, jpeg_quality: int = 92, with_depth: bool = True) -> Path:
    """Write one sample as a frame folder; ``labels.json`` is renamed into place last."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, (img, cam) in enumerate(zip(sample.images, sample.cameras)):
        write_jpeg(folder / f"{cam.name}.jpg", img, jpeg_quality)
        if with_depth and sample.depth is not None and sample.depth[i] is not None:
            d = np.nan_to_num(sample.depth[i].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
            cv2.imwrite(str(folder / f"{cam.name}_depth.png"), np.clip(np.round(d * 256.0), 0, 65535).astype(np.uint16))
    labels = {
        "frame_id": sample.frame_id, "timestamp": sample.timestamp,
        "cameras": [c.to_dict() for c in sample.cameras],
        "boxes2d": None if sample.boxes2d is None else [_boxes2d_to_json(b) for b in sample.boxes2d],
        "boxes3d": None if sample.boxes3d is None else _boxes3d_to_json(sample.boxes3d),
        "has_depth": bool(with_depth and sample.depth is not None),
        "depth_dense": bool(sample.extras.get("depth_dense", True)),
    }
    tmp = folder / "labels.json.tmp"
    tmp.write_text(json.dumps(labels))
    os.replace(tmp, folder / "labels.json")
    return folder


def write_sample_folder(samples: Iterable[Sample], root: str | Path, meta: dict[str, Any] | None = None,
                        start: int = 0, **kw: Any) -> int:
    """Write samples as frames ``start, start+1, ...`` under ``root``; returns the count written."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, sample in enumerate(samples, start=1):
        write_sample(sample, root / f"{start + n - 1:06d}", **kw)
    info = {"format": FORMAT, "version": 1}
    info.update(meta or {})
    info["count"] = len(SampleFolder(root, check=False))
    (root / "meta.json").write_text(json.dumps(info, indent=2))
    return n


class SampleFolder:
    """Random access to a sample folder (complete frames only)."""

    def __init__(self, root: str | Path, check: bool = True, max_frames: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: sample folder not found")
        self.frames = sorted(p.parent for p in self.root.glob("*/labels.json"))[:max_frames]
        if check and not self.frames:
            raise DataError(f"{self.root}: no complete frames (no */labels.json)")

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def labels(self, index: int) -> dict[str, Any]:
        path = self.frames[index] / "labels.json"
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: unreadable labels ({exc})") from None

    def num_cameras(self, index: int = 0) -> int:
        return len(self.labels(index)["cameras"])

    def camera_items(self) -> list[tuple[int, int]]:
        """(frame, camera) pairs; every frame of a folder has the cameras of its first frame."""
        n = self.num_cameras(0) if self.frames else 0
        return [(f, c) for f in range(len(self)) for c in range(n)]

    def camera_sample(self, index: int, camera: int) -> Sample:
        """One camera of a frame as a single-camera `Sample` (reads only that camera's files)."""
        return self.__getitem__(index, cameras=[camera])

    def __getitem__(self, index: int, cameras: list[int] | None = None) -> Sample:
        folder = self.frames[index]
        lab = self.labels(index)
        keep = cameras if cameras is not None else range(len(lab["cameras"]))
        cams = [Camera.from_dict(lab["cameras"][i], f"{folder}/labels.json: cameras[{i}]") for i in keep]
        images = [read_image(folder / f"{c.name}.jpg") for c in cams]
        depth = None
        if lab.get("has_depth"):
            depth = []
            for c in cams:
                p = folder / f"{c.name}_depth.png"
                raw = cv2.imread(str(p), cv2.IMREAD_UNCHANGED) if p.is_file() else None
                if raw is None or raw.dtype != np.uint16:
                    raise DataError(f"{p}: missing or not a 16-bit depth PNG")
                depth.append(raw.astype(np.float32) / 256.0)
        boxes2d = None if lab.get("boxes2d") is None else [_boxes2d_from_json(lab["boxes2d"][i]) for i in keep]
        boxes3d = None if lab.get("boxes3d") is None else _boxes3d_from_json(lab["boxes3d"])
        return Sample(images=images, cameras=cams, timestamp=float(lab.get("timestamp", 0.0)), depth=depth,
                      boxes2d=boxes2d, boxes3d=boxes3d, frame_id=str(lab.get("frame_id", folder.name)),
                      extras={"depth_dense": bool(lab.get("depth_dense", True))})
