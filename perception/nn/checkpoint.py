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


__all__ = ["save_checkpoint", "load_checkpoint", "read_metadata", "shipped_checkpoint", "torch"]
