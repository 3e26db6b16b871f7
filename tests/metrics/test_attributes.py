"""Per-attribute ROC AUC on a case worked out by hand: entries the report does not state (-1) are left out, an
attribute whose stated cases hold one class is nan, and the epoch metric gathers batches through MONAI's API."""

from __future__ import annotations

import math

import pytest
import torch

from medguide.metrics import AttributeAUC, attribute_aucs

ATTRIBUTES = ("opacity", "left", "upper")
# opacity: stated positives 0.9, 0.3 and negatives 0.5, 0.1; of the 4 pairs only (0.3, 0.5) is misordered: AUC 3/4.
#   The fifth case does not state it, so its logit (the last entry) must not count.
# left: every stated case is positive: nan.  upper: the one positive, 0.8, beats both negatives, 0.2 and 0.4: AUC 1.
LOGITS = [
    [0.9, 0.7, 0.2],
    [0.3, 0.1, 0.8],
    [0.5, 0.0, 0.0],
    [0.1, 0.6, 0.0],
    [0.0, 0.3, 0.4],
]
TARGETS = [
    [1, 1, 0],
    [1, 1, 1],
    [0, -1, -1],
    [0, 1, -1],
    [-1, -1, 0],
]
EXPECTED = {"opacity": 0.75, "left": math.nan, "upper": 1.0}


def case(unstated_logit: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.tensor(LOGITS)
    logits[4, 0] = unstated_logit
    return logits, torch.tensor(TARGETS, dtype=torch.float32)


def assert_scores(scores: dict[str, float], expected: dict[str, float]) -> None:
    assert list(scores) == list(expected)
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, nan_ok=True), name


@pytest.mark.parametrize("unstated_logit", [-10.0, 0.0, 0.95, 10.0])
def test_attribute_aucs_by_hand_leave_unstated_entries_out(unstated_logit):
    # taken as a negative, a logit of 0.95 would outrank both positives and give opacity 3/6
    assert_scores(attribute_aucs(*case(unstated_logit), ATTRIBUTES), EXPECTED)


def test_attribute_aucs_refuse_shapes_that_do_not_match_the_attributes():
    logits, targets = case()
    with pytest.raises(ValueError, match="attribute_aucs"):
        attribute_aucs(logits, targets[:, :2], ATTRIBUTES)
    with pytest.raises(ValueError, match="attribute_aucs"):
        attribute_aucs(logits, targets, ATTRIBUTES[:2])


def accumulate(metric: AttributeAUC, unstated_logit: float = 0.0) -> AttributeAUC:
    """The case in two batches: a batched one, then a decollated one (a list of ``[A]``, as MONAI's handlers give)."""
    logits, targets = case(unstated_logit)
    metric(y_pred=logits[:2], y=targets[:2])
    metric(y_pred=list(logits[2:]), y=list(targets[2:]))
    return metric


def test_the_epoch_metric_is_the_mean_over_defined_attributes_of_all_batches():
    metric = accumulate(AttributeAUC(ATTRIBUTES))
    assert metric.aggregate() == pytest.approx((0.75 + 1.0) / 2)
    # reset: a new epoch, here with the unstated logit moved, which still changes nothing
    metric.reset()
    assert accumulate(metric, unstated_logit=10.0).aggregate() == pytest.approx(0.875)


@pytest.mark.parametrize("attribute", ATTRIBUTES)
def test_the_epoch_metric_of_one_attribute(attribute):
    value = accumulate(AttributeAUC(ATTRIBUTES, attribute=attribute)).aggregate()
    assert value == pytest.approx(EXPECTED[attribute], nan_ok=True)


def test_the_epoch_metric_is_nan_when_no_attribute_is_defined():
    metric = AttributeAUC(ATTRIBUTES)
    metric(y_pred=torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]]), y=torch.tensor([[1.0, -1, 0], [1, -1, 0]]))
    assert math.isnan(metric.aggregate())


def test_an_unknown_attribute_is_refused():
    with pytest.raises(ValueError, match="'lower'"):
        AttributeAUC(ATTRIBUTES, attribute="lower")
