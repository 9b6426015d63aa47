"""The results table of docs/compression.md from the ``report.json`` files of a set of runs.

    python -m perception.compress.summary runs/compress [--iters 20 --rounds 3]

Reloads every compressed artifact, re-measures CPU latency of all of them *in one process,
interleaved* (one image, fused/deploy form, model only) so machine load hits all rows alike,
and prints one markdown row per method (accuracy figures are copied from the reports).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from perception.compress.common import count_nonzero, count_params, model_flops
from perception.utils.profiling import environment, summarize, time_calls

log = logging.getLogger(__name__)


def _artifacts(root: Path) -> list[tuple[str, str, Callable[[], torch.nn.Module], dict[str, Any], Path]]:
    from perception.compress import binarize, deep_compression, morphnet
    from perception.nn import load_checkpoint, reparameterize_model

    rows = []

    def rep(name: str) -> dict[str, Any]:
        return json.loads((root / name / "report.json").read_text())

    if (root / "deep-compression" / "report.json").is_file():
        r = rep("deep-compression")
        rows.append(("dense baseline (fused)", "dense_fused",
                     lambda: load_checkpoint(root / "deep-compression" / "dense-fused.safetensors"), r["dense_fused"],
                     root / "deep-compression" / "dense-fused.safetensors"))
    if (root / "lottery" / "report.json").is_file():
        r = rep("lottery")
        best = next(x for x in r["rounds"] if abs(x["density"] - r["matching_density"]) < 1e-9)
        rows.append((f"lottery ticket @ {r['matching_density']:.1%} density", "lottery",
                     lambda: reparameterize_model(load_checkpoint(root / "lottery" / "ticket.safetensors")),
                     best["ticket"], root / "lottery" / "ticket.safetensors"))
    if (root / "morphnet" / "report.json").is_file():
        r = rep("morphnet")
        rows.append(("morphnet shrink", "morphnet",
                     lambda: reparameterize_model(morphnet.load_pruned(root / "morphnet" / "shrunk.safetensors")),
                     r["shrunk"], root / "morphnet" / "shrunk.safetensors"))
        rows.append(("morphnet expand", "morphnet",
                     lambda: reparameterize_model(morphnet.load_pruned(root / "morphnet" / "model.safetensors")),
                     r["expanded"], root / "morphnet" / "model.safetensors"))
    if (root / "deep-compression" / "report.json").is_file():
        r = rep("deep-compression")
        rows.append((f"deep compression {r['config']['sparsity']:.0%} sparse, {r['config']['bits']} bit",
                     "deep-compression", lambda: deep_compression.load_compressed(root / "deep-compression" /
                                                                                  "model.pdc"),
                     r["decoded"], root / "deep-compression" / "model.pdc"))
    for mode in ("bwn", "xnor"):
        if (root / f"binary-{mode}" / "report.json").is_file():
            r = rep(f"binary-{mode}")
            rows.append((f"binary {mode.upper()}", "binary",
                         lambda m=mode: binarize.load_binary(root / f"binary-{m}" / "model.safetensors"),
                         r["binarized"], root / f"binary-{mode}" / "model.safetensors"))
    if (root / "distill" / "report.json").is_file():
        r = rep("distill")
        rows.append(("distilled student (teacher rep-n)", "distill",
                     lambda: reparameterize_model(load_checkpoint(root / "distill" / "student.safetensors")),
                     r["student_distilled"], root / "distill" / "student.safetensors"))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description="results table of the compression runs")
    ap.add_argument("root", type=Path)
    ap.add_argument("--size", default="64x96")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    h, w = (int(v) for v in args.size.split("x"))
    rows = _artifacts(args.root)
    models = [(label, kind, build().eval(), metrics, path) for label, kind, build, metrics, path in rows]
    x = torch.rand(1, 3, h, w)
    times: list[list[float]] = [[] for _ in models]
    with torch.inference_mode():
        for _, _, m, _, _ in models:
            m(x)
        for _ in range(args.rounds):
            for i, (_, _, m, _, _) in enumerate(models):
                times[i] += time_calls(lambda: m(x), torch.device("cpu"), args.iters)
    env = {**environment(torch.device("cpu")), "load_avg": os.getloadavg()}
    lines = [f"<!-- {json.dumps(env)} -->",
             "| method (proxy task) | params | nonzero | file bytes | FLOPs (fp) | CPU ms (median) | proxy map50 | "
             "proxy abs_rel |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (label, kind, m, metrics, path), t in zip(models, times):
        lines.append(f"| {label} | {count_params(m):,} | {count_nonzero(m):,} | {path.stat().st_size:,} | "
                     f"{model_flops(m, (h, w)) / 1e6:.2f} M | {summarize(t)['median_ms']:.2f} | "
                     f"{metrics['proxy_map50']:.3f} | {metrics['proxy_abs_rel']:.3f} |")
    sys.stdout.write("\n".join(lines) + "\n")  # the table is this tool's output (markdown on stdout)

if __name__ == "__main__":
    main()
