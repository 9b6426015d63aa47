"""Reparameterizable building blocks: ConvBNAct, RepVGGBlock, QARepVGGBlock, MobileOneBlock.

Each block trains with several branches and folds them into one ``nn.Conv2d`` with bias by
``reparameterize()`` (idempotent; the branch modules are deleted so their parameters are
freed). References:

* RepVGG: Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021.
* QARepVGG: Chu et al., "Make RepVGG Greater Again: A Quantization-aware Approach", AAAI 2023.
* MobileOne: Vasu et al., "MobileOne: An Improved One millisecond Mobile Backbone", CVPR 2023.
"""

from __future__ import annotations

import torch
from torch import nn

from perception.nn.reparam import fuse_conv_bn, identity_kernel, make_fused_conv, pad_kernel


def make_act(name: str | None) -> nn.Module:
    """Activation by name; ``None``/"none" gives Identity. In-place where safe (saves memory)."""
    if name is None or name == "none":
        return nn.Identity()
    if name == "relu":
        return nn.ReLU(inplace=True)
    if name == "silu":
        return nn.SiLU(inplace=True)
    if name == "relu6":
        return nn.ReLU6(inplace=True)
    raise ValueError(f"unknown activation {name!r} (expected relu, silu, relu6 or none)")


def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """conv (no bias) + BatchNorm, the unit every training-time branch is made of."""
    seq = nn.Sequential()
    seq.add_module("conv", nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False))
    seq.add_module("bn", nn.BatchNorm2d(cout))
    return seq


def _fuse_branch(branch: nn.Sequential) -> tuple[torch.Tensor, torch.Tensor]:
    return fuse_conv_bn(branch.conv.weight, branch.conv.bias, branch.bn)


