"""Network throughput as one copy on N torch threads against N single-thread copies.

    python benchmarks/model_copies.py [--model rep-s] [--batch 6] [--size 256x448] [--rounds 2]

The question behind `perception.pipeline.runner.model_parallelism`: on a small CPU, does the
pipeline's network stage get more batches through as one copy with a thread team, or as one
single-thread copy per core, each on its own batch? Both run the same `TorchBackend` (fused,
channels_last, precision auto) on the same input, alternating, in this process. Prints one JSON
object: batches/s per round and mode.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

from perception.geometry.resize import parse_size  # noqa: E402
from perception.nn.resolve import resolve_model  # noqa: E402
from perception.pipeline.backends import create_backend, resolve_precision  # noqa: E402


def batches_per_second(backend, x: torch.Tensor, K: torch.Tensor, copies: int, threads: int, batches: int) -> float:
    """Run ``batches`` forwards split over ``copies`` threads with ``threads`` torch threads each."""
    def work(n: int) -> None:
        torch.set_num_threads(threads)
        for _ in range(n):
            backend(x, K)

    work(1)  # warm-up in this thread team size
    per = max(1, batches // copies)
    pool = [threading.Thread(target=work, args=(per,)) for _ in range(copies)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return per * copies / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="rep-s")
    ap.add_argument("--batch", type=int, default=6, help="images per forward (cameras)")
    ap.add_argument("--size", default="256x448", help="network input HxW")
    ap.add_argument("--batches", type=int, default=24, help="forwards per measurement")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    H, W = parse_size(a.size)
    precision = resolve_precision("auto", "cpu")
    backend = create_backend("torch", resolve_model(a.model, random_weights=True), "cpu", dtype=precision)
    x = torch.rand(a.batch, 3, H, W)
    K = torch.tensor([[W * 0.8, 0, W / 2], [0, W * 0.8, H / 2], [0, 0, 1]]).expand(a.batch, 3, 3).contiguous()
    modes = {f"1 copy x {a.cores} threads": (1, a.cores), f"{a.cores} copies x 1 thread": (a.cores, 1)}
    rounds = []
    for _ in range(a.rounds):
        rounds.append({name: round(batches_per_second(backend, x, K, c, t, a.batches), 2)
                       for name, (c, t) in modes.items()})
    print(json.dumps({"model": a.model, "batch": a.batch, "size": [H, W], "precision": precision,
                      "torch": torch.__version__, "batches_per_s": rounds}, indent=1))


if __name__ == "__main__":
    main()
