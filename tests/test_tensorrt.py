"""TensorRT backend: needs the TensorRT Python package and a CUDA GPU (skipped otherwise).

Not run on our development machines (TensorRT is not installable there); no fake engines.
"""

from __future__ import annotations

import pytest
import torch

trt = pytest.importorskip("tensorrt")

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    from perception.deploy.export import export_onnx
    from perception.nn import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trt") / "rep-n.onnx"
    export_onnx(create_model("rep-n").eval(), path, size=(128, 224), dynamic_batch=True, decode=False)
    return path


@pytest.mark.parametrize("precision, tol", [("fp32", 1e-2), ("fp16", 5e-2)])
def test_engine_matches_torch(onnx_file, tmp_path, monkeypatch, precision, tol):
    monkeypatch.setenv("PERCEPTION_CACHE", str(tmp_path))
    from perception.deploy.backends import TensorRTBackend
    from perception.deploy.export import default_intrinsics
    from perception.nn import create_model, reparameterize_model

    torch.manual_seed(0)
    model = reparameterize_model(create_model("rep-n")).eval().cuda()
    backend = TensorRTBackend(path=onnx_file, device="cuda", precision=precision, max_batch=4)
    for batch in (1, 3):
        x = torch.rand(batch, 3, 128, 224, device="cuda")
        K = default_intrinsics(128, 224, batch).cuda()
        out = backend(x, K)
        torch.cuda.synchronize()
        with torch.inference_mode():
            ref = model(x, K)
        assert out["depth"].shape == ref["depth"].shape
        rel = ((out["depth"] - ref["depth"]).abs() / ref["depth"]).max().item()
        assert rel < tol
        assert torch.allclose(out["det"], ref["det"], atol=tol * 10, rtol=tol)


def test_engine_cache_is_reused(onnx_file, tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTION_CACHE", str(tmp_path))
    from perception.deploy.backends import build_engine

    first = build_engine(onnx_file, precision="fp16", batch_range=(1, 2, 2))
    mtime = first.stat().st_mtime_ns
    again = build_engine(onnx_file, precision="fp16", batch_range=(1, 2, 2))
    assert again == first and again.stat().st_mtime_ns == mtime
    assert list((tmp_path / "tensorrt").glob("timing-*.cache"))
