"""`--model` resolution (perception.nn.resolve_model): registered names, every model file format,
clear errors, `perception run` / `perception export` on a `.pdc` file, and the layering of
`perception.nn` (no import of perception.compress, no import cycle inside the package)."""

from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

import perception.nn.registry as registry
import perception.nn.resolve as resolve
from perception.cli import app
from perception.compress import binarize, deep_compression, morphnet
from perception.compress.common import TINY_OVERRIDES
from perception.nn import (ModelLoadError, create_model, list_model_formats, list_models, load_checkpoint,
                           reparameterize_model, resolve_model, save_checkpoint)
from tests.helpers import randomize_bn

ROOT = Path(__file__).resolve().parents[1]
NN = ROOT / "perception" / "nn"
SIZE = (64, 96)


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return randomize_bn(create_model("rep-n", **TINY_OVERRIDES), seed=seed).eval()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def pdc(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A tiny fused model, pruned and 4-bit shared, as a Deep Compression file."""
    model = reparameterize_model(_tiny())
    masks = deep_compression.prune_layers(model, 0.5, 64)
    path = tmp_path_factory.mktemp("pdc") / "tiny.pdc"
    deep_compression.encode_model(model, path, 4, masks)
    return path, model


# ----------------------------------------------------------------------------- names
def test_registered_name_gives_its_shipped_train_form():
    model = resolve_model("rep-n")
    src = model.source
    assert (src.name, src.format, src.trained, str(src)) == ("rep-n", "registered", True, "rep-n")
    assert src.path == registry.MODELS_DIR / "rep-n" / "rep-n.safetensors"
    assert not model.training and not model.is_reparameterized
    assert _same_weights(model, load_checkpoint(src.path))


def test_name_without_shipped_weights_needs_random_weights(monkeypatch, caplog):
    monkeypatch.setattr(registry, "MODELS_DIR", Path("/nonexistent-models"))
    with pytest.raises(ModelLoadError, match="no shipped weights") as err:
        resolve_model("rep-n")
    assert err.value.spec == "rep-n" and "random weights" in err.value.reason
    rng = torch.random.get_rng_state()
    with caplog.at_level(logging.WARNING, logger="perception.nn.resolve"):
        a = resolve_model("rep-n", random_weights=True)
    assert "RANDOM weights" in caplog.text
    assert torch.equal(rng, torch.random.get_rng_state())  # the caller's random stream is untouched
    assert not a.source.trained and str(a.source) == "rep-n (random weights)" and a.source.path is None
    assert _same_weights(a, resolve_model("rep-n", random_weights=True))  # seeded: the same graph every time


def test_unknown_name_lists_the_registered_models():
    with pytest.raises(ModelLoadError, match="unknown model") as err:
        resolve_model("rep-xxl")
    assert all(name in str(err.value) for name in list_models())


# ----------------------------------------------------------------------------- files
def test_plain_checkpoint_path_in_both_forms(tmp_path):
    model = _tiny()
    for form, net in (("train", model), ("fused", reparameterize_model(model))):
        path = save_checkpoint(net, tmp_path / f"{form}.safetensors")
        loaded = resolve_model(path)  # a Path or a str
        assert loaded.source.name == form and loaded.source.format == "perception" and str(loaded.source) == str(path)
        assert loaded.is_reparameterized == (form == "fused") and _same_weights(loaded, net)
    assert _same_weights(create_model("rep-n", pretrained=tmp_path / "train.safetensors"), model)


def test_deep_compression_file(pdc):
    path, model = pdc
    loaded = resolve_model(str(path))
    assert loaded.source.format == "deep-compression" and loaded.source.name == "tiny" and loaded.is_reparameterized
    assert _same_weights(loaded, model)


def test_binary_file(tmp_path):
    model = binarize.binarize_model(_tiny(), "bwn")
    path = binarize.save_binary(model, tmp_path / "model.safetensors")
    loaded = resolve_model(path)
    assert loaded.source.format == "perception-binary"
    n = sum(isinstance(m, binarize.BinaryConv2d) for m in model.modules())
    assert n > 0 and sum(isinstance(m, binarize.BinaryConv2d) for m in loaded.modules()) == n
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        assert torch.allclose(loaded(x)["det"], binarize.load_binary(path)(x)["det"])


def test_channel_pruned_file(tmp_path):
    model = _tiny()
    before = sum(p.numel() for p in model.parameters())
    morphnet.prune_to_counts(model, SIZE, lambda j, g: list(range(max(2, len(g[0][1]) // 2))))
    assert sum(p.numel() for p in model.parameters()) < 0.7 * before
    path = morphnet.save_pruned(model, tmp_path / "shrunk.safetensors")
    loaded = resolve_model(path)
    assert loaded.source.format == "perception-pruned" and _same_weights(loaded, model)
    x = torch.rand(1, 3, *SIZE)
    with torch.no_grad():
        assert torch.allclose(loaded(x)["det"], model(x)["det"])


def test_file_errors_name_the_path_and_the_reason(tmp_path):
    missing = tmp_path / "missing.safetensors"
    with pytest.raises(ModelLoadError, match="file not found") as err:
        resolve_model(missing)
    assert err.value.spec == str(missing) and str(missing) in str(err.value)
    with pytest.raises(ModelLoadError, match="not a file"):
        resolve_model(tmp_path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelLoadError, match="not a readable safetensors file"):
        resolve_model(junk)
    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "someone-else"})
    with pytest.raises(ModelLoadError, match="unknown format 'someone-else'"):
        resolve_model(other)
    (tmp_path / "bad.pdc").write_bytes(b"nope")
    with pytest.raises(ModelLoadError, match="not a PDC1"):
        resolve_model(tmp_path / "bad.pdc")
    broken = tmp_path / "broken.safetensors"  # a perception checkpoint whose weights do not fit its config
    save_file({"w": torch.zeros(2)}, str(broken), metadata={"format": "perception", "config": json.dumps(
        _tiny().cfg.to_dict()), "form": "train"})
    with pytest.raises(ModelLoadError, match="cannot load as a perception file: weights do not match"):
        resolve_model(broken)


def test_known_format_without_its_loader_says_what_to_import(pdc, tmp_path, monkeypatch):
    binary = binarize.save_binary(binarize.binarize_model(_tiny(), "bwn"), tmp_path / "b.safetensors")
    assert {"deep-compression", "perception-binary", "perception-pruned"} <= set(list_model_formats())
    monkeypatch.setattr(resolve, "_FORMATS", {"perception": resolve._FORMATS["perception"]})  # as before the import
    for path, kind in ((pdc[0], ".pdc"), (binary, "perception-binary")):
        with pytest.raises(ModelLoadError, match=f"a {kind} model file.*`import perception.compress`"):
            resolve_model(path)


# ----------------------------------------------------------------------------- commands
def _clip(path: Path, frames: int = 3) -> Path:
    w, h = SIZE[1], SIZE[0]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    rng = np.random.default_rng(0)
    for _ in range(frames):
        vw.write(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
    vw.release()
    return path


def test_run_and_export_take_a_pdc_file(pdc, tmp_path):
    path, model = pdc
    runner = CliRunner()
    r = runner.invoke(app, ["run", "--source", str(_clip(tmp_path / "v.mp4")), "--model", str(path),
                            "--size", "64x96", "--no-render", "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["model"] == "tiny" and summary["frames"] == 3  # the file stem, as for any model file
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from perception.deploy.export import model_hash, read_metadata

    out = tmp_path / "tiny.onnx"
    r = runner.invoke(app, ["export", "--model", str(path), "--size", "64x96", "--out", str(out), "--no-simplify"])
    assert r.exit_code == 0, r.output
    meta = read_metadata(out)
    assert meta["perception.model_hash"] == model_hash(model) and meta["perception.pretrained"] == "true"


def test_eval_turns_resolver_errors_into_one_line(tmp_path):
    r = CliRunner().invoke(app, ["eval", "--model", str(tmp_path / "missing.pdc"), "--dataset", "synth",
                                 "--out", str(tmp_path / "ev")])
    assert r.exit_code == 1 and "file not found" in r.output and "Traceback" not in r.output


# ----------------------------------------------------------------------------- layering
def _nn_imports() -> dict[str, set[str]]:
    """Every perception.* module each perception/nn module imports, at any depth of its code."""
    out = {}
    for f in sorted(NN.glob("*.py")):
        mod = "perception.nn" if f.stem == "__init__" else f"perception.nn.{f.stem}"
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from perception.nn import x` names the submodule x when there is one
                deps |= {f"{node.module}.{a.name}" if (NN / f"{a.name}.py").is_file() and node.module == "perception.nn"
                         else node.module for a in node.names}
        out[mod] = {d for d in deps if d.startswith("perception")}
    return out


def test_nn_never_imports_compress():
    bad = {m: sorted(d for d in deps if d.startswith("perception.compress")) for m, deps in _nn_imports().items()}
    assert not any(bad.values()), bad
    code = ("import sys; import perception.nn as nn; nn.resolve_model('rep-n');"
            "print(sorted(m for m in sys.modules if m.startswith('perception.compress')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert loaded.stdout.strip() == "[]"


def test_no_import_cycle_inside_nn():
    graph = {m: {d for d in deps if d.startswith("perception.nn.")} for m, deps in _nn_imports().items()
             if m != "perception.nn"}  # the package __init__ only re-exports; no submodule imports it
    assert not any("perception.nn" in deps for deps in _nn_imports().values()), "a submodule imports the package"
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> None:
        if state.get(m) == 1:
            raise AssertionError(f"import cycle: {' -> '.join(path + [m])}")
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            visit(d, path + [m])
        state[m] = 2

    for m in graph:
        visit(m, [])
