"""Deep Compression (Han et al., ICLR 2016): prune -> k-means weight sharing -> Huffman coding.

Acts on the *fused* (deploy) model, whose weights are what ships:

1. magnitude pruning of every conv kernel with at least ``min_numel`` weights to ``sparsity``
   (per layer), then masked fine-tuning;
2. per layer, the surviving weights are clustered into ``2**bits`` shared values (1-D k-means,
   linear initialisation over [min, max] as in the paper) and replaced by their centroid; then
   optionally the centroids are fine-tuned (``quant_finetune_steps``, :func:`snap_to_shared`);
3. the cluster indices and the gaps between consecutive nonzero positions are Huffman coded
   (one canonical code for all gaps, one for all indices) and written in the ``PDC1`` file
   format specified in ``docs/compression.md``. Biases and small tensors are stored raw (fp32).

:func:`load_compressed` decodes a ``.pdc`` file back to a dense fused :class:`PerceptionNet`
whose weights equal the quantized ones exactly.
"""

from __future__ import annotations

import heapq
import json
import logging
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from perception.compress.common import FitConfig, Hooks, ProxyData, describe, evaluate, fit, write_report
from perception.nn.checkpoint import model_from_config, save_checkpoint
from perception.nn.model import PerceptionNet
from perception.nn.reparam import reparameterize_model

log = logging.getLogger(__name__)

MAGIC = b"PDC1"
MAX_GAP = 255  # a longer run of zeros is split with "filler" entries (index symbol = 2**bits)


@dataclass
class DeepCompressionConfig:
    sparsity: float = 0.9
    bits: int = 4
    min_numel: int = 512  # smaller kernels stay dense (they cost little and matter a lot)
    finetune_steps: int = 100
    kmeans_iters: int = 20
    quant_finetune_steps: int = 0  # fine-tune the shared values (centroids) after k-means, as in the paper
    scope: str = "layer"  # pruning thresholds per layer or one global threshold
    center_codebook: bool = False  # a second codebook for the centre taps of 3x3 kernels


# ------------------------------------------------------------------------------------------ pruning
def prune_layers(model: nn.Module, sparsity: float, min_numel: int, scope: str = "layer") -> dict[str, torch.Tensor]:
    """Magnitude masks for conv weights with >= ``min_numel`` elements (applied in place).

    ``scope="layer"``: every layer loses ``sparsity`` of its weights (the paper's per-layer
    thresholds); ``"global"``: one magnitude threshold over all of them, so that large, redundant
    layers lose more than small, sensitive ones."""
    if scope not in ("layer", "global"):
        raise ValueError(f"pruning scope must be layer or global, got {scope!r}")
    eligible = {n: p for n, p in model.named_parameters() if p.ndim == 4 and p.numel() >= min_numel}
    masks = {}
    with torch.no_grad():
        if scope == "global" and eligible:
            mags = torch.cat([p.detach().abs().flatten() for p in eligible.values()])
            k = int(sparsity * mags.numel())
            thr = mags.kthvalue(k).values if k >= 1 else mags.new_tensor(-1.0)
        for name, p in eligible.items():
            if scope == "layer":
                k = int(sparsity * p.numel())
                if k < 1:
                    continue
                thr = p.abs().flatten().kthvalue(k).values
            masks[name] = p.abs() > thr
            p.mul_(masks[name])
    return masks


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on scalars with linear initialisation; returns (centroids, assignment)."""
    lo, hi = values.min(), values.max()
    centroids = torch.linspace(float(lo), float(hi), k, dtype=values.dtype)
    assign = torch.zeros_like(values, dtype=torch.long)
    for _ in range(iters):
        assign = (values[:, None] - centroids[None]).abs().argmin(1)
        sums = torch.zeros(k, dtype=values.dtype).index_add_(0, assign, values)
        counts = torch.bincount(assign, minlength=k).to(values.dtype)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        if torch.equal(new, centroids):
            break
        centroids = new
    assign = (values[:, None] - centroids[None]).abs().argmin(1)
    return centroids.float(), assign


Codebooks = dict[str, tuple[torch.Tensor, torch.Tensor]]  # parameter name -> (centroids, assignment)


def _is_center_tap(shape: torch.Size | list[int], positions: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Which flat positions of a 3x3 kernel ``[O, I, 3, 3]`` are its centre tap."""
    return (positions % 9 == 4) if tuple(shape[-2:]) == (3, 3) else positions < 0


