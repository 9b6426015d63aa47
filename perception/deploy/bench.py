"""`perception bench model`: train vs fused form of a model, side by side in one run.

For each form: median / p90 latency of one batched forward (model only: the input batch is
already in memory and preprocessed; no decode or NMS), frames/s (= camera images/s),
peak activation memory, parameters, GFLOPs per frame and achieved GFLOP/s against the
machine's fp32 (or chosen dtype) matmul peak measured in the same run. Timing rounds of the
two forms are interleaved so that machine noise hits both alike.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from perception.utils.profiling import (
    DTYPES,
    count_flops,
    environment,
    matmul_peak_gflops,
    peak_activation_bytes,
    summarize,
    time_calls,
)

log = logging.getLogger(__name__)


@dataclass
class BenchSettings:
    batch: int = 6
    height: int = 256
    width: int = 448
    device: str = "cpu"
    dtype: str = "fp32"
    warmup: int = 3
    iters: int = 20
    rounds: int = 4
    channels_last: bool = True


def _prepare(model: nn.Module, s: BenchSettings, device: torch.device) -> nn.Module:
    model = model.to(device=device, dtype=DTYPES[s.dtype]).eval()
    if s.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def measure_forms(forms: dict[str, nn.Module], make_call: Callable[[nn.Module], Callable[[], Any]],
                  s: BenchSettings, device: torch.device, progress: Callable[[str], None] | None = None
                  ) -> dict[str, dict[str, Any]]:
    """Latency (interleaved rounds), memory, FLOPs and parameters of each named form."""
    calls = {name: make_call(m) for name, m in forms.items()}
    results: dict[str, dict[str, Any]] = {}
    with torch.inference_mode():
        for name, call in calls.items():
            if progress:
                progress(f"{name}: FLOPs and memory")
            flops = count_flops(call)
            mem = peak_activation_bytes(call, device)
            time_calls(call, device, s.warmup)
            results[name] = {"flops": flops, "peak_activation_bytes": mem, "times": [],
                             "params": sum(p.numel() for p in forms[name].parameters())}
        per_round = max(1, s.iters // s.rounds)
        for r in range(s.rounds):
            for name, call in calls.items():
                if progress:
                    progress(f"timing round {r + 1}/{s.rounds}: {name}")
                results[name]["times"] += time_calls(call, device, per_round)
    for name, res in results.items():
        res.update(summarize(res.pop("times")))
    return results


def bench_model(name: str, s: BenchSettings, compare: list[str] | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark the train and fused forms of a registered model (plus optional peers)."""
    from perception.nn import create_model, reparameterize_model

    device = torch.device(s.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but CUDA is not available")
    if device.type == "cpu" and s.dtype == "fp16":
        raise ValueError("fp16 on CPU is not a meaningful benchmark; use fp32 or bf16 on CPU")
    torch.manual_seed(0)
    train = create_model(name).eval()
    fused = reparameterize_model(copy.deepcopy(train))
    forms: dict[str, nn.Module] = {"train": _prepare(train, s, device), "fused": _prepare(fused, s, device)}
    images = torch.rand(s.batch, 3, s.height, s.width, device=device, dtype=DTYPES[s.dtype])
    if s.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    K = torch.tensor([[0.8 * s.width, 0, s.width / 2], [0, 0.8 * s.width, s.height / 2], [0, 0, 1.0]],
                     device=device, dtype=DTYPES[s.dtype]).expand(s.batch, 3, 3)

    def make_call(model: nn.Module) -> Callable[[], Any]:
        return lambda: model(images, K)

    peer_calls: dict[str, nn.Module] = {}
    for peer in compare or []:
        m = load_peer(peer)
        if m is not None:
            peer_calls[peer] = _prepare(m, s, device)

    if progress:
        progress("measuring the matmul peak")
    peak = matmul_peak_gflops(device, DTYPES[s.dtype])
    results = measure_forms(forms, make_call, s, device, progress)
    if peer_calls:
        results.update(measure_forms(peer_calls, lambda m: (lambda: m(images)), s, device, progress))
    # measured again after the forms: the best of both, so that a burst of load from another
    # process during one measurement does not deflate the peak (and inflate "% of peak")
    peak = max(peak, matmul_peak_gflops(device, DTYPES[s.dtype]))
    for res in results.values():
        sec = res["median_ms"] / 1e3
        res["fps"] = s.batch / sec
        res["p90_fps"] = s.batch / (res["p90_ms"] / 1e3)
        res["gflops_per_frame"] = res["flops"] / s.batch / 1e9
        res["achieved_gflops"] = res["flops"] / sec / 1e9
        res["fraction_of_peak"] = res["achieved_gflops"] / peak if peak else float("nan")
    t, f = results["train"], results["fused"]
    return {
        "model": name, "batch": s.batch, "size": [s.height, s.width], "dtype": s.dtype,
        "channels_last": s.channels_last, "warmup": s.warmup, "iters": s.iters,
        "timed": "model forward only: batch already in memory, normalisation inside the model, "
                 "no decode/NMS; warm-up excluded; CUDA synchronised per call",
        "env": environment(device), "matmul_peak_gflops": peak, "results": results,
        "ratios": {"fps_fused_over_train": f["fps"] / t["fps"],
                   "memory_fused_over_train": f["peak_activation_bytes"] / max(1, t["peak_activation_bytes"]),
                   "params_fused_over_train": f["params"] / t["params"]},
    }


# Reference architectures rebuilt from our own blocks, for same-run comparisons without timm:
# RepVGG-A0 (Ding et al. 2021, Table 2: widths 48/48/96/192/1280, 2/4/14/1 blocks), backbone only.
BUILTIN_PEERS = {"repvgg-a0": dict(widths=(48, 48, 96, 192, 1280), depths=(2, 4, 14, 1))}


class _BackbonePeer(nn.Module):
    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.backbone(x)


def load_peer(spec: str) -> nn.Module | None:
    """A peer model for ``--compare``: ``builtin:repvgg-a0`` (the RepVGG-A0 backbone built from our
    blocks, fused) or ``timm:NAME`` (fused if it supports it). timm is not a dependency (it pulls
    torchvision); without it the peer is skipped with a warning."""
    kind, _, peer = spec.partition(":")
    if kind == "builtin":
        from perception.nn import reparameterize_model
        from perception.nn.backbone import BackboneConfig, RepBackbone

        if peer not in BUILTIN_PEERS:
            raise ValueError(f"unknown builtin peer {peer!r}; known: {sorted(BUILTIN_PEERS)}")
        return reparameterize_model(_BackbonePeer(RepBackbone(BackboneConfig(**BUILTIN_PEERS[peer]))).eval())
    if kind != "timm" or not peer:
        raise ValueError(f"--compare entries look like builtin:NAME or timm:NAME, got {spec!r}")
    try:
        import timm  # type: ignore[import-not-found]
        from timm.utils.model import reparameterize_model as timm_reparam  # type: ignore[import-not-found]
    except Exception as exc:  # noqa: BLE001 - any import failure means: no peer
        log.warning("skipping %s: timm is not importable (%s)", spec, exc)
        return None
    model = timm.create_model(peer, pretrained=False, features_only=False, num_classes=0).eval()
    return timm_reparam(model)
