"""MultiTaskHead: Derm7pt's eight tasks and the brain's one, concatenated logits taken apart per task."""

from __future__ import annotations

import pytest
import torch

from medguide.networks.blocks import MultiTaskHead

DERM7PT = {
    "diagnosis": 5,
    "pigment_network": 3,
    "blue_whitish_veil": 2,
    "vascular_structures": 3,
    "pigmentation": 3,
    "streaks": 3,
    "dots_and_globules": 3,
    "regression_structures": 2,
}


def test_derm7pt_logits_are_the_tasks_side_by_side_in_task_order():
    torch.manual_seed(0)
    head = MultiTaskHead(16, DERM7PT, dropout=0.5)
    x = torch.randn(4, 16)
    logits = head.eval()(x)
    assert logits.shape == (4, 24) and head.num_outputs == 24 and head.tasks == DERM7PT
    parts = head.split(logits)
    assert list(parts) == list(DERM7PT)
    for task, classes in DERM7PT.items():
        layer = head.layers[list(DERM7PT).index(task)]
        torch.testing.assert_close(parts[task], x @ layer.weight.T + layer.bias)
        assert parts[task].shape == (4, classes)
    assert head.train()(x).shape == (4, 24)


def test_probabilities_sum_to_one_within_each_task():
    head = MultiTaskHead(8, DERM7PT)
    probabilities = head.split(head.probabilities(head(torch.randn(3, 8))))
    for task in DERM7PT:
        torch.testing.assert_close(probabilities[task].sum(dim=1), torch.ones(3))


def test_a_single_task_is_one_block_of_logits():
    head = MultiTaskHead(8, {"class": 3})
    assert head(torch.randn(2, 8)).shape == (2, 3)
    assert head.tasks == {"class": 3}


@pytest.mark.parametrize(
    ("tasks", "message"),
    [
        ({}, "at least one task"),
        ({"a": 1}, "at least 2 classes"),
        ({"a": 2.5}, "at least 2 classes"),
        ({"": 2}, "non-empty"),
    ],
)
def test_unusable_tasks_are_refused(tasks, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskHead(8, tasks)


def test_wrong_widths_are_named():
    head = MultiTaskHead(8, {"a": 2, "b": 3})
    with pytest.raises(ValueError, match=r"expects features \[B, 8\], got \(2, 7\)"):
        head(torch.randn(2, 7))
    with pytest.raises(ValueError, match="expects 5 columns"):
        head.split(torch.randn(2, 4))
