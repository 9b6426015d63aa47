"""Checkpoints: safetensors files that carry the model config and the form they hold.

A checkpoint loads into the form it was saved from (train or fused); a train-form
checkpoint can be fused after loading with :func:`perception.nn.reparameterize_model`.
Shipped models are train-form files only: the fused form is derived on load in milliseconds.
This module does file I/O only; turning a model name into its shipped file is
:mod:`perception.nn.resolve`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from perception.nn.model import ModelConfig, PerceptionNet

FORMAT_VERSION = "1"


def model_from_config(config: dict[str, Any] | str, form: str = "train") -> PerceptionNet:
    """An untrained :class:`PerceptionNet` of a saved config (a dict or its JSON text, as model
    files store it) in ``form`` (``train`` or ``fused``), ready for ``load_state_dict``."""
    if form not in ("train", "fused"):
        raise ValueError(f"unknown model form {form!r}; expected 'train' or 'fused'")
    model = PerceptionNet(ModelConfig.from_dict(json.loads(config) if isinstance(config, str) else config))
    if form == "fused":
        model.reparameterize()
    return model


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
    model = model_from_config(meta["config"], meta.get("form", "train"))
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path}: weights do not match the saved config "
                         f"(missing {missing[:3]}..., unexpected {unexpected[:3]}...)")
    model.eval()
    return model


def release_checkpoint(src: str | os.PathLike, out_dir: str | os.PathLike, name: str | None = None,
                       size: tuple[int, int] = (256, 448), extra: dict[str, str] | None = None) -> dict:
    """Write the shipped file of a trained train-form checkpoint into ``out_dir``:
    ``<name>.safetensors``, train form, fp16 (the fused deploy form is derived from it on load).

    Returns the file size and how far the fp16 file's outputs are from the fp32 source on a
    random batch (max abs error relative to each output's scale), in the train form and fused
    after loading, so that a bad conversion (e.g. an fp16 overflow in a fused kernel) is caught
    before the file is shipped.
    """
    from perception.nn.reparam import reparameterize_model

    model = load_checkpoint(src)
    if model.is_reparameterized:
        raise ValueError(f"{src}: a fused checkpoint; the release needs the train form (the shipped form)")
    name = name or model.cfg.name
    path = Path(out_dir) / f"{name}.safetensors"
    save_checkpoint(model, path, half=True, extra={"source": Path(src).name, **(extra or {})})
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, *size, generator=gen)
    K = torch.tensor([[size[1] * 0.8, 0, size[1] / 2], [0, size[1] * 0.8, size[0] / 2], [0, 0, 1]]).expand(2, 3, 3)
    shipped = load_checkpoint(path)
    report: dict = {"files": {"train": {"path": str(path), "bytes": path.stat().st_size}}, "max_rel_error": {}}
    with torch.inference_mode():
        ref = model.eval()(x, K)
        for form, net in (("train", shipped), ("fused", reparameterize_model(shipped))):
            got = net(x, K)
            report["max_rel_error"][form] = {
                k: float((got[k] - ref[k]).abs().max() / ref[k].abs().max().clamp(min=1e-6)) for k in ref}
    bad = {f: e for f, e in report["max_rel_error"].items() if not all(v < 1e-2 and v == v for v in e.values())}
    if bad:
        raise ValueError(f"fp16 release deviates from the fp32 checkpoint: {bad}")
    return report


__all__ = ["save_checkpoint", "load_checkpoint", "model_from_config", "read_metadata", "release_checkpoint",
           "torch"]
