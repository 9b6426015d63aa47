"""Run a model over a dataset and compute every metric the dataset has ground truth for.

The datasets are opened by :func:`perception.eval.datasets.open_dataset`; the model stage is
anything :func:`perception.eval.predictors.as_predictor` understands. :class:`EvalOptions` and
:class:`EvalError` are defined in :mod:`perception.eval.options` and importable from here.

Preprocessing is the one of training (:func:`perception.train.data.make_item` without
augmentation): each camera image is resized to cover the network size and centre-cropped, and
``K`` is updated the same way. Ground-truth depth is moved through the same transform (dense
maps nearest-resized, sparse LiDAR maps point by point) and depth is scored at network
resolution. Predicted 2D boxes are mapped back to the original image, so detection metrics
(and KITTI's pixel-height rules) are in original pixels; ground-truth boxes that lie mostly
outside the centre crop are ignored and the others clipped to it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from perception.data.classes import CLASSES
from perception.data.sample import Sample
from perception.eval.bev import BevEvaluator, BevObjects, OccupancyGrid, lift_depth, lift_to_ego, merge_objects, \
    occupancy_from_points
from perception.eval.agreement import AgreementCounter
from perception.eval.datasets import resolve_size
from perception.eval.depth import DepthEvaluator
from perception.eval.detection import DetectionEvaluator, ImageDetections
from perception.eval.options import EvalError, EvalOptions
from perception.eval.predictors import Predictor, as_predictor
from perception.geometry import Camera
from perception.geometry.resize import FrameResize, plan_resize
from perception.pipeline.lifting import shown_mask

log = logging.getLogger(__name__)

__all__ = ["EvalOptions", "EvalError", "Evaluation", "QualitativeView", "evaluate", "Preprocessed", "preprocess"]

COCO_CAR = 2  # the COCO class index of "car" in the teacher's output
COCO_VEHICLES = (2, 5, 7)  # car, bus, truck: the teacher's vehicles (ours: VEHICLES)
VEHICLES = ("car", "truck", "bus")


# ---------------------------------------------------------------------------- preprocessing
@dataclass
class Preprocessed:
    image: np.ndarray        # network input, uint8 HxWx3
    camera: Camera           # camera of the network input (K updated)
    depth: np.ndarray | None  # ground-truth depth at network resolution
    resize: FrameResize      # the one resize of perception.geometry.resize (as in perception run)

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """Network-pixel xyxy box edges -> original-image pixels."""
        return self.resize.to_source(boxes)

    def to_network(self, boxes: np.ndarray) -> np.ndarray:
        return self.resize.to_network(boxes)

    def window(self) -> np.ndarray:
        """The evaluated view in original-image pixels (xyxy)."""
        return self.resize.window()


def preprocess(sample: Sample, cam_index: int, size: tuple[int, int], dense_depth: bool) -> Preprocessed:
    """Training's item without augmentation (:func:`perception.train.data.make_item`), which
    resizes with :func:`perception.geometry.resize.resize_frame_and_K` like ``perception run``."""
    from perception.train.data import make_item

    if sample.extras.get("depth_dense") != dense_depth:
        sample = dataclasses.replace(sample, extras={**sample.extras, "depth_dense": dense_depth})
    item = make_item(sample, cam_index, size, rng=None)
    H0, W0 = sample.images[cam_index].shape[:2]
    plan = plan_resize(W0, H0, size)  # make_item's plan without augmentation (arithmetic only)
    return Preprocessed(item["image"], plan.camera(sample.cameras[cam_index]), item["depth"], plan)

# ---------------------------------------------------------------------------- evaluation
@dataclass
class QualitativeView:
    name: str
    image: np.ndarray                  # network input RGB
    pred_boxes: np.ndarray             # network pixels
    pred_labels: list[str]
    pred_scores: np.ndarray
    gt_boxes: np.ndarray               # network pixels
    gt_labels: list[str]
    pred_depth: np.ndarray | None
    gt_depth: np.ndarray | None


@dataclass
class Evaluation:
    metrics: dict
    classes: tuple[str, ...]
    pr_curves: dict | None = None      # {"recall": [101], "precision": {cls: [101]}} at IoU 0.5
    qualitative: list[QualitativeView] = field(default_factory=list)


def _class_lut(names: Sequence[str], classes: Sequence[str]) -> np.ndarray:
    """Index in ``classes`` of each of ``names`` (-1 when missing)."""
    return np.array([classes.index(n) if n in classes else -1 for n in names] + [-1], np.int64)


def evaluate(predictor: Predictor | Any, samples: Iterable[Sample], opts: EvalOptions, *, num_frames: int | None = None,
             dense_depth: bool = True, progress: Callable[[int, int], None] | None = None,
             meta: dict | None = None, agreement: AgreementCounter | None = None) -> Evaluation:
    """Run ``predictor`` over ``samples`` and compute the metrics (see :mod:`perception.eval`).
    ``opts.size`` None: :func:`perception.eval.datasets.resolve_size` picks it. ``agreement``: the
    counter ``opts.teacher`` fills (default: one with the thresholds of ``opts``)."""
    if opts.size is None:
        opts, samples = resolve_size(opts, samples)
    predictor = as_predictor(predictor, score_thresh=opts.score_thresh, iou_thresh=opts.iou_thresh,
                             max_det=opts.max_det)
    classes = tuple(c for c in CLASSES if c in predictor.classes)
    if not classes:
        raise EvalError(f"the model predicts none of the evaluated classes {CLASSES} (its classes: {predictor.classes})")
    pred_lut = _class_lut(predictor.classes, classes)
    has_3d = getattr(predictor, "has_3d", True)  # a 2D-only reference detector gets no BEV metrics
    gt_lut = _class_lut(CLASSES, classes)
    det_ev = DetectionEvaluator(classes)
    depth_ev = DepthEvaluator()
    bev_ev = BevEvaluator(classes)
    qual: list[QualitativeView] = []
    frames = 0
    has = {"det": False, "depth": False, "bev": False}
    per_frame_q = max(1, math.ceil(opts.qualitative / max(num_frames or 1, 1)))
    n_pred, pred_depth_median = 0, []
    gate_on, gate_dropped = opts.ground_gate and has_3d, 0
    total = num_frames or 0
    teacher, agree = None, None
    if opts.teacher is not None:
        if "car" not in classes:
            raise EvalError("--teacher measures car finding, but the model predicts no 'car' class")
        from perception.train.teacher import YoloxTeacher

        try:
            teacher = YoloxTeacher(opts.teacher)
        except (FileNotFoundError, ImportError) as exc:
            raise EvalError(f"--teacher: {exc}") from None
        agree = agreement if agreement is not None else AgreementCounter(
            ref_score=opts.teacher_score, min_height=opts.teacher_min_height, score=opts.agree_score)
        ours_vehicle = np.array([c in VEHICLES for c in classes])
        reference = teacher.tiled if opts.teacher_tiles else teacher.raw
    for f, sample in enumerate(samples):
        pre = [preprocess(sample, c, opts.size, dense_depth) for c in range(len(sample.cameras))]
        if f == 0:
            _warn_focal(pre[0].camera)
        images = torch.from_numpy(np.stack([p.image for p in pre])).permute(0, 3, 1, 2).float().div_(255.0)
        K = torch.from_numpy(np.stack([p.camera.K for p in pre])).float()
        out = predictor(images, K)
        if len(out.detections) != len(pre):
            raise EvalError(f"the model returned detections for {len(out.detections)} images, expected {len(pre)}")
        depth = out.depth
        if depth is not None:
            depth = torch.as_tensor(depth).detach().float().cpu()
            if depth.numel() != len(pre) * opts.size[0] * opts.size[1]:
                raise EvalError(f"the model's depth has shape {tuple(depth.shape)}, expected "
                                f"[{len(pre)}, 1, {opts.size[0]}, {opts.size[1]}]")
            depth = depth.reshape(len(pre), *opts.size).numpy()
        pred_objs = []
        for c, p in enumerate(pre):
            d = out.detections[c]
            boxes = d.boxes.detach().cpu().numpy().astype(np.float64).reshape(-1, 4)
            scores = d.scores.detach().cpu().numpy().astype(np.float64).reshape(-1)
            labels = pred_lut[np.clip(d.labels.detach().cpu().numpy().astype(np.int64), -1, len(pred_lut) - 1)]
            keep = labels >= 0
            has_center = d.center_cam is not None and len(d.center_cam) == len(keep)
            if gate_on and has_center:
                shown = shown_mask(d, None if depth is None else depth[c], p.camera)
                gate_dropped += int((keep & ~shown).sum())
                keep &= shown
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            n_pred += len(boxes)
            if agree is not None:
                tb, ts, tl = reference(sample.images[c], score_thresh=min(agree.ref_score, agree.vehicle_ref_score))
                agree.add(p.to_original(boxes), scores, labels == classes.index("car"),
                          tb, ts, tl == COCO_CAR, window=p.window(), pred_is_vehicle=ours_vehicle[labels],
                          ref_is_vehicle=np.isin(tl, COCO_VEHICLES))
            center = d.center_cam.detach().cpu().numpy().astype(np.float64).reshape(-1, 3)[keep] \
                if has_center else np.zeros((len(boxes), 3))
            pred_objs.append(BevObjects(lift_to_ego(center, p.camera.T_ego_cam), labels, scores,
                                        np.full(len(labels), c)))
            gt = sample.boxes2d[c] if sample.boxes2d is not None else None
            gt_net = np.zeros((0, 4))
            gt_names: list[str] = []
            if gt is not None:
                has["det"] = True
                img_rec = ImageDetections(**_gt_record(gt, gt_lut, p, opts.min_visible_in_crop),
                                          boxes=p.to_original(boxes), scores=scores, labels=labels,
                                          image_id=f"{sample.frame_id}/{sample.cameras[c].name}")
                det_ev.add(img_rec)
                ok = img_rec.gt_labels >= 0
                gt_net = p.to_network(img_rec.gt_boxes[ok])
                gt_names = [classes[i] for i in img_rec.gt_labels[ok]]
            if depth is not None:
                pred_depth_median.append(float(np.median(depth[c])))
                if p.depth is not None:
                    has["depth"] = True
                    depth_ev.update(depth[c], p.depth)
            if len(qual) < opts.qualitative and (c - f) % len(pre) < per_frame_q:
                qual.append(QualitativeView(img_rec.image_id if gt is not None else f"{sample.frame_id}/{sample.cameras[c].name}",
                                            p.image, boxes, [classes[i] for i in labels], scores, gt_net, gt_names,
                                            None if depth is None else depth[c], p.depth))
        if sample.boxes3d is not None and has_3d:
            has["bev"] = True
            allp = BevObjects.concat(pred_objs)
            b3 = sample.boxes3d
            gl = gt_lut[np.clip(np.asarray(b3.labels, np.int64), -1, len(gt_lut) - 1)]
            bev_ev.add_objects(merge_objects(allp, opts.merge_dist), BevObjects(b3.center[gl >= 0], gl[gl >= 0]))
        bev_gt = sample.extras.get("bev")
        if bev_gt is not None and "occupancy" in bev_gt and depth is not None and all(p.depth is not None for p in pre):
            occ_gt = np.asarray(bev_gt["occupancy"]) > 0
            grid = OccupancyGrid(occ_gt.shape[0], occ_gt.shape[1], float(bev_gt.get("resolution", 0.25)))
            pts_p = np.concatenate([lift_depth(depth[c], p.camera) for c, p in enumerate(pre)])
            pts_g = np.concatenate([lift_depth(p.depth, p.camera) for p in pre])
            occ_p, _ = occupancy_from_points(pts_p, grid)
            occ_r, seen = occupancy_from_points(pts_g, grid)
            bev_ev.add_occupancy(occ_p, occ_gt, seen, ref_occ=occ_r)
        frames += 1
        if progress is not None:
            progress(frames, max(total, frames))
    if frames == 0:
        raise EvalError("the dataset yielded no frames")

    metrics: dict[str, Any] = {}
    pr = None
    if has["det"]:
        metrics["detection"] = det_ev.compute()
        pr = {"recall": det_ev.pr["recall_points"].tolist(),
              "precision": {n: det_ev.pr["precision"][i].tolist() for i, n in enumerate(classes)
                            if det_ev.pr["num_gt"][i] > 0}}
    if has["depth"] and len(depth_ev):
        metrics["depth"] = depth_ev.compute()
    if has["bev"] or bev_ev.occ_frames:
        metrics["bev"] = bev_ev.compute()
    if not has["det"] and not has["depth"]:
        metrics["predictions"] = {"detections_per_image": round(n_pred / max(frames, 1) / max(len(pre), 1), 3),
                                  "median_depth_m": round(float(np.median(pred_depth_median)), 3)
                                  if pred_depth_median else None}
    if agree is not None:
        metrics["teacher_agreement"] = {**agree.compute(), "teacher": str(opts.teacher), "teacher_tiles": opts.teacher_tiles}
    metrics["frames"] = frames
    metrics["meta"] = {**(meta or {}), "dataset": opts.dataset, "frames": frames, "classes": list(classes),
                       "size": list(opts.size), "score_thresh": opts.score_thresh,
                       "ground_gate": gate_on, "ground_gate_dropped": gate_dropped,
                       "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    if opts.dataset == "synth":
        metrics["meta"]["seed"] = opts.seed
    return Evaluation(metrics, classes, pr, qual)


def _warn_focal(camera: Camera) -> None:
    """Say when the input size puts the focal length far from the one the shipped weights saw."""
    from perception.nn.registry import TRAIN_FOCAL_PX

    fx = float(camera.K[0, 0])
    if fx > 1.4 * TRAIN_FOCAL_PX:  # shorter focal lengths were in training (front_wide: 129 px)
        log.warning("at this --size the camera's focal length is %.0f px; the shipped models were trained near "
                    "%.0f px and detect and estimate depth worse far from it (docs/pipeline.md, 'Input size'): "
                    "a size about %.2fx this one matches it", fx, TRAIN_FOCAL_PX, TRAIN_FOCAL_PX / fx)


def _gt_record(gt: Any, gt_lut: np.ndarray, p: Preprocessed, min_visible: float) -> dict[str, np.ndarray | None]:
    """Ground truth of one camera in original pixels, restricted to the evaluated crop."""
    labels = np.asarray(gt.labels, np.int64)
    ignore = np.asarray(gt.ignore, bool) if gt.ignore is not None else np.zeros(len(labels), bool)
    mapped = gt_lut[np.clip(labels, -1, len(gt_lut) - 1)]
    # a box of a class we do not evaluate is dropped; a class-agnostic ignore region stays
    keep = (mapped >= 0) | ((labels < 0) & ignore)
    boxes = np.asarray(gt.boxes, np.float64).reshape(-1, 4)[keep]
    mapped, ignore = mapped[keep], ignore[keep]
    trunc = None if gt.truncation is None else np.asarray(gt.truncation, np.float64)[keep]
    occl = None if gt.occlusion is None else np.asarray(gt.occlusion, np.int64)[keep]
    win = p.window()
    clipped = np.stack([np.clip(boxes[:, 0], win[0], win[2]), np.clip(boxes[:, 1], win[1], win[3]),
                        np.clip(boxes[:, 2], win[0], win[2]), np.clip(boxes[:, 3], win[1], win[3])], 1)
    area = lambda b: np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)  # noqa: E731
    a0, a1 = area(boxes), area(clipped)
    inside = a1 > 0
    frac = np.where(a0 > 0, a1 / np.maximum(a0, 1e-12), 0.0)
    ignore = ignore | (frac < min_visible)
    sel = inside
    return {"gt_boxes": clipped[sel], "gt_labels": mapped[sel], "gt_ignore": ignore[sel],
            "gt_truncation": None if trunc is None else trunc[sel],
            "gt_occlusion": None if occl is None else occl[sel]}
