"""Backend benchmark: torch eager vs torch.compile vs ONNX Runtime fp32 vs ONNX Runtime INT8,
and the INT8-vs-fp32 output-fidelity study of RepVGG vs QARepVGG.

    python benchmarks/backends.py speed --model qarep-s --batches 1,6 --size 256x448
    python benchmarks/backends.py fidelity --models rep-s,qarep-s --size 256x448

speed: the fused model in every backend, timed as documented in
perception/deploy/backend_bench.py, where the code lives (also run by
`perception bench model --backends torch,compile,onnx,onnx-int8 --batches 1,6`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from perception.deploy.backend_bench import BACKENDS, _load, bench_backends, check_backends  # noqa: E402
from perception.geometry.resize import parse_size  # noqa: E402
from perception.utils.profiling import environment  # noqa: E402


def bench_speed(args: argparse.Namespace) -> dict[str, Any]:
    """The ``speed`` subcommand: :func:`perception.deploy.backend_bench.bench_backends`."""
    backends = [b for b in args.backends.split(",") if b]
    try:
        check_backends(backends)
        size = parse_size(args.size)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench-backends-"))  # kept, as before
    print(f"files in {workdir}", file=sys.stderr)
    return bench_backends(args.model, size, [int(b) for b in args.batches.split(",")], backends,
                          iters=args.iters, warmup=args.warmup, rounds=args.rounds, threads=args.threads,
                          memory=args.memory, workdir=workdir, progress=lambda msg: print(f"  {msg}", file=sys.stderr))


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
        int8_peak = result["int8_gemm_peak_gops"]
        print(f"peaks: fp32 matmul {result['matmul_peak_gflops_fp32']:.0f} GFLOP/s, int8 GEMM "
              + (f"{int8_peak:.0f} GOP/s" if int8_peak is not None else "not measured (no onnx-int8)"))
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
