"""The model files written by ``perception compress``, registered with
:func:`perception.nn.resolve_model` so that every ``--model`` option reads them:

* ``deep-compression``: ``.pdc`` files (magic ``PDC1``), :func:`perception.compress.deep_compression.load_compressed`;
* ``perception-binary``: safetensors with packed sign bits, :func:`perception.compress.binarize.load_binary`;
* ``perception-pruned``: channel-pruned safetensors, :func:`perception.compress.morphnet.load_pruned`.

``nn`` sits below ``compress`` and never imports it; importing :mod:`perception.compress` runs this
registration. The method modules are imported only when such a file is loaded (they pull in the
training code and torch-pruning, which resolving a plain checkpoint does not need).
"""

from __future__ import annotations

from pathlib import Path

from perception.nn.model import PerceptionNet
from perception.nn.resolve import ModelFile, register_model_format

PDC_MAGIC = b"PDC1"
BINARY_FORMAT = "perception-binary"
PRUNED_FORMAT = "perception-pruned"


def _load_pdc(path: Path) -> PerceptionNet:
    from perception.compress.deep_compression import load_compressed

    return load_compressed(path)


def _load_binary(path: Path) -> PerceptionNet:
    from perception.compress.binarize import load_binary

    return load_binary(path)


def _load_pruned(path: Path) -> PerceptionNet:
    from perception.compress.morphnet import load_pruned

    return load_pruned(path)


def _is_pdc(f: ModelFile) -> bool:
    return f.suffix == ".pdc" or f.head.startswith(PDC_MAGIC)


register_model_format("deep-compression", _is_pdc, _load_pdc)
register_model_format(BINARY_FORMAT, lambda f: f.declared_format == BINARY_FORMAT, _load_binary)
register_model_format(PRUNED_FORMAT, lambda f: f.declared_format == PRUNED_FORMAT, _load_pruned)
