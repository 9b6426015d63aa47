"""From a ``--model`` spec to a network: :func:`resolve_model`, the one way every command does it.

A spec is a registered model name (its shipped weights, ``models/<name>/<name>.safetensors``) or
a model file in any registered format. Formats register like pipeline backends do
(:func:`register_model_format`): ``nn`` registers its own checkpoint (:mod:`perception.nn.checkpoint`);
the compressed formats (Deep Compression ``.pdc``, binary and channel-pruned safetensors) register
when :mod:`perception.compress` is imported. Higher layers register into this one; ``nn`` never
imports them, so a file whose format is known but not registered gets an error naming the module
to import (the command line imports it).

This module also holds :func:`create_model` (registry config -> network, optionally with shipped
weights): it sits above both the registry and the checkpoint I/O, which know nothing of each other.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

import perception.nn.zoo  # noqa: F401  (registers rep-*, qarep-*, rep-s-p2)
import perception.nn.zoo_efficient  # noqa: F401  (registers mbv1-n, mobileone-n)
import perception.nn.registry as registry
from perception.nn.checkpoint import load_checkpoint, read_metadata
from perception.nn.model import PerceptionNet

log = logging.getLogger(__name__)

# Formats whose loaders live above ``nn``, by how a file declares them (safetensors ``format``
# metadata, or the file suffix) -> the module whose import registers them (named in the error).
EXTERNAL_FORMATS: dict[str, str] = {
    ".pdc": "perception.compress",
    "perception-binary": "perception.compress",
    "perception-pruned": "perception.compress",
}


class ModelLoadError(ValueError):
    """A ``--model`` spec that gives no network: unknown name, missing or unreadable file."""

    def __init__(self, spec: str | os.PathLike, reason: str) -> None:
        self.spec, self.reason = str(spec), reason
        super().__init__(f"{spec}: {reason}")


@dataclass(frozen=True)
class ModelSource:
    """Where a resolved network came from (``model.source``). ``str()`` is the description that
    commands print and evaluation reports name the model by."""

    name: str                 # registered name, or the file's stem (what run/export outputs call it)
    format: str               # "registered" or the file format ("perception", "deep-compression", ...)
    path: Path | None = None  # the file read (shipped weights or the given file); None for random weights
    trained: bool = True      # False: random weights (random_weights=True and nothing shipped)

    def __str__(self) -> str:
        if self.format == "registered":
            return self.name if self.trained else f"{self.name} (random weights)"
        return str(self.path)


@dataclass(frozen=True)
class ModelFile:
    """What a format's ``matches`` sees of a file: its suffix, first bytes and safetensors metadata."""

    path: Path
    head: bytes                          # the first 8 bytes (magic numbers)
    metadata: dict[str, str] | None      # safetensors header metadata; None when not a safetensors file
    error: str = ""                      # why the safetensors header could not be read

    @property
    def suffix(self) -> str:
        return self.path.suffix.lower()

    @property
    def declared_format(self) -> str | None:
        """The ``format`` metadata of a safetensors file (``perception``, ``perception-binary``, ...)."""
        return (self.metadata or {}).get("format")

    @classmethod
    def read(cls, path: Path) -> "ModelFile":
        with open(path, "rb") as f:
            head = f.read(8)
        try:
            return cls(path, head, read_metadata(path))
        except Exception as exc:  # noqa: BLE001 - any failure means "not a safetensors file"
            return cls(path, head, None, str(exc))


@dataclass(frozen=True)
class ModelFormat:
    name: str
    matches: Callable[[ModelFile], bool]
    load: Callable[[Path], PerceptionNet]


_FORMATS: dict[str, ModelFormat] = {}


def register_model_format(name: str, matches: Callable[[ModelFile], bool],
                          load: Callable[[Path], PerceptionNet]) -> None:
    """Add a model file format: ``matches(ModelFile) -> bool`` recognises a file, ``load(path)``
    returns the network in eval mode. Registering a name again replaces it (module reloads)."""
    _FORMATS[name] = ModelFormat(name, matches, load)


def list_model_formats() -> list[str]:
    """The registered model file formats (the compressed ones once ``perception.compress`` is imported)."""
    return sorted(_FORMATS)


register_model_format("perception", lambda f: f.declared_format == "perception", load_checkpoint)


