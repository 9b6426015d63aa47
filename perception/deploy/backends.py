"""ONNX Runtime and TensorRT model-stage backends (``--backend onnx|tensorrt``).

Both implement :class:`perception.pipeline.backends.Backend` (``infer(images [B,3,H,W] float
RGB 0..1, intrinsics [B,3,3]) -> {"depth", "det"}`` raw outputs; decode/NMS stays the shared
pipeline stage) and register themselves with :func:`perception.pipeline.backends.register_backend`
when this module is imported: ``import perception.deploy.backends`` then
``create_backend("onnx", model, "cpu")``. The torch backends (eager, ``torch.compile``, CUDA
graphs) are the pipeline's own (:mod:`perception.pipeline.backends`).

Built from a ``PerceptionNet`` the backends export the fused model on first use for each input
size (dynamic batch, raw outputs) into the cache folder (``$PERCEPTION_CACHE`` or
``~/.cache/perception``), keyed by the model's hash; or they run a given file (``path=``: an
ONNX file from ``perception export``, a Q/DQ INT8 file from ``perception.deploy.quantize``, or
for TensorRT a serialized engine).

TensorRT is optional (``import tensorrt`` only inside :class:`TensorRTBackend`); it is **not
tested on our machines** (not installable there). Its code follows the TensorRT 10 Python API.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perception.deploy.export import export_onnx, model_hash, read_metadata
from perception.pipeline.backends import Backend, register_backend

log = logging.getLogger(__name__)

__all__ = ["OnnxRuntimeBackend", "TensorRTBackend", "build_engine", "cache_dir", "engine_cache_key",
           "ort_providers", "ort_session"]


def cache_dir() -> Path:
    d = Path(os.environ.get("PERCEPTION_CACHE", Path.home() / ".cache" / "perception"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached_onnx(model: Any, height: int, width: int, tag: str = "") -> Path:
    """The fused model exported for this size (dynamic batch, raw outputs), cached by hash."""
    key = f"{getattr(model.cfg, 'name', 'model')}-{model_hash(model)}-{height}x{width}-dyn{tag}"
    path = cache_dir() / "onnx" / f"{key}.onnx"
    if not path.is_file():
        log.info("exporting %s for %dx%d to %s", model.cfg.name, height, width, path)
        export_onnx(model, path, size=(height, width), dynamic_batch=True, decode=False, verify=False)
    return path


# ---------------------------------------------------------------------------- ONNX Runtime
def ort_providers(device: str = "cpu", tensorrt_ep: bool = False) -> list[Any]:
    """Execution providers for ``device`` among those this onnxruntime build has."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted: list[Any] = []
    if str(device).startswith("cuda"):
        dev_id = torch.device(device).index or 0
        if tensorrt_ep and "TensorrtExecutionProvider" in available:
            trt_cache = cache_dir() / "ort-trt"
            trt_cache.mkdir(parents=True, exist_ok=True)
            wanted.append(("TensorrtExecutionProvider", {"device_id": dev_id, "trt_fp16_enable": True,
                                                         "trt_engine_cache_enable": True,
                                                         "trt_engine_cache_path": str(trt_cache)}))
        if "CUDAExecutionProvider" not in available:
            raise RuntimeError(f"device {device} requested but this onnxruntime has no CUDAExecutionProvider "
                               f"(available: {available}); pip install onnxruntime-gpu")
        wanted.append(("CUDAExecutionProvider", {"device_id": dev_id}))
    wanted.append("CPUExecutionProvider")
    return wanted


