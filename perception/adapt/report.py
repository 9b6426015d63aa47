"""Before/after report of an adaptation on the held-out frames of the user's footage.

There is no ground truth in a user's footage, so the report measures what can be measured
without it, on frames the adaptation never trained on, with the preprocessing of
``perception run`` (the evaluation's ``video`` dataset):

- **teacher agreement** (:mod:`perception.eval.agreement`): how often the model finds the cars
  the COCO teacher finds, and how many of its vehicle boxes match no teacher vehicle;
- **boxes per frame**, by class;
- **road depth against the calibrated ground plane**: in the bottom-centre of the image (mostly
  road in front of a car), the median of ``|depth / flat-ground depth - 1|``, and the camera
  height that the predicted depth implies there, against the calibrated one. A model whose depth
  has the right scale and shape on the road gets a small error and the right height.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from perception.data.readers.video import VideoReader
from perception.eval import EvalOptions, evaluate, open_dataset
from perception.eval.predictors import TorchPredictor
from perception.geometry.camera import Camera
from perception.geometry.ipm import ground_depth as ipm_ground_depth
from perception.geometry.resize import resize_frame_and_K
from perception.nn.model import PerceptionNet

log = logging.getLogger(__name__)

BOX_SCORE = 0.3                        # boxes counted at this score and above
ROAD_REGION = (0.72, 0.95, 0.3, 0.7)   # rows (fraction of height) and columns (fraction of width)


def ground_depth(camera: Camera) -> np.ndarray:
    """``[H, W]`` z-depth (m) at which each pixel's ray meets the flat ground ``z_ego = 0`` (inf
    at or above the horizon). Pinhole: the camera is taken without distortion."""
    H, W = camera.height, camera.width
    v, u = np.mgrid[0:H, 0:W]
    z = ipm_ground_depth(camera, np.stack([u.ravel(), v.ravel()], 1), apply_distortion=False).reshape(H, W)
    return np.nan_to_num(z, nan=np.inf)


def road_depth_consistency(model: PerceptionNet, frames: Path, camera: Camera, size: tuple[int, int],
                           max_frames: int | None = None) -> dict[str, float | int]:
    """Depth on the road region against the flat ground of the calibrated mount (module docstring)."""
    predictor = TorchPredictor(model)
    errors, heights = [], []
    cam_height = float(camera.T_ego_cam[2, 3])
    reader = VideoReader(frames, camera, max_frames=max_frames)
    for sample in reader:
        img, cam = sample.images[0], sample.cameras[0]
        if cam.has_distortion:
            img, cam = cam.undistort(img), cam.pinhole()
        net_img, net_cam, _ = resize_frame_and_K(img, cam, size)
        x = torch.from_numpy(net_img).permute(2, 0, 1)[None].float().div_(255.0)
        pred = predictor(x, torch.from_numpy(net_cam.K).float()[None])
        depth = pred.depth[0, 0].numpy().astype(np.float64)
        ground = ground_depth(net_cam)
        H, W = depth.shape
        r0, r1, c0, c1 = ROAD_REGION
        sl = (slice(int(H * r0), int(H * r1)), slice(int(W * c0), int(W * c1)))
        d, g = depth[sl], ground[sl]
        ok = np.isfinite(g) & (g > 0) & (g < 80)
        if ok.sum() < 10:
            continue
        errors.append(float(np.median(np.abs(d[ok] / g[ok] - 1))))
        heights.append(cam_height * float(np.median(d[ok] / g[ok])))  # the height at which this road would lie
    if not errors:
        return {"frames": 0}
    return {"frames": len(errors), "road_depth_error": round(float(np.median(errors)), 4),
            "implied_camera_height_m": round(float(np.median(heights)), 3),
            "calibrated_camera_height_m": round(cam_height, 3)}


def measure(model: PerceptionNet, heldout: Path, calib: Path, camera: Camera, size: tuple[int, int],
            teacher: str | Path, progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Every report figure of one model on the held-out frames."""
    opts = EvalOptions(dataset="video", data=heldout, calib=calib, size=size, teacher=teacher, qualitative=0,
                       score_thresh=BOX_SCORE, agree_score=BOX_SCORE)
    samples, n, dense = open_dataset(opts)
    result = evaluate(TorchPredictor(model, score_thresh=BOX_SCORE), samples, opts, num_frames=n, dense_depth=dense,
                      progress=progress)
    m = result.metrics
    return {"frames": m["frames"], "teacher_agreement": m.get("teacher_agreement"),
            "predictions": m.get("predictions"),
            "road_depth": road_depth_consistency(model, heldout, camera, size)}


def write_report(before: dict[str, Any], after: dict[str, Any], out: Path, info: dict[str, Any]) -> tuple[Path, Path]:
    """``report.json`` (everything) and ``report.md`` (a table of the headline figures)."""
    data = {"info": info, "before": before, "after": after}
    (out / "report.json").write_text(json.dumps(data, indent=2))
    rows = []
    for label, path, fmt, better in HEADLINE:
        b, a = _get(before, path), _get(after, path)
        verdict = "" if b is None or a is None or better is None else \
            ("better" if (a > b if better == "higher" else a < b) else "same" if a == b else "worse")
        rows.append(f"| {label} | {_fmt(b, fmt)} | {_fmt(a, fmt)} | {verdict} |")
    md = [f"# Adaptation of {info['model']} to {info['source']}", "",
          f"Held-out frames: {before.get('frames')} (whole time blocks the adaptation never trained on), "
          f"network input {info['size'][0]}x{info['size'][1]}, the preprocessing of `perception run`.", "",
          "| figure | before | after | |", "|---|---:|---:|---|", *rows, "",
          "Teacher: the COCO detector " + str(info.get("teacher")) + ", on the whole image (416 px input). It misses "
          "cars below about 20 px, which the adaptation's labels (whole image and tiles) include, so small unmatched "
          "boxes are often distant cars; the 40 px row leaves them out. Road depth: bottom-centre of the image against "
          "the flat ground of the calibrated camera mount (`perception.adapt.report`).", "",
          f"Run the adapted model: `{info['run_command']}`", ""]
    (out / "report.md").write_text("\n".join(md))
    return out / "report.json", out / "report.md"


HEADLINE = [  # label, path in the figures, format, which way is better
    ("images with a teacher car where we find one", "teacher_agreement.car_found_rate", "pct", "higher"),
    ("teacher cars found (recall)", "teacher_agreement.car_recall", "pct", "higher"),
    ("vehicle boxes matching no teacher vehicle, per frame", "teacher_agreement.unmatched_vehicle_boxes_per_image",
     "f2", "lower"),
    ("... of them 40 px or taller", "teacher_agreement.unmatched_vehicle_boxes_per_image_40px", "f2", "lower"),
    ("vehicle boxes per frame", "teacher_agreement.vehicle_boxes_per_image", "f2", None),
    ("boxes per frame at score >= 0.3 (all classes)", "predictions.detections_per_image", "f2", None),
    ("road depth error against the ground plane", "road_depth.road_depth_error", "f3", "lower"),
    ("camera height implied by the road depth (m)", "road_depth.implied_camera_height_m", "f2", None),
]


def _get(d: dict[str, Any] | None, path: str) -> Any:
    for key in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(key)
    return d


def _fmt(v: Any, fmt: str) -> str:
    if v is None:
        return "–"
    return f"{100 * v:.1f} %" if fmt == "pct" else f"{v:.{fmt[1]}f}"