@torch.no_grad()
def share_weights(model: nn.Module, masks: dict[str, torch.Tensor], bits: int, iters: int = 20,
                  center_codebook: bool = False) -> Codebooks:
    """k-means weight sharing in place: every surviving weight of a masked layer becomes the
    centroid of its cluster (``2**bits`` per layer). Returns the codebooks.

    ``center_codebook``: 3x3 kernels get a second codebook of ``2**bits`` values for their centre
    taps. A fused RepVGG kernel carries the identity and 1x1 branches on the centre tap, which is
    far larger than the others; one codebook would spend its values on that tail. The decoder
    knows from the position which codebook an index refers to, so this costs no index bits."""
    params = dict(model.named_parameters())
    books: Codebooks = {}
    k = 2 ** bits
    for name, mask in masks.items():
        p, keep = params[name], mask.flatten()
        w = p.detach().flatten()
        vals = w[keep].double()
        center = _is_center_tap(p.shape, torch.nonzero(keep).flatten()) if center_codebook else None
        if center is not None and center.any() and (~center).any():
            cents_o, assign_o = kmeans_1d(vals[~center], k, iters)
            cents_c, assign_c = kmeans_1d(vals[center], k, iters)
            cents = torch.cat([cents_o, cents_c])  # indices >= k: the centre-tap codebook
            assign = torch.empty(len(vals), dtype=torch.long)
            assign[~center], assign[center] = assign_o, assign_c + k
        else:
            cents, assign = kmeans_1d(vals, k, iters)
        q = torch.zeros_like(w)
        q[keep] = cents[assign].to(w.dtype)
        p.copy_(q.view_as(p))
        books[name] = (cents, assign)
    return books


@torch.no_grad()
def snap_to_shared(model: nn.Module, masks: dict[str, torch.Tensor], books: Codebooks) -> None:
    """After an optimizer step on a weight-shared model: each centroid moves to the mean of its
    (updated) weights and they all take that value again; pruned weights stay zero. This is the
    paper's centroid fine-tuning (a shared weight's gradient is the sum over its cluster), with
    the assignment fixed."""
    params = dict(model.named_parameters())
    for name, (cents, assign) in books.items():
        p, keep = params[name], masks[name].flatten()
        vals = p.detach().flatten()[keep].double()
        k = len(cents)
        sums = torch.zeros(k, dtype=torch.float64).index_add_(0, assign, vals)
        counts = torch.bincount(assign, minlength=k).double()
        cents.copy_(torch.where(counts > 0, sums / counts.clamp(min=1), cents.double()).to(cents.dtype))
        q = torch.zeros(p.numel(), dtype=p.dtype)
        q[keep] = cents[assign].to(p.dtype)
        p.copy_(q.view_as(p))


# ------------------------------------------------------------------------------------------ Huffman
def huffman_lengths(freqs: dict[int, int]) -> dict[int, int]:
    """Code length per symbol (a lone symbol gets length 1)."""
    if not freqs:
        return {}
    if len(freqs) == 1:
        return {next(iter(freqs)): 1}
    heap = [(f, i, [s]) for i, (s, f) in enumerate(sorted(freqs.items()))]
    heapq.heapify(heap)
    lengths = {s: 0 for s in freqs}
    tie = len(heap)
    while len(heap) > 1:
        f1, _, s1 = heapq.heappop(heap)
        f2, _, s2 = heapq.heappop(heap)
        for s in s1 + s2:
            lengths[s] += 1
        heapq.heappush(heap, (f1 + f2, tie, s1 + s2))
        tie += 1
    return lengths


def canonical_codes(lengths: dict[int, int]) -> dict[int, tuple[int, int]]:
    """Canonical Huffman: symbols sorted by (length, symbol) get consecutive codes."""
    codes, code, prev = {}, 0, 0
    for s, n in sorted(lengths.items(), key=lambda t: (t[1], t[0])):
        code <<= n - prev
        codes[s] = (code, n)
        code += 1
        prev = n
    return codes


def huffman_encode(symbols: np.ndarray, codes: dict[int, tuple[int, int]]) -> bytes:
    bits = "".join(format(c, f"0{n}b") for c, n in (codes[int(s)] for s in symbols))
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def huffman_decode(data: bytes, count: int, codes: dict[int, tuple[int, int]]) -> np.ndarray:
    lookup = {(n, c): s for s, (c, n) in codes.items()}
    out = np.empty(count, np.int64)
    bits = bin(int.from_bytes(data, "big"))[2:].zfill(len(data) * 8) if data else ""
    code = n = i = 0
    for ch in bits:
        if i == count:
            break
        code = (code << 1) | (ch == "1")
        n += 1
        s = lookup.get((n, code))
        if s is not None:
            out[i] = s
            i += 1
            code = n = 0
    if i != count:
        raise ValueError(f"Huffman stream ended after {i} of {count} symbols")
    return out


