"""The cross-attention block: maps that are distributions over the regions, masking, shapes and gradients."""

from __future__ import annotations

import pytest
import torch

from medguide.networks.blocks import CrossAttention, flatten_regions


def test_shapes_and_maps_sum_to_one_over_the_regions():
    torch.manual_seed(0)
    block = CrossAttention(16, num_heads=4)
    attended, maps = block(torch.randn(3, 5, 16), torch.randn(3, 12, 16))
    assert attended.shape == (3, 5, 16) and maps.shape == (3, 5, 12)
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(-1), torch.ones(3, 5))


def test_a_feature_map_is_flattened_row_major_and_the_map_goes_back_to_the_grid():
    """Region (x=1, y=2) of a [B, D, 3, 4] feature map is region 1 * 4 + 2 = 6 of the sequence."""
    features = torch.zeros(1, 2, 3, 4)
    features[0, :, 1, 2] = torch.tensor([1.0, -1.0])
    regions = flatten_regions(features)
    assert regions.shape == (1, 12, 2) and regions[0, 6].tolist() == [1.0, -1.0]
    torch.manual_seed(0)
    block = CrossAttention(2, num_heads=1)
    queries = torch.randn(1, 1, 2)
    _, from_grid = block(queries, features, mask=torch.ones(1, 3, 4, dtype=torch.bool))
    _, from_sequence = block(queries, regions)
    torch.testing.assert_close(from_grid, from_sequence)
    grid = from_grid.reshape(1, 1, 3, 4)
    assert grid[0, 0, 1, 2] == from_sequence[0, 0, 6]


def test_masked_regions_get_zero_and_change_nothing():
    """Masked regions get no attention, and whatever they hold (even nan) leaves the output as it is."""
    torch.manual_seed(0)
    block = CrossAttention(8, num_heads=2).eval()
    queries, regions = torch.randn(2, 3, 8), torch.randn(2, 6, 8)
    mask = torch.tensor([[True] * 4 + [False] * 2, [True] * 6])
    attended, maps = block(queries, regions, mask)
    assert (maps[0, :, 4:] == 0).all()
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 3))
    garbage = regions.clone()
    garbage[0, 4:] = 1e3
    attended_again, maps_again = block(queries, garbage, mask)
    torch.testing.assert_close(attended_again, attended)
    torch.testing.assert_close(maps_again, maps)
    # the first sample alone, without its padded regions, gives the same
    alone, alone_maps = block(queries[:1], regions[:1, :4])
    torch.testing.assert_close(alone, attended[:1])
    torch.testing.assert_close(alone_maps, maps[:1, :, :4])


def test_gradient_flows_through_the_maps_and_the_features():
    torch.manual_seed(0)
    block = CrossAttention(8, num_heads=2, region_dim=4, dropout=0.5)
    queries = torch.randn(2, 3, 8, requires_grad=True)
    regions = torch.randn(2, 4, 5, 5, requires_grad=True)  # a feature map [B, region_dim, w, h]
    attended, maps = block(queries, regions)
    assert maps.shape == (2, 3, 25)
    # in training the dropout acts on the features, so the maps still sum to one
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 3))
    (maps[..., 0].sum()).backward(retain_graph=True)
    assert queries.grad.abs().sum() > 0 and regions.grad.abs().sum() > 0
    # the map alone trains the query and key projections (what a loss on the map, e.g. the KL alignment, needs)
    assert block.attention.q_proj_weight.grad.abs().sum() > 0 and block.attention.k_proj_weight.grad.abs().sum() > 0
    attended.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


@pytest.mark.parametrize(
    ("queries", "regions", "mask", "message"),
    [
        (torch.randn(2, 3, 7), torch.randn(2, 4, 8), None, "queries"),
        (torch.randn(2, 3, 8), torch.randn(2, 4, 7), None, "regions"),
        (torch.randn(2, 3, 8), torch.randn(1, 4, 8), None, "batch size"),
        (torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.ones(2, 4), "boolean"),
        (torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.ones(2, 5, dtype=torch.bool), "does not match"),
        (torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.tensor([[True] * 4, [False] * 4]), r"index \[1\]"),
    ],
)
def test_bad_inputs_are_named(queries, regions, mask, message):
    with pytest.raises(ValueError, match=message):
        CrossAttention(8, num_heads=2)(queries, regions, mask)


def test_bad_arguments():
    with pytest.raises(ValueError, match="divisible"):
        CrossAttention(10, num_heads=4)
    with pytest.raises(ValueError, match="dropout"):
        CrossAttention(8, num_heads=2, dropout=1.0)
    with pytest.raises(ValueError, match="flatten_regions"):
        flatten_regions(torch.zeros(2, 3))
