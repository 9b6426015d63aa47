"""Stand-in inputs for the pipeline benchmarks: ``perception bench pipeline`` writes a clip with
:func:`write_clip` when ``data/sample_drive/`` is not readable, and ``benchmarks/soak.py`` feeds
:class:`MemorySource` frames (no decoding). The tests use the same inputs.

A surround rig, an in-memory source, and a multi-camera clip written as one video per camera
with a rig file (the layout of ``data/sample_drive/``).

The pictures are simple (sky/ground gradient, a checkerboard road, moving blocks); they
exercise decoding, synchronisation, IPM, rendering and the sinks, not the network's accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from perception.geometry import Camera, Rig
from perception.geometry.transforms import camera_pose
from perception.pipeline.sources import Source

__all__ = ["surround_rig", "synthetic_image", "MemorySource", "write_clip"]

SURROUND = [("front", 0.0), ("front_left", 55.0), ("front_right", -55.0), ("back", 180.0),
            ("back_left", 110.0), ("back_right", -110.0)]


def surround_rig(n: int = 6, width: int = 448, height: int = 256, hfov_deg: float = 70.0, name: str = "surround") -> Rig:
    """``n`` cameras (front first) around a car, 1.6 m high, pitched 3 deg down."""
    f = (width / 2) / math.tan(math.radians(hfov_deg) / 2)
    K = [[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]]
    cams = []
    for cam_name, yaw in SURROUND[:n]:
        x = 1.5 * math.cos(math.radians(yaw)) + 1.4
        y = 0.9 * math.sin(math.radians(yaw))
        cams.append(Camera(cam_name, width, height, K, np.zeros(5),
                           camera_pose(x, y, 1.6, math.radians(yaw), pitch=math.radians(3))))
    return Rig(name, cams)


def synthetic_image(width: int, height: int, t: float, seed: int = 0) -> np.ndarray:
    """An RGB uint8 frame: sky, a checkered road, and two blocks that move with ``t`` seconds."""
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    horizon = height // 2
    img[:horizon] = np.linspace(200, 120, horizon, dtype=np.uint8)[:, None, None] * np.array([0.6, 0.8, 1.0])
    yy, xx = np.mgrid[horizon:height, 0:width]
    check = (((xx + int(40 * t)) // 24 + (yy // 12)) % 2).astype(np.uint8)
    img[horizon:] = (70 + 40 * check)[..., None]
    for k in range(2):
        cx = int((0.3 + 0.4 * k + 0.1 * math.sin(t + k + seed)) * width)
        w = int(width * (0.12 + 0.03 * k))
        h = int(height * 0.15)
        color = tuple(int(c) for c in rng.integers(60, 255, 3))
        cv2.rectangle(img, (cx - w // 2, horizon + 5 - h), (cx + w // 2, horizon + 5 + h // 3), color, -1)
    return img


class MemorySource(Source):
    """Frames generated in memory (no decoding): ``frames`` at ``fps``; ``live`` optional."""

    kind = "memory"

    def __init__(self, width: int, height: int, frames: int, fps: float = 10.0, seed: int = 0,
                 name: str = "", live: bool = False) -> None:
        super().__init__(f"memory://{seed}", name)
        self.width, self.height, self.n, self.seed = width, height, frames, seed
        self.fps, self.frame_count = fps, frames
        self.live = live
        self._i = 0
        self._cache = [synthetic_image(width, height, k / fps, seed) for k in range(min(frames, 8))]

    def _open(self) -> None:
        pass

    def _read(self):
        if self._i >= self.n:
            self.finished = True
            return False, None, 0.0
        img = self._cache[self._i % len(self._cache)]
        ts = self._i / self.fps
        self._i += 1
        return True, img, ts


def write_clip(out: str | Path, rig: Rig, frames: int, fps: float = 10.0, *, codec: str = "mp4v") -> Path:
    """One video per camera (``<name>.mp4``) plus ``rig.yaml`` with relative sources; returns the rig path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cams = []
    for k, cam in enumerate(rig.cameras):
        path = out / f"{cam.name}.mp4"
        vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (cam.width, cam.height))
        for i in range(frames):
            vw.write(cv2.cvtColor(synthetic_image(cam.width, cam.height, i / fps, seed=k), cv2.COLOR_RGB2BGR))
        vw.release()
        cams.append(Camera(cam.name, cam.width, cam.height, cam.K, cam.dist, cam.T_ego_cam, source=path.name))
    rig_path = out / "rig.yaml"
    Rig(rig.name, cams).save(rig_path)
    return rig_path
