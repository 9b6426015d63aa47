"""Structural reparameterization: fold BatchNorm and parallel branches into one conv.

A *reparameterizable* module implements ``reparameterize()``: it replaces its training-time
branches by a single ``nn.Conv2d`` with bias and frees the branch parameters. The call is
idempotent (a second call does nothing). :func:`reparameterize_model` applies it to every
such module of a network, giving the deploy form (timm's ``reparameterize_model`` contract).
"""

from __future__ import annotations

import copy
import logging
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


@runtime_checkable
class Reparameterizable(Protocol):
    def reparameterize(self) -> None: ...

    @property
    def is_reparameterized(self) -> bool: ...


def fuse_conv_bn(weight: torch.Tensor | None, bias: torch.Tensor | None, bn: nn.BatchNorm2d | None,
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm into the preceding conv's weight and bias.

    ``bn(conv(x)) = gamma * (W*x + b - mean) / sqrt(var + eps) + beta``. With ``bn=None`` the
    weight/bias are returned unchanged (bias zero if absent).
    """
    if weight is None:
        raise ValueError("fuse_conv_bn needs a weight")
    if bias is None:
        bias = torch.zeros(weight.shape[0], dtype=weight.dtype, device=weight.device)
    if bn is None:
        return weight, bias
    std = (bn.running_var + bn.eps).sqrt()
    gamma = bn.weight if bn.affine else torch.ones_like(std)
    beta = bn.bias if bn.affine else torch.zeros_like(std)
    scale = gamma / std
    return weight * scale.reshape(-1, 1, 1, 1), beta + (bias - bn.running_mean) * scale


def identity_kernel(channels: int, groups: int, kernel_size: int, like: torch.Tensor) -> torch.Tensor:
    """The conv kernel (``[C, C/groups, k, k]``) that reproduces its input (identity branch)."""
    in_per_group = channels // groups
    kernel = torch.zeros(channels, in_per_group, kernel_size, kernel_size, dtype=like.dtype, device=like.device)
    centre = kernel_size // 2
    idx = torch.arange(channels, device=like.device)
    kernel[idx, idx % in_per_group, centre, centre] = 1.0
    return kernel


def pad_kernel(kernel: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Zero-pad a smaller square kernel (e.g. 1x1) to ``kernel_size`` around its centre."""
    pad = (kernel_size - kernel.shape[-1]) // 2
    return F.pad(kernel, [pad, pad, pad, pad]) if pad > 0 else kernel


def make_fused_conv(reference: nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    """A plain conv with ``reference``'s geometry holding the fused weight and bias."""
    conv = nn.Conv2d(reference.in_channels, reference.out_channels, reference.kernel_size, reference.stride,
                     reference.padding, reference.dilation, reference.groups, bias=True,
                     device=weight.device, dtype=weight.dtype)
    conv.weight.data.copy_(weight.detach())
    conv.bias.data.copy_(bias.detach())
    return conv


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Return the deploy (fused) form of ``model``: every reparameterizable module fused.

    Puts the model in eval mode (BatchNorm statistics must be frozen to fold them). With
    ``inplace=False`` (default) the input model is left untouched. Idempotent.
    """
    if not inplace:
        model = copy.deepcopy(model)
    model.eval()
    count = 0
    # Fuse the deepest modules first so a container's reparameterize() sees fused children.
    # A container (e.g. PerceptionNet) may itself call reparameterize_model(self, inplace=True):
    # by the time the loop reaches it, its children are fused and it reports itself fused.
    for module in reversed(list(model.modules())):
        if isinstance(module, Reparameterizable) and not module.is_reparameterized:
            module.reparameterize()
            count += 1
    log.debug("reparameterized %d modules", count)
    return model


def is_reparameterized(model: nn.Module) -> bool:
    """True when no module of ``model`` still has training-time branches or BatchNorm."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            return False
        if module is not model and isinstance(module, Reparameterizable) and not module.is_reparameterized:
            return False
    return True
