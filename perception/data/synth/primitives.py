"""Semantic ids of the synthetic world and world-frame primitive arrays.

A primitive set is a dict of parallel arrays (``kind, center, half, R, mat, color`` and, once
placed, ``sem, tag, obj``) in world coordinates, as the renderer consumes them.
"""

from __future__ import annotations

import numpy as np

from perception.data.synth.assets import Asset
from perception.geometry.transforms import rot_z

# semantic ids of the per-pixel semantic map (extras["semantic"])
SEMANTIC_CLASSES: tuple[str, ...] = ("sky", "road", "lane_marking", "sidewalk", "terrain", "building",
                                     "vegetation", "pole", "car", "truck", "bus", "pedestrian", "cyclist")
SEM = {n: i for i, n in enumerate(SEMANTIC_CLASSES)}


def prims_to_world(asset: Asset, x: float, y: float, yaw: float, z: float = 0.0) -> dict[str, np.ndarray]:
    """``asset`` (object frame) placed at ``(x, y, z)`` with heading ``yaw``."""
    Rz = rot_z(yaw)
    R_wp = Rz[None] @ asset.R                     # primitive -> world
    return {"kind": asset.kind, "center": asset.center @ Rz.T + np.array([x, y, z]), "half": asset.half,
            "R": np.transpose(R_wp, (0, 2, 1)), "mat": asset.mat, "color": asset.color}


def concat_prims(parts: list[dict[str, np.ndarray]], keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Concatenate primitive sets (typed empty arrays when there are none)."""
    if not parts:
        shapes = {"kind": (0,), "center": (0, 3), "half": (0, 3), "R": (0, 3, 3), "mat": (0,), "color": (0, 3),
                  "sem": (0,), "tag": (0,), "obj": (0,)}
        return {k: np.zeros(shapes[k], np.int64 if k in ("kind", "mat", "sem", "obj") else np.float64) for k in keys}
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}
