"""Efficient blocks (MobileNet dw-separable, ShuffleNet, SqueezeNet fire, MobileOne dw/pw) and
the models built from them: BN folds exactly, plain-graph variants are in the main registry,
shuffle/fire variants are kept out of it (their fused graphs need shuffle/concat/add)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from perception.nn import list_models, reparameterize_model
from perception.nn.backbone import BackboneConfig, RepBackbone
from perception.nn.efficient import EFFICIENT_BLOCKS, channel_shuffle
from perception.nn.zoo_efficient import EFFICIENT_WIDTHS, create_efficient_model, list_efficient_models
from perception.utils.profiling import count_flops
from tests.helpers import randomize_bn


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models on a shared, loaded 2-core machine: one thread is ~5x faster than two (no
    OpenMP barrier waits on a descheduled sibling thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("kind", sorted(EFFICIENT_BLOCKS))
@pytest.mark.parametrize("cin,cout,stride", [(16, 16, 1), (16, 32, 2), (24, 16, 1)])
def test_block_fuses_exactly_and_has_no_batchnorm(kind, cin, cout, stride):
    torch.manual_seed(0)
    block = randomize_bn(EFFICIENT_BLOCKS[kind](cin, cout, stride=stride)).eval()
    x = torch.randn(2, cin, 16, 16)
    fused = reparameterize_model(block)
    with torch.no_grad():
        a, b = block(x), fused(x)
    assert a.shape == (2, cout, 16 // stride, 16 // stride)
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())


def test_channel_shuffle_interleaves_groups():
    x = torch.arange(6.0).view(1, 6, 1, 1)
    assert channel_shuffle(x, 2).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_registry_split():
    models = list_models()
    assert "mbv1-n" in models and "mobileone-n" in models
    assert "shuffle-n" not in models and "squeeze-n" not in models
    assert set(list_efficient_models()) == {"mbv1-n", "mobileone-n", "shuffle-n", "squeeze-n"}


@pytest.mark.parametrize("name", ["shuffle-n", "squeeze-n"])
def test_side_registry_models_fuse_and_run(name):
    torch.manual_seed(0)
    model = randomize_bn(create_efficient_model(name)).eval()
    fused = reparameterize_model(model)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        a, b = model(x)["det"], fused(x)["det"]
    assert (a - b).abs().max() <= 1e-4 * a.abs().max()
    assert fused.is_reparameterized


def test_backbones_are_flop_matched_to_rep_n():
    x = torch.rand(1, 3, 64, 96)

    def flops(cfg: BackboneConfig) -> int:
        b = reparameterize_model(RepBackbone(cfg))
        with torch.no_grad():
            return count_flops(lambda: b(x))

    ref = flops(BackboneConfig(widths=(32, 32, 64, 128, 256), depths=(1, 2, 4, 1)))
    for name, (kind, widths) in EFFICIENT_WIDTHS.items():
        ratio = flops(BackboneConfig(widths=widths, depths=(1, 2, 4, 1), block=kind)) / ref
        assert 0.7 <= ratio <= 1.1, (name, ratio)
