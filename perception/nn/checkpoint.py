"""Checkpoints: safetensors files that carry the model config and the form they hold.

A checkpoint loads into the form it was saved from (train or fused); a train-form
checkpoint can be fused after loading with :func:`perception.nn.reparameterize_model`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from perception.nn.model import ModelConfig, PerceptionNet

FORMAT_VERSION = "1"


def save_checkpoint(model: PerceptionNet, path: str | os.PathLike, half: bool = False,
                    extra: dict[str, str] | None = None) -> Path:
    """Save weights + config; ``half=True`` stores fp16 (shipped models), floats otherwise as is."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().contiguous()
        if half and v.is_floating_point():
            v = v.half()
        state[k] = v
    meta = {"format": "perception", "format_version": FORMAT_VERSION, "config": json.dumps(model.cfg.to_dict()),
            "form": "fused" if model.is_reparameterized else "train"}
    meta.update(extra or {})
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written checkpoint
    return path


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_checkpoint(path: str | os.PathLike, map_location: str = "cpu") -> PerceptionNet:
    """Build the model described in the file, in the form it was saved from, with its weights."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        meta = read_metadata(path)
        state = load_file(str(path), device=map_location)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a readable safetensors checkpoint ({exc})") from None
    if meta.get("format") != "perception" or "config" not in meta:
        raise ValueError(f"{path}: not a perception checkpoint (missing 'config' metadata)")
    model = PerceptionNet(ModelConfig.from_dict(json.loads(meta["config"])))
    if meta.get("form") == "fused":
        model.reparameterize()
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the saved config "
                         f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)")
    model.eval()
    return model


def shipped_checkpoint(name: str) -> Path:
    """Path of the shipped checkpoint of a registered model (``models/<name>/``)."""
    from perception.nn.registry import MODELS_DIR, list_models

    if name not in list_models():
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    folder = MODELS_DIR / name
    for candidate in (folder / f"{name}.safetensors", folder / f"{name}-fused.safetensors"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"no shipped weights for {name!r} in {folder} (trained models are listed in "
                            f"{MODELS_DIR}/README.md; pass pretrained=PATH for your own checkpoint)")


def release_checkpoint(src: str | os.PathLike, out_dir: str | os.PathLike, name: str | None = None,
                       size: tuple[int, int] = (256, 448), extra: dict[str, str] | None = None) -> dict:
    """Write the shipped pair of a trained train-form checkpoint into ``out_dir``:
    ``<name>.safetensors`` (train form) and ``<name>-fused.safetensors`` (deploy form), both fp16.

    Returns the file sizes and how far each fp16 file's outputs are from the fp32 source on a
    random batch (max abs error relative to each output's scale), so that a bad conversion
    (e.g. an fp16 overflow in a fused kernel) is caught before the files are shipped.
    """
    from perception.nn.reparam import reparameterize_model

    model = load_checkpoint(src)
    if model.is_reparameterized:
        raise ValueError(f"{src}: a fused checkpoint; the release needs the train form (both forms are shipped)")
    name = name or model.cfg.name
    out = Path(out_dir)
    files = {"train": out / f"{name}.safetensors", "fused": out / f"{name}-fused.safetensors"}
    meta = {"source": Path(src).name, **(extra or {})}
    save_checkpoint(model, files["train"], half=True, extra=meta)
    save_checkpoint(reparameterize_model(model), files["fused"], half=True, extra=meta)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, *size, generator=gen)
    K = torch.tensor([[size[1] * 0.8, 0, size[1] / 2], [0, size[1] * 0.8, size[0] / 2], [0, 0, 1]]).expand(2, 3, 3)
    with torch.inference_mode():
        ref = model.eval()(x, K)
        report: dict = {"files": {}, "max_rel_error": {}}
        for form, path in files.items():
            got = load_checkpoint(path)(x, K)
            report["files"][form] = {"path": str(path), "bytes": path.stat().st_size}
            report["max_rel_error"][form] = {
                k: float((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp(min=1e-6)) for k in ref}
    bad = {f: e for f, e in report["max_rel_error"].items() if not all(v < 1e-2 and v == v for v in e.values())}
    if bad:
        raise ValueError(f"fp16 release deviates from the fp32 checkpoint: {bad}")
    return report


__all__ = ["save_checkpoint", "load_checkpoint", "read_metadata", "shipped_checkpoint", "release_checkpoint",
           "torch"]
