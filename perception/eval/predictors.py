"""The model stage of an evaluation: anything :func:`as_predictor` understands becomes a
:class:`Predictor` returning a :class:`Prediction` (detections per image, optional depth).

Accepted: a :class:`PerceptionNet`, an object returning the raw ``{"depth", "det"}`` outputs (the
pipeline / deploy backends), an object with ``predict(images, intrinsics)`` or a plain callable
returning detections (and optionally depth). ``backend="onnx"`` and ``.onnx`` files run the
pipeline's ``onnx`` backend (ONNX Runtime; ``import perception.deploy`` registers it, evaluation
does not import deploy) and are decoded here exactly like the torch outputs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch

from perception.data.classes import CLASSES
from perception.eval.options import EvalError
from perception.nn.postprocess import Detections, decode_detections, make_anchors, select_detections

__all__ = ["Prediction", "Predictor", "as_predictor", "TorchPredictor", "TeacherPredictor", "RawOutputPredictor",
           "make_backend_predictor", "onnx_file_predictor"]


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
