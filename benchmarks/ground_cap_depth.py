"""Depth capped at the flat-ground distance (an experiment, not used by the pipeline).

    python benchmarks/ground_cap_depth.py MODEL nuscenes ../shared/data/nuscenes_keyframe 256x448
    python benchmarks/ground_cap_depth.py MODEL synth - 256x448 10      # 10 frames of the test split

Below the horizon no surface can be farther than the point where the pixel ray meets a flat
ground plane, so min(depth, ground depth) is a physical bound, if the ground is flat and the
mount (pitch, height) exact. Prints metric abs_rel raw, capped, and capped with the mount
perturbed (pitch +-0.5 and 1 degree, height -10%), split into road-like pixels (ground truth
within 3% of the flat-ground depth) and the rest.
"""
import math
import sys

import numpy as np
from predictions import iter_predictions

from perception.eval.runner import EvalOptions
from perception.geometry.transforms import rot_x

VARIANTS = [  # name, pitch error (deg), height error (fraction), cap on
    ("raw", 0.0, 0.0, False), ("cap", 0.0, 0.0, True), ("cap pitch+0.5", 0.5, 0.0, True),
    ("cap pitch-0.5", -0.5, 0.0, True), ("cap pitch+1", 1.0, 0.0, True), ("cap pitch-1", -1.0, 0.0, True),
    ("cap h-10%", 0.0, -0.1, True),
]


def ground_depth(cam, H: int, W: int, dpitch: float = 0.0, dh: float = 0.0) -> np.ndarray:
    """Camera z where each pixel's ray meets the ground plane (inf above the horizon), for the
    mount tilted by ``dpitch`` degrees and its height scaled by ``1 + dh``."""
    vs, us = np.mgrid[0:H, 0:W]
    rays = cam.pixel_rays(np.c_[us.ravel(), vs.ravel()], apply_distortion=False)
    rays = rays @ rot_x(-math.radians(dpitch)).T
    R, t = cam.T_ego_cam[:3, :3], cam.T_ego_cam[:3, 3]
    dz = rays @ R[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        s = -(t[2] * (1 + dh)) / dz * rays[:, 2]
    s[dz >= -1e-6] = np.inf
    return s.reshape(H, W)


def main() -> None:
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    spec, ds, data, size = sys.argv[1], sys.argv[2], sys.argv[3], tuple(int(v) for v in sys.argv[4].split("x"))
    frames = int(sys.argv[5]) if len(sys.argv) > 5 else None
    per_image = {v[0]: [] for v in VARIANTS}
    split = {v[0]: np.zeros(4) for v in VARIANTS}
    opts = EvalOptions(dataset=ds, data=data, size=size, frames=frames, seed=90000)
    for s, pre, _, depth in iter_predictions(spec, opts):
        for c, p in enumerate(pre):
            gt = p.depth
            if gt is None:
                continue
            m = np.isfinite(gt) & (gt > 1e-3) & (gt < 80)
            road = np.abs(ground_depth(p.camera, *size)[m] / gt[m] - 1) < 0.03
            for name, dpitch, dh, cap in VARIANTS:
                d = depth[c]
                if cap:
                    d = np.minimum(d, ground_depth(p.camera, *size, dpitch, dh))
                d = np.clip(d, 1e-3, 80)
                e = np.abs(d[m] - gt[m]) / gt[m]
                per_image[name].append(e.mean())
                split[name] += (e[road].sum(), e[~road].sum(), road.sum(), (~road).sum())
    for name, (er, eo, nr, no) in split.items():
        print(f"{ds:8s} {name:15s} abs_rel {np.mean(per_image[name]):.4f}   road-like px {nr / (nr + no):.0%}: "
              f"{er / max(nr, 1):.4f}  other {eo / max(no, 1):.4f}")


if __name__ == "__main__":
    main()
