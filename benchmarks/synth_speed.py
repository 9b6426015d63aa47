"""Render speed of the synthetic world: six-camera frames per second on this machine.

Times ``Renderer(world)`` (all ground truth included: depth, instance/semantic maps, 2D/3D
boxes, BEV maps, weather and camera effects) for the surround6 rig scaled to ``--size``;
the median over ``--frames`` frames after ``--warmup`` untimed frames (the world steps at
10 Hz between frames; stepping is not timed). Prints one summary line and optionally JSON.

    python benchmarks/synth_speed.py --threads 2 --size 256x448 --frames 30
    python benchmarks/synth_speed.py --workers 2 --threads 1 --frames 30   # as the data tools render

frames/s = timed frames / wall time of the timed part (all workers together).

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


def render_timed(seeds: list[int], frames: int, warmup: int, size: tuple[int, int], device: str, threads: int,
                 barrier=None, queue=None) -> dict:
    """Render ``frames`` six-camera frames (split over ``seeds``) after ``warmup`` untimed ones;
    per-frame wall and CPU times, and the wall-clock start/end of the timed part."""
    import torch
    torch.set_num_threads(threads)
    from perception.data.synth import Renderer, World, WorldConfig, make_surround6

    h, w = size
    rig = make_surround6().scaled(w, h)
    renderer = Renderer(rig, device)
    per_seed = max(1, frames // len(seeds))
    worlds = [World(seed, WorldConfig(duration=(warmup + per_seed) / 10 + 2)) for seed in seeds]
    for _ in range(warmup):
        renderer(worlds[0])
    if barrier is not None:
        barrier.wait()
    times, cpu = [], []
    start = time.time()
    for world in worlds:
        for _ in range(per_seed):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            renderer(world)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            world.step(0.1)
    res = {"times": times, "cpu": cpu, "start": start, "end": time.time(), "cameras": len(rig)}
    if queue is not None:
        queue.put(res)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256x448", help="HxW per camera")
    ap.add_argument("--frames", type=int, default=30, help="timed frames in all (split between workers)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seeds", default="1,2,3,4", help="comma-separated world seeds (frames split between them)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads per process")
    ap.add_argument("--workers", type=int, default=1,
                    help="processes rendering side by side (what `perception synth` and the training cache do; "
                         "use --threads 1 with it)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the result here")
    args = ap.parse_args()

    import multiprocessing

    import torch

    h, w = (int(v) for v in args.size.lower().split("x"))
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.workers <= 1:
        parts = [render_timed(seeds, args.frames, args.warmup, (h, w), args.device, args.threads)]
    else:
        ctx = multiprocessing.get_context("spawn")
        barrier, queue = ctx.Barrier(args.workers), ctx.Queue()
        share = [seeds[k::args.workers] or seeds[:1] for k in range(args.workers)]
        procs = [ctx.Process(target=render_timed, args=(share[k], args.frames // args.workers, args.warmup, (h, w),
                                                        args.device, args.threads, barrier, queue))
                 for k in range(args.workers)]
        for p in procs:
            p.start()
        parts = [queue.get() for _ in procs]
        for p in procs:
            p.join()
    times = [t for part in parts for t in part["times"]]
    cpu = [c for part in parts for c in part["cpu"]]
    wall = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    med = statistics.median(times)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    res = {"cameras": parts[0]["cameras"], "size": [h, w], "frames_timed": len(times),
           "fps": round(len(times) / wall, 2), "median_ms": round(med * 1000, 1),
           "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1000, 1),
           "cpu_ms_per_frame": round(statistics.median(cpu) * 1000, 1),
           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(default)"),
           "workers": max(1, args.workers), "threads": args.threads, "device": args.device,
           "torch": torch.__version__, "python": platform.python_version(),
           "loadavg": [round(x, 2) for x in load]}
    print(f"synth render: {res['fps']:.2f} six-camera frames/s in all ({res['workers']} process(es) x "
          f"{args.threads} thread(s); per frame {res['median_ms']:.1f} ms median, p90 {res['p90_ms']:.1f} ms, "
          f"CPU {res['cpu_ms_per_frame']:.0f} ms) at {h}x{w}, {args.device}, "
          f"OMP_WAIT_POLICY={res['omp_wait_policy']}; load average {res['loadavg']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
