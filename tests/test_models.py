"""Every registered model: fused == train form, idempotent fusion, plain fused graph,
batch independence, input validation, checkpoints in both forms, shipped weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from perception.nn import (
    PerceptionNet,
    create_model,
    list_models,
    load_checkpoint,
    reparameterize_model,
    save_checkpoint,
)
from tests.helpers import randomize_bn

MODELS = list_models()
H, W = 64, 96


def _k(batch: int, fx: float = 80.0) -> torch.Tensor:
    return torch.tensor([[fx, 0, W / 2], [0, fx, H / 2], [0, 0, 1.0]]).expand(batch, 3, 3)


@pytest.fixture(scope="module", params=MODELS)
def model_pair(request):
    """(train form with random BN statistics, its fused copy) for each registered model."""
    torch.manual_seed(0)
    model = randomize_bn(create_model(request.param)).eval()
    return model, reparameterize_model(model)


def test_registry_has_three_sizes_and_qarep_variants():
    for size in ("n", "s", "m"):
        assert f"rep-{size}" in MODELS and f"qarep-{size}" in MODELS
    with pytest.raises(ValueError, match="unknown model"):
        create_model("rep-xxl")


def test_fused_matches_train_form(model_pair):
    model, fused = model_pair
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        a, b = model(x, _k(2)), fused(x, _k(2))
    for key in ("depth", "det"):
        scale = a[key].abs().max()
        assert (a[key] - b[key]).abs().max() <= 1e-4 * scale, key
    assert not model.is_reparameterized and fused.is_reparameterized


def test_fusing_twice_changes_nothing(model_pair):
    _, fused = model_pair
    again = reparameterize_model(fused)
    s1, s2 = fused.state_dict(), again.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)


def test_fused_model_is_plain_conv_relu(model_pair):
    _, fused = model_pair
    allowed = (nn.Conv2d, nn.ReLU, nn.SiLU, nn.ReLU6, nn.Identity, nn.Upsample)
    leaves = [m for m in fused.modules() if not list(m.children())]
    bad = {type(m).__name__ for m in leaves if not isinstance(m, allowed)}
    assert not bad, f"fused model still has {bad}"

    class OpRecorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = set()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.ops.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    x = torch.randn(1, 3, H, W)
    with torch.no_grad(), OpRecorder() as rec:
        fused.backbone(x)
    assert rec.ops <= {"convolution", "relu", "relu_"}, rec.ops  # no add (branches), no batch_norm


def test_outputs_do_not_depend_on_other_images(model_pair):
    _, fused = model_pair
    torch.manual_seed(1)
    batch = torch.rand(3, 3, H, W)
    K = _k(3)
    with torch.no_grad():
        together = fused(batch, K)
        alone = fused(batch[1:2], K[1:2])
    assert torch.allclose(together["depth"][1:2], alone["depth"], rtol=1e-4, atol=1e-5)
    assert torch.allclose(together["det"][1:2], alone["det"], rtol=1e-4, atol=1e-4)


def test_odd_sizes_are_padded_and_depth_keeps_input_size():
    model = create_model("rep-n").eval()
    x = torch.rand(1, 3, 70, 101)
    with torch.no_grad():
        out = model(x)
    assert out["depth"].shape == (1, 1, 70, 101)
    anchors, strides = model.anchors(70, 101)
    assert out["det"].shape[1] == anchors.shape[0] == strides.shape[0]
    assert anchors[:, 0].max() < 128 and anchors[:, 1].max() < 96  # padded to 96x128


def test_unpadded_model_rejects_odd_sizes_clearly():
    model = create_model("rep-n", pad_input=False).eval()
    with pytest.raises(ValueError, match="multiple of 32"):
        model(torch.rand(1, 3, 70, 96))


@pytest.mark.parametrize("bad,message", [
    (lambda: torch.rand(1, 4, H, W), "3 channels"),
    (lambda: torch.rand(1, 1, H, W), "3 channels"),
    (lambda: torch.rand(3, H, W), "4-D"),
    (lambda: (torch.rand(1, 3, H, W) * 255).to(torch.uint8), "dtype"),
    (lambda: torch.rand(1, 3, H, W, dtype=torch.float64), "dtype"),
    (lambda: torch.full((1, 3, H, W), float("nan")), "NaN"),
    (lambda: torch.full((1, 3, H, W), float("inf")), "NaN or Inf"),
    (lambda: torch.rand(1, 3, 16, W), "too small"),
])
def test_bad_inputs_raise_value_error(bad, message):
    model = create_model("rep-n").eval()
    with pytest.raises(ValueError, match=message):
        model(bad())


def test_bad_intrinsics_raise_value_error():
    model = create_model("rep-n").eval()
    x = torch.rand(2, 3, H, W)
    with pytest.raises(ValueError, match="intrinsics"):
        model(x, torch.eye(4))
    with pytest.raises(ValueError, match="focal"):
        model(x, torch.zeros(2, 3, 3))


def test_depth_follows_focal_length():
    """Same pixels seen with twice the focal length are twice as far (fx / f_ref rescale)."""
    model = create_model("rep-n").eval()
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        d1 = model(x, _k(2, fx=100.0))["depth"]
        d2 = model(x, _k(2, fx=200.0))["depth"]
        d0 = model(x)["depth"]  # no intrinsics: fx = f_ref
        d_ref = model(x, _k(2, fx=model.cfg.f_ref))["depth"]
    assert torch.allclose(d2, 2 * d1, rtol=1e-5)
    assert torch.allclose(d0, d_ref, rtol=1e-6)
    assert (d1 > 0).all()


def test_predict_returns_detections_with_3d_attributes():
    torch.manual_seed(0)
    model = create_model("rep-n").eval()
    # make every anchor fire for class 2 so that NMS and decoding are exercised
    for level in model.det_head.levels:
        level.cls_pred.bias.data[:] = -10.0
        level.cls_pred.bias.data[2] = 10.0
    dets = model.predict(torch.rand(2, 3, H, W), _k(2), score_thresh=0.5)
    assert len(dets) == 2
    for d in dets:
        n = len(d)
        assert n > 0
        assert d.boxes.shape == (n, 4) and d.center_cam.shape == (n, 3) and d.size.shape == (n, 3)
        assert (d.labels == 2).all() and d.label_names[0] == model.classes[2]
        assert (d.boxes[:, 0] >= 0).all() and (d.boxes[:, 2] <= W).all() and (d.boxes[:, 3] <= H).all()
        assert (d.depth > 0).all() and (d.size > 0).all()
        assert (d.scores[:-1] >= d.scores[1:]).all()


def _save_load(model: PerceptionNet, tmp_path, **kw) -> PerceptionNet:
    path = save_checkpoint(model, tmp_path / "m.safetensors", **kw)
    return load_checkpoint(path)


@pytest.mark.parametrize("name", ["rep-n", "qarep-n"])
def test_checkpoints_load_into_their_form(name, tmp_path):
    torch.manual_seed(0)
    model = randomize_bn(create_model(name)).eval()
    fused = reparameterize_model(model)
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        ref = fused(x)["det"]
        train_loaded = _save_load(model, tmp_path)
        assert not train_loaded.is_reparameterized
        assert torch.allclose(train_loaded(x)["det"], model(x)["det"])
        fused_loaded = _save_load(fused, tmp_path)
        assert fused_loaded.is_reparameterized
        assert torch.allclose(fused_loaded(x)["det"], ref)
        # a train-form checkpoint can be fused after loading
        refused = reparameterize_model(train_loaded)
        assert torch.allclose(refused(x)["det"], ref, atol=1e-5)


def test_fp16_checkpoint_is_smaller_and_close(tmp_path):
    model = create_model("rep-n").eval()
    p32 = save_checkpoint(model, tmp_path / "a.safetensors")
    p16 = save_checkpoint(model, tmp_path / "b.safetensors", half=True)
    assert p16.stat().st_size < 0.6 * p32.stat().st_size
    x = torch.rand(1, 3, H, W)
    with torch.no_grad():
        a, b = model(x)["depth"], load_checkpoint(p16)(x)["depth"]
    assert (a - b).abs().max() <= 1e-2 * a.abs().max()


def test_bad_checkpoints_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_checkpoint(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_checkpoint(junk)


def test_pretrained_without_shipped_weights_says_where_it_looked(monkeypatch, tmp_path):
    import perception.nn.registry as registry

    monkeypatch.setattr(registry, "MODELS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="no shipped weights"):
        create_model("rep-n", pretrained=True)


def test_release_writes_the_fp16_train_form_only_and_checks_it_fused(tmp_path):
    from perception.nn.checkpoint import release_checkpoint

    model = create_model("rep-n")
    src = save_checkpoint(model, tmp_path / "run" / "rep-n.safetensors")
    report = release_checkpoint(src, tmp_path / "zoo", size=(64, 96))
    assert [p.name for p in (tmp_path / "zoo").iterdir()] == ["rep-n.safetensors"]  # one shipped form
    assert not load_checkpoint(tmp_path / "zoo" / "rep-n.safetensors").is_reparameterized
    assert report["files"]["train"]["bytes"] < 0.6 * src.stat().st_size  # fp16
    assert set(report["max_rel_error"]) == {"train", "fused"}  # the fused form is checked after loading
    assert all(v < 1e-2 for e in report["max_rel_error"].values() for v in e.values())
    fused = save_checkpoint(reparameterize_model(model), tmp_path / "fused.safetensors")
    with pytest.raises(ValueError, match="train form"):
        release_checkpoint(fused, tmp_path / "again")


def _shipped() -> list[str]:
    from perception.nn.registry import MODELS_DIR

    return sorted(n for n in list_models() if (MODELS_DIR / n / f"{n}.safetensors").is_file())


@pytest.mark.parametrize("name", _shipped() or [pytest.param("none", marks=pytest.mark.skip("no shipped weights"))])
def test_shipped_weights_load_offline_and_fuse_on_load(name):
    from perception.nn.registry import MODELS_DIR

    folder = MODELS_DIR / name
    assert (folder / "README.md").is_file() and (folder / f"{name}.safetensors").stat().st_size <= 30e6
    assert not list(folder.glob("*-fused.safetensors"))  # one shipped form: the fused one is derived on load
    train = create_model(name, pretrained=True)
    fused = reparameterize_model(train)
    assert not train.is_reparameterized and fused.is_reparameterized
    x = torch.rand(2, 3, 128, 224)
    K = torch.tensor([[180.0, 0, 112], [0, 180, 64], [0, 0, 1]]).expand(2, 3, 3)
    with torch.no_grad():
        a, b = train.eval()(x, K), fused(x, K)
    for k in ("depth", "det"):
        assert (a[k] - b[k]).abs().max() <= 1e-3 * a[k].abs().max()


def test_stride4_level_adds_its_anchors_and_detections():
    """rep-s-p2: a fourth level at stride 4, appended after 8/16/32 in the head's output."""
    model = create_model("rep-s-p2").eval()
    assert model.cfg.det_strides == (8, 16, 32, 4)
    out = model(torch.rand(1, 3, H, W), _k(1))
    anchors, strides = model.anchors(H, W)
    n3 = sum((H // s) * (W // s) for s in (8, 16, 32))
    assert out["det"].shape[1] == len(anchors) == n3 + (H // 4) * (W // 4)
    assert torch.all(strides[:n3] >= 8) and torch.all(strides[n3:] == 4)
    assert torch.allclose(anchors[n3], torch.tensor([2.0, 2.0]))        # first stride-4 cell centre
    with pytest.raises(ValueError, match="det_strides"):
        PerceptionNet(create_model("rep-n").cfg.__class__(det_strides=(8, 8)))


def test_init_from_a_model_with_fewer_levels(tmp_path):
    from perception.train.trainer import _load_init

    torch.manual_seed(0)
    small, big = create_model("rep-s"), create_model("rep-s-p2")
    fresh = {k: v.clone() for k, v in big.state_dict().items() if k.startswith("det_head.levels.3.")}
    _load_init(big, small, "rep-s")
    for k, v in small.state_dict().items():
        assert torch.equal(big.state_dict()[k], v), k
    assert all(torch.equal(big.state_dict()[k], v) for k, v in fresh.items())   # the new level stays fresh
    with pytest.raises(ValueError, match="not the first of this model's"):
        _load_init(small, big, "rep-s-p2")
    with pytest.raises(ValueError, match="does not fit"):
        _load_init(create_model("rep-s"), create_model("rep-n"), "rep-n")
