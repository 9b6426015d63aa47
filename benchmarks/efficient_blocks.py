"""Are FLOPs speed? Fused RepVGG (rep-n) backbone vs FLOP-matched efficient backbones on the CPU.

Backbones only (stem + 4 stages, deploy form: BN folded, branches fused), widths from
``perception.nn.zoo_efficient.EFFICIENT_WIDTHS`` (chosen to match rep-n's backbone FLOPs).
Per backbone: FLOPs, parameters, peak activation memory, median/p90 latency of one forward
(model only, warm-up excluded, timing rounds interleaved across backbones so machine noise
hits all alike), achieved GFLOP/s.

    python benchmarks/efficient_blocks.py --size 256x448 --batch 1 --iters 10 --rounds 3 --out runs/bench/efficient.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

import torch

from perception.geometry.resize import parse_size
from perception.nn.backbone import BackboneConfig, RepBackbone
from perception.nn.reparam import reparameterize_model
from perception.nn.zoo_efficient import EFFICIENT_WIDTHS
from perception.utils.profiling import (count_flops, environment, peak_activation_bytes, summarize,
                                        time_calls)

log = logging.getLogger("efficient_blocks")
DEPTHS = (1, 2, 4, 1)


def backbones() -> dict[str, torch.nn.Module]:
    cfgs = {"rep-n (RepVGG)": BackboneConfig(widths=(32, 32, 64, 128, 256), depths=DEPTHS, block="repvgg")}
    for name, (kind, widths) in EFFICIENT_WIDTHS.items():
        cfgs[f"{name} ({kind})"] = BackboneConfig(widths=widths, depths=DEPTHS, block=kind)
    return {n: reparameterize_model(RepBackbone(c)).eval() for n, c in cfgs.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256x448")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = parse_size(args.size)
    device = torch.device("cpu")
    x = torch.rand(args.batch, 3, h, w)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    nets = backbones()
    rows: dict[str, dict] = {}
    times: dict[str, list[float]] = {n: [] for n in nets}
    with torch.inference_mode():
        for n, m in nets.items():
            if args.channels_last:
                m.to(memory_format=torch.channels_last)
            rows[n] = {"flops": count_flops(lambda: m(x)) / args.batch,
                       "params": sum(p.numel() for p in m.parameters()),
                       "peak_activation_MiB": peak_activation_bytes(lambda: m(x), device) / 2**20}
            for _ in range(2):
                m(x)  # warm-up
        for _ in range(args.rounds):
            for n, m in nets.items():
                times[n] += time_calls(lambda: m(x), device, args.iters)
    ref = next(iter(nets))
    for n in nets:
        s = summarize(times[n])
        rows[n].update(s)
        rows[n]["flops_vs_rep"] = rows[n]["flops"] / rows[ref]["flops"]
        rows[n]["latency_vs_rep"] = s["median_ms"] / rows[ref]["median_ms"]
        rows[n]["gflops_per_s"] = rows[n]["flops"] * args.batch / (s["median_ms"] / 1e3) / 1e9
    env = {**environment(device), "load_avg": os.getloadavg(), "size": args.size, "batch": args.batch,
           "channels_last": args.channels_last, "what": "backbone only, fused, fp32, model only"}
    log.info("%s", json.dumps(env))
    log.info("%-28s %9s %8s %8s %10s %9s %9s %8s", "backbone", "GFLOPs", "xFLOPs", "Mparams", "act MiB",
             "median ms", "p90 ms", "xlat")
    for n, r in rows.items():
        log.info("%-28s %9.3f %8.2f %8.2f %10.1f %9.1f %9.1f %8.2f", n, r["flops"] / 1e9, r["flops_vs_rep"],
                 r["params"] / 1e6, r["peak_activation_MiB"], r["median_ms"], r["p90_ms"], r["latency_vs_rep"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"environment": env, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
