"""INT8 post-training quantization: Q/DQ model that runs in ONNX Runtime, close to fp32 for QARep."""

from __future__ import annotations

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxruntime.quantization")

from tests.helpers import randomize_bn  # noqa: E402

from perception.deploy.export import default_intrinsics, export_onnx, node_counts, read_metadata  # noqa: E402
from perception.deploy.quantize import FeedReader, fidelity, quantize_onnx, real_frames  # noqa: E402
from perception.nn import create_model  # noqa: E402

H, W = 64, 96


def _feeds(n: int, batch: int, seed: int) -> list[dict[str, np.ndarray]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        # smooth images (low-res noise upsampled) look more like photos than white noise
        x = torch.nn.functional.interpolate(torch.rand(batch, 3, H // 8, W // 8, generator=g), size=(H, W),
                                            mode="bilinear", align_corners=False)
        out.append({"images": x.numpy(), "intrinsics": default_intrinsics(H, W, batch).numpy()})
    return out


@pytest.fixture(scope="module")
def qarep_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("int8")
    torch.manual_seed(0)
    model = randomize_bn(create_model("qarep-n"), seed=3).eval()
    fp32 = d / "qarep-n.onnx"
    export_onnx(model, fp32, size=(H, W), dynamic_batch=True, decode=False, verify=False)
    result = quantize_onnx(fp32, d / "qarep-n-int8.onnx", _feeds(3, 2, seed=1))
    return fp32, d / "qarep-n-int8.onnx", result


def test_quantized_model_has_qdq_nodes_and_runs(qarep_files):
    fp32, int8, result = qarep_files
    model = onnx.load(str(int8))
    onnx.checker.check_model(model)
    counts = node_counts(model.graph)
    assert counts["QuantizeLinear"] > 10 and counts["DequantizeLinear"] > 10
    # weights are int8 initializers (per-channel: one scale per output channel of a conv)
    int8_inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_inits) >= 20
    assert any(len(i.dims) == 1 and i.dims[0] > 1 for i in model.graph.initializer
               if i.name.endswith("_scale") and i.data_type == onnx.TensorProto.FLOAT)
    assert read_metadata(int8)["perception.quantized"] == "int8-qdq"
    sess = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    feed = _feeds(1, 3, seed=9)[0]
    depth, det = sess.run(["depth", "det"], feed)
    assert depth.shape == (3, 1, H, W) and np.isfinite(depth).all() and (depth > 0).all()
    assert det.shape[0] == 3 and np.isfinite(det).all()


def test_qarep_int8_outputs_close_to_fp32(qarep_files):
    fp32, int8, _ = qarep_files
    fid = fidelity(fp32, int8, _feeds(2, 2, seed=5))
    assert fid["depth_abs_rel"] < 0.02, fid
    assert fid["det_cosine"] > 0.95, fid  # centred: constant biases do not count
    assert fid["cls_cosine"] > 0.95, fid


def test_bad_quantization_arguments(qarep_files, tmp_path):
    fp32, _, _ = qarep_files
    with pytest.raises(ValueError, match="calibration method"):
        quantize_onnx(fp32, tmp_path / "x.onnx", _feeds(1, 1, 0), method="magic")
    with pytest.raises(ValueError, match="activation"):
        quantize_onnx(fp32, tmp_path / "x.onnx", _feeds(1, 1, 0), activation="int4")


def test_feed_reader_rewinds():
    feeds = _feeds(2, 1, 0)
    r = FeedReader(feeds)
    assert r.get_next() is feeds[0] and r.get_next() is feeds[1] and r.get_next() is None
    r.rewind()
    assert r.get_next() is feeds[0]


@pytest.mark.shared_data
def test_real_calibration_frames_scale_intrinsics(shared_data):
    frames = list(real_frames((128, 224), root=shared_data, limit=2))
    assert frames, "no real frames found in the shared data"
    img, K = frames[0]
    assert img.shape == (3, 128, 224) and 0 <= img.min() and img.max() <= 1
    assert 100 < K[0, 0] < 250 and abs(K[0, 2] - 112) < 5  # nuScenes 1266 px at 1600 wide -> ~177 px at 224
