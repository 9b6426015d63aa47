"""ONNX export of the fused (reparameterized) PerceptionNet, with the checks that prove it.

The exported graph takes what the runtime has, and nothing else:

* inputs  ``images`` ``[B, 3, H, W]`` float32 RGB in [0, 1] (normalisation is inside the graph)
  and ``intrinsics`` ``[B, 3, 3]`` float32 at the network resolution (``fx`` rescales depth);
* outputs ``depth`` ``[B, 1, H, W]`` metres and ``det`` ``[B, A, C]`` raw head outputs (layout in
  :mod:`perception.nn.heads`), plus, with ``decode=True`` (default), the per-anchor decode
  *before* NMS so that a runtime needs no Python: ``boxes`` ``[B, A, 4]`` xyxy pixels,
  ``scores`` ``[B, A, num_classes]`` (sigmoid), ``center_cam`` ``[B, A, 3]`` metres (camera
  frame), ``size`` ``[B, A, 3]`` (l, w, h) metres and ``yaw`` ``[B, A]`` radians (KITTI
  ``rotation_y``). Thresholding + class-aware NMS is left to the runtime
  (:func:`perception.nn.postprocess.select_detections`, or an NMS plugin).

``H, W`` are fixed at export time (anchors are constants of the graph); ``B`` is fixed
(``batch``) or dynamic (``dynamic_batch=True``). The exporter is PyTorch's TorchScript-based
one (``dynamo=False``): it keeps module name scopes in node names (``/backbone/stages.1/...``),
which is what :func:`check_reparameterized` relies on, and it needs no ``onnxscript``.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perception.nn import ModelLoadError, PerceptionNet, reparameterize_model, resolve_model
from perception.nn.model import MAX_STRIDE
from perception.nn.postprocess import decode_detections

log = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET = 17, 21
RAW_OUTPUTS = ("depth", "det")
DECODED_OUTPUTS = ("boxes", "scores", "center_cam", "size", "yaw")
INPUTS = ("images", "intrinsics")
# Ops allowed under the backbone's name scope of a fused graph.
BACKBONE_OPS = frozenset({"Conv", "Relu"})
PARITY_TOL = 1e-3


class ExportError(ValueError):
    """Bad export arguments or a graph that fails a check (message is one line, user-facing)."""


class ReparamCheckError(ExportError):
    """The exported graph still holds training-time structure (BatchNorm, branch Add)."""


@dataclass
class ExportResult:
    path: str
    model: str
    model_hash: str
    size: tuple[int, int]
    batch: int | None  # None = dynamic
    opset: int
    decode: bool
    inputs: dict[str, list[Any]]
    outputs: dict[str, list[Any]]
    node_counts: dict[str, int]
    backbone_node_counts: dict[str, int]
    parity: dict[str, float] = field(default_factory=dict)
    simplified: bool = False
    pretrained: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_hash(model: nn.Module) -> str:
    """sha256 (16 hex) of the config and every tensor of the state dict (engine/ONNX cache key)."""
    h = hashlib.sha256()
    cfg = getattr(model, "cfg", None)
    if cfg is not None:
        h.update(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def default_intrinsics(height: int, width: int, batch: int = 1, f: float | None = None) -> torch.Tensor:
    """A plausible pinhole K for an HxW image (about 64 deg horizontal FOV)."""
    f = f or 0.8 * width
    K = torch.tensor([[f, 0.0, (width - 1) / 2], [0.0, f, (height - 1) / 2], [0.0, 0.0, 1.0]])
    return K.expand(batch, 3, 3).contiguous()


# ---------------------------------------------------------------------------- wrapper
class ExportWrapper(nn.Module):
    """``(images, intrinsics) -> (depth, det[, boxes, scores, center_cam, size, yaw])``."""

    def __init__(self, model: PerceptionNet, height: int, width: int, decode: bool) -> None:
        super().__init__()
        self.model = model
        self.decode = decode
        anchors, strides = model.anchors(height, width, "cpu")
        self.register_buffer("anchor_points", anchors, persistent=False)
        self.register_buffer("anchor_strides", strides, persistent=False)

    def forward(self, images: torch.Tensor, intrinsics: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(images, intrinsics)
        if not self.decode:
            return out["depth"], out["det"]
        d = decode_detections(out["det"], self.anchor_points, self.anchor_strides, self.model.num_classes,
                              intrinsics, self.model.cfg.f_ref)
        return (out["depth"], out["det"]) + tuple(d[k] for k in DECODED_OUTPUTS)


# ---------------------------------------------------------------------------- checks
def node_counts(graph: Any, scope: str | None = None) -> dict[str, int]:
    """Op-type counts of an ``onnx.GraphProto``, optionally only nodes whose name has the path
    component ``/scope/`` (``/model/backbone/stages.0/...`` is under ``backbone``)."""
    part = f"/{scope}/" if scope else None
    c = collections.Counter(n.op_type for n in graph.node if part is None or part in n.name)
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))


def check_reparameterized(onnx_model: Any, scope: str = "backbone") -> dict[str, int]:
    """Prove the graph is the fused form: no BatchNormalization anywhere, and the nodes under
    ``/<scope>/`` are only Conv and Relu (no branch Add). Returns the backbone's op counts;
    raises :class:`ReparamCheckError` otherwise."""
    graph = onnx_model.graph
    all_counts = node_counts(graph)
    if all_counts.get("BatchNormalization"):
        raise ReparamCheckError(f"graph has {all_counts['BatchNormalization']} BatchNormalization nodes: "
                                "the model was not reparameterized")
    bb = node_counts(graph, scope)
    if not bb:
        raise ReparamCheckError(f"no nodes named under '/{scope}/': cannot check the backbone (were node "
                                "names stripped?)")
    extra = {k: v for k, v in bb.items() if k not in BACKBONE_OPS}
    if extra:
        raise ReparamCheckError(f"backbone has ops other than Conv/Relu: {extra} (branch Add means it was not "
                                "reparameterized)")
    return bb


def _ort_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def verify_parity(wrapper: ExportWrapper, path: str | os.PathLike, batch: int, height: int, width: int,
                  seed: int = 0) -> dict[str, float]:
    """Max abs difference per output between ONNX Runtime (CPU, fp32) and torch on one input."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 3, height, width, generator=g)
    K = default_intrinsics(height, width, batch)
    K[:, 0, 0] *= torch.linspace(0.8, 1.2, batch)  # different fx per image exercises the depth scale
    with torch.inference_mode():
        ref = wrapper(images, K)
    sess = _ort_session(path)
    names = [o.name for o in sess.get_outputs()]
    got = sess.run(names, {"images": images.numpy(), "intrinsics": K.numpy()})
    return {n: float(np.abs(r.numpy() - o).max()) for n, r, o in zip(names, ref, got)}


