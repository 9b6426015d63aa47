"""Soak test: push many synthetic multi-camera frames through the full pipeline and watch the
resident memory (RSS). Target: < 50 MB growth after warm-up over 5,000 frames.

    python benchmarks/soak.py                       # 5,000 six-camera frames (long on a laptop CPU)
    python benchmarks/soak.py --frames 600 --size 128x224

Frames come from in-memory sources (no decoding), everything else is the real pipeline:
sync, preprocess, rep-n forward, decode, lifting, BEV, tracking, rendering, video + JSONL sinks.
Prints a JSON report; exit status 1 when the growth exceeds --limit-mb.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=5000)
    ap.add_argument("--cameras", type=int, default=6)
    ap.add_argument("--size", default="128x224", help="camera and network size HxW")
    ap.add_argument("--model", default="rep-n")
    ap.add_argument("--warmup", type=int, default=100, help="frames before the baseline RSS is taken")
    ap.add_argument("--limit-mb", type=float, default=50.0)
    ap.add_argument("--no-render", action="store_true")
    args = ap.parse_args(argv)

    from perception.pipeline.bev import BEVConfig
    from perception.geometry.resize import parse_size
    from perception.pipeline.runner import Pipeline, PipelineOptions
    from perception.pipeline.bench_inputs import MemorySource, surround_rig

    h, w = parse_size(args.size)
    rig = surround_rig(args.cameras, w, h)
    samples: list[tuple[int, float]] = []
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        sources = [MemorySource(w, h, args.frames, seed=k) for k in range(args.cameras)]
        opts = PipelineOptions(model=args.model, size=(h, w), out=Path(tmp), render=not args.no_render,
                               bev=BEVConfig())
        pipe = Pipeline(rig, sources, opts)

        def on_frame(i: int) -> None:
            n = pipe.engine.frames
            if n % 50 == 0:
                samples.append((n, rss_mb()))

        t0 = time.time()
        summary = pipe.run(progress=on_frame)
        pipe.close()
        elapsed = time.time() - t0
    base = next((m for n, m in samples if n >= args.warmup), samples[0][1] if samples else float("nan"))
    end = samples[-1][1] if samples else float("nan")
    peak = max((m for _, m in samples), default=float("nan"))
    report = {"frames": summary["frames"], "cameras": args.cameras, "size": args.size, "model": args.model,
              "render": not args.no_render, "seconds": round(elapsed, 1), "fps": summary["fps"],
              "rss_mb_after_warmup": round(base, 1), "rss_mb_end": round(end, 1), "rss_mb_peak": round(peak, 1),
              "growth_mb": round(end - base, 1), "limit_mb": args.limit_mb,
              "rss_trace": [(n, round(m, 1)) for n, m in samples[:: max(1, len(samples) // 20)]],
              "errors": summary["errors"], "dropped_frames": summary["dropped_frames"]}
    print(json.dumps(report, indent=2))
    return 0 if report["growth_mb"] < args.limit_mb else 1


if __name__ == "__main__":
    sys.exit(main())
