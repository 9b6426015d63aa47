"""Measurement helpers of the benchmarks (figures themselves live in docs/benchmarks.md)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from perception.deploy.bench import BenchSettings, measure_forms
from perception.geometry.resize import parse_size
from perception.utils.profiling import ActivationMemoryTracker, count_flops, summarize


def test_flops_count_a_multiply_add_as_two():
    conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
    x = torch.randn(2, 4, 10, 12)
    assert count_flops(lambda: conv(x)) == 2 * 2 * 8 * 10 * 12 * 4 * 9


def test_activation_tracker_counts_live_storages_once():
    x = torch.randn(256, 256)  # 256 KiB, created before tracking: not counted
    with torch.inference_mode(), ActivationMemoryTracker() as t:
        a = x * 2
        v = a.view(-1)  # a view shares the storage: not counted twice
        v.add_(1)  # in-place: same storage
        del a
        b = v + 1  # two live tensors now
        del v, b
    assert t.peak == 2 * 256 * 256 * 4
    assert t.current == 0


def test_fused_form_needs_less_activation_memory_than_train_form():
    from perception.nn import RepVGGBlock, reparameterize_model

    block = RepVGGBlock(16, 16).eval()
    fused = reparameterize_model(block)
    x = torch.randn(1, 16, 32, 32)
    s = BenchSettings(iters=2, rounds=1, warmup=0)
    res = measure_forms({"train": block, "fused": fused}, lambda m: (lambda: m(x)), s, torch.device("cpu"))
    assert res["fused"]["peak_activation_bytes"] < res["train"]["peak_activation_bytes"]
    assert res["fused"]["flops"] < res["train"]["flops"]
    assert res["train"]["iters"] == 2 and res["fused"]["median_ms"] > 0


def test_summarize_median_and_p90():
    s = summarize([0.001 * i for i in range(1, 11)])
    assert s["median_ms"] == pytest.approx(5.5) and s["p90_ms"] == pytest.approx(9.0)


@pytest.mark.parametrize("text", ["256", "axb", "0x10"])
def test_parse_size_rejects_bad_text(text):
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_parse_size():
    assert parse_size("256x448") == (256, 448)


def test_builtin_repvgg_a0_peer_matches_the_paper():
    """RepVGG-A0 rebuilt from our blocks: 1.36 GMACs at 224x224 (Ding et al. 2021, Table 4)."""
    from perception.deploy.bench import load_peer
    from perception.utils.profiling import count_flops
    from perception.nn import is_reparameterized

    peer = load_peer("builtin:repvgg-a0")
    assert is_reparameterized(peer)
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        macs = count_flops(lambda: peer(x)) / 2
    assert abs(macs / 1e9 - 1.36) < 0.01
    with pytest.raises(ValueError, match="builtin"):
        load_peer("nope:x")


def _invoke(args):
    from typer.testing import CliRunner

    from perception.cli import app

    return CliRunner().invoke(app, ["bench", "model", *args])


@pytest.mark.slow
def test_bench_model_backends_writes_json(tmp_path):
    """`perception bench model --backends`: the fused model per backend, warm-up excluded."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    out = tmp_path / "x.json"
    r = _invoke(["--model", "rep-n", "--backends", "torch,onnx", "--batches", "1", "--size", "64x96",
                 "--iters", "2", "--warmup", "1", "--no-memory", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert set(data["results"]) == {"torch/b1", "onnx/b1"}
    for res in data["results"].values():
        assert "error" not in res, res
        assert res["fps"] > 0 and 0 < res["median_ms"] <= res["p90_ms"]
        assert res["iters"] == 2 and res["batch"] == 1 and "peak_rss_bytes" not in res
    assert data["size"] == [64, 96] and data["warmup"] == 1 and data["matmul_peak_gflops_fp32"] > 0
    assert data["int8_gemm_peak_gops"] is None and data["env"]["onnxruntime"]
    assert data["weights"] == "shipped"  # models/rep-n/ exists: the bench runs the shipped network
    assert "onnx" in r.output and "timed:" in r.output


def test_bench_model_rejects_unknown_backend(tmp_path):
    r = _invoke(["--model", "rep-n", "--backends", "torch,tensorrt", "--out", str(tmp_path / "x.json")])
    assert r.exit_code == 1
    assert "unknown backend" in r.output and "tensorrt" in r.output
    assert not (tmp_path / "x.json").exists()
