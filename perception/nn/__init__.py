"""Neural networks: reparameterizable blocks, the PerceptionNet family and its registry.

Public API (DESIGN.md section 5): :func:`list_models`, :func:`create_model`,
:func:`reparameterize_model`, :class:`PerceptionNet` (``forward``, ``predict``).
"""

from perception.nn.blocks import ConvBNAct, MobileOneBlock, QARepVGGBlock, RepVGGBlock, make_block
from perception.nn.checkpoint import load_checkpoint, save_checkpoint
from perception.nn.model import ModelConfig, PerceptionNet
from perception.nn.postprocess import Detections
from perception.nn.registry import create_model, get_config, list_models, register_model
from perception.nn.reparam import is_reparameterized, reparameterize_model

__all__ = [
    "ConvBNAct", "Detections", "MobileOneBlock", "ModelConfig", "PerceptionNet", "QARepVGGBlock", "RepVGGBlock",
    "create_model", "get_config", "is_reparameterized", "list_models", "load_checkpoint", "make_block",
    "register_model", "reparameterize_model", "save_checkpoint",
]
