"""The model stage behind one interface, so that runtimes can be swapped.

A :class:`Backend` takes a batch ``images [B, 3, H, W]`` float RGB in [0, 1] and
``intrinsics [B, 3, 3]`` at the network resolution and returns the network's raw outputs
``{"depth": [B, 1, H, W], "det": [B, A, C]}`` (see :meth:`PerceptionNet.forward`). Decoding
(anchors, NMS) is the separate ``decode`` stage, shared by every backend, so an exported graph
(ONNX Runtime, TensorRT) only has to reproduce ``forward``.

Built in: ``torch`` (eager), ``torch-compile`` (``torch.compile``) and ``cuda-graph`` (CUDA
graph replay of a static-shape forward; CUDA only). Others register with
:func:`register_backend`: ``onnx``, ``onnxruntime`` and ``tensorrt`` live in
:mod:`perception.deploy.backends`, which registers them when ``perception.deploy`` is imported (the
command line does that; the pipeline never imports the deploy layer above it).
"""

from __future__ import annotations

import copy
import logging
from typing import Callable

import torch

from perception.nn import PerceptionNet, reparameterize_model

log = logging.getLogger(__name__)

__all__ = ["Backend", "TorchBackend", "CompiledTorchBackend", "CudaGraphBackend", "register_backend",
           "create_backend", "list_backends"]


class Backend:
    """Interface of the model stage. Subclasses set ``name`` and implement :meth:`infer`."""

    name = "backend"

    def __init__(self, device: str = "cpu") -> None:
        self.device = torch.device(device)

    def infer(self, images: torch.Tensor, intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __call__(self, images: torch.Tensor, intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.infer(images, intrinsics)

    def warmup(self, batch: int, height: int, width: int, iters: int = 1) -> None:
        """Run dummy forwards (compilation, allocator, oneDNN primitive caches)."""
        x = torch.full((batch, 3, height, width), 0.5, device=self.device)
        K = torch.tensor([[width, 0, width / 2], [0, width, height / 2], [0, 0, 1]], dtype=torch.float32,
                         device=self.device).expand(batch, 3, 3).contiguous()
        for _ in range(iters):
            self.infer(x, K)


class TorchBackend(Backend):
    """Eager PyTorch on the fused (reparameterized) network; channels_last by default (about 25%
    faster with oneDNN on CPU, and what cuDNN prefers); optional fp16/bf16 autocast.

    With autocast the convolution weights are stored in the low precision once, here: autocast
    would otherwise cast every weight on every forward (about 10 % of a six-camera rep-s forward
    on a 2-core CPU), and the cast it would make is the same rounding, so outputs are
    bit-identical."""

    name = "torch"

    def __init__(self, model: PerceptionNet, device: str = "cpu", *, channels_last: bool = True,
                 dtype: str = "fp32") -> None:
        super().__init__(device)
        model = reparameterize_model(model, inplace=True).eval().to(self.device)
        self.channels_last = channels_last
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(dtype)
        if self.autocast is not None:
            model = copy.deepcopy(model)  # the caller's model keeps its fp32 weights
            for module in model.modules():
                if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                    module.to(self.autocast)
        self.model = model
        self.cfg = model.cfg

    def _forward(self, images: torch.Tensor, intrinsics: torch.Tensor, network=None) -> dict[str, torch.Tensor]:
        if network is None:
            network = self.model
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.autocast is not None:
            with torch.autocast(self.device.type, dtype=self.autocast):
                out = network(images, intrinsics)
            return {k: v.float() for k, v in out.items()}
        return network(images, intrinsics)

    @torch.inference_mode()
    def infer(self, images: torch.Tensor, intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._forward(images, intrinsics)


class CompiledTorchBackend(TorchBackend):
    """``torch.compile`` of the fused network (first call compiles: slow start, faster steady state)."""

    name = "torch-compile"

    def __init__(self, model: PerceptionNet, device: str = "cpu", **kwargs) -> None:
        super().__init__(model, device, **kwargs)
        self._compiled = torch.compile(self.model, dynamic=False)

    @torch.inference_mode()
    def infer(self, images: torch.Tensor, intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._forward(images, intrinsics, self._compiled)


class CudaGraphBackend(TorchBackend):
    """Capture the forward once per input shape as a CUDA graph and replay it (removes kernel
    launch overhead, which dominates small models on Jetson-class GPUs). CUDA only."""

    name = "cuda-graph"

    def __init__(self, model: PerceptionNet, device: str = "cuda", **kwargs) -> None:
        if not torch.cuda.is_available() or not str(device).startswith("cuda"):
            raise RuntimeError("backend 'cuda-graph' needs a CUDA device")
        super().__init__(model, device, **kwargs)
        self._graphs: dict[tuple, tuple] = {}

    @torch.inference_mode()
    def infer(self, images: torch.Tensor, intrinsics: torch.Tensor) -> dict[str, torch.Tensor]:
        key = (tuple(images.shape), images.dtype)
        if key not in self._graphs:
            static_x, static_k = images.clone(), intrinsics.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    self._forward(static_x, static_k)
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = self._forward(static_x, static_k)
            self._graphs[key] = (graph, static_x, static_k, static_out)
        graph, static_x, static_k, static_out = self._graphs[key]
        static_x.copy_(images)
        static_k.copy_(intrinsics)
        graph.replay()
        return {k: v.clone() for k, v in static_out.items()}


_BACKENDS: dict[str, Callable[..., Backend]] = {
    "torch": TorchBackend,
    "torch-compile": CompiledTorchBackend,
    "cuda-graph": CudaGraphBackend,
}
# Registered by ``import perception.deploy`` (named in the error for an unregistered backend).
DEPLOY_BACKENDS = ("onnx", "onnxruntime", "tensorrt")


def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bf16 convolutions natively (AVX-512 BF16 or AMX): there bf16
    inference is about 1.9x faster than fp32 (fused rep-s, 384x640, measured on our 2-core EPYC)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` -> fp16 on CUDA, bf16 on CPUs with native bf16, else fp32; others are checked."""
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    if precision == "auto":
        if str(device).startswith("cuda"):
            return "fp16"
        return "bf16" if cpu_has_native_bf16() else "fp32"
    if precision == "fp16" and not str(device).startswith("cuda"):
        raise ValueError("fp16 inference needs a CUDA device; use bf16 or fp32 on the CPU")
    return precision


TORCH_BACKENDS = ("torch", "torch-compile", "cuda-graph")


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Add a backend: ``factory(model, device, **kwargs) -> Backend``."""
    _BACKENDS[name] = factory


def list_backends() -> list[str]:
    """The registered backends (``onnx``, ``onnxruntime``, ``tensorrt`` once ``perception.deploy`` is imported)."""
    return sorted(_BACKENDS)


def create_backend(name: str, model: PerceptionNet | None, device: str = "cpu", **kwargs) -> Backend:
    """The backend ``name`` for ``model`` on ``device`` (the model is fused first). ``model`` may
    be None for backends that run a file (``path=``), e.g. ``onnx``."""
    if name not in _BACKENDS:
        hint = ""
        if name in DEPLOY_BACKENDS:
            hint = f"; {name!r} is registered by `import perception.deploy`"
        elif not set(DEPLOY_BACKENDS) <= set(_BACKENDS):
            hint = f"; `import perception.deploy` registers {', '.join(DEPLOY_BACKENDS)}"
        raise ValueError(f"unknown backend {name!r}; registered: {', '.join(list_backends())}{hint}")
    return _BACKENDS[name](model, device, **kwargs)
