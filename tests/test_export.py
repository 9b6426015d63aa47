"""ONNX export: checker, reparameterization reached the graph, ORT == torch, dynamic batch, errors."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from tests.helpers import randomize_bn  # noqa: E402

from perception.deploy.export import (  # noqa: E402
    DECODED_OUTPUTS,
    ExportError,
    ReparamCheckError,
    check_reparameterized,
    default_intrinsics,
    export_onnx,
    node_counts,
    read_metadata,
)
from perception.nn import create_model  # noqa: E402

H, W = 128, 224


@pytest.fixture(scope="module")
def rep_n() -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(create_model("rep-n"), seed=1).eval()


@pytest.fixture(scope="module")
def exported(rep_n, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "rep-n.onnx"
    result = export_onnx(rep_n, path, size=(H, W), dynamic_batch=True, decode=True, verify=False)
    return path, result


def test_export_passes_checker_and_has_documented_io(exported):
    path, result = exported
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["images", "intrinsics"]
    assert [o.name for o in model.graph.output] == ["depth", "det", *DECODED_OUTPUTS]
    assert result.inputs["images"] == ["batch", 3, H, W]
    meta = read_metadata(path)
    assert meta["perception.size"] == f"{H}x{W}" and meta["perception.form"] == "fused"


def test_reparameterization_reached_the_graph(exported):
    path, result = exported
    model = onnx.load(str(path))
    counts = node_counts(model.graph)
    assert "BatchNormalization" not in counts
    backbone = node_counts(model.graph, "backbone")
    assert set(backbone) == {"Conv", "Relu"}
    # rep-n backbone: stem + (1 + 2 + 4 + 1) blocks, one fused 3x3 conv + ReLU each
    assert backbone == {"Conv": 9, "Relu": 9} == result.backbone_node_counts


def test_check_rejects_the_train_form_graph(rep_n, tmp_path):
    """The check can fail: the unfused graph keeps the branch Adds in the backbone."""
    path = tmp_path / "train.onnx"
    torch.onnx.export(rep_n.eval(), (torch.rand(1, 3, 64, 64), default_intrinsics(64, 64)), str(path),
                      input_names=["images", "intrinsics"], opset_version=17, dynamo=False)
    model = onnx.load(str(path))
    assert node_counts(model.graph, "backbone").get("Add", 0) > 0
    with pytest.raises(ReparamCheckError, match="BatchNormalization"):
        check_reparameterized(model)  # the identity-branch BN cannot fold into a conv
    for node in [n for n in model.graph.node if n.op_type == "BatchNormalization"]:
        model.graph.node.remove(node)
    with pytest.raises(ReparamCheckError, match="Add"):
        check_reparameterized(model)


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_torch_with_dynamic_batch(rep_n, exported, batch):
    from perception.nn.postprocess import decode_detections

    path, _ = exported
    g = torch.Generator().manual_seed(batch)
    x = torch.rand(batch, 3, H, W, generator=g)
    K = default_intrinsics(H, W, batch)
    K[:, 0, 0] *= torch.linspace(0.7, 1.3, batch)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()],
                   sess.run(None, {"images": x.numpy(), "intrinsics": K.numpy()})))
    with torch.inference_mode():
        ref = rep_n(x, K)  # the *train* form: fusion + export together must preserve the function
        anchors, strides = rep_n.anchors(H, W)
        dec = decode_detections(ref["det"], anchors, strides, rep_n.num_classes, K, rep_n.cfg.f_ref)
    assert got["depth"].shape == (batch, 1, H, W)
    assert np.abs(got["depth"] - ref["depth"].numpy()).max() <= 1e-3
    assert np.abs(got["boxes"] - dec["boxes"].numpy()).max() <= 1e-3
    assert np.abs(got["center_cam"] - dec["center_cam"].numpy()).max() <= 1e-3
    assert np.abs(got["scores"] - dec["scores"].numpy()).max() <= 1e-4
    # depth follows fx: different per image in the batch
    if batch > 1:
        assert not np.allclose(got["depth"][0], got["depth"][-1])


def test_static_batch_raw_outputs(rep_n, tmp_path):
    result = export_onnx(rep_n, tmp_path / "raw.onnx", size=(64, 96), batch=2, decode=False, verify=True)
    assert list(result.outputs) == ["depth", "det"]
    assert result.inputs["images"] == [2, 3, 64, 96]
    assert max(result.parity.values()) <= 1e-3


@pytest.mark.parametrize("kwargs, match", [
    (dict(size=(100, 224)), "multiples of 32"),
    (dict(size=(16, 224)), "too small"),
    (dict(opset=11), "opset"),
    (dict(batch=0), "batch"),
])
def test_bad_arguments_give_clear_errors(rep_n, tmp_path, kwargs, match):
    with pytest.raises(ExportError, match=match):
        export_onnx(rep_n, tmp_path / "x.onnx", **kwargs)


def test_cli_rejects_bad_input(tmp_path):
    from typer.testing import CliRunner

    from perception.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["export", "--model", "no-such-model", "--out", str(tmp_path / "a.onnx")])
    assert res.exit_code == 1 and "neither a registered model" in res.output
    res = runner.invoke(app, ["export", "--model", "rep-n", "--batch", "2", "--dynamic-batch"])
    assert res.exit_code == 1 and "exclude each other" in res.output
    res = runner.invoke(app, ["export", "--model", str(tmp_path / "missing.safetensors")])
    assert res.exit_code == 1 and "not found" in res.output


def test_onnx_backend_fits_the_pipeline_interface(rep_n, tmp_path, monkeypatch):
    monkeypatch.setenv("PERCEPTION_CACHE", str(tmp_path))
    import perception.deploy.backends  # noqa: F401  (registers "onnx")
    from perception.pipeline.backends import create_backend

    backend = create_backend("onnx", copy.deepcopy(rep_n), "cpu")
    x = torch.rand(2, 3, 64, 96)
    K = default_intrinsics(64, 96, 2)
    out = backend(x, K)
    with torch.inference_mode():
        ref = rep_n(x, K)
    assert set(out) == {"depth", "det"}
    assert torch.allclose(out["depth"], ref["depth"], atol=1e-3)
    assert torch.allclose(out["det"], ref["det"], atol=1e-3)


def test_stride4_model_exports_its_levels_and_evaluates_like_torch(tmp_path):
    """rep-s-p2 (levels 8/16/32/4): the ONNX file records its strides, and the evaluation's ONNX
    predictor decodes with them (boxes equal to the torch model's)."""
    from perception.eval.predictors import TorchPredictor, onnx_file_predictor

    torch.manual_seed(0)
    model = randomize_bn(create_model("rep-s-p2"), seed=2).eval()
    path = tmp_path / "p2.onnx"
    export_onnx(model, path, size=(64, 96), dynamic_batch=True, decode=False, verify=True)
    assert read_metadata(path)["perception.det_strides"] == "[8, 16, 32, 4]"
    x, K = torch.rand(2, 3, 64, 96), default_intrinsics(64, 96, 2)
    got = onnx_file_predictor(path, (64, 96), score_thresh=0.0, max_det=50)(x, K).detections
    ref = TorchPredictor(model, score_thresh=0.0, max_det=50)(x, K).detections
    for g, r in zip(got, ref):
        assert len(g.boxes) == len(r.boxes) == 50
        assert torch.allclose(g.boxes, r.boxes, atol=1e-2)
