"""MAMLLoss against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from medguide.losses import MAMLLoss, nnunet_deep_supervision_weights


def half_and_half(size: int = 8) -> torch.Tensor:
    """A label map whose first half (along the last axis) is 0 and second half 1; it stays so when halved."""
    label = torch.zeros(1, 1, size, size, size)
    label[..., size // 2 :] = 1
    return label


def test_deep_supervision_weights_are_nnunets():
    assert nnunet_deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0])
    assert nnunet_deep_supervision_weights(1) == [1.0]


def test_uninformative_logits_give_the_known_loss():
    # softmax of zero logits is 1/2 everywhere: CE = ln 2; foreground Dice = 2 (N/4) / (N/2 + N/2) = 1/2
    target = half_and_half()
    levels = [torch.zeros(1, 2, 8, 8, 8), torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 2, 2, 2)]
    pred = {"fused": torch.zeros(1, 2, 8, 8, 8), "branches": [levels, [t.clone() for t in levels]]}
    per_term = math.log(2) + 0.5
    # weights for three levels: [2/3, 1/3, 0]; the fused term has the full-resolution weight
    expected = (2 / 3) * per_term + 2 * (2 / 3 + 1 / 3) * per_term
    assert MAMLLoss()(pred, target).item() == pytest.approx(expected, rel=1e-4)


def test_perfect_logits_give_almost_no_loss():
    target = half_and_half()

    def perfect(size: int) -> torch.Tensor:
        label = torch.nn.functional.interpolate(target, size=(size,) * 3, mode="nearest-exact")
        return torch.cat([1 - label, label], 1) * 40 - 20

    pred = {"fused": perfect(8), "branches": [[perfect(8), perfect(4)]]}
    assert MAMLLoss()(pred, target).item() < 1e-4


def test_mutual_term_is_zero_when_branches_agree_and_trains_both_sides():
    target = half_and_half()
    logits = torch.randn(1, 2, 8, 8, 8)
    agree = {"fused": logits.clone(), "branches": [[logits.clone(), torch.zeros(1, 2, 4, 4, 4)]]}
    assert MAMLLoss.mutual(agree["fused"], [agree["branches"][0][0]]).item() == pytest.approx(0.0, abs=1e-6)
    fused = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    branch = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    pred = {"fused": fused, "branches": [[branch, torch.zeros(1, 2, 4, 4, 4)]]}
    with_mutual = MAMLLoss(mutual_weight=1.0)(pred, target)
    without = MAMLLoss()(pred, target)
    assert with_mutual.item() > without.item()
    torch.autograd.grad(with_mutual - without, [fused, branch])  # the term reaches both predictions


def test_prediction_without_fusion_gets_only_its_deep_supervision():
    target = half_and_half()
    levels = [torch.zeros(1, 2, 8, 8, 8), torch.zeros(1, 2, 4, 4, 4)]
    # two levels: weights [1, 0]
    assert MAMLLoss()({"branches": [levels]}, target).item() == pytest.approx(math.log(2) + 0.5, rel=1e-4)
