"""How far the network's car distances are from the ground-plane distances on real video.

    python benchmarks/dashcam_distance.py --model rep-s --size 224x384 --size 384x640
    python benchmarks/dashcam_distance.py --uncalibrated      # what a user without calibration gets

No ground truth is needed: for every car box (score >= 0.5) whose bottom edge lies below the
horizon, the calibrated camera (height above the road and pitch) gives a second distance, where
the ray through the box's bottom-centre meets the road (``estimates["ground"]`` of
:func:`perception.pipeline.lifting.lift_detections`). The ratio network / ground is about 1 for
a model whose metric depth transfers to the camera; it is only as good as the mount in the
calibration file (for the shared dashcam, pitch and height are measured on lane lines:
docs/geometry.md).

``--uncalibrated`` measures what `perception run --source VIDEO` gives without ``--calib``: the
same clip through the assumed default camera, level at 1.4 m (``--no-auto-mount``) and with the
pitch and height measured on the lane lines (the default), against the calibrated ground distances of the same boxes (the
network sees the same raw frames, so the boxes pair one to one).
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
    """A pipeline sink keeping the distance estimates of the car boxes (and, in ``keys``, the frame
    number and box of each, to pair the boxes of two runs)."""

    def __init__(self, min_score: float) -> None:
        self.min_score, self.rows, self.keys, self.frames = min_score, [], [], 0

    def write(self, frame) -> None:
        for o in frame.objects:
            if o.label == "car" and o.score >= self.min_score:
                self.rows.append([o.estimates.get(k, np.nan) for k in ("head", "dense", "ground")] + [o.depth])
                self.keys.append([self.frames, *np.round(np.asarray(o.box, float), 1)])
        self.frames += 1

    def close(self, *args) -> None:
        pass


def _car_estimates(model: str, size: tuple[int, int], video: Path, calib: Path | None, min_score: float,
                   auto_mount: bool = False) -> _CarEstimates:
    rig = single_camera_rig(str(video), calib, None, auto_mount)
    with tempfile.TemporaryDirectory() as tmp:
        p = Pipeline(rig, [str(video)], PipelineOptions(model=model, size=size, out=Path(tmp), render=False,
                                                       device="cpu", score_thresh=min_score))
        rec = _CarEstimates(min_score)
        p.sinks.append(rec)
        p.run()
    return rec


def distance_ratios(model: str, size: tuple[int, int], video: Path, calib: Path, min_score: float = 0.5,
                    near: float = 3.0, far: float = 60.0) -> dict:
    rec = _car_estimates(model, size, video, calib, min_score)
    a = np.array(rec.rows, float).reshape(-1, 4)
    ok = np.isfinite(a[:, 2]) & (a[:, 2] > near) & (a[:, 2] < far)
    head, dense, chosen = (a[ok, i] / a[ok, 2] for i in (0, 1, 3))
    q = lambda v: [round(float(x), 3) for x in np.nanpercentile(v, [25, 50, 75])]  # noqa: E731
    return {"model": model, "size": f"{size[0]}x{size[1]}", "car_boxes": len(a), "with_ground_distance": int(ok.sum()),
            "head_over_ground_q25_50_75": q(head), "dense_over_ground_q25_50_75": q(dense),
            "chosen_over_ground_q25_50_75": q(chosen), "median_ground_distance_m": round(float(np.median(a[ok, 2])), 2)}


def uncalibrated_ratios(model: str, size: tuple[int, int], video: Path, calib: Path, min_score: float = 0.5,
                        near: float = 3.0, far: float = 60.0) -> dict:
    """Distances of the uncalibrated default camera (level, and measured on the lanes) over the calibrated
    ground distance of the same car boxes (quartiles of the ratio; 1 is right)."""
    ref = _car_estimates(model, size, video, calib, min_score)
    ref_ground = {tuple(k): r[2] for k, r in zip(ref.keys, ref.rows)}
    out = {"model": model, "size": f"{size[0]}x{size[1]}", "video": video.name}
    q = lambda v: [round(float(x), 3) for x in np.nanpercentile(v, [25, 50, 75])]  # noqa: E731
    for name, auto in (("level", False), ("auto_mount", True)):
        rec = _car_estimates(model, size, video, None, min_score, auto_mount=auto)
        pairs = [(ref_ground[tuple(k)], r) for k, r in zip(rec.keys, rec.rows) if tuple(k) in ref_ground]
        g = np.array([p[0] for p in pairs], float)
        a = np.array([p[1] for p in pairs], float).reshape(-1, 4)
        ok = np.isfinite(g) & (g > near) & (g < far)
        out[name] = {"paired_boxes": f"{len(pairs)} of {len(rec.rows)}",
                     "ground_over_calibrated_ground_q25_50_75": q(a[ok, 2] / g[ok]),
                     "chosen_over_calibrated_ground_q25_50_75": q(a[ok, 3] / g[ok])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="rep-s")
    ap.add_argument("--size", action="append", default=None, help="HxW, repeatable (default 224x384)")
    ap.add_argument("--video", type=Path, default=SHARED / "dashcam" / "test_video.mp4")
    ap.add_argument("--calib", type=Path, default=Path(__file__).resolve().parents[1] / "data/rigs/dashcam_1280x720.yaml")
    ap.add_argument("--uncalibrated", action="store_true", help="the default camera without --calib, level and "
                    "auto-mounted, against the calibrated ground distances")
    a = ap.parse_args()
    for s in a.size or ["224x384"]:
        h, w = (int(v) for v in s.split("x"))
        fn = uncalibrated_ratios if a.uncalibrated else distance_ratios
        print(json.dumps(fn(a.model, (h, w), a.video, a.calib)))


if __name__ == "__main__":
    main()