# ------------------------------------------------------------------------------------------ encode
def _sparse_symbols(pos: np.ndarray, assign: np.ndarray, filler: int) -> tuple[np.ndarray, np.ndarray]:
    """(gaps, indices) for the kept positions ``pos`` (ascending); filler entries split long gaps."""
    gaps, idx = [], []
    prev = -1
    for p, a in zip(pos.tolist(), assign.tolist()):
        gap = p - prev - 1
        while gap > MAX_GAP:
            gaps.append(MAX_GAP)
            idx.append(filler)
            gap -= MAX_GAP + 1
        gaps.append(gap)
        idx.append(a)
        prev = p
    return np.array(gaps, np.int64), np.array(idx, np.int64)


def encode_model(model: PerceptionNet, path: str | Path, bits: int, masks: dict[str, torch.Tensor],
                 kmeans_iters: int = 20, books: Codebooks | None = None) -> dict[str, Any]:
    """Write the ``PDC1`` file of ``model`` (fused). Without ``books`` the masked layers are first
    weight-shared in place (:func:`share_weights`); either way the model then holds exactly what
    the file decodes to."""
    if not model.is_reparameterized:
        raise ValueError("deep compression encodes the fused model; call reparameterize_model first")
    filler = 2 ** bits
    if books is None:
        books = share_weights(model, masks, bits, kmeans_iters)
    state = model.state_dict()
    entries, per_tensor = [], []
    gap_freq: dict[int, int] = {}
    idx_freq: dict[int, int] = {}
    for name, t in state.items():
        if name in masks:
            cents, assign = books[name]
            pos = np.flatnonzero(masks[name].flatten().numpy())
            # two codebooks (centre taps): the position says which one, the index is within it
            gaps, idx = _sparse_symbols(pos, assign.numpy() % filler, filler)
            for arr, freq in ((gaps, gap_freq), (idx, idx_freq)):
                vals, cnt = np.unique(arr, return_counts=True)
                for v, c in zip(vals.tolist(), cnt.tolist()):
                    freq[v] = freq.get(v, 0) + c
            per_tensor.append((name, "sparse", t, cents, gaps, idx))
        else:
            per_tensor.append((name, "raw", t, None, None, None))
    gap_codes = canonical_codes(huffman_lengths(gap_freq))
    idx_codes = canonical_codes(huffman_lengths(idx_freq))
    payload, offset = [], 0
    for name, kind, t, cents, gaps, idx in per_tensor:
        e: dict[str, Any] = {"name": name, "kind": kind, "shape": list(t.shape), "offset": offset}
        if kind == "raw":
            blob = t.detach().float().numpy().astype("<f4").tobytes()
            e["nbytes"] = len(blob)
            payload.append(blob)
            offset += len(blob)
        else:
            g, i = huffman_encode(gaps, gap_codes), huffman_encode(idx, idx_codes)
            cb = cents.numpy().astype("<f4").tobytes()
            e.update(entries=len(gaps), codebook_bytes=len(cb), gap_bytes=len(g), index_bytes=len(i),
                     center_codebook=len(cents) > filler)
            payload += [cb, g, i]
            offset += len(cb) + len(g) + len(i)
        entries.append(e)
    header = {"config": model.cfg.to_dict(), "form": "fused", "bits": bits, "max_gap": MAX_GAP, "filler": filler,
              "gap_code_lengths": sorted(huffman_lengths(gap_freq).items()),
              "index_code_lengths": sorted(huffman_lengths(idx_freq).items()), "tensors": entries}
    hz = zlib.compress(json.dumps(header, separators=(",", ":")).encode(), 9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = b"".join(payload)
    path.write_bytes(MAGIC + struct.pack("<I", len(hz)) + hz + body)
    return {"file_bytes": path.stat().st_size, "header_bytes": len(hz) + 8, "payload_bytes": len(body),
            "fp32_bytes": sum(t.numel() * 4 for t in state.values())}


def load_compressed(path: str | Path) -> PerceptionNet:
    """Decode a ``PDC1`` file into a dense fused :class:`PerceptionNet` (eval mode)."""
    raw = Path(path).read_bytes()
    if raw[:4] != MAGIC:
        raise ValueError(f"{path}: not a PDC1 deep-compression file")
    (hlen,) = struct.unpack("<I", raw[4:8])
    header = json.loads(zlib.decompress(raw[8:8 + hlen]))
    body = memoryview(raw)[8 + hlen:]
    gap_codes = canonical_codes({int(s): int(n) for s, n in header["gap_code_lengths"]})
    idx_codes = canonical_codes({int(s): int(n) for s, n in header["index_code_lengths"]})
    model = model_from_config(header["config"], header.get("form", "fused"))
    state = {}
    for e in header["tensors"]:
        shape, o = e["shape"], e["offset"]
        if e["kind"] == "raw":
            arr = np.frombuffer(body[o:o + e["nbytes"]], "<f4").copy()
        else:
            cb = np.frombuffer(body[o:o + e["codebook_bytes"]], "<f4")
            o += e["codebook_bytes"]
            gaps = huffman_decode(bytes(body[o:o + e["gap_bytes"]]), e["entries"], gap_codes)
            o += e["gap_bytes"]
            idx = huffman_decode(bytes(body[o:o + e["index_bytes"]]), e["entries"], idx_codes)
            arr = np.zeros(int(np.prod(shape)), np.float32)
            pos = np.cumsum(gaps + 1) - 1
            real = idx != header["filler"]
            pos, idx = pos[real], idx[real]
            if e.get("center_codebook"):  # centre taps of 3x3 kernels use the second codebook
                idx = idx + header["filler"] * _is_center_tap(shape, pos)
            arr[pos] = cb[idx]
        state[e["name"]] = torch.from_numpy(arr.reshape(shape))
    model.load_state_dict(state)
    return model.eval()


def run_deep_compression(model: PerceptionNet, data: ProxyData, fit_cfg: FitConfig, cfg: DeepCompressionConfig,
                         out: Path) -> dict[str, Any]:
    """Prune + fine-tune + quantize + encode ``model`` (trained, either form); report on ``out``."""
    dense = reparameterize_model(model)
    before = {**evaluate(dense, data), **describe(dense, data.size)}
    ref = save_checkpoint(dense, out / "dense-fused.safetensors")
    masks = prune_layers(dense, cfg.sparsity, cfg.min_numel, cfg.scope)
    after_prune = evaluate(dense, data)
    if cfg.finetune_steps:
        hooks = Hooks(after_step=lambda m, s: _apply(m, masks))
        fit(dense, data, FitConfig(**{**asdict(fit_cfg), "steps": cfg.finetune_steps, "lr": fit_cfg.lr * 0.25,
                                      "warmup": 0}), hooks)
    after_finetune = evaluate(dense, data)
    save_checkpoint(dense, out / "pruned-finetuned.safetensors")  # to try other --bits without pruning again
    books = share_weights(dense, masks, cfg.bits, cfg.kmeans_iters, cfg.center_codebook)
    after_sharing = evaluate(dense, data)
    if cfg.quant_finetune_steps:
        def after_step(m: nn.Module, _: int) -> None:
            snap_to_shared(m, masks, books)
        fit(dense, data, FitConfig(**{**asdict(fit_cfg), "steps": cfg.quant_finetune_steps,
                                      "lr": fit_cfg.lr * 0.1, "warmup": 0, "weight_decay": 0.0}),
            Hooks(after_step=after_step))
    sizes = encode_model(dense, out / "model.pdc", cfg.bits, masks, books=books)
    decoded = load_compressed(out / "model.pdc")
    with torch.no_grad():
        x = data.val["images"][:2]
        diff = float((decoded(x)["det"] - dense(x)["det"]).abs().max())
    decoded_metrics = evaluate(decoded, data)
    report = {"config": asdict(cfg), "fit": asdict(fit_cfg), "data": data.description, "dense_fused": before,
              "after_prune": after_prune, "after_finetune": after_finetune, "after_sharing": after_sharing,
              "decoded": decoded_metrics,
              "decoded_vs_quantized_max_abs_diff": diff, **sizes,
              "dense_fused_safetensors_bytes": ref.stat().st_size,
              "storage_ratio_vs_fp32": sizes["fp32_bytes"] / sizes["file_bytes"],
              "decoded_model": describe(decoded, data.size), "file": str(out / "model.pdc")}
    write_report(out, "deep-compression", report)
    return report


@torch.no_grad()
def _apply(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    for n, m in masks.items():
        params[n].mul_(m)
