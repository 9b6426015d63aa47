"""Metric depth abs_rel per camera and per range, with the preprocessing of `perception eval`.

    python benchmarks/depth_by_camera.py [MODEL]        # nuScenes keyframe (6 cameras) and KITTI 000008

`perception eval` pools every LiDAR point of all cameras into one abs_rel; this splits it, so one
bad camera is not mistaken for a bad model. Per camera: abs_rel over the LiDAR points (1 mm-80 m),
their number, and the median of predicted / true depth; per range (0-10, 10-20, 20-40, 40-80 m):
abs_rel and the median ratio. Inputs at the sizes `perception run` picks (256x448, 192x608).
Needs ../shared/data (or PERCEPTION_SHARED_DATA).
"""
import os
import sys
from pathlib import Path

import numpy as np
from predictions import iter_predictions

from perception.eval.depth import DEPTH_RANGES, eigen_metrics
from perception.eval.runner import EvalOptions


def camera_rows(pred: np.ndarray, gt: np.ndarray) -> tuple[float, int, float, list[str]]:
    """(abs_rel, points, median ratio, per-range cells) of one camera's LiDAR points, with the
    metric and ranges of `perception eval` (:mod:`perception.eval.depth`)."""
    ok = (gt > 1e-3) & (gt < 80.0)
    cells = []
    for lo, hi in DEPTH_RANGES:
        r = ok & (gt >= lo) & (gt < hi)
        cells.append(f"{eigen_metrics(pred, gt, mask=r)['abs_rel']:.3f} ({np.median(pred[r] / gt[r]):.2f}x, "
                     f"n={r.sum()})" if r.any() else "-")
    return eigen_metrics(pred, gt, mask=ok)["abs_rel"], int(ok.sum()), float(np.median(pred[ok] / gt[ok])), cells


def main() -> None:
    model = sys.argv[1] if len(sys.argv) > 1 else "rep-s"
    shared = Path(os.environ.get("PERCEPTION_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"))
    print(f"model {model}\n")
    print("| data | camera | abs_rel | points | median ratio | " + " | ".join(f"{lo:g}-{hi:g} m" for lo, hi in DEPTH_RANGES) + " |")
    print("|---|---|---:|---:|---:|" + "---|" * len(DEPTH_RANGES))
    for dataset, folder, size in (("nuscenes", "nuscenes_keyframe", (256, 448)), ("kitti", "kitti_000008", (192, 608))):
        opts = EvalOptions(dataset=dataset, data=str(shared / folder), size=size)
        for sample, views, _, depth in iter_predictions(model, opts):
            for c, v in enumerate(views):
                if v.depth is None:
                    continue
                a, n, med, cells = camera_rows(depth[c], v.depth)
                print(f"| {dataset} | {sample.cameras[c].name} | {a:.3f} | {n} | {med:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
