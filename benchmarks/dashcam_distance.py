"""How far the network's car distances are from the ground-plane distances on real video.

    python benchmarks/dashcam_distance.py --model rep-s --size 224x384 --size 384x640

No ground truth is needed: for every car box (score >= 0.5) whose bottom edge lies below the
horizon, the calibrated camera (height above the road and pitch) gives a second distance, where
the ray through the box's bottom-centre meets the road (``estimates["ground"]`` of
:func:`perception.pipeline.lifting.lift_detections`). The ratio network / ground is about 1 for
a model whose metric depth transfers to the camera; it is only as good as the mount in the
calibration file (for the shared dashcam, pitch and height are measured on lane lines:
docs/geometry.md).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from perception.cli.run import single_camera_rig
from perception.pipeline.runner import Pipeline, PipelineOptions

SHARED = Path(os.environ.get("PERCEPTION_SHARED_DATA", Path(__file__).resolve().parents[1] / "../shared/data"))


class _CarEstimates:
    """A pipeline sink keeping the distance estimates of the car boxes."""

    def __init__(self, min_score: float) -> None:
        self.min_score, self.rows = min_score, []

    def write(self, frame) -> None:
        for o in frame.objects:
            if o.label == "car" and o.score >= self.min_score:
                self.rows.append([o.estimates.get(k, np.nan) for k in ("head", "dense", "ground")] + [o.depth])

    def close(self, *args) -> None:
        pass


def distance_ratios(model: str, size: tuple[int, int], video: Path, calib: Path, min_score: float = 0.5,
                    near: float = 3.0, far: float = 60.0) -> dict:
    rig = single_camera_rig(str(video), calib, None)
    with tempfile.TemporaryDirectory() as tmp:
        p = Pipeline(rig, [str(video)], PipelineOptions(model=model, size=size, out=Path(tmp), render=False,
                                                       device="cpu", score_thresh=min_score))
        rec = _CarEstimates(min_score)
        p.sinks.append(rec)
        p.run()
    a = np.array(rec.rows, float).reshape(-1, 4)
    ok = np.isfinite(a[:, 2]) & (a[:, 2] > near) & (a[:, 2] < far)
    head, dense, chosen = (a[ok, i] / a[ok, 2] for i in (0, 1, 3))
    q = lambda v: [round(float(x), 3) for x in np.nanpercentile(v, [25, 50, 75])]  # noqa: E731
    return {"model": model, "size": f"{size[0]}x{size[1]}", "car_boxes": len(a), "with_ground_distance": int(ok.sum()),
            "head_over_ground_q25_50_75": q(head), "dense_over_ground_q25_50_75": q(dense),
            "chosen_over_ground_q25_50_75": q(chosen), "median_ground_distance_m": round(float(np.median(a[ok, 2])), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rep-s")
    ap.add_argument("--size", action="append", default=None, help="HxW, repeatable (default 224x384)")
    ap.add_argument("--video", type=Path, default=SHARED / "dashcam" / "test_video.mp4")
    ap.add_argument("--calib", type=Path, default=Path(__file__).resolve().parents[1] / "data/rigs/dashcam_1280x720.yaml")
    a = ap.parse_args()
    for s in a.size or ["224x384"]:
        h, w = (int(v) for v in s.split("x"))
        print(json.dumps(distance_ratios(a.model, (h, w), a.video, a.calib)))


if __name__ == "__main__":
    main()
