"""Distance of each matched car/truck box by the three estimates of the lifting, against ground truth.

    python benchmarks/object_distance.py kitti ../shared/data/kitti_000008 192x608 [MODEL]
    python benchmarks/object_distance.py nuscenes ../shared/data/nuscenes_keyframe 256x448 [MODEL]

For every detection (score >= 0.3) matching a ground-truth car or truck (IoU > 0.5), the camera z
of the object from the detection head (``head``), the dense depth map (``dense``), the ground
plane under the box (``ground``, needs the calibrated mount) and the one the pipeline keeps
(``chosen``, :func:`perception.pipeline.lifting.lift_detections`), divided by the true z.
"""
import sys

import numpy as np
import torch

from perception.eval.detection import box_iou
from perception.eval.runner import EvalOptions, TorchPredictor, load_model, open_dataset, preprocess
from perception.pipeline.lifting import lift_detections
ds, data, size = sys.argv[1], sys.argv[2], tuple(int(v) for v in sys.argv[3].split("x"))
model, _ = load_model(sys.argv[4] if len(sys.argv) > 4 else "rep-s")
pred = TorchPredictor(model, score_thresh=0.3)
opts = EvalOptions(dataset=ds, data=data, size=size)
samples, n, dense = open_dataset(opts)
rows = []
for s in samples:
    pre = [preprocess(s, c, size, dense) for c in range(len(s.cameras))]
    images = torch.from_numpy(np.stack([p.image for p in pre])).permute(0, 3, 1, 2).float().div_(255.0)
    K = torch.from_numpy(np.stack([p.camera.K for p in pre])).float()
    out = pred(images, K)
    depth = out.depth.reshape(len(pre), *size).numpy()
    for c, p in enumerate(pre):
        objs = lift_detections(out.detections[c], depth[c], p.camera)
        gt = s.boxes2d[c]
        if gt is None or not len(objs): continue
        gtb = p.to_network(np.asarray(gt.boxes, float))
        gtz = np.asarray(gt.center_cam)[:, 2] if gt.center_cam is not None else np.asarray(gt.depth)
        pb = np.array([o.box for o in objs])
        iou = box_iou(pb, gtb)
        for i, o in enumerate(objs):
            j = int(np.argmax(iou[i]))
            if iou[i, j] > 0.5 and o.label in ("car", "truck"):
                rows.append((gtz[j], o.estimates["head"], o.estimates["dense"], o.estimates["ground"], o.depth))
a = np.array(rows)
print(len(a), "matched cars/trucks")
for k, name in enumerate(["head", "dense", "ground", "chosen"], 1):
    r = a[:, k] / a[:, 0]; ok = np.isfinite(r)
    print(f"{name}: median ratio {np.median(r[ok]):.2f}, mean |rel err| {np.mean(np.abs(r[ok]-1)):.2f} (n={ok.sum()})")
print("true z, head, dense, ground, chosen (m):")
print(np.round(a, 1))
