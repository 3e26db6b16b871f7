"""Frozen: a wrapped part keeps its parameters and batch-norm statistics through a parent's training."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from medguide.networks.blocks import Frozen


def part() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.5))


def parent(child: nn.Module) -> nn.Sequential:
    return nn.Sequential(Frozen(child), nn.Linear(6, 2))


@pytest.mark.parametrize("optimizer", [torch.optim.SGD, torch.optim.AdamW])
def test_training_the_parent_leaves_the_frozen_part_unchanged(optimizer):
    net = parent(part())
    before = copy.deepcopy(net[0].state_dict())
    head_before = copy.deepcopy(net[1].state_dict())
    # an optimizer over every parameter, weight decay included, as a trainer builds it
    opt = optimizer(net.parameters(), lr=0.1, weight_decay=0.1)
    for _ in range(3):
        net.train()
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.randn(8, 4)), torch.randint(0, 2, (8,))).backward()
        opt.step()
    assert not net[0].training and not net[0].module.training
    assert all(not p.requires_grad and p.grad is None for p in net[0].parameters())
    for key, value in net[0].state_dict().items():
        assert torch.equal(value, before[key]), key
    assert any(not torch.equal(v, head_before[k]) for k, v in net[1].state_dict().items())


def test_frozen_output_is_the_eval_mode_output_without_gradient():
    child = part()
    reference = copy.deepcopy(child).eval()
    net = parent(child).train()
    x = torch.randn(5, 4)
    out = net[0](x)
    assert not out.requires_grad
    torch.testing.assert_close(out, reference(x))


def test_state_dict_keys_are_the_wrapped_modules_under_the_attribute_name():
    plain, wrapped = nn.Sequential(part(), nn.Linear(6, 2)), parent(part())
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    torch.nn.init.normal_(plain[0][0].weight)
    wrapped.load_state_dict(plain.state_dict())
    torch.testing.assert_close(wrapped[0].module[0].weight, plain[0][0].weight)
    # and back, and from the bare module's own keys
    plain.load_state_dict(wrapped.state_dict())
    frozen = Frozen(part())
    frozen.load_state_dict(plain[0].state_dict())
    torch.testing.assert_close(frozen.module[0].weight, plain[0][0].weight)


def test_wrapping_twice_wraps_once():
    twice = Frozen(Frozen(part()))
    assert isinstance(twice.module, nn.Sequential)
    assert list(twice.state_dict()) == list(part().state_dict())
