"""Backend benchmark: torch eager vs torch.compile vs ONNX Runtime fp32 vs ONNX Runtime INT8
(``perception bench model --backends ...``, ``benchmarks/backends.py speed``).

What is timed: model forward only (input batch already in memory as float RGB [0,1] NCHW + K;
no decode/NMS), the fused model in every backend; warm-up excluded; timing rounds of the
backends interleaved so that load from other processes hits all alike; median and p90 of
per-call wall time; frames/s = batch / median; peak memory = peak RSS of a fresh process that
builds the backend and runs 3 calls, minus that process's RSS after imports; GFLOP/frame from
torch's FLOP counter of the fused model (a multiply-add = 2) and achieved GFLOP/s against the
fp32 matmul peak (torch) and the u8s8 int8 GEMM peak (ONNX Runtime MatMulInteger) measured
in the same run. Weights: the shipped ones where ``models/<name>/`` has them, else untrained
weights with BN statistics calibrated on the input (speed of dense convs does not depend on the
values; the result's ``weights`` says which).

The ONNX files (fp32 with a dynamic batch and raw outputs; INT8 as Q/DQ with uint8 activations
and per-channel int8 weights) are exported only when an ONNX backend is asked for, and the int8
GEMM peak is measured only when ``onnx-int8`` is (else it is ``None``).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from perception.utils.profiling import count_flops, environment, matmul_peak_gflops, summarize

log = logging.getLogger(__name__)

BACKENDS = ("torch", "compile", "onnx", "onnx-int8")
TIMED = ("model forward only (fused form): input batch in memory, float RGB [0,1] NCHW + K, "
         "normalisation in the model, no decode/NMS; warm-up excluded; backends interleaved")


def check_backends(backends: list[str]) -> None:
    """Raise ValueError naming the unknown entries of ``backends``."""
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise ValueError(f"unknown backends {bad}; known: {BACKENDS}")


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def _feeds(batch: int, size: tuple[int, int], seed: int = 0) -> dict[str, np.ndarray]:
    h, w = size
    rng = np.random.default_rng(seed)
    K = np.array([[0.8 * w, 0, w / 2], [0, 0.8 * w, h / 2], [0, 0, 1]], np.float32)
    return {"images": rng.random((batch, 3, h, w), dtype=np.float32),
            "intrinsics": np.repeat(K[None], batch, axis=0)}


def _model(name: str, size: tuple[int, int]) -> torch.nn.Module:
    from perception.deploy.quantize import calibrate_bn_statistics
    from perception.nn import create_model

    if _weights(name) == "shipped":
        return create_model(name, pretrained=True)
    torch.manual_seed(0)
    return calibrate_bn_statistics(create_model(name), [_feeds(2, size, seed=1)])


def _weights(name: str) -> str:
    from perception.nn.resolve import shipped_checkpoint

    try:
        shipped_checkpoint(name)
        return "shipped"
    except FileNotFoundError:
        return "untrained (BN calibrated)"


def _files(name: str, workdir: Path) -> dict[str, Path]:
    return {"fp32": workdir / f"{name}.onnx", "int8": workdir / f"{name}-int8.onnx"}


def prepare_files(name: str, size: tuple[int, int], workdir: Path, int8: bool = True) -> dict[str, Path]:
    """fp32 (dynamic batch, raw outputs) and, with ``int8``, INT8 (QDQ, uint8 activations) ONNX files."""
    from perception.deploy.export import export_onnx
    from perception.deploy.quantize import quantize_onnx

    model = _model(name, size)
    files = _files(name, workdir)
    export_onnx(model, files["fp32"], size=size, dynamic_batch=True, decode=False, verify=False)
    if int8:
        quantize_onnx(files["fp32"], files["int8"], [_feeds(6, size, seed=2)])
    return files


def make_call(backend: str, name: str, files: dict[str, Path], feeds: dict[str, np.ndarray], threads: int
              ) -> Callable[[], Any]:
    """A no-argument callable running one forward of the fused ``name`` in ``backend`` on ``feeds``."""
    from perception.deploy.backends import ort_session
    from perception.nn import reparameterize_model

    if backend in ("onnx", "onnx-int8"):
        sess = ort_session(files["fp32" if backend == "onnx" else "int8"], threads=threads)
        return lambda: sess.run(["depth", "det"], feeds)
    model = reparameterize_model(_model(name, tuple(feeds["images"].shape[2:]))).eval()
    model = model.to(memory_format=torch.channels_last)
    x = torch.from_numpy(feeds["images"]).contiguous(memory_format=torch.channels_last)
    K = torch.from_numpy(feeds["intrinsics"])
    fn = torch.compile(model, dynamic=False) if backend == "compile" else model

    def call() -> Any:
        with torch.inference_mode():
            return fn(x, K)
    return call


def int8_gemm_peak_gops(threads: int, n: int = 2048, seconds: float = 2.0) -> float:
    """u8 x s8 -> s32 GEMM throughput of ONNX Runtime (MatMulInteger, VNNI path), GOP/s."""
    import onnx
    from onnx import TensorProto, helper

    from perception.deploy.backends import ort_session

    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "mmi",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]),
         helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mmi.onnx"
        onnx.save(model, str(path))
        sess = ort_session(path, threads=threads)
        rng = np.random.default_rng(0)
        feeds = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8), "b": rng.integers(-127, 127, (n, n), dtype=np.int8)}
        sess.run(None, feeds)
        best, t_end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            sess.run(None, feeds)
            best = max(best, 2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
    return best


def memory_probe(backend: str, name: str, size: tuple[int, int], batch: int, workdir: Path, threads: int) -> int:
    """Run in a fresh process: peak RSS growth (bytes) of building ``backend`` + 3 calls (-1 on failure)."""
    code = ("import sys; sys.argv = ['x']\n"
            "from pathlib import Path\n"
            "import torch\n"
            "import perception.deploy.backend_bench as b\n"
            f"torch.set_num_threads({threads})\n"
            "def kb(key):\n"
            "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))\n"
            "open('/proc/self/clear_refs', 'w').write('5')  # reset the peak RSS (VmHWM) after imports\n"
            "base = kb('VmRSS:')\n"
            f"files = b._files({name!r}, Path({str(workdir)!r}))\n"
            f"call = b.make_call({backend!r}, {name!r}, files, b._feeds({batch}, {tuple(size)!r}), {threads})\n"
            "[call() for _ in range(3)]\n"
            "print('RSS', (kb('VmHWM:') - base) * 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith("RSS"):
            return int(line.split()[1])
    log.warning("memory probe of %s b%d failed: %s", backend, batch, out.stderr.strip()[-300:])
    return -1


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for mod in ("onnxruntime", "onnx"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    return versions


def bench_backends(model: str, size: tuple[int, int], batches: list[int], backends: list[str], iters: int = 20,
                   warmup: int = 3, rounds: int = 0, threads: int = 0, memory: bool = True,
                   workdir: Path | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Time the fused ``model`` in each of ``backends`` (see the module docstring) at each batch size.

    ``rounds``: interleaving rounds (0: ``iters``, one call per backend per round); ``threads``:
    intra-op threads of torch and ONNX Runtime (0: all cores); ``workdir``: where the ONNX files
    are written (kept; default a temporary folder removed afterwards). Results are keyed
    ``"<backend>/b<batch>"``; a backend that fails to build or warm up gets ``{"error": ...}``.
    """
    check_backends(backends)
    if not backends or not batches or min(batches) < 1 or iters < 1 or warmup < 0 or rounds < 0:
        raise ValueError("need >= 1 backend and batch, batches and --iters >= 1, --warmup and --rounds >= 0")

    def say(msg: str) -> None:
        log.info(msg)
        if progress:
            progress(msg)

    size = (int(size[0]), int(size[1]))
    threads = threads or (os.cpu_count() or 1)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    tmp = None if workdir is not None else tempfile.mkdtemp(prefix="bench-backends-")
    workdir = Path(workdir if workdir is not None else tmp)  # type: ignore[arg-type]
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        load_start = _load()
        files = _files(model, workdir)
        if any(b.startswith("onnx") for b in backends):
            say("exporting ONNX" + (" and quantizing to INT8" if "onnx-int8" in backends else ""))
            files = prepare_files(model, size, workdir, int8="onnx-int8" in backends)
            log.info("files in %s", workdir)
        from perception.nn import reparameterize_model

        fused = reparameterize_model(_model(model, size))
        flops_per_frame = count_flops(lambda: fused(torch.rand(1, 3, *size), None)) / 1.0
        say("measuring the matmul peak")
        peak_fp32 = matmul_peak_gflops(torch.device("cpu"), torch.float32)
        peak_int8 = int8_gemm_peak_gops(threads) if "onnx-int8" in backends else None
        results: dict[str, Any] = {}
        for batch in batches:
            feeds = _feeds(batch, size)
            calls: dict[str, Callable[[], Any]] = {}
            for b in backends:
                say(f"{b} b{batch}: building and warming up")
                t0 = time.perf_counter()
                try:
                    calls[b] = make_call(b, model, files, feeds, threads)
                    for _ in range(warmup):
                        calls[b]()
                except Exception as exc:  # noqa: BLE001 - report and go on with the others
                    log.warning("%s b%d failed: %r", b, batch, exc)
                    results[f"{b}/b{batch}"] = {"error": repr(exc)[:300]}
                    calls.pop(b, None)
                    continue
                log.info("  %s b%d: ready (+warm-up) in %.1fs", b, batch, time.perf_counter() - t0)
            times: dict[str, list[float]] = {b: [] for b in calls}
            n_rounds = rounds or iters
            per_round = max(1, iters // n_rounds)
            for i in range(n_rounds):
                say(f"batch {batch}: timing round {i + 1}/{n_rounds}")
                for b, call in calls.items():
                    for _ in range(per_round):
                        t0 = time.perf_counter()
                        call()
                        times[b].append(time.perf_counter() - t0)
            for b, ts in times.items():
                s = summarize(ts)
                sec = s["median_ms"] / 1e3
                r = {**s, "batch": batch, "fps": batch / sec, "p90_fps": batch / (s["p90_ms"] / 1e3),
                     "gflops_per_frame": flops_per_frame / 1e9, "achieved_gflops": flops_per_frame * batch / sec / 1e9,
                     "precision": "int8 (u8 act, s8 per-channel weights)" if b == "onnx-int8" else "fp32"}
                peak = peak_int8 if b == "onnx-int8" else peak_fp32
                r["fraction_of_peak"] = r["achieved_gflops"] / peak if peak else float("nan")
                if memory:
                    say(f"{b} b{batch}: peak memory (fresh process)")
                    r["peak_rss_bytes"] = memory_probe(b, model, size, batch, workdir, threads)
                results[f"{b}/b{batch}"] = r
        return {"model": model, "weights": _weights(model), "size": list(size), "threads": threads, "iters": iters,
                "warmup": warmup, "rounds": rounds or iters, "timed": TIMED,
                "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
                "env": {**environment(torch.device("cpu")), **_versions(),
                        "load_avg_start": load_start, "load_avg_end": _load()},
                "matmul_peak_gflops_fp32": peak_fp32, "int8_gemm_peak_gops": peak_int8, "results": results}
    finally:
        torch.set_num_threads(threads_before)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
