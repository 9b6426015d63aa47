"""Render speed of the synthetic world: six-camera frames per second on this machine.

Times ``Renderer(world)`` (all ground truth included: depth, instance/semantic maps, 2D/3D
boxes, BEV maps, weather and camera effects) for the surround6 rig scaled to ``--size``;
the median over ``--frames`` frames after ``--warmup`` untimed frames (the world steps at
10 Hz between frames; stepping is not timed). Prints one summary line and optionally JSON.

    python benchmarks/synth_speed.py --threads 2 --size 256x448 --frames 30

On a CPU shared with other busy processes, OpenMP's default spin-waiting makes 2 torch
threads extremely slow (measured 40x here), so this script sets ``OMP_WAIT_POLICY=PASSIVE``
before torch is imported unless the variable is already set (``OMP_WAIT_POLICY=ACTIVE python
benchmarks/synth_speed.py`` measures the default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # must precede the torch import (see above)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256x448", help="HxW per camera")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seeds", default="1,2,3", help="comma-separated world seeds (frames split between them)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(args.threads)
    from perception.data.synth import Renderer, World, WorldConfig, make_surround6

    h, w = (int(v) for v in args.size.lower().split("x"))
    rig = make_surround6().scaled(w, h)
    renderer = Renderer(rig, args.device)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed = max(1, args.frames // len(seeds))
    times, cpu = [], []
    for seed in seeds:
        world = World(seed, WorldConfig(duration=per_seed / 10 + 2))
        for k in range(args.warmup + per_seed):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            c0 = time.process_time()
            renderer(world)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            dt = time.perf_counter() - t0
            if k >= args.warmup:
                times.append(dt)
                cpu.append(time.process_time() - c0)
            world.step(0.1)
    med = statistics.median(times)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    res = {"cameras": len(rig), "size": [h, w], "frames_timed": len(times), "median_ms": round(med * 1000, 1),
           "fps": round(1 / med, 2), "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1000, 1),
           "cpu_ms_per_frame": round(statistics.median(cpu) * 1000, 1),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
           "threads": args.threads, "device": args.device, "torch": torch.__version__,
           "python": platform.python_version(), "loadavg": [round(x, 2) for x in load]}
    print(f"synth render: {res['fps']:.2f} six-camera frames/s ({res['median_ms']:.1f} ms median, "
          f"p90 {res['p90_ms']:.1f} ms, process CPU {res['cpu_ms_per_frame']:.0f} ms/frame) at {h}x{w}, "
          f"{args.threads} threads, {args.device}, OMP_WAIT_POLICY={res['omp_wait_policy']}; "
          f"load average {res['loadavg']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
