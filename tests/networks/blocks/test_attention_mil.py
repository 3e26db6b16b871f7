"""GatedAttentionMIL: CLAM-SB's sizes, one bag or padded batches, order invariance and refused empty bags."""

from __future__ import annotations

import pytest
import torch

from medguide.networks.blocks import GatedAttentionMIL


def small(**kwargs) -> GatedAttentionMIL:
    torch.manual_seed(0)
    return GatedAttentionMIL(8, 6, 4, **kwargs).eval()


def test_clam_sb_sizes_pool_a_bag_of_patch_features_to_512():
    pool = GatedAttentionMIL().eval()
    assert (pool.fc[0].in_features, pool.fc[0].out_features, pool.out_features) == (1024, 512, 512)
    assert pool.attention_a[0].out_features == pool.attention_b[0].out_features == 256
    assert pool.attention_c.out_features == 1
    with torch.no_grad():
        pooled, weights = pool(torch.randn(37, 1024), return_attention=True)
    assert pooled.shape == (1, 512) and weights.shape == (1, 37)
    torch.testing.assert_close(weights.sum(), torch.tensor(1.0))


def test_pooling_does_not_depend_on_instance_order():
    pool, bag = small(), torch.randn(2, 9, 8)
    with torch.no_grad():
        torch.testing.assert_close(pool(bag), pool(bag[:, torch.randperm(9)]))


def test_padded_instances_get_zero_attention_and_change_nothing_even_when_nan():
    pool = small()
    bags = [torch.randn(5, 8), torch.randn(3, 8)]
    padded = torch.full((2, 5, 8), float("nan"))
    mask = torch.zeros(2, 5, dtype=torch.bool)
    for i, bag in enumerate(bags):
        padded[i, : len(bag)], mask[i, : len(bag)] = bag, True
    with torch.no_grad():
        pooled, weights = pool(padded, mask=mask, return_attention=True)
        alone = torch.cat([pool(bag) for bag in bags])
    torch.testing.assert_close(pooled, alone)
    assert torch.equal(weights[1, 3:], torch.zeros(2))
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(2))


def test_training_mode_gives_gradient_to_every_parameter():
    pool = small().train()
    pool(torch.randn(2, 4, 8)).sum().backward()
    # attention_c's bias adds one constant to every score of a bag, which the softmax over the bag cancels: its
    # gradient is zero in exact arithmetic (rounding left ~1e-9 on some CPUs, exactly 0 on an AMD EPYC)
    shift_only = {"attention_c.bias"}
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in pool.named_parameters() if n not in shift_only)
    assert pool.attention_c.bias.grad.abs().max() < 1e-6


def test_empty_bags_are_refused_by_name():
    pool = small()
    with pytest.raises(ValueError, match="empty bag"):
        pool(torch.randn(0, 8))
    with pytest.raises(ValueError, match="empty bag"):
        pool(torch.randn(2, 0, 8))
    mask = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match=r"empty bag \(mask has no True\) at batch index \[1\]"):
        pool(torch.randn(2, 2, 8), mask=mask)


def test_wrong_inputs_are_refused_before_running():
    pool = small()
    with pytest.raises(ValueError, match="width 8, got 7"):
        pool(torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match=r"bag \[N, D\] or bags \[B, N, D\]"):
        pool(torch.randn(8))
    with pytest.raises(ValueError, match="does not match"):
        pool(torch.randn(2, 3, 8), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean"):
        pool(torch.randn(2, 3, 8), mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="hidden must be positive"):
        GatedAttentionMIL(8, 0)