# ---------------------------------------------------------------------------- export
def _validate(batch: int, dynamic_batch: bool, opset: int, size: tuple[int, int]) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, got {opset}")
    if batch < 1:
        raise ExportError(f"--batch must be >= 1, got {batch}")
    h, w = size
    if h < MAX_STRIDE or w < MAX_STRIDE:
        raise ExportError(f"--size {h}x{w} is too small: both sides must be at least {MAX_STRIDE}")
    if h % MAX_STRIDE or w % MAX_STRIDE:
        raise ExportError(f"--size {h}x{w}: height and width must be multiples of {MAX_STRIDE} "
                          f"(e.g. {h + (-h) % MAX_STRIDE}x{w + (-w) % MAX_STRIDE})")


def export_onnx(model: PerceptionNet, out: str | os.PathLike, *, size: tuple[int, int] = (256, 448),
                batch: int = 1, dynamic_batch: bool = False, opset: int = 17, decode: bool = True,
                simplify: bool = True, verify: bool = True, name: str | None = None,
                pretrained: bool = False) -> ExportResult:
    """Export the fused form of ``model`` to ``out`` and check it (checker, reparameterization,
    ONNX Runtime parity when ``verify``). The input model is not modified."""
    import onnx

    _validate(batch, dynamic_batch, opset, size)
    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"--out must end in .onnx, got {out}")
    out.parent.mkdir(parents=True, exist_ok=True)
    h, w = size
    fused = reparameterize_model(model, inplace=False).eval().float().to(memory_format=torch.contiguous_format)
    wrapper = ExportWrapper(fused, h, w, decode).eval()
    output_names = list(RAW_OUTPUTS) + (list(DECODED_OUTPUTS) if decode else [])
    dynamic_axes = None
    if dynamic_batch:
        dynamic_axes = {n: {0: "batch"} for n in list(INPUTS) + output_names}
    images = torch.rand(batch, 3, h, w)
    K = default_intrinsics(h, w, batch)
    tmp = out.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # legacy-exporter deprecation + tracer warnings (shapes are static)
        torch.onnx.export(wrapper, (images, K), str(tmp), input_names=list(INPUTS), output_names=output_names,
                          opset_version=opset, dynamic_axes=dynamic_axes, do_constant_folding=True, dynamo=False)
    proto = onnx.load(str(tmp))
    simplified = False
    if simplify:
        proto, simplified = _simplify(proto)
    mhash = model_hash(fused)
    meta = {"perception.model": name or fused.cfg.name, "perception.model_hash": mhash,
            "perception.form": "fused", "perception.size": f"{h}x{w}",
            "perception.batch": "dynamic" if dynamic_batch else str(batch),
            "perception.classes": json.dumps(list(fused.classes)), "perception.f_ref": str(fused.cfg.f_ref),
            "perception.det_strides": json.dumps(list(fused.cfg.det_strides)),
            "perception.decoded": str(decode).lower(), "perception.input": "RGB float32 [0,1] NCHW; "
            "intrinsics float32 [B,3,3] at network resolution", "perception.pretrained": str(pretrained).lower()}
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    proto.producer_name = "perception"
    onnx.checker.check_model(proto, full_check=True)
    bb = check_reparameterized(proto)
    onnx.save(proto, str(out))
    tmp.unlink(missing_ok=True)

    def shapes(vals: Any) -> dict[str, list[Any]]:
        return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in vals}

    result = ExportResult(path=str(out), model=name or fused.cfg.name, model_hash=mhash, size=(h, w),
                          batch=None if dynamic_batch else batch, opset=opset, decode=decode,
                          inputs=shapes(proto.graph.input), outputs=shapes(proto.graph.output),
                          node_counts=node_counts(proto.graph), backbone_node_counts=bb, simplified=simplified,
                          pretrained=pretrained)
    if verify:
        result.parity = verify_parity(wrapper, out, 2 if dynamic_batch else batch, h, w)
        checked = {k: v for k, v in result.parity.items() if k in ("depth", "boxes", "det", "center_cam")}
        bad = {k: v for k, v in checked.items() if not v <= PARITY_TOL}
        if bad:
            raise ExportError(f"ONNX Runtime differs from torch by more than {PARITY_TOL}: {bad}")
    log.info("exported %s (%s, %s) to %s", result.model, f"{h}x{w}",
             "dynamic batch" if dynamic_batch else f"batch {batch}", out)
    return result


