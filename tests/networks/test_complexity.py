"""Parameter counts, FLOPs per patch against counts by hand, and the equal-parameter early-fusion width."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medguide.networks import MAMLNet, ModalityUNet, UNet, complexity, equal_parameter_width, parameter_count

MODALITIES = ("t1", "t2")


def tiny_maml() -> MAMLNet:
    torch.manual_seed(0)
    return MAMLNet(MODALITIES, 3, spatial_dims=2, base_width=4, num_stages=3)


def test_a_convolutions_flops_are_two_per_multiply_add():
    conv = nn.Conv3d(1, 2, kernel_size=3, padding=1, bias=False)
    # 2 FLOPs x 2 output channels x 4^3 voxels x 27 weights each
    assert complexity(conv, (1, 4, 4, 4)) == (2 * 27, 2 * 2 * 4**3 * 27)


def test_mamls_flops_are_its_branches_and_its_fusion_counted_by_hand():
    net = tiny_maml().train()
    branch = complexity(UNet(2, 1, 3, base_width=4, num_stages=3), (1, 16, 16)).flops
    voxels = 16 * 16
    head = 2 * voxels * 3 * 4  # a branch's full-resolution head, 4 -> 3, unused by the fused output
    fusion = (
        2 * voxels * 4 * (8 * 9)  # F_dual: 2 x 4 channels -> 4, 3x3
        + 2 * (2 * voxels * 4 * (8 * 9) + 2 * voxels * 4 * (4 * 9))  # two gates: 8 -> 4 and 4 -> 4, 3x3
        + 2 * voxels * 3 * 4  # fused head, 4 -> 3, 1x1
    )
    counted = complexity(net, (2, 16, 16))
    assert counted.flops == 2 * (branch - head) + fusion
    assert counted.parameters == parameter_count(net) == sum(p.numel() for p in net.parameters())
    assert net.training  # the mode is restored
    # one modality on the branch route costs one branch
    assert complexity(net, (1, 16, 16), modalities=["t2"], single_modality="branch").flops == branch


def test_equal_parameter_width_is_the_closest_by_brute_force():
    net = tiny_maml()
    width = equal_parameter_width(net, MODALITIES, 3, spatial_dims=2, num_stages=3)
    target = parameter_count(net)
    counts = {
        w: parameter_count(ModalityUNet(MODALITIES, 3, spatial_dims=2, base_width=w, num_stages=3))
        for w in range(1, 17)
    }
    assert width == min(counts, key=lambda w: (abs(counts[w] - target), w))
    # parameters grow with the square of the width: two branches' worth is about sqrt(2) times one branch's width
    assert width == 6
    assert equal_parameter_width(target, MODALITIES, 3, spatial_dims=2, num_stages=3) == width
    assert equal_parameter_width(1, MODALITIES, 3, spatial_dims=2, num_stages=3) == 1


def test_equal_parameter_width_refuses_what_it_cannot_match():
    with pytest.raises(ValueError, match="at least one parameter"):
        equal_parameter_width(0, MODALITIES, 3)
    with pytest.raises(ValueError, match="chooses base_width"):
        equal_parameter_width(1000, MODALITIES, 3, base_width=4)
