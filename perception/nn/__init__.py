"""Neural networks: reparameterizable blocks, the PerceptionNet family and its registry.

Public API (DESIGN.md section 5): :func:`list_models`, :func:`create_model`,
:func:`resolve_model` (a ``--model`` name or file -> network), :func:`reparameterize_model`,
:class:`PerceptionNet` (``forward``, ``predict``).

Inside the package dependencies run one way: blocks/model -> registry (names and configs) and
checkpoint (file I/O) -> zoo modules (register configs) -> resolve (``create_model``,
``resolve_model``, the model file formats).
"""

from perception.nn.blocks import ConvBNAct, MobileOneBlock, QARepVGGBlock, RepVGGBlock, make_block
from perception.nn.checkpoint import load_checkpoint, model_from_config, save_checkpoint
from perception.nn.model import ModelConfig, PerceptionNet
from perception.nn.postprocess import Detections
from perception.nn.registry import get_config, list_models, register_model
from perception.nn.reparam import is_reparameterized, reparameterize_model
from perception.nn.resolve import (ModelLoadError, ModelSource, create_model, list_model_formats, load_model_file,
                                   register_model_format, resolve_model)

__all__ = [
    "ConvBNAct", "Detections", "MobileOneBlock", "ModelConfig", "ModelLoadError", "ModelSource", "PerceptionNet",
    "QARepVGGBlock", "RepVGGBlock", "create_model", "get_config", "is_reparameterized", "list_model_formats",
    "list_models", "load_checkpoint", "load_model_file", "make_block", "model_from_config", "register_model",
    "register_model_format", "reparameterize_model", "resolve_model", "save_checkpoint",
]