def _strip(message: str, path: Path) -> str:
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def load_model_file(path: str | os.PathLike) -> PerceptionNet:
    """The network in a model file of any registered format (eval mode); ``model.source`` says
    where it came from. Raises :class:`ModelLoadError` with the path and the reason."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(path, "file not found")
    if not path.is_file():
        raise ModelLoadError(path, "not a file")
    try:
        info = ModelFile.read(path)
    except OSError as exc:
        raise ModelLoadError(path, f"unreadable ({exc.strerror or exc})") from None
    fmt = next((f for f in _FORMATS.values() if f.matches(info)), None)
    if fmt is None:
        raise ModelLoadError(path, _unmatched_reason(info))
    try:
        model = fmt.load(path)
    except Exception as exc:  # noqa: BLE001 - a loader's failure is this file's problem, said with its path
        raise ModelLoadError(path, f"cannot load as a {fmt.name} file: {_strip(str(exc), path)}") from exc
    model.source = ModelSource(path.stem, fmt.name, path)
    return model.eval()


def _unmatched_reason(info: ModelFile) -> str:
    declared = info.declared_format or info.suffix
    if declared in EXTERNAL_FORMATS:
        module = EXTERNAL_FORMATS[declared]
        return f"a {declared} model file, whose loader is registered by `import {module}` (not imported)"
    formats = ", ".join(list_model_formats())
    if info.metadata is not None:
        return f"safetensors file of unknown format {info.declared_format!r} (registered formats: {formats})"
    if info.suffix == ".safetensors":
        return f"not a readable safetensors file ({info.error})"
    return f"not a model file of a registered format ({formats})"


def shipped_checkpoint(name: str) -> Path:
    """The shipped weights of a registered model: ``models/<name>/<name>.safetensors`` (train form;
    fuse with :func:`perception.nn.reparameterize_model`). FileNotFoundError if none is shipped."""
    if name not in registry.list_models():
        raise ValueError(f"unknown model {name!r}; registered models: {', '.join(registry.list_models())}")
    path = registry.MODELS_DIR / name / f"{name}.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"no shipped weights for {name!r} in {path.parent} (trained models are listed in "
                                f"{registry.MODELS_DIR}/README.md; pass a checkpoint path for your own weights)")
    return path


def create_model(name: str, pretrained: bool | str | os.PathLike = False, **overrides: Any) -> PerceptionNet:
    """Build a registered model (timm-style).

    ``pretrained=True`` loads the weights shipped in ``models/<name>/`` (train form, no network
    access); a path loads that file (its saved config wins over ``name``). Overrides replace fields
    of :class:`~perception.nn.model.ModelConfig` (e.g. ``classes=("car",)``, ``f_ref=700.0``).
    """
    if pretrained is True:
        return load_checkpoint(shipped_checkpoint(name))
    if pretrained:
        return load_model_file(pretrained)
    return PerceptionNet(registry.get_config(name, **overrides))


def resolve_model(spec: str | os.PathLike, *, random_weights: bool = False) -> PerceptionNet:
    """The network a ``--model`` spec names, in eval mode, with ``model.source`` (a :class:`ModelSource`).

    ``spec`` is a registered name (its shipped weights) or a model file of a registered format. A
    name without shipped weights is an error unless ``random_weights`` (then: seeded random
    weights and a warning; graph and speed are representative, outputs are not). Every failure is
    a :class:`ModelLoadError` saying which spec and why.
    """
    text = str(spec)
    names = registry.list_models()
    if text in names:
        try:
            path = shipped_checkpoint(text)
        except FileNotFoundError as exc:
            if not random_weights:
                raise ModelLoadError(text, f"no shipped weights (looked for {registry.MODELS_DIR / text}/"
                                           f"{text}.safetensors); pass a checkpoint file, or allow random "
                                           "weights (e.g. --random-weights)") from exc
            log.warning("%s has no shipped weights: using RANDOM weights (graph and speed are representative, "
                        "outputs are meaningless)", text)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = create_model(text)
            model.source = ModelSource(text, "registered", trained=False)
            return model.eval()
        try:
            model = load_checkpoint(path)
        except (ValueError, OSError) as exc:
            raise ModelLoadError(text, f"shipped weights unreadable: {exc}") from exc
        model.source = ModelSource(text, "registered", path)
        return model.eval()
    path = Path(text)
    if not path.exists() and not path.suffix and len(path.parts) == 1:  # looks like a name, not a file
        raise ModelLoadError(text, f"unknown model: neither a registered model ({', '.join(names)}) nor a model file")
    return load_model_file(path)


__all__ = ["EXTERNAL_FORMATS", "ModelFile", "ModelFormat", "ModelLoadError", "ModelSource", "create_model",
           "list_model_formats", "load_model_file", "register_model_format", "resolve_model", "shipped_checkpoint"]
