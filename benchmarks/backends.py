"""Backend benchmark: torch eager vs torch.compile vs ONNX Runtime fp32 vs ONNX Runtime INT8,
and the INT8-vs-fp32 output-fidelity study of RepVGG vs QARepVGG.

    python benchmarks/backends.py speed --model qarep-s --batches 1,6 --size 256x448
    python benchmarks/backends.py fidelity --models rep-s,qarep-s --size 256x448

speed: model forward only (input batch already in memory as float RGB [0,1] NCHW + K; no
decode/NMS), the fused model in every backend; warm-up excluded; timing rounds of the
backends interleaved so that load from other processes hits all alike; median and p90 of
per-call wall time; frames/s = batch / median; peak memory = peak RSS of a fresh process that
builds the backend and runs 3 calls, minus that process's RSS after imports; GFLOP/frame from
torch's FLOP counter of the fused model (a multiply-add = 2) and achieved GFLOP/s against the
fp32 matmul peak (torch) and the u8s8 int8 GEMM peak (ONNX Runtime MatMulInteger) measured
in the same run. Untrained weights (BN statistics calibrated on the input): speed does not
depend on the values.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception.deploy.bench import parse_size  # noqa: E402
from perception.deploy.profiling import count_flops, environment, matmul_peak_gflops, summarize  # noqa: E402

BACKENDS = ("torch", "compile", "onnx", "onnx-int8")


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

    torch.manual_seed(0)
    return calibrate_bn_statistics(create_model(name), [_feeds(2, size, seed=1)])


def prepare_files(name: str, size: tuple[int, int], workdir: Path) -> dict[str, Path]:
    """fp32 (dynamic batch, raw outputs) and INT8 (QDQ, uint8 activations) ONNX files."""
    from perception.deploy.export import export_onnx
    from perception.deploy.quantize import quantize_onnx

    model = _model(name, size)
    fp32, int8 = workdir / f"{name}.onnx", workdir / f"{name}-int8.onnx"
    export_onnx(model, fp32, size=size, dynamic_batch=True, decode=False, verify=False)
    quantize_onnx(fp32, int8, [_feeds(6, size, seed=2)])
    return {"fp32": fp32, "int8": int8}


def make_call(backend: str, name: str, files: dict[str, Path], feeds: dict[str, np.ndarray], threads: int
              ) -> Callable[[], Any]:
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
    """Run in a fresh process: peak RSS growth (bytes) of building ``backend`` + 3 calls."""
    code = (f"import sys, resource; sys.path.insert(0, {str(ROOT)!r}); sys.argv=['x'];\n"
            "import benchmarks.backends as b, torch\n"
            f"torch.set_num_threads({threads})\n"
            "def kb(key):\n"
            "    return next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith(key))\n"
            "open('/proc/self/clear_refs', 'w').write('5')  # reset the peak RSS (VmHWM) after imports\n"
            "base = kb('VmRSS:')\n"
            f"files = {{'fp32': b.Path({str(workdir / (name + '.onnx'))!r}), "
            f"'int8': b.Path({str(workdir / (name + '-int8.onnx'))!r})}}\n"
            f"call = b.make_call({backend!r}, {name!r}, files, b._feeds({batch}, {tuple(size)!r}), {threads})\n"
            "[call() for _ in range(3)]\n"
            "print('RSS', (kb('VmHWM:') - base) * 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    for line in out.stdout.splitlines():
        if line.startswith("RSS"):
            return int(line.split()[1])
    return -1


def bench_speed(args: argparse.Namespace) -> dict[str, Any]:
    import onnx
    import onnxruntime

    size = parse_size(args.size)
    threads = args.threads or (os.cpu_count() or 1)
    torch.set_num_threads(threads)
    backends = [b for b in args.backends.split(",") if b]
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise SystemExit(f"unknown backends {bad}; known: {BACKENDS}")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-backends-"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_start = _load()
    files = prepare_files(args.model, size, workdir)
    print(f"files in {workdir}", file=sys.stderr)
    from perception.nn import reparameterize_model

    fused = reparameterize_model(_model(args.model, size))
    flops_per_frame = count_flops(lambda: fused(torch.rand(1, 3, *size), None)) / 1.0
    peak_fp32 = matmul_peak_gflops(torch.device("cpu"), torch.float32)
    peak_int8 = int8_gemm_peak_gops(threads)
    results: dict[str, Any] = {}
    for batch in [int(b) for b in args.batches.split(",")]:
        feeds = _feeds(batch, size)
        calls: dict[str, Callable[[], Any]] = {}
        for b in backends:
            t0 = time.perf_counter()
            try:
                calls[b] = make_call(b, args.model, files, feeds, threads)
                for _ in range(args.warmup):
                    calls[b]()
            except Exception as exc:  # noqa: BLE001 - report and go on with the others
                results[f"{b}/b{batch}"] = {"error": repr(exc)[:300]}
                calls.pop(b, None)
                continue
            print(f"  {b} b{batch}: ready (+warm-up) in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        times: dict[str, list[float]] = {b: [] for b in calls}
        rounds = args.rounds or args.iters
        per_round = max(1, args.iters // rounds)
        for _ in range(rounds):
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
            r["fraction_of_peak"] = r["achieved_gflops"] / peak
            if args.memory:
                r["peak_rss_bytes"] = memory_probe(b, args.model, size, batch, workdir, threads)
            results[f"{b}/b{batch}"] = r
    return {"model": args.model, "size": list(size), "threads": threads, "iters": args.iters,
            "warmup": args.warmup, "rounds": args.rounds or args.iters,
            "timed": "model forward only (fused form): input batch in memory, float RGB [0,1] NCHW + K, "
                     "normalisation in the model, no decode/NMS; warm-up excluded; backends interleaved",
            "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
            "env": {**environment(torch.device("cpu")), "onnxruntime": onnxruntime.__version__,
                    "onnx": onnx.__version__, "load_avg_start": load_start, "load_avg_end": _load()},
            "matmul_peak_gflops_fp32": peak_fp32, "int8_gemm_peak_gops": peak_int8, "results": results}


def bench_fidelity(args: argparse.Namespace) -> dict[str, Any]:
    """INT8 vs fp32 outputs of untrained stand-ins (BN statistics calibrated on synthetic
    frames, prediction heads scaled to trained-like output spread)."""
    from perception.deploy.export import export_onnx
    from perception.deploy.quantize import (
        calibrate_bn_statistics,
        calibration_batches,
        fidelity,
        quantize_onnx,
        scale_prediction_heads,
    )
    from perception.nn import create_model

    size = parse_size(args.size)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="int8-fidelity-"))
    workdir.mkdir(parents=True, exist_ok=True)
    models = [m for m in args.models.split(",") if m]
    feeds = calibration_batches(size, synth_frames=args.synth_frames, real=True, batch=6, seed=args.seed) \
        if models else []
    n = len(feeds)
    bn_feeds, q_feeds, ev_feeds = feeds[: n // 3], feeds[n // 3: 2 * n // 3], feeds[2 * n // 3:]
    out: dict[str, Any] = {"size": list(size), "splits_images": [sum(len(f["images"]) for f in s) for s in
                                                                (bn_feeds, q_feeds, ev_feeds)], "results": {}}
    for name in models:
        torch.manual_seed(args.seed)
        model = scale_prediction_heads(calibrate_bn_statistics(create_model(name), bn_feeds), bn_feeds)
        fp32 = workdir / f"{name}.onnx"
        export_onnx(model, fp32, size=size, dynamic_batch=True, decode=False, verify=False)
        for act in ("uint8", "int8"):
            for method in ("minmax", "percentile"):
                int8 = workdir / f"{name}-{act}-{method}.onnx"
                quantize_onnx(fp32, int8, q_feeds, activation=act, method=method)
                out["results"][f"{name}/{act}/{method}"] = fidelity(fp32, int8, ev_feeds)
                print(name, act, method, json.dumps(out["results"][f"{name}/{act}/{method}"]), file=sys.stderr)
    if args.control:
        out["results"]["control/yolox_nano"] = yolox_control(Path(args.control), workdir)
        print("control", json.dumps(out["results"]["control/yolox_nano"]), file=sys.stderr)
    out["env"] = {**environment(torch.device("cpu")), "load_avg_end": _load()}
    out["command"] = " ".join([os.path.basename(sys.executable)] + sys.argv)
    return out


def yolox_control(path: Path, workdir: Path) -> dict[str, float]:
    """The same quantization recipe on a *trained* network (YOLOX-Nano COCO, the shared ONNX
    file): shows what INT8 does to trained weights, which our untrained stand-ins cannot."""
    import cv2
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from perception.deploy.backends import ort_session
    from perception.deploy.quantize import FeedReader, _cosine, _snr_db, shared_data_dir

    root = shared_data_dir()
    files = sorted((root / "nuscenes_keyframe").glob("*CAM_*.jpg")) + sorted((root / "dashcam" / "test_images")
                                                                            .glob("*.jpg"))
    feeds = []
    for f in files:
        img = cv2.imread(str(f))
        r = min(416 / img.shape[0], 416 / img.shape[1])
        small = cv2.resize(img, (int(img.shape[1] * r), int(img.shape[0] * r)), interpolation=cv2.INTER_LINEAR)
        pad = np.full((416, 416, 3), 114, np.uint8)
        pad[: small.shape[0], : small.shape[1]] = small
        feeds.append({"images": np.ascontiguousarray(pad.transpose(2, 0, 1)[None], dtype=np.float32)})
    calib, held = feeds[::2], feeds[1::2]
    import onnx
    from onnx import version_converter

    pre, q, v13 = workdir / "yolox-pre.onnx", workdir / "yolox-int8.onnx", workdir / "yolox-op13.onnx"
    onnx.save(version_converter.convert_version(onnx.load(str(path)), 13), str(v13))  # per-channel DQ needs 13
    quant_pre_process(str(v13), str(pre), skip_symbolic_shape=True)
    quantize_static(str(pre), str(q), FeedReader(calib), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax, extra_options={"WeightSymmetric": True})
    s32, s8 = ort_session(path), ort_session(q)
    acc: dict[str, list[float]] = {}
    for feed in held:
        a, b = s32.run(None, feed)[0], s8.run(None, feed)[0]
        obj32, obj8 = a[..., 4] * a[..., 5:].max(-1), b[..., 4] * b[..., 5:].max(-1)
        top32, top8 = set(np.argsort(obj32.ravel())[-20:].tolist()), set(np.argsort(obj8.ravel())[-20:].tolist())
        vals = {"box_reg_cosine": _cosine(a[..., :4] - a[..., :4].mean(1, keepdims=True),
                                          b[..., :4] - a[..., :4].mean(1, keepdims=True)),
                "det_snr_db": _snr_db(a, b), "score_mae": float(np.abs(a[..., 4:] - b[..., 4:]).mean()),
                "top20_agreement": len(top32 & top8) / 20}
        for k, v in vals.items():
            acc.setdefault(k, []).append(v)
    return {k: float(np.mean(v)) for k, v in acc.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--model", default="qarep-s")
    s.add_argument("--size", default="256x448")
    s.add_argument("--batches", default="1,6")
    s.add_argument("--backends", default=",".join(BACKENDS))
    s.add_argument("--iters", type=int, default=20)
    s.add_argument("--warmup", type=int, default=3)
    s.add_argument("--rounds", type=int, default=0, help="interleaving rounds (default: --iters, one call each)")
    s.add_argument("--threads", type=int, default=0)
    s.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    s.add_argument("--workdir", default="")
    s.add_argument("--out", default="runs/bench/backends.json")
    f = sub.add_parser("fidelity")
    f.add_argument("--models", default="rep-s,qarep-s")
    f.add_argument("--size", default="256x448")
    f.add_argument("--synth-frames", type=int, default=4)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--workdir", default="")
    f.add_argument("--control", default="", help="a trained ONNX model to quantize the same way (yolox_nano.onnx)")
    f.add_argument("--out", default="runs/bench/int8-fidelity.json")
    args = p.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    result = bench_speed(args) if args.cmd == "speed" else bench_fidelity(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    if args.cmd == "speed":
        print(f"{result['model']} {result['size'][0]}x{result['size'][1]}, {result['threads']} threads, "
              f"{result['env']['cpu']}, torch {result['env']['torch']}, onnxruntime {result['env']['onnxruntime']}, "
              f"load {result['env']['load_avg_start']} -> {result['env']['load_avg_end']}")
        print(f"peaks: fp32 matmul {result['matmul_peak_gflops_fp32']:.0f} GFLOP/s, int8 GEMM "
              f"{result['int8_gemm_peak_gops']:.0f} GOP/s")
        print(f"{'backend':<16}{'median ms':>10}{'p90 ms':>9}{'frames/s':>10}{'GFLOP/s':>9}{'% peak':>8}{'RSS MB':>8}")
        for k, r in result["results"].items():
            if "error" in r:
                print(f"{k:<16} error: {r['error']}")
                continue
            print(f"{k:<16}{r['median_ms']:>10.1f}{r['p90_ms']:>9.1f}{r['fps']:>10.2f}{r['achieved_gflops']:>9.1f}"
                  f"{100 * r['fraction_of_peak']:>7.1f}%{r.get('peak_rss_bytes', -1) / 2**20:>8.0f}")
        print(f"timed: {result['timed']}")
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