def ort_session(path: str | os.PathLike, device: str = "cpu", threads: int | None = None,
                tensorrt_ep: bool = False) -> Any:
    """An InferenceSession with all graph optimisations and intra-op threads = cores."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads or (os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    # Idle worker threads sleep instead of spin-waiting (ONNX Runtime's default is to spin), for
    # the reason torch gets OMP_WAIT_POLICY=PASSIVE: on a small CPU spinning threads steal the
    # cores that decoding, rendering or another session need. PERCEPTION_ORT_SPIN=1 restores it.
    if os.environ.get("PERCEPTION_ORT_SPIN", "0") != "1":
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=ort_providers(device, tensorrt_ep))


class OnnxRuntimeBackend(Backend):
    """ONNX Runtime: CPU, CUDA or its TensorRT execution provider (``tensorrt_ep=True``).

    ``model`` (fused on export) or ``path`` (an exported/quantized file, whose input size must
    match the frames; its ``perception.*`` metadata is in :attr:`metadata`). On CUDA the inputs and outputs stay on the GPU (I/O binding with torch
    tensors).
    """

    name = "onnx"

    def __init__(self, model: Any = None, device: str = "cpu", *, path: str | os.PathLike | None = None,
                 threads: int | None = None, tensorrt_ep: bool = False, **_: Any) -> None:
        super().__init__(device)
        if model is None and path is None:
            raise ValueError("OnnxRuntimeBackend needs a model or path=FILE.onnx")
        self.model = model
        self.cfg = getattr(model, "cfg", None)
        self.path = Path(path) if path is not None else None
        self.threads, self.tensorrt_ep = threads, tensorrt_ep
        self._sessions: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()
        self.metadata: dict[str, str] = {}  # the ``perception.*`` metadata of the ``path`` file
        if self.path is not None:
            if not self.path.is_file():
                raise FileNotFoundError(f"{self.path}: ONNX file not found")
            self.metadata = meta = read_metadata(self.path)
            h, w = (int(v) for v in meta.get("perception.size", "0x0").split("x"))
            self._sessions[(h, w)] = ort_session(self.path, device, threads, tensorrt_ep)
            if meta.get("perception.quantized"):
                self.name = "onnx-int8"

    def session(self, height: int, width: int) -> Any:
        with self._lock:
            if (height, width) not in self._sessions:
                if self.path is not None:
                    have = next(iter(self._sessions))
                    if have != (0, 0):
                        raise ValueError(f"{self.path} was exported for {have[0]}x{have[1]}, frames are "
                                         f"{height}x{width}; export it with --size {height}x{width}")
                    return self._sessions[have]
                path = _cached_onnx(self.model, height, width)
                self._sessions[(height, width)] = ort_session(path, str(self.device), self.threads, self.tensorrt_ep)
            return self._sessions[(height, width)]

    def infer(self, images: torch.Tensor, intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
        B, _, H, W = images.shape
        sess = self.session(H, W)
        K = intrinsics.reshape(-1, 3, 3).expand(B, 3, 3)
        if self.device.type == "cuda":
            return self._infer_cuda(sess, images, K)
        feeds = {"images": np.ascontiguousarray(images.detach().float().cpu().numpy()),
                 "intrinsics": np.ascontiguousarray(K.detach().float().cpu().numpy())}
        depth, det = sess.run(["depth", "det"], feeds)
        return {"depth": torch.from_numpy(depth), "det": torch.from_numpy(det)}

    def _infer_cuda(self, sess: Any, images: torch.Tensor, K: torch.Tensor) -> dict[str, torch.Tensor]:
        dev = self.device
        idx = dev.index or 0
        x = images.detach().to(dev, torch.float32).contiguous()
        k = K.detach().to(dev, torch.float32).contiguous()
        binding = sess.io_binding()
        for name, t in (("images", x), ("intrinsics", k)):
            binding.bind_input(name, "cuda", idx, np.float32, list(t.shape), t.data_ptr())
        for name in ("depth", "det"):
            binding.bind_output(name, "cuda", idx)
        torch.cuda.current_stream(dev).synchronize()
        sess.run_with_iobinding(binding)
        depth, det = (torch.from_numpy(o) for o in binding.copy_outputs_to_cpu())
        return {"depth": depth.to(dev), "det": det.to(dev)}


# ---------------------------------------------------------------------------- TensorRT
def _gpu_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if torch.cuda.is_available() else "unknown-gpu"


def engine_cache_key(onnx_path: str | os.PathLike, precision: str, gpu: str, trt_version: str,
                     batch_range: tuple[int, int, int]) -> str:
    """Model (ONNX file) hash + GPU name + TensorRT version + build settings."""
    h = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()[:16]
    safe_gpu = "".join(c if c.isalnum() else "_" for c in gpu)
    return f"{h}-{safe_gpu}-trt{trt_version}-{precision}-b{'_'.join(map(str, batch_range))}"


def build_engine(onnx_path: str | os.PathLike, engine_path: str | os.PathLike | None = None, *,
                 precision: str = "fp16", batch_range: tuple[int, int, int] = (1, 6, 6), workspace_gb: float = 2.0,
                 device: str = "cuda", use_cache: bool = True) -> Path:
    """Build (or reuse from the cache) a serialized TensorRT 10 engine from an ONNX file.

    ``precision``: ``fp32``, ``fp16``, or ``int8`` for a Q/DQ ONNX file (explicit quantization:
    ``BuilderFlag.INT8`` without a calibrator; FP16 is enabled too for the unquantized layers).
    ``batch_range`` (min, opt, max) is the optimisation profile of a dynamic-batch file
    (ignored for a static one). The timing cache is shared by every build on this GPU and
    TensorRT version (tactic timings do not depend on the model, so later builds are faster).
    """
    import tensorrt as trt

    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    onnx_path = Path(onnx_path)
    dev = torch.device(device)
    gpu = _gpu_name(dev)
    key = engine_cache_key(onnx_path, precision, gpu, trt.__version__, batch_range)
    cached = cache_dir() / "tensorrt" / f"{key}.engine"
    target = Path(engine_path) if engine_path else cached
    if use_cache and cached.is_file():
        if target != cached:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(cached.read_bytes())
        log.info("TensorRT engine from cache: %s", cached)
        return target

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ nodes give the scales: no calibrator
    timing_path = cache_dir() / "tensorrt" / f"timing-{key.split('-', 1)[1].rsplit('-', 2)[0]}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    profile = builder.create_optimization_profile()
    dynamic = False
    for i in range(network.num_inputs):
        inp = network.get_input(i)
        shape = tuple(inp.shape)
        if shape and shape[0] == -1:
            dynamic = True
            rest = shape[1:]
            profile.set_shape(inp.name, (batch_range[0], *rest), (batch_range[1], *rest), (batch_range[2], *rest))
    if dynamic:
        config.add_optimization_profile(profile)
    log.info("building TensorRT %s engine for %s on %s (minutes on Jetson)", precision, onnx_path.name, gpu)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(bytes(serialized))
    timing_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    if target != cached:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(bytes(serialized))
    return target


class TensorRTBackend(Backend):
    """A TensorRT 10 engine run with ``execute_async_v3`` on the current torch CUDA stream;
    buffers are torch CUDA tensors (no copies to the host).

    ``model`` (exported and built on first use per input size) or ``path`` (``.onnx``: built;
    ``.engine``/``.plan``: deserialized as is).
    """

    name = "tensorrt"

    def __init__(self, model: Any = None, device: str = "cuda", *, path: str | os.PathLike | None = None,
                 precision: str = "fp16", max_batch: int = 6, workspace_gb: float = 2.0, **_: Any) -> None:
        try:
            import tensorrt as trt
        except ImportError as exc:
            raise RuntimeError("backend 'tensorrt' needs the TensorRT Python package (JetPack ships it; on a "
                               "desktop: pip install tensorrt); use --backend onnx otherwise") from exc
        if device == "cpu" or device == "auto":
            device = "cuda"
        if not torch.cuda.is_available():
            raise RuntimeError("backend 'tensorrt' needs a CUDA GPU")
        super().__init__(device)
        if model is None and path is None:
            raise ValueError("TensorRTBackend needs a model or path=FILE.onnx|FILE.engine")
        self.trt = trt
        self.model, self.path = model, Path(path) if path is not None else None
        self.cfg = getattr(model, "cfg", None)
        self.precision, self.max_batch, self.workspace_gb = precision, max_batch, workspace_gb
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        self._engines: dict[tuple[int, int], tuple[Any, Any]] = {}

    def _engine_file(self, height: int, width: int) -> Path:
        if self.path is not None and self.path.suffix in (".engine", ".plan", ".trt"):
            return self.path
        onnx_path = self.path if self.path is not None else _cached_onnx(self.model, height, width)
        return build_engine(onnx_path, precision=self.precision, batch_range=(1, self.max_batch, self.max_batch),
                            workspace_gb=self.workspace_gb, device=str(self.device))

    def _context(self, height: int, width: int) -> tuple[Any, Any]:
        key = (height, width) if self.path is None else (0, 0)
        if key not in self._engines:
            engine = self.runtime.deserialize_cuda_engine(self._engine_file(height, width).read_bytes())
            if engine is None:
                raise RuntimeError("TensorRT could not deserialize the engine (built by another TensorRT version "
                                   "or GPU?)")
            self._engines[key] = (engine, engine.create_execution_context())
        return self._engines[key]

    def infer(self, images: torch.Tensor, intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
        trt = self.trt
        B, _, H, W = images.shape
        engine, ctx = self._context(H, W)
        feeds = {"images": images.detach().to(self.device, torch.float32).contiguous(),
                 "intrinsics": intrinsics.reshape(-1, 3, 3).expand(B, 3, 3).to(self.device, torch.float32)
                 .contiguous()}
        outputs: dict[str, torch.Tensor] = {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                ctx.set_input_shape(name, tuple(feeds[name].shape))
                ctx.set_tensor_address(name, feeds[name].data_ptr())
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                dtype = torch.from_numpy(np.zeros(0, trt.nptype(engine.get_tensor_dtype(name)))).dtype
                t = torch.empty(tuple(ctx.get_tensor_shape(name)), dtype=dtype, device=self.device)
                ctx.set_tensor_address(name, t.data_ptr())
                outputs[name] = t
        stream = torch.cuda.current_stream(self.device)
        if not ctx.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        # no synchronisation here: later torch work on this stream is ordered after the engine
        return {"depth": outputs["depth"].float(), "det": outputs["det"].float()}


def _onnx_factory(model: Any, device: str = "cpu", **kwargs: Any) -> Backend:
    return OnnxRuntimeBackend(model, device, **kwargs)


def _tensorrt_factory(model: Any, device: str = "cuda", **kwargs: Any) -> Backend:
    return TensorRTBackend(model, device, **kwargs)


register_backend("onnx", _onnx_factory)
register_backend("onnxruntime", _onnx_factory)
register_backend("tensorrt", _tensorrt_factory)
