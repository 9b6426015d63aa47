"""A tiny hand-made dataset with exact labels, for training tests that must not depend on
the synthetic world: coloured boxes ("cars") on a textured ground, two cameras."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.data.sample import Boxes2D, Sample
from perception.data.sample_folder import write_sample_folder
from perception.geometry import Camera, camera_pose


def fake_sample(seed: int, width: int = 96, height: int = 64) -> Sample:
    rng = np.random.default_rng(seed)
    cams, images, depths, boxes2d = [], [], [], []
    for c, yaw in enumerate((0.0, np.pi)):
        f = 0.8 * width
        cam = Camera(f"cam{c}", width, height, [[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]],
                     T_ego_cam=camera_pose(0, 0, 1.5, yaw))
        img = np.full((height, width, 3), 90, np.uint8)
        img[: height // 2] = (150, 180, 220)  # sky
        depth = np.full((height, width), 0.0, np.float32)
        rows = np.arange(height // 2 + 1, height)
        depth[height // 2 + 1:] = (1.5 * f / (rows - height / 2 + 0.5))[:, None]  # ground
        boxes, labels, centres, sizes, yaws = [], [], [], [], []
        for _ in range(rng.integers(1, 4)):
            z = rng.uniform(6, 20)
            x = rng.uniform(-4, 4)
            l, w, h = 4.2, 1.8, 1.5
            u = f * x / z + width / 2
            v_bottom = f * 1.5 / z + height / 2
            bw, bh = f * w / z, f * h / z
            box = [u - bw / 2, v_bottom - bh, u + bw / 2, v_bottom]
            x0, y0, x1, y1 = (int(round(max(0, min(b, lim)))) for b, lim in zip(box, (width, height) * 2))
            if x1 - x0 < 3 or y1 - y0 < 3:
                continue
            img[y0:y1, x0:x1] = rng.integers(0, 255, 3)
            depth[y0:y1, x0:x1] = z
            boxes.append([x0, y0, x1, y1])
            labels.append(0)
            centres.append([x, 1.5 - h / 2, z + l / 2])
            sizes.append([l, w, h])
            yaws.append(np.pi / 2)
        cams.append(cam)
        images.append(img)
        depths.append(depth)
        boxes2d.append(Boxes2D(np.array(boxes, np.float32).reshape(-1, 4), np.array(labels, np.int64),
                               center_cam=np.array(centres).reshape(-1, 3), size=np.array(sizes).reshape(-1, 3),
                               yaw_cam=np.array(yaws), visibility=np.ones(len(boxes))))
    return Sample(images=images, cameras=cams, depth=depths, boxes2d=boxes2d, frame_id=str(seed))


def fake_folder(root: Path, frames: int = 8, **kw) -> Path:
    write_sample_folder((fake_sample(i, **kw) for i in range(frames)), root)
    return root
