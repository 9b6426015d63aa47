"""CPU latency of compressed models side by side, in one process, interleaved.

    python benchmarks/compressed_latency.py rep-s runs/compress/rep-s-morphnet2/shrunk.safetensors \
        --size 256x448 --batches 1,6 --threads 2 --out runs/bench/compressed.json

Each MODEL is anything ``--model`` takes (:func:`perception.nn.resolve_model`: a registered name
with shipped weights, a checkpoint, a Deep Compression ``.pdc``, the binary or channel-pruned files
of ``perception compress``). Every model is fused (deploy form) and timed on the same random batch, forward only,
warm-up excluded, the models' timing rounds interleaved so machine load hits all alike; median and
p90 per call, frames/s = batch / median, FLOPs of the fused model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

import perception.compress  # noqa: F401  (registers the compressed model formats)
from perception.compress.common import count_params, model_flops
from perception.geometry.resize import parse_size
from perception.nn import reparameterize_model, resolve_model
from perception.utils.profiling import environment, summarize, time_calls


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--size", default="256x448")
    ap.add_argument("--batches", default="1,6")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    size = parse_size(args.size)
    cpu = torch.device("cpu")
    models = {}
    for spec in args.models:
        models[spec] = reparameterize_model(resolve_model(spec)).eval()
    result = {"command": " ".join(["python"] + sys.argv), "env": environment(cpu), "size": list(size),
              "models": {s: {"params": count_params(m), "flops_per_frame": model_flops(m, size)}
                         for s, m in models.items()}, "results": {}}
    for batch in (int(b) for b in args.batches.split(",")):
        x, K = torch.rand(batch, 3, *size), None
        calls = {s: (lambda m=m: m(x, K)) for s, m in models.items()}
        times: dict[str, list[float]] = {s: [] for s in models}
        with torch.inference_mode():
            for call in calls.values():
                time_calls(call, cpu, args.warmup)
            for _ in range(args.rounds):
                for s, call in calls.items():
                    times[s] += time_calls(call, cpu, max(1, args.iters // args.rounds))
        for s, ts in times.items():
            r = summarize(ts)
            result["results"][f"{s}/b{batch}"] = {**r, "batch": batch, "fps": batch / (r["median_ms"] / 1e3)}
            print(f"{s:60s} b{batch}  median {r['median_ms']:8.1f} ms  p90 {r['p90_ms']:8.1f} ms  "
                  f"{batch / (r['median_ms'] / 1e3):7.1f} frames/s  {result['models'][s]['flops_per_frame'] / 1e9:.2f} "
                  "GFLOP/frame")
    print(result["env"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
