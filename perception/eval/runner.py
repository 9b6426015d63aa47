"""Run a model over a dataset and compute every metric the dataset has ground truth for.

Datasets (:func:`open_dataset`): ``synth`` (rendered from ``seed``; training uses seeds
500-9999, so the default evaluation seed 90000 never overlaps), ``nuscenes`` and ``kitti``
(``--data`` folder, read by :mod:`perception.data.readers`) and ``video`` (no ground truth:
qualitative output and prediction statistics only).

Preprocessing is the one of training (:func:`perception.train.data.make_item` without
augmentation): each camera image is resized to cover the network size and centre-cropped, and
``K`` is updated the same way. Ground-truth depth is moved through the same transform (dense
maps nearest-resized, sparse LiDAR maps point by point) and depth is scored at network
resolution. Predicted 2D boxes are mapped back to the original image, so detection metrics
(and KITTI's pixel-height rules) are in original pixels; ground-truth boxes that lie mostly
outside the centre crop are ignored and the others clipped to it.

The model stage is anything :func:`as_predictor` understands: a :class:`PerceptionNet`, an
object returning the raw ``{"depth", "det"}`` outputs (the pipeline / deploy backends), an
object with ``predict(images, intrinsics)`` or a plain callable returning detections (and
optionally depth). ``backend="onnx"`` and ``.onnx`` files run the pipeline's ``onnx`` backend
(ONNX Runtime; ``import perception.deploy`` registers it, evaluation does not import deploy) and
are decoded here exactly like the torch outputs.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from perception.data.classes import CLASSES
from perception.data.sample import Sample
from perception.eval.bev import BevEvaluator, BevObjects, OccupancyGrid, lift_depth, lift_to_ego, merge_objects, \
    occupancy_from_points
from perception.eval.agreement import AgreementCounter
from perception.eval.depth import DepthEvaluator
from perception.eval.detection import DetectionEvaluator, ImageDetections
from perception.geometry import Camera
from perception.geometry.resize import FrameResize, plan_resize
from perception.nn.postprocess import Detections, decode_detections, make_anchors, select_detections

log = logging.getLogger(__name__)

__all__ = ["EvalOptions", "EvalError", "Prediction", "Predictor", "as_predictor", "TorchPredictor", "TeacherPredictor",
           "RawOutputPredictor", "make_backend_predictor", "onnx_file_predictor", "open_dataset",
           "Evaluation", "evaluate",
           "preprocess", "DATASETS", "DEFAULT_SEED", "TRAINING_SEEDS"]

DATASETS = ("synth", "kitti", "nuscenes", "video")
DEFAULT_SEED = 90000
TRAINING_SEEDS = range(500, 10000)


COCO_CAR = 2  # the COCO class index of "car" in the teacher's output


class EvalError(ValueError):
    """Bad evaluation input (dataset, model, backend); the CLI prints it as a one-line error."""


@dataclass
class EvalOptions:
    dataset: str = "synth"
    data: str | Path | None = None
    seed: int = DEFAULT_SEED
    frames: int | None = None            # None: synth 20, other datasets all frames
    size: tuple[int, int] = (256, 448)   # network input (H, W)
    score_thresh: float = 0.05
    iou_thresh: float = 0.6
    max_det: int = 100
    rig: str = "surround6"               # synth rig (built-in name or YAML)
    calib: str | Path | None = None      # video: camera / rig YAML (else geometry.camera_for_source's policy)
    qualitative: int = 6                 # camera images kept for the report
    merge_dist: float = 1.5              # m, cross-camera de-duplication of BEV objects
    min_visible_in_crop: float = 0.5     # GT boxes less inside the evaluated crop are ignored
    teacher: str | Path | None = None    # reference detector (YOLOX ONNX) for car-finding agreement
    teacher_score: float = 0.5           # reference cars: score >= this ...
    teacher_min_height: float = 40.0     # ... and at least this tall (original pixels)
    agree_score: float = 0.3             # our car boxes counted at score >= this


# ---------------------------------------------------------------------------- predictors
@dataclass
class Prediction:
    """What the evaluation needs from a model for a batch: detections per image (network pixel
    coordinates; labels index ``classes``) and depth ``[B, 1, H, W]`` metres (or None)."""

    detections: list[Detections]
    depth: torch.Tensor | None = None


class Predictor(Protocol):
    classes: tuple[str, ...]

    def __call__(self, images: torch.Tensor, intrinsics: torch.Tensor) -> Prediction: ...


class RawOutputPredictor:
    """Wraps ``fn(images, K) -> {"depth": [B,1,H,W], "det": [B,A,C]}`` (PerceptionNet.forward,
    a pipeline/deploy backend) and decodes like :meth:`PerceptionNet.predict`."""

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], dict], classes: Sequence[str], f_ref: float,
                 score_thresh: float = 0.05, iou_thresh: float = 0.6, max_det: int = 100, name: str = "raw",
                 strides: Sequence[int] | None = None) -> None:
        from perception.nn.model import DET_STRIDES, MAX_STRIDE

        self.fn, self.classes, self.f_ref = fn, tuple(classes), float(f_ref)
        self.score_thresh, self.iou_thresh, self.max_det = score_thresh, iou_thresh, max_det
        self.strides, self.max_stride = tuple(strides or DET_STRIDES), MAX_STRIDE
        self.name = name

    def __call__(self, images: torch.Tensor, intrinsics: torch.Tensor) -> Prediction:
        out = self.fn(images, intrinsics)
        det, depth = out["det"], out.get("depth")
        B, _, H, W = images.shape
        Hp, Wp = H + (-H) % self.max_stride, W + (-W) % self.max_stride
        anchors, strides = make_anchors(Hp, Wp, self.strides, det.device)
        decoded = decode_detections(det.float(), anchors, strides, len(self.classes), intrinsics.float(), self.f_ref)
        dets = select_detections(decoded, (H, W), self.score_thresh, self.iou_thresh, self.max_det,
                                 classes=self.classes)
        return Prediction(dets, None if depth is None else depth.float().cpu())


class TorchPredictor(RawOutputPredictor):
    """Eager PyTorch on the fused (reparameterized) network: one forward gives depth and
    detections (``predict`` would run the network twice)."""

    def __init__(self, model: torch.nn.Module, device: str = "cpu", fuse: bool = True, **kwargs: Any) -> None:
        from perception.nn import reparameterize_model

        model = reparameterize_model(model) if fuse else model
        self.model = model.eval().to(device)
        self.device = torch.device(device)
        super().__init__(self._forward, model.classes, model.cfg.f_ref, name="torch",
                         strides=model.cfg.det_strides, **kwargs)

    @torch.inference_mode()
    def _forward(self, images: torch.Tensor, intrinsics: torch.Tensor) -> dict:
        return self.model(images.to(self.device), intrinsics.to(self.device))


class _PredictFnPredictor:
    """Objects with ``predict(images, intrinsics)`` or plain callables returning detections:
    ``list[Detections]``, ``(list[Detections], depth)``, a :class:`Prediction` or a dict with
    ``detections`` / ``depth``. A ``depth(images, intrinsics)`` method supplies depth if present."""

    def __init__(self, obj: Any, classes: Sequence[str]) -> None:
        self.obj, self.classes = obj, tuple(classes)
        self.fn = obj.predict if hasattr(obj, "predict") else obj

    def __call__(self, images: torch.Tensor, intrinsics: torch.Tensor) -> Prediction:
        out = self.fn(images, intrinsics)
        depth = None
        if isinstance(out, Prediction):
            return out
        if isinstance(out, dict):
            dets, depth = out["detections"], out.get("depth")
        elif isinstance(out, tuple):
            dets, depth = out
        else:
            dets = out
        if depth is None and hasattr(self.obj, "depth") and callable(self.obj.depth):
            depth = self.obj.depth(images, intrinsics)
        return Prediction(list(dets), depth)


class TeacherPredictor:
    """The COCO teacher (YOLOX ONNX, :class:`~perception.train.teacher.YoloxTeacher`) as a 2D-only
    reference model: ``perception eval --model teacher:PATH`` shows what a detector trained on
    real photos scores on the same ground truth (an upper reference for our real-image AP; the
    nuScenes 2D boxes are projected 3D boxes, which no 2D detector matches tightly).
    It predicts no depth and no 3D boxes, so only detection metrics are computed."""

    has_3d = False

    def __init__(self, path: str | Path, classes: Sequence[str] = CLASSES, score_thresh: float = 0.05,
                 iou_thresh: float = 0.45) -> None:
        from perception.train.teacher import COCO_TO_OURS, YoloxTeacher

        try:
            self.teacher = YoloxTeacher(path)
        except (FileNotFoundError, ImportError) as exc:
            raise EvalError(f"teacher model: {exc}") from None
        self.classes = tuple(classes)
        self.score_thresh, self.iou_thresh = score_thresh, iou_thresh
        self.lut = {coco: self.classes.index(ours) for coco, ours in COCO_TO_OURS.items() if ours in self.classes}
        self.name = "teacher"

    def __call__(self, images: torch.Tensor, intrinsics: torch.Tensor) -> Prediction:
        dets = []
        for img in images:
            rgb = (img.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            boxes, scores, coco = self.teacher.raw(rgb, self.score_thresh, self.iou_thresh)
            ours = np.array([self.lut.get(int(c), -1) for c in coco], np.int64)
            keep = ours >= 0
            n = int(keep.sum())
            dets.append(Detections(torch.from_numpy(boxes[keep]).float(), torch.from_numpy(scores[keep]).float(),
                                   torch.from_numpy(ours[keep]), torch.full((n, 3), float("nan")),
                                   torch.full((n, 3), float("nan")), torch.zeros(n), classes=self.classes))
        return Prediction(dets, None)


def as_predictor(obj: Any, classes: Sequence[str] | None = None, **kwargs: Any) -> Predictor:
    """A :class:`Predictor` from a model, a backend, an object with ``predict`` or a callable.

    ``classes`` names the label indices when ``obj`` does not (``obj.classes`` /
    ``obj.cfg.classes``); ``kwargs`` (``score_thresh``, ``iou_thresh``, ``max_det``) go to
    the decoder of raw outputs.
    """
    from perception.nn import PerceptionNet

    if isinstance(obj, PerceptionNet):
        return TorchPredictor(obj, **kwargs)
    if isinstance(obj, (TorchPredictor, RawOutputPredictor, _PredictFnPredictor, TeacherPredictor)):
        return obj
    cfg = getattr(obj, "cfg", None)
    names = tuple(classes or getattr(obj, "classes", None) or getattr(cfg, "classes", None) or CLASSES)
    if hasattr(obj, "infer") and callable(obj.infer):  # pipeline / deploy Backend: raw outputs
        f_ref = getattr(cfg, "f_ref", None)
        if f_ref is None:
            raise EvalError(f"{type(obj).__name__}: a raw-output backend needs a model config (cfg.f_ref) to decode")
        return RawOutputPredictor(obj.infer, names, f_ref, name=getattr(obj, "name", "backend"),
                                  strides=getattr(cfg, "det_strides", None), **kwargs)
    if hasattr(obj, "predict") or callable(obj):
        return _PredictFnPredictor(obj, names)
    raise EvalError(f"cannot evaluate a {type(obj).__name__}: expected a model, a backend, an object with "
                    "predict(images, intrinsics) or a callable")


def onnx_file_predictor(path: str | Path, size: tuple[int, int], device: str = "cpu", threads: int | None = None,
                        **kwargs: Any) -> Predictor:
    """An exported ``.onnx`` file (fp32 or the INT8 Q/DQ one of ``perception export --int8``) run by
    ONNX Runtime and decoded like the torch outputs. The file's baked-in input size (metadata
    ``perception.size``; a static ``--batch`` is fine only if it equals the cameras per frame)
    must equal ``size``; classes and ``f_ref`` come from its metadata.

    The file runs on the pipeline's ``onnx`` backend, which ``import perception.deploy`` registers
    (the command line does; evaluation sits beside deploy and does not import it)."""
    from perception.pipeline.backends import create_backend

    path = Path(path)
    if not path.is_file():
        raise EvalError(f"{path}: ONNX file not found")
    try:
        backend = create_backend("onnx", None, device, path=path, threads=threads)
    except ImportError as exc:
        raise EvalError(f"evaluating an ONNX file needs onnx + onnxruntime: {exc} (pip install -e '.[onnx]')") from None
    except ValueError as exc:  # "onnx" not registered: perception.deploy was not imported
        raise EvalError(f"cannot evaluate {path}: {exc}") from None
    meta = getattr(backend, "metadata", {})
    missing = [k for k in ("perception.size", "perception.classes", "perception.f_ref") if k not in meta]
    if missing:
        raise EvalError(f"{path}: not exported by `perception export` (metadata {', '.join(missing)} missing)")
    file_size = tuple(int(v) for v in meta["perception.size"].split("x"))
    if file_size != tuple(size):
        raise EvalError(f"{path} was exported for {meta['perception.size']} but --size is {size[0]}x{size[1]}: "
                        f"pass --size {meta['perception.size']}")
    strides = json.loads(meta.get("perception.det_strides", "null"))   # files before 2026-12-04: (8, 16, 32)
    return RawOutputPredictor(backend.infer, json.loads(meta["perception.classes"]), float(meta["perception.f_ref"]),
                              name=backend.name, strides=strides, **kwargs)


def make_backend_predictor(model: torch.nn.Module, backend: str, model_spec: str = "", device: str = "cpu",
                           **kwargs: Any) -> Predictor:
    """``torch``: :class:`TorchPredictor` (fused); ``torch-train``: the same unfused. ``onnx``: the
    pipeline's ``onnx`` backend (ONNX Runtime, registered by ``import perception.deploy``; the
    model is exported on first use), decoded like the torch outputs."""
    if backend == "torch":
        return TorchPredictor(model, device=device, **kwargs)
    if backend == "torch-train":  # the multi-branch train form, to check that fusing changes no metric
        if getattr(model, "is_reparameterized", False):
            raise EvalError("backend 'torch-train' needs a train-form model; this checkpoint is fused")
        return TorchPredictor(model, device=device, fuse=False, **kwargs)
    if backend == "onnx":
        from perception.pipeline.backends import create_backend

        try:
            impl = create_backend("onnx", model, device)
        except Exception as exc:  # noqa: BLE001 - any failure of the optional runtime is a clear user error
            raise EvalError(f"backend 'onnx' could not be created: {exc}") from None
        return as_predictor(impl, classes=model.classes, **kwargs)
    raise EvalError(f"unknown backend {backend!r}; choose torch, torch-train or onnx")


# ---------------------------------------------------------------------------- datasets
def open_dataset(opts: EvalOptions) -> tuple[Sequence[Sample] | Iterable[Sample], int, bool]:
    """(samples, number of frames, depth ground truth is dense) for the options."""
    ds = opts.dataset
    if ds not in DATASETS:
        raise EvalError(f"unknown dataset {ds!r}; choose one of {', '.join(DATASETS)}")
    if opts.frames is not None and opts.frames < 1:
        raise EvalError(f"--frames must be at least 1, got {opts.frames}")
    if ds == "synth":
        from perception.data.synth import SynthDataset
        from perception.data.synth.dataset import BUILTIN_RIGS

        if opts.seed in TRAINING_SEEDS:
            log.warning("seed %d is in the training range %d-%d: this is not a held-out evaluation",
                        opts.seed, TRAINING_SEEDS.start, TRAINING_SEEDS.stop - 1)
        if opts.rig not in BUILTIN_RIGS and not Path(opts.rig).is_file():
            raise EvalError(f"synth rig {opts.rig!r} is neither a built-in rig ({', '.join(BUILTIN_RIGS)}) nor a file")
        n = opts.frames or 20
        samples = SynthDataset(opts.rig, seed=opts.seed, frames=n, size=opts.size, fps=2.0, episode_frames=10)
        return samples, n, True
    if opts.data is None:
        raise EvalError(f"--data is required for --dataset {ds} (a {ds} folder or file)")
    data = Path(opts.data)
    if not data.exists():
        raise EvalError(f"{data}: no such file or folder")
    from perception.data.readers import DataError, KittiReader, VideoReader, open_nuscenes
    from perception.geometry import CalibrationError, camera_for_source

    try:
        if ds == "nuscenes":
            reader: Any = open_nuscenes(data)
        elif ds == "kitti":
            reader = KittiReader(data)
        else:
            if opts.calib is not None and not Path(opts.calib).is_file():
                raise EvalError(f"--calib {opts.calib}: no such file")
            calib = camera_for_source(data, opts.calib, auto_mount=True)  # the policy of perception run
            reader = VideoReader(data, calib, max_frames=opts.frames)
    except (DataError, CalibrationError, ValueError) as exc:
        raise EvalError(str(exc)) from None
    n = len(reader) if opts.frames is None else min(len(reader), opts.frames)
    return _limited(reader, n), n, False


def _limited(reader: Iterable[Sample], n: int) -> Iterator[Sample]:
    for i, s in enumerate(reader):
        if i >= n:
            return
        yield s


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
    plan = plan_resize(W0, H0, size)
    cam = sample.cameras[cam_index]
    net_cam = plan.camera(cam if cam.size == (W0, H0) else cam.scaled(W0, H0))
    return Preprocessed(item["image"], net_cam, item["depth"], plan)


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
             meta: dict | None = None) -> Evaluation:
    """Run ``predictor`` over ``samples`` and compute the metrics (see :mod:`perception.eval`)."""
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
        agree = AgreementCounter(ref_score=opts.teacher_score, min_height=opts.teacher_min_height,
                                 score=opts.agree_score)
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
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            n_pred += len(boxes)
            if agree is not None:
                tb, ts, tl = teacher.raw(sample.images[c], score_thresh=opts.teacher_score)
                agree.add(p.to_original(boxes), scores, labels == classes.index("car"),
                          tb, ts, tl == COCO_CAR, window=p.window())
            center = d.center_cam.detach().cpu().numpy().astype(np.float64).reshape(-1, 3)[keep] \
                if d.center_cam is not None and len(d.center_cam) == len(keep) else np.zeros((len(boxes), 3))
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
        metrics["teacher_agreement"] = {**agree.compute(), "teacher": str(opts.teacher)}
    metrics["frames"] = frames
    metrics["meta"] = {**(meta or {}), "dataset": opts.dataset, "frames": frames, "classes": list(classes),
                       "size": list(opts.size), "score_thresh": opts.score_thresh,
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
