"""How high above the ground the lifted detections sit, and what the ground gate drops.

    python benchmarks/floating_boxes.py nuscenes ../shared/data/nuscenes_keyframe 256x448 [MODEL]
    python benchmarks/floating_boxes.py kitti ../shared/data/kitti_000008 192x608 [MODEL]
    python benchmarks/floating_boxes.py video ../shared/data/dashcam/test_video.mp4 384x640 [MODEL] \\
        --calib data/rigs/dashcam_1280x720.yaml [--frames 30] [--jsonl rows.jsonl]

Every detection with score >= 0.3 is lifted as in the pipeline
(:func:`perception.pipeline.lifting.lift_detections`); a detection "matches" when it overlaps a
labelled box (any class) with IoU > 0.5 (datasets with boxes only). Prints, for matched, unmatched
and "giant" (over a tenth of the image) detections, the height of the 3D box bottom above the
ground, and how many of each :class:`~perception.pipeline.lifting.GroundGate` drops.
"""
from __future__ import annotations

import argparse
import json

import numpy as np
from predictions import iter_predictions

from perception.eval.detection import box_iou
from perception.eval.runner import EvalOptions
from perception.pipeline.lifting import GroundGate, lift_detections


def lifted_rows(dataset: str, data: str, size: tuple[int, int], model_spec: str, calib: str | None = None,
                frames: int | None = None) -> list[dict]:
    gate, rows = GroundGate(), []
    opts = EvalOptions(dataset=dataset, data=data, size=size, calib=calib, frames=frames)
    for k, (s, pre, out, depth) in enumerate(iter_predictions(model_spec, opts)):
        for c, p in enumerate(pre):
            objs = lift_detections(out.detections[c], depth[c], p.camera)
            gt = s.boxes2d[c] if s.boxes2d else None
            iou = None
            if gt is not None and len(gt.boxes) and objs:
                iou = box_iou(np.array([o.box for o in objs]), p.to_network(np.asarray(gt.boxes, float)))
            for i, o in enumerate(objs):
                area = (o.box[2] - o.box[0]) * (o.box[3] - o.box[1]) / (size[0] * size[1])
                rows.append(dict(frame=k, camera=s.cameras[c].name, label=o.label, score=round(o.score, 2),
                                 matched=bool(iou is not None and iou[i].max() > 0.5),
                                 range=round(o.ground_range, 1), bottom=round(o.bottom_height, 2),
                                 area=round(float(area), 3), dropped=gate.floating(o),
                                 estimates={key: round(v, 1) for key, v in o.estimates.items()}))
    return rows


def summary(rows: list[dict]) -> str:
    lines = []
    for name, sel in [("matched", [r for r in rows if r["matched"]]),
                      ("unmatched", [r for r in rows if not r["matched"]]),
                      ("giant", [r for r in rows if r["area"] > 0.1])]:
        if not sel:
            continue
        b = np.array([r["bottom"] for r in sel])
        hi = [r for r in sel if r["score"] >= 0.5]
        lines.append(f"{name:9s} n={len(sel):4d}  bottom above ground (m): 5% {np.percentile(b, 5):5.2f}  "
                     f"median {np.median(b):5.2f}  95% {np.percentile(b, 95):5.2f}  max {b.max():5.2f}  | gate drops "
                     f"{sum(r['dropped'] for r in sel)} ({sum(r['dropped'] for r in hi)} of {len(hi)} at score >= 0.5)")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dataset", choices=["nuscenes", "kitti", "video"])
    ap.add_argument("data")
    ap.add_argument("size", help="network input HxW")
    ap.add_argument("model", nargs="?", default="rep-s")
    ap.add_argument("--calib", default=None)
    ap.add_argument("--frames", type=int, default=None, help="video: frames to use (default 30)")
    ap.add_argument("--jsonl", default=None, help="write every lifted detection here")
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))
    frames = a.frames or (30 if a.dataset == "video" else None)
    rows = lifted_rows(a.dataset, a.data, size, a.model, a.calib, frames)
    if a.jsonl:
        with open(a.jsonl, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    print(f"{a.dataset} {a.size} {a.model}: {len(rows)} detections (score >= 0.3)")
    print(summary(rows))


if __name__ == "__main__":
    main()
