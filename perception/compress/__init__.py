"""Model compression: Deep Compression, lottery tickets, MorphNet channel pruning, binary weights,
distillation (``perception compress``).

Importing this package registers the compressed model file formats (``.pdc``, binary and
channel-pruned safetensors) with :func:`perception.nn.resolve_model` (``nn`` sits below
``compress`` and never imports it; the command line imports ``perception.compress``).
"""

from perception.compress import formats as _formats  # noqa: F401  (registers the compressed model formats)
