"""Measurement helpers shared by the benchmarks: FLOPs, activation memory, matmul peak, timing.

Honest-figure rules (DESIGN.md section 7): warm-up excluded, medians and p90 reported,
CUDA synchronised before reading the clock, and the machine's own matmul peak measured in
the same run so achieved GFLOP/s can be read as a fraction of what the hardware does.
"""

from __future__ import annotations

import platform
import statistics
import time
import weakref
from datetime import datetime, timezone
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of one call (torch.utils.flop_counter: a multiply-add counts as 2)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class ActivationMemoryTracker(TorchDispatchMode):
    """Peak bytes of tensors created by ops while active (CPU and CUDA alike).

    Counts each storage once (views and in-place results share it) and releases it when
    the storage is freed. Tensors that existed before (weights, the input) are not counted;
    library-internal workspaces (e.g. oneDNN scratchpads) are invisible to it.
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key, nbytes = storage.data_ptr(), storage.nbytes()
                if nbytes == 0 or key in self._live:
                    continue
                self._live[key] = nbytes
                self.current += nbytes
                self.peak = max(self.peak, self.current)
                weakref.finalize(storage, self._release, key)
        return out

    def _release(self, key: int) -> None:
        self.current -= self._live.pop(key, 0)


def peak_activation_bytes(fn: Callable[[], Any], device: torch.device) -> int:
    """Peak activation memory of one call: CUDA allocator peak on GPU, op-level tracking on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    with ActivationMemoryTracker() as tracker:
        fn()
    return tracker.peak


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], Any], device: torch.device, iters: int) -> list[float]:
    """Wall-clock seconds of ``iters`` calls, synchronising the device around each."""
    times = []
    for _ in range(iters):
        synchronize(device)
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return times


def summarize(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return {"median_ms": 1e3 * statistics.median(ordered), "p90_ms": 1e3 * p90, "min_ms": 1e3 * ordered[0],
            "iters": len(ordered)}


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype = torch.float32, seconds: float = 3.0) -> float:
    """The machine's achievable GEMM throughput, measured now: best of square sizes 1024-4096."""
    best = 0.0
    sizes = (1024, 2048, 3072, 4096) if device.type == "cpu" else (4096, 8192)
    budget = seconds / len(sizes)
    with torch.inference_mode():
        for n in sizes:
            a = torch.randn(n, n, device=device, dtype=dtype)
            b = torch.randn(n, n, device=device, dtype=dtype)
            a @ b  # warm-up
            t_end = time.perf_counter() + budget
            while True:
                dt = min(time_calls(lambda: a @ b, device, 1))
                best = max(best, 2 * n ** 3 / dt / 1e9)
                if time.perf_counter() > t_end:
                    break
    return best


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict[str, Any]:
    """What the figures were measured on (printed and saved with every result)."""
    env = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "torch": torch.__version__,
           "python": platform.python_version(), "cpu": cpu_name(), "threads": torch.get_num_threads(),
           "device": str(device)}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    return env
