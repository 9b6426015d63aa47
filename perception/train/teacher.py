"""A COCO teacher for pseudo-labels on real frames: YOLOX-Nano in ONNX Runtime.

The teacher file is read by path (e.g. ``../shared/data/weights/yolox_nano.onnx``) and never
copied into the project. Pre- and post-processing follow the YOLOX reference: BGR, 0..255,
letterboxed top-left into a 416x416 canvas padded with 114; outputs are already sigmoid-ed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np

from perception.data.classes import CLASSES
from perception.data.sample import Boxes2D
from perception.geometry.camera import Camera
from perception.geometry.ipm import ground_depth
from perception.nn.postprocess import nms_class_aware

log = logging.getLogger(__name__)

# COCO index -> our class name (COCO's "motorcycle" is "motorbike" in the teacher's VOC-style list).
COCO_TO_OURS = {0: "pedestrian", 1: "cyclist", 2: "car", 3: "cyclist", 5: "bus", 7: "truck"}


class YoloxTeacher:
    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort  # optional dependency (extra "onnx")

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: teacher ONNX file not found")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), opts, providers=providers or ["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.size = int(inp.shape[2]) if isinstance(inp.shape[2], int) else 416
        self._grid = self._make_grid(self.size)

    @staticmethod
    def _make_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
        grids, strides = [], []
        for s in (8, 16, 32):
            n = size // s
            gy, gx = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
            grids.append(np.stack([gx.ravel(), gy.ravel()], 1))
            strides.append(np.full((n * n, 1), s))
        return np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)

    def raw(self, image_rgb: np.ndarray, score_thresh: float = 0.3, iou_thresh: float = 0.45
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """COCO detections: boxes [N,4] xyxy px of the input image, scores [N], COCO labels [N]."""
        H, W = image_rgb.shape[:2]
        r = min(self.size / H, self.size / W)
        resized = cv2.resize(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR), (int(W * r), int(H * r)),
                             interpolation=cv2.INTER_LINEAR)
        canvas = np.full((self.size, self.size, 3), 114, np.uint8)
        canvas[:resized.shape[0], :resized.shape[1]] = resized
        blob = canvas.transpose(2, 0, 1)[None].astype(np.float32)
        out = self.session.run(None, {self.input_name: blob})[0][0]
        grid, stride = self._grid
        xy = (out[:, :2] + grid) * stride
        wh = np.exp(np.clip(out[:, 2:4], -10, 10)) * stride
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], 1) / r
        scores_all = out[:, 4:5] * out[:, 5:]
        labels = scores_all.argmax(1)
        scores = scores_all[np.arange(len(labels)), labels]
        keep = scores >= score_thresh
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, W)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, H)
        import torch

        idx = nms_class_aware(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels),
                              iou_thresh).numpy()
        return boxes[idx], scores[idx], labels[idx]

    def tiled(self, image_rgb: np.ndarray, score_thresh: float = 0.3, iou_thresh: float = 0.45,
              tile: float = 0.6) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`raw` on the whole image and on a 2x2 grid of overlapping tiles (``tile`` of each
        side), merged by class-aware NMS. The teacher's input is 416 px: on a 1280x720 frame a
        20 px distant car shrinks to 6 px and is missed, and a missed car becomes a *negative*
        for the student. A tile sees it 1.7x larger. Tile boxes cut by an inner tile edge are
        dropped (the whole image or another tile has that object whole)."""
        import torch

        H, W = image_rgb.shape[:2]
        tw, th = int(round(W * tile)), int(round(H * tile))
        parts = [self.raw(image_rgb, score_thresh, iou_thresh)]
        for x0 in (0, W - tw):
            for y0 in (0, H - th):
                b, sc, lab = self.raw(np.ascontiguousarray(image_rgb[y0:y0 + th, x0:x0 + tw]), score_thresh, iou_thresh)
                edge = 8.0
                cut = (((b[:, 0] < edge) & (x0 > 0)) | ((b[:, 2] > tw - edge) & (x0 + tw < W)) |
                       ((b[:, 1] < edge) & (y0 > 0)) | ((b[:, 3] > th - edge) & (y0 + th < H)))
                parts.append((b[~cut] + np.array([x0, y0, x0, y0], np.float32), sc[~cut], lab[~cut]))
        boxes, scores, labels = (np.concatenate([p[k] for p in parts]) for k in range(3))
        idx = nms_class_aware(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels),
                              iou_thresh).numpy()
        boxes, scores, labels = boxes[idx], scores[idx], labels[idx]
        # a part of an object (a car's windows seen by a tile that cuts the car) lies inside the whole
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        iw = np.clip(np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(boxes[:, None, 0], boxes[None, :, 0]), 0, None)
        ih = np.clip(np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(boxes[:, None, 1], boxes[None, :, 1]), 0, None)
        inside = (iw * ih / np.maximum(area[:, None], 1e-6) > 0.7) & (area[None, :] > 2 * area[:, None])
        part = (inside & (labels[:, None] == labels[None, :])).any(1)
        return boxes[~part], scores[~part], labels[~part]

    def pseudo_labels(self, image_rgb: np.ndarray, score_thresh: float = 0.5, ignore_thresh: float = 0.3,
                      classes: tuple[str, ...] = CLASSES, tiles: bool = False) -> Boxes2D:
        """Our classes only. Detections with ``ignore_thresh <= score < score_thresh`` become ignore
        regions (not trusted as positives, not punished as negatives). ``tiles``: also look at
        2x2 tiles (:meth:`tiled`), which finds distant cars the whole image misses."""
        boxes, scores, labels = (self.tiled if tiles else self.raw)(image_rgb, score_thresh=ignore_thresh)
        ours = np.array([classes.index(COCO_TO_OURS[int(c)]) if int(c) in COCO_TO_OURS and
                         COCO_TO_OURS[int(c)] in classes else -1 for c in labels], np.int64)
        keep = ours >= 0
        boxes, scores, ours = boxes[keep], scores[keep], ours[keep]
        return Boxes2D(boxes=boxes.astype(np.float32), labels=ours, ignore=scores < score_thresh,
                       visibility=np.ones(len(boxes), np.float32))


