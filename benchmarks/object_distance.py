"""Distance of each matched car/truck box by the three estimates of the lifting, against ground truth.

    python benchmarks/object_distance.py kitti ../shared/data/kitti_000008 192x608 [MODEL]
    python benchmarks/object_distance.py nuscenes ../shared/data/nuscenes_keyframe 256x448 [MODEL]
    python benchmarks/object_distance.py synth - 256x448 [MODEL] [FRAMES]    # the test split (seed 90000)

For every car or truck detection (score >= 0.3) matching a ground-truth car or truck (IoU > 0.5;
boxes of other classes, such as nuScenes barriers, are not matched), the camera z
of the object from the detection head (``head``), the dense depth map (``dense``), the ground
plane under the box (``ground``, needs the calibrated mount) and the one the pipeline keeps
(``chosen``, :func:`perception.pipeline.lifting.lift_detections`), divided by the true z.
"""
import sys

import numpy as np
from predictions import iter_predictions

from perception.data.classes import CLASSES
from perception.eval.detection import box_iou
from perception.eval.runner import EvalOptions
from perception.pipeline.lifting import lift_detections


def matched_distances(dataset: str, data: str | None, size: tuple[int, int], model_spec: str = "rep-s",
                      frames: int = 20) -> np.ndarray:
    """``[N, 5]``: true z, head, dense, ground and chosen distance of each matched car/truck
    (``frames``: how many frames of the synthetic test split, for ``dataset="synth"``)."""
    rows = []
    vehicle = [CLASSES.index("car"), CLASSES.index("truck")]
    opts = EvalOptions(dataset="synth", seed=90000, frames=frames, size=size) if dataset == "synth" else \
        EvalOptions(dataset=dataset, data=data, size=size)
    for s, pre, out, depth in iter_predictions(model_spec, opts):
        for c, p in enumerate(pre):
            objs = lift_detections(out.detections[c], depth[c], p.camera)
            gt = s.boxes2d[c]
            if gt is None or not objs or not len(gt.boxes):
                continue
            keep = np.isin(np.asarray(gt.labels), vehicle)
            if not keep.any():
                continue
            gt_z = (np.asarray(gt.center_cam)[:, 2] if gt.center_cam is not None else np.asarray(gt.depth))[keep]
            iou = box_iou(np.array([o.box for o in objs]), p.to_network(np.asarray(gt.boxes, float)[keep]))
            for i, o in enumerate(objs):
                j = int(np.argmax(iou[i]))
                if iou[i, j] > 0.5 and o.label in ("car", "truck"):
                    rows.append((gt_z[j], o.estimates["head"], o.estimates["dense"], o.estimates["ground"], o.depth))
    return np.array(rows, float).reshape(-1, 5)


def main() -> None:
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    size = tuple(int(v) for v in sys.argv[3].split("x"))
    a = matched_distances(sys.argv[1], sys.argv[2], size, sys.argv[4] if len(sys.argv) > 4 else "rep-s",
                          int(sys.argv[5]) if len(sys.argv) > 5 else 20)
    print(len(a), "matched cars/trucks")
    for k, name in enumerate(["head", "dense", "ground", "chosen"], 1):
        r = a[:, k] / a[:, 0]
        ok = np.isfinite(r)
        print(f"{name}: median ratio {np.median(r[ok]):.2f}, mean |rel err| {np.mean(np.abs(r[ok] - 1)):.2f} "
              f"(n={ok.sum()})")
    print("true z, head, dense, ground, chosen (m):")
    print(np.round(a, 1))


if __name__ == "__main__":
    main()