class _ReparamBlock(nn.Module):
    """Shared plumbing: after ``reparameterize()`` the block is ``act(reparam_conv(x))``."""

    reparam_conv: nn.Conv2d | None

    def __init__(self) -> None:
        super().__init__()
        self.reparam_conv = None

    @property
    def is_reparameterized(self) -> bool:
        return self.reparam_conv is not None

    def _fused_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _branch_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def _reference_conv(self) -> nn.Conv2d:
        raise NotImplementedError

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold all branches into ``reparam_conv``; idempotent; frees the branch parameters."""
        if self.reparam_conv is not None:
            return
        if self.training:
            raise RuntimeError(f"{type(self).__name__}.reparameterize() needs eval mode (frozen BN statistics)")
        weight, bias = self._fused_kernel_bias()
        self.reparam_conv = make_fused_conv(self._reference_conv(), weight, bias)
        for name in self._branch_names():
            if hasattr(self, name):
                delattr(self, name)


class ConvBNAct(_ReparamBlock):
    """Plain ``act(bn(conv(x)))``; reparameterizing folds the BN into the conv."""

    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, groups: int = 1, act: str | None = "relu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.reparam_conv(x))
        return self.act(self.bn(self.conv(x)))

    def _fused_kernel_bias(self):
        return fuse_conv_bn(self.conv.weight, self.conv.bias, self.bn)

    def _branch_names(self):
        return ("conv", "bn")

    def _reference_conv(self):
        return self.conv


class RepVGGBlock(_ReparamBlock):
    """RepVGG: ``act(bn(conv3x3(x)) + bn(conv1x1(x)) + bn(x))``.

    The identity branch exists only when ``cin == cout`` and ``stride == 1``. Grouped and
    strided convolutions are supported; the fused form is one 3x3 conv with bias.
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, act: str | None = "relu",
                 use_identity: bool = True):
        super().__init__()
        if cin % groups or cout % groups:
            raise ValueError(f"channels {cin}->{cout} are not divisible by groups={groups}")
        self.cin, self.cout, self.stride, self.groups = cin, cout, stride, groups
        self.rbr_dense = conv_bn(cin, cout, 3, stride, groups)
        self.rbr_1x1 = conv_bn(cin, cout, 1, stride, groups)
        self.rbr_identity = nn.BatchNorm2d(cin) if (use_identity and cin == cout and stride == 1) else None
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.reparam_conv(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.act(out)

    def _fused_kernel_bias(self):
        w3, b3 = _fuse_branch(self.rbr_dense)
        w1, b1 = _fuse_branch(self.rbr_1x1)
        weight, bias = w3 + pad_kernel(w1, 3), b3 + b1
        if self.rbr_identity is not None:
            wid, bid = fuse_conv_bn(identity_kernel(self.cin, self.groups, 3, w3), None, self.rbr_identity)
            weight, bias = weight + wid, bias + bid
        return weight, bias

    def _branch_names(self):
        return ("rbr_dense", "rbr_1x1", "rbr_identity")

    def _reference_conv(self):
        return self.rbr_dense.conv


class QARepVGGBlock(_ReparamBlock):
    """Quantization-aware RepVGG: ``act(bn(bn3(conv3x3(x)) + conv1x1(x) + x))``.

    No BatchNorm on the 1x1 and identity branches and one BN after the sum: this keeps the
    fused weights' distribution well-behaved, which is what makes post-training INT8 work
    (plain RepVGG loses most of its accuracy under PTQ).
    """

    def __init__(self, cin: int, cout: int, stride: int = 1, groups: int = 1, act: str | None = "relu",
                 use_identity: bool = True):
        super().__init__()
        if cin % groups or cout % groups:
            raise ValueError(f"channels {cin}->{cout} are not divisible by groups={groups}")
        self.cin, self.cout, self.stride, self.groups = cin, cout, stride, groups
        self.rbr_dense = conv_bn(cin, cout, 3, stride, groups)
        self.rbr_1x1 = nn.Conv2d(cin, cout, 1, stride, 0, groups=groups, bias=False)
        self.has_identity = use_identity and cin == cout and stride == 1
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.reparam_conv(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.has_identity:
            out = out + x
        return self.act(self.bn(out))

    def _fused_kernel_bias(self):
        w3, b3 = _fuse_branch(self.rbr_dense)
        weight = w3 + pad_kernel(self.rbr_1x1.weight, 3)
        if self.has_identity:
            weight = weight + identity_kernel(self.cin, self.groups, 3, w3)
        return fuse_conv_bn(weight, b3, self.bn)

    def _branch_names(self):
        return ("rbr_dense", "rbr_1x1", "bn")

    def _reference_conv(self):
        return self.rbr_dense.conv


class MobileOneBlock(_ReparamBlock):
    """MobileOne: ``act(sum_k bn(conv_kxk(x)) + bn(conv1x1(x)) + bn(x))``.

    ``num_branches`` over-parameterised kxk conv+BN branches, a 1x1 "scale" branch when
    k > 1, and a BN skip when shapes allow. ``groups=cin`` gives the depthwise form, ``k=1``
    the pointwise form.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, stride: int = 1, groups: int = 1,
                 num_branches: int = 1, act: str | None = "relu", use_identity: bool = True):
        super().__init__()
        if cin % groups or cout % groups:
            raise ValueError(f"channels {cin}->{cout} are not divisible by groups={groups}")
        if num_branches < 1:
            raise ValueError("MobileOneBlock needs num_branches >= 1")
        self.cin, self.cout, self.k, self.stride, self.groups = cin, cout, kernel_size, stride, groups
        self.rbr_conv = nn.ModuleList(conv_bn(cin, cout, kernel_size, stride, groups) for _ in range(num_branches))
        self.rbr_scale = conv_bn(cin, cout, 1, stride, groups) if kernel_size > 1 else None
        self.rbr_skip = nn.BatchNorm2d(cin) if (use_identity and cin == cout and stride == 1) else None
        self.act = make_act(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.reparam_conv is not None:
            return self.act(self.reparam_conv(x))
        out = self.rbr_skip(x) if self.rbr_skip is not None else 0
        if self.rbr_scale is not None:
            out = out + self.rbr_scale(x)
        for branch in self.rbr_conv:
            out = out + branch(x)
        return self.act(out)

    def _fused_kernel_bias(self):
        weight = bias = 0
        for branch in self.rbr_conv:
            w, b = _fuse_branch(branch)
            weight, bias = weight + w, bias + b
        if self.rbr_scale is not None:
            w, b = _fuse_branch(self.rbr_scale)
            weight, bias = weight + pad_kernel(w, self.k), bias + b
        if self.rbr_skip is not None:
            like = self.rbr_conv[0].conv.weight
            w, b = fuse_conv_bn(identity_kernel(self.cin, self.groups, self.k, like), None, self.rbr_skip)
            weight, bias = weight + w, bias + b
        return weight, bias

    def _branch_names(self):
        return ("rbr_conv", "rbr_scale", "rbr_skip")

    def _reference_conv(self):
        return self.rbr_conv[0].conv


BLOCKS: dict[str, type[nn.Module]] = {
    "repvgg": RepVGGBlock,
    "qarepvgg": QARepVGGBlock,
    "mobileone": MobileOneBlock,
}


def make_block(kind: str, cin: int, cout: int, stride: int = 1, groups: int = 1, act: str | None = "relu") -> nn.Module:
    """The 3x3 reparameterizable block of a given kind (the unit backbones and necks stack)."""
    try:
        cls = BLOCKS[kind]
    except KeyError:
        raise ValueError(f"unknown block kind {kind!r}; known: {sorted(BLOCKS)}") from None
    return cls(cin, cout, stride=stride, groups=groups, act=act)