VEHICLES = ("car", "truck", "bus")


def far_ignore_band(camera: Camera, min_px: float, car_height: float = 1.5) -> np.ndarray | None:
    """``[x0, y0, x1, y1]``: the image rows around the horizon where a car on the road would be
    shorter than ``min_px`` pixels, or None when the horizon is not in the image.

    The teacher cannot see cars that small, so its silence there is no evidence of background:
    as an ignore region the band keeps distant cars from becoming negatives (the student learns
    them from the synthetic frames), while boxes the teacher does find there still train as
    positives. A car ``car_height`` m tall whose image height is ``min_px`` stands at
    ``d = fy * car_height / min_px``; its bottom is ``fy * camera_height / d`` rows below the
    horizon and its top ``min_px`` rows above that, and every smaller car lies between.
    """
    T = np.asarray(camera.T_ego_cam, np.float64)
    fwd = T[:3, 2].copy()
    fwd[2] = 0.0
    if np.linalg.norm(fwd) < 1e-6:                          # looking straight down or up
        return None
    far = T[:3, 3] + 1e5 * fwd / np.linalg.norm(fwd)
    far[2] = 0.0
    uv, z = camera.project(far[None], apply_distortion=False)
    if not z[0] > 0:
        return None
    v_h = float(uv[0, 1])
    below = min_px * float(T[2, 3]) / car_height            # bottom of the largest car in the band
    y0, y1 = max(0.0, v_h - min_px), min(float(camera.height), v_h + below)
    if y1 - y0 < 1.0:
        return None
    return np.array([0.0, y0, float(camera.width), y1], np.float32)


def with_far_ignore(boxes: Boxes2D, camera: Camera, min_px: float, classes: tuple[str, ...] = CLASSES) -> Boxes2D:
    """``boxes`` plus :func:`far_ignore_band` as one ignore region (labelled "car")."""
    band = far_ignore_band(camera, min_px)
    if band is None:
        return boxes
    n = len(boxes.boxes)
    ignore = np.asarray(boxes.ignore, bool) if boxes.ignore is not None else np.zeros(n, bool)
    vis = np.asarray(boxes.visibility, np.float32) if boxes.visibility is not None else np.ones(n, np.float32)
    return Boxes2D(boxes=np.concatenate([np.asarray(boxes.boxes, np.float32).reshape(-1, 4), band[None]]),
                   labels=np.concatenate([np.asarray(boxes.labels, np.int64), [classes.index("car")]]),
                   ignore=np.concatenate([ignore, [True]]), visibility=np.concatenate([vis, [1.0]]))


def contact_depth(boxes: Boxes2D, camera: Camera, classes: tuple[str, ...] = CLASSES, *, min_depth: float = 2.0,
                  max_depth: float = 40.0, margin_px: float = 2.0) -> np.ndarray | None:
    """Sparse metric depth ``[H, W]`` (0 = unknown) on real frames from where vehicles touch the road.

    A vehicle box whose bottom edge is in the image (not cut by the frame) stands on the road at
    the bottom-centre pixel; with the camera's calibrated mount, the flat ground there is at a
    known depth (:func:`perception.geometry.ipm.ground_depth`). The lower-central part of the box
    (the rear or side face nearest to the camera, rows 40-100 %, columns 25-75 %) gets that depth.
    Only confident boxes (not ``ignore``) of vehicles between ``min_depth`` and ``max_depth`` m
    count: farther away a pixel of error in the bottom edge is metres of depth. Nearer boxes are
    painted last (they occlude). Returns None when no box qualifies.
    """
    H, W = camera.height, camera.width
    b = np.asarray(boxes.boxes, np.float64).reshape(-1, 4)
    if not len(b):
        return None
    vehicle = np.array([0 <= int(lab) < len(classes) and classes[int(lab)] in VEHICLES for lab in boxes.labels])
    confident = ~np.asarray(boxes.ignore, bool) if boxes.ignore is not None else np.ones(len(b), bool)
    inside = (b[:, 0] > margin_px) & (b[:, 2] < W - margin_px) & (b[:, 3] < H - margin_px)
    z = ground_depth(camera, np.stack([(b[:, 0] + b[:, 2]) / 2, b[:, 3]], 1))
    ok = vehicle & confident & inside & np.isfinite(z) & (z >= min_depth) & (z <= max_depth)
    if not ok.any():
        return None
    depth = np.zeros((H, W), np.float32)
    for i in np.flatnonzero(ok)[np.argsort(-z[ok])]:       # far first: nearer boxes overwrite
        x1, y1, x2, y2 = b[i]
        w, h = x2 - x1, y2 - y1
        r0, r1 = int(round(y1 + 0.4 * h)), int(round(y2))
        c0, c1 = int(round(x1 + 0.25 * w)), int(round(x2 - 0.25 * w))
        if r1 > r0 and c1 > c0:
            depth[r0:r1, c0:c1] = z[i]
    return depth
