"""Reparameterizable blocks: fused == train form, idempotence, freed branches, bad configs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from perception.nn import ConvBNAct, MobileOneBlock, QARepVGGBlock, RepVGGBlock, reparameterize_model
from perception.nn.reparam import identity_kernel, is_reparameterized
from tests.helpers import randomize_bn

CASES = [
    ("repvgg", lambda: RepVGGBlock(16, 16)),
    ("repvgg-stride2", lambda: RepVGGBlock(16, 32, stride=2)),
    ("repvgg-grouped", lambda: RepVGGBlock(16, 16, groups=4)),
    ("repvgg-grouped-stride2", lambda: RepVGGBlock(16, 32, stride=2, groups=8)),
    ("repvgg-depthwise", lambda: RepVGGBlock(16, 16, groups=16)),
    ("qarepvgg", lambda: QARepVGGBlock(16, 16)),
    ("qarepvgg-grouped-stride2", lambda: QARepVGGBlock(16, 32, stride=2, groups=4)),
    ("mobileone-k3", lambda: MobileOneBlock(16, 16, num_branches=3)),
    ("mobileone-depthwise", lambda: MobileOneBlock(16, 16, groups=16, num_branches=4)),
    ("mobileone-depthwise-stride2", lambda: MobileOneBlock(16, 16, stride=2, groups=16, num_branches=2)),
    ("mobileone-pointwise", lambda: MobileOneBlock(16, 24, kernel_size=1, num_branches=4)),
    ("convbnact", lambda: ConvBNAct(16, 24, 3, stride=2)),
]


@pytest.mark.parametrize("name,make", CASES, ids=[c[0] for c in CASES])
def test_block_fused_equals_train_form(name, make):
    torch.manual_seed(0)
    block = randomize_bn(make()).eval()
    x = torch.randn(2, 16, 19, 23)  # odd spatial size exercises padding/stride alignment
    with torch.no_grad():
        y_train = block(x.clone())
        fused = reparameterize_model(block)
        y_fused = fused(x.clone())
    assert y_fused.shape == y_train.shape
    assert (y_fused - y_train).abs().max() <= 1e-5 * y_train.abs().max()
    # the original stays in train form (inplace=False), the copy is one plain conv
    assert not block.is_reparameterized and fused.is_reparameterized
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].bias is not None
    assert sum(p.numel() for p in fused.parameters()) < sum(p.numel() for p in block.parameters())


@pytest.mark.parametrize("name,make", CASES[:3], ids=[c[0] for c in CASES[:3]])
def test_reparameterize_is_idempotent(name, make):
    block = randomize_bn(make()).eval()
    block.reparameterize()
    state = {k: v.clone() for k, v in block.state_dict().items()}
    block.reparameterize()
    reparameterize_model(block, inplace=True)
    assert state.keys() == block.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in block.state_dict().items())


def test_reparameterize_refuses_training_mode():
    block = RepVGGBlock(8, 8).train()
    with pytest.raises(RuntimeError, match="eval mode"):
        block.reparameterize()


def test_branch_parameters_are_freed():
    block = randomize_bn(RepVGGBlock(8, 8)).eval()
    block.reparameterize()
    names = {n for n, _ in block.named_parameters()}
    assert names == {"reparam_conv.weight", "reparam_conv.bias"}
    assert not hasattr(block, "rbr_dense") and not hasattr(block, "rbr_identity")


def test_identity_kernel_reproduces_input_grouped():
    x = torch.randn(1, 12, 7, 9)
    k = identity_kernel(12, 3, 3, x)
    y = nn.functional.conv2d(x, k, padding=1, groups=3)
    assert torch.allclose(x, y)


def test_identity_branch_only_when_shapes_allow():
    assert RepVGGBlock(8, 8).rbr_identity is not None
    assert RepVGGBlock(8, 16).rbr_identity is None
    assert RepVGGBlock(8, 8, stride=2).rbr_identity is None
    assert QARepVGGBlock(8, 8, stride=2).has_identity is False


def test_bad_groups_rejected():
    with pytest.raises(ValueError, match="divisible by groups"):
        RepVGGBlock(10, 10, groups=4)


def test_is_reparameterized_sees_stray_batchnorm():
    model = nn.Sequential(RepVGGBlock(4, 4), nn.BatchNorm2d(4)).eval()
    fused = reparameterize_model(model)
    assert fused[0].is_reparameterized
    assert not is_reparameterized(fused)  # the plain BatchNorm is still there
