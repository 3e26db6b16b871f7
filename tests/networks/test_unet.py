"""UNet: outputs per mode, nnU-Net's initialisation and bias-free heads, the input-size check, and no dependence on
MAML's branch grouping."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medguide.networks import UNet


def small(spatial_dims: int = 3, **kwargs) -> UNet:
    torch.manual_seed(0)
    return UNet(spatial_dims, 2, 3, base_width=4, num_stages=3, **kwargs)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_training_gives_every_level_and_eval_the_full_resolution_logits(spatial_dims):
    net = small(spatial_dims)
    x = torch.randn(2, 2, *(16,) * spatial_dims)
    levels = net.train()(x)
    assert [tuple(level.shape) for level in levels] == [(2, 3, *(16,) * spatial_dims), (2, 3, *(8,) * spatial_dims)]
    with torch.no_grad():
        out = net.eval()(x)
    torch.testing.assert_close(out, levels[0].detach())
    assert small(spatial_dims, deep_supervision=False).train()(x).shape == (2, 3, *(16,) * spatial_dims)


def test_unet_runs_its_own_blocks_not_the_branch_grouping():
    # a single float32 CPU sample at small sizes is where MAML's grouping would replace the blocks' own forward
    net = small()
    called = []
    for block in [*net.encoder, *net.decoder]:
        block.register_forward_hook(lambda module, args, out: called.append(module))
    x = torch.randn(1, 2, 16, 16, 16)
    assert len(net.train()(x)) == 2
    with torch.no_grad():
        assert net.eval()(x).shape == (1, 3, 16, 16, 16)
    assert len(called) == 2 * (len(net.encoder) + len(net.decoder))


@pytest.mark.parametrize("training", [True, False])
def test_sizes_that_do_not_fit_are_refused_before_running(training):
    net = small().train(training)
    with pytest.raises(ValueError, match=r"size 18 \(spatial axis 1\) is not; the nearest valid sizes are 16 and 20"):
        net(torch.randn(1, 2, 16, 18, 16))
    with pytest.raises(ValueError, match="single voxel"):
        net(torch.randn(1, 2, 4, 4, 4))
    assert net(torch.randn(1, 2, 8, 4, 4)) is not None


def test_num_stages_below_two_is_refused():
    with pytest.raises(ValueError, match="num_stages must be at least 2"):
        UNet(num_stages=1)


def he_std(conv: nn.Module) -> float:
    """nnU-Net's ``InitWeights_He(1e-2)`` standard deviation ``sqrt(2 / ((1 + 0.01^2) fan_in))``, with PyTorch's
    fan-in: ``weight.shape[1]`` times the kernel's voxels, for a transposed convolution too."""
    fan_in = conv.weight.shape[1] * math.prod(conv.weight.shape[2:])
    return math.sqrt(2 / ((1 + 0.01**2) * fan_in))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_convolution_starts_he_normal_without_bias(spatial_dims):
    torch.manual_seed(0)
    net = UNet(spatial_dims, 2, 3, base_width=8, num_stages=3)
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d))]
    # 2 per encoder stage, a transposed one and 2 per decoder level, a head per decoder level
    assert len(convs) == 2 * 3 + 3 * 2 + 2
    normalised = torch.cat([(conv.weight / he_std(conv)).flatten() for conv in convs])
    assert abs(normalised.mean().item()) < 0.02
    assert normalised.std().item() == pytest.approx(1.0, abs=0.02)
    for conv in convs:
        if conv.weight.numel() >= 400:  # enough weights for their spread to be measured within 20 %
            assert conv.weight.std().item() / he_std(conv) == pytest.approx(1.0, abs=0.2), conv
    # no convolution has a bias: MONAI's blocks put none before instance norm, and the heads have none
    assert all(conv.bias is None for conv in convs)
    assert all(head.bias is None for head in net.heads) and len(net.heads) == 2


def test_default_is_the_official_build():
    net = UNet()
    assert net.num_stages == 6 and net.size_rule.multiple == 32
    assert len(net.heads) == 5  # as many deep-supervision outputs as nnU-Net's weights [8, 4, 2, 1, 0] / 15
