"""Synthetic camera rigs: ``surround6`` (nuScenes-like six cameras) and ``front_wide``.

``python -m perception.data.synth.rigs [OUT_DIR]`` writes ``surround6.yaml`` and
``front_wide.yaml`` (default ``data/rigs``).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np

from perception.geometry import Camera, Rig, camera_pose


def _K(f: float, w: int, h: int) -> np.ndarray:
    return np.array([[f, 0, (w - 1) / 2], [0, f, (h - 1) / 2], [0, 0, 1]], dtype=np.float64)


def make_surround6(width: int = 1600, height: int = 900) -> Rig:
    """Six 1600x900 cameras laid out like nuScenes (front ~1.5 m up at the front of the car;
    fx ~1266 for the 70 deg cameras, ~800 for the 110 deg back camera)."""
    s = width / 1600
    f, fb = 1266.4 * s, 800.0 * s
    layout = [  # name, x, y, z, yaw (deg), pitch (rad), focal
        ("front", 1.70, 0.00, 1.51, 0.0, 0.0, f),
        ("front_right", 1.52, -0.49, 1.51, -55.0, 0.0, f),
        ("back_right", 1.04, -0.48, 1.56, -110.0, 0.0, f),
        ("back", 0.03, 0.00, 1.57, 180.0, 0.0, fb),
        ("back_left", 1.05, 0.48, 1.56, 110.0, 0.0, f),
        ("front_left", 1.50, 0.49, 1.51, 55.0, 0.0, f),
    ]
    order = ["front", "front_left", "front_right", "back", "back_left", "back_right"]
    cams = {n: Camera(n, width, height, _K(fl, width, height), np.zeros(5),
                      camera_pose(x, y, z, math.radians(yaw), pitch)) for n, x, y, z, yaw, pitch, fl in layout}
    return Rig("surround6", [cams[n] for n in order])


def make_front_wide(width: int = 1920, height: int = 1080, hfov_deg: float = 120.0) -> Rig:
    """One wide (120 deg horizontal) pinhole camera behind the windscreen, tilted 3 deg down."""
    f = width / 2 / math.tan(math.radians(hfov_deg) / 2)
    cam = Camera("front_wide", width, height, _K(f, width, height), np.zeros(5),
                 camera_pose(1.9, 0.0, 1.35, 0.0, math.radians(3.0)))
    return Rig("front_wide", [cam])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).resolve().parents[3] / "data" / "rigs"
    make_surround6().save(out / "surround6.yaml")
    make_front_wide().save(out / "front_wide.yaml")


if __name__ == "__main__":
    main()