def _simplify(proto: Any) -> tuple[Any, bool]:
    """onnxslim if installed (constant folding, dead nodes, Identity removal), else onnx's own
    shape inference only. Returns (model, whether it was simplified)."""
    try:
        import onnxslim
    except ImportError:
        import onnx

        log.info("onnxslim is not installed: graph not simplified (pip install onnxslim)")
        return onnx.shape_inference.infer_shapes(proto), False
    try:
        slim = onnxslim.slim(proto)
    except Exception as exc:  # noqa: BLE001 - a simplifier failure must not lose the export
        log.warning("onnxslim failed (%s); keeping the unsimplified graph", exc)
        return proto, False
    return slim, True


def export_from_spec(spec: str, out: str | os.PathLike, **kwargs: Any) -> ExportResult:
    """:func:`perception.nn.resolve_model` + :func:`export_onnx` (what ``perception export`` runs).

    A registered name without shipped weights exports random weights with a warning (the graph,
    speed and the checks are the same; the outputs are meaningless)."""
    _validate(kwargs.get("batch", 1), kwargs.get("dynamic_batch", False), kwargs.get("opset", 17),
              kwargs.get("size", (256, 448)))
    if Path(out).suffix != ".onnx":
        raise ExportError(f"--out must end in .onnx, got {out}")
    try:
        model = resolve_model(spec, random_weights=True)
    except ModelLoadError as exc:
        raise ExportError(str(exc)) from None
    src = model.source
    name = src.name if src.format == "registered" or model.cfg.name == "custom" else model.cfg.name
    pretrained = src.trained
    return export_onnx(model, out, name=name, pretrained=pretrained, **kwargs)


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``perception.*`` metadata of an exported file (model, hash, size, classes...)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}


__all__ = ["DECODED_OUTPUTS", "ExportError", "ExportResult", "ExportWrapper", "INPUTS", "RAW_OUTPUTS",
           "ReparamCheckError", "check_reparameterized", "default_intrinsics", "export_from_spec", "export_onnx",
           "model_hash", "node_counts", "read_metadata", "verify_parity"]
