"""MultiTaskCrossEntropy against a two-task case worked out by hand, and inverse-frequency class weights."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medguide.losses import MultiTaskCrossEntropy, class_weights_from_counts, split_task_logits

LN = math.log
IGNORE = -100


def two_task_case() -> tuple[MultiTaskCrossEntropy, torch.Tensor, torch.Tensor]:
    """Task A (3 classes, weights 1, 2, 0.5) and task B (2 classes, weights 3, 1) on two cases; case 1 has no B label.

    A: case 0 logits ln[1, 2, 1] -> softmax [1/4, 1/2, 1/4], label 1: CE ln 2, weight 2;
       case 1 logits ln[3, 1, 1] -> softmax [3/5, 1/5, 1/5], label 0: CE ln(5/3), weight 1.
    B: case 0 logits [0, 0], label 0: CE ln 2, weight 3; case 1 not labelled.
    """
    loss = MultiTaskCrossEntropy({"A": 3, "B": 2}, class_weights={"A": [1.0, 2.0, 0.5], "B": [3.0, 1.0]})
    logits = torch.tensor([[LN(1), LN(2), LN(1), 0.0, 0.0], [LN(3), LN(1), LN(1), 5.0, -5.0]])
    targets = torch.tensor([[1, 0], [0, IGNORE]])
    return loss, logits, targets


def test_two_tasks_by_hand():
    loss, logits, targets = two_task_case()
    task_a = (2 * LN(2) + 1 * LN(5 / 3)) / (2 + 1)  # each task's weighted mean over its labelled cases
    task_b = 3 * LN(2) / 3
    assert loss(logits, targets).item() == pytest.approx(task_a + task_b, rel=1e-6)
    # and what torch's own weighted cross entropy gives, task by task
    torch_a = F.cross_entropy(logits[:, :3], targets[:, 0], weight=torch.tensor([1.0, 2.0, 0.5]))
    torch_b = F.cross_entropy(logits[:, 3:], targets[:, 1], weight=torch.tensor([3.0, 1.0]), ignore_index=IGNORE)
    assert loss(logits, targets).item() == pytest.approx((torch_a + torch_b).item(), rel=1e-6)


def test_dict_of_logits_and_single_task_targets():
    loss, logits, targets = two_task_case()
    as_dict = {"B": logits[:, 3:], "A": logits[:, :3]}
    assert loss(as_dict, targets).item() == pytest.approx(loss(logits, targets).item())
    single = MultiTaskCrossEntropy({"grade": 3})
    labels = torch.tensor([1, 0])
    expected = F.cross_entropy(logits[:, :3], labels).item()
    assert single(logits[:, :3], labels).item() == pytest.approx(expected)  # [B] targets for one task
    assert single(logits[:, :3], labels[:, None].float()).item() == pytest.approx(expected)  # collated floats


def test_task_without_labels_adds_zero_and_gradients_flow():
    loss = MultiTaskCrossEntropy({"A": 3, "B": 2})
    logits = torch.randn(4, 5, requires_grad=True)
    targets = torch.tensor([[0, IGNORE], [1, IGNORE], [2, IGNORE], [0, IGNORE]])
    value = loss(logits, targets)
    assert value.item() == pytest.approx(F.cross_entropy(logits[:, :3], targets[:, 0]).item())
    value.backward()
    assert torch.isfinite(logits.grad).all() and (logits.grad[:, 3:] == 0).all() and logits.grad[:, :3].abs().sum() > 0
    nothing = loss(logits, torch.full((4, 2), IGNORE))
    assert nothing.item() == 0.0 and nothing.requires_grad  # a batch with no label at all is not nan


def test_float32_loss_from_reduced_precision_logits_and_weights_follow_the_module():
    loss, logits, targets = two_task_case()
    assert loss(logits.bfloat16(), targets).dtype == torch.float32
    assert "class_weights" not in loss.state_dict()  # settings, not state: rebuilt from the config
    assert loss.double().class_weights.dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "logits", "targets", "message"),
    [
        ({}, torch.zeros(2, 4), torch.zeros(2, 2, dtype=torch.long), r"expected \[B, 5\]"),
        ({}, torch.zeros(2, 5), torch.zeros(2, 3, dtype=torch.long), r"expected \[B, 2\]"),
        ({}, torch.zeros(2, 5), torch.tensor([[0, 0], [0, 2]]), r"target 2 of task 'B' \(batch row 1\)"),
        ({}, torch.zeros(2, 5), torch.tensor([[0.5, 0.0], [0.0, 0.0]]), "fractional"),
    ],
)
def test_bad_input_is_named(kwargs, logits, targets, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskCrossEntropy({"A": 3, "B": 2}, **kwargs)(logits, targets)


@pytest.mark.parametrize(
    ("tasks", "weights", "message"),
    [
        ({}, None, "tasks is empty"),
        ({"A": 1}, None, "task 'A' has 1 classes"),
        ({"A": 3}, {"C": [1.0, 1.0]}, r"name tasks \['C'\]"),
        ({"A": 3}, {"A": [1.0, 1.0]}, "expected 3 finite values"),
        ({"A": 3}, {"A": [1.0, math.inf, 1.0]}, "expected 3 finite values"),
        ({"A": 3}, {"A": [1.0, -1.0, 1.0]}, "expected 3 finite values"),
    ],
)
def test_bad_settings_are_refused(tasks, weights, message):
    with pytest.raises(ValueError, match=message):
        MultiTaskCrossEntropy(tasks, class_weights=weights)


def test_split_task_logits_checks_dicts():
    with pytest.raises(ValueError, match="expected"):
        split_task_logits({"A": torch.zeros(2, 3)}, {"A": 3, "B": 2})
    with pytest.raises(ValueError, match=r"logits of task 'B' have shape \(2, 3\)"):
        split_task_logits({"A": torch.zeros(2, 3), "B": torch.zeros(2, 3)}, {"A": 3, "B": 2})


def test_inverse_frequency_weights():
    # N = 8 labels given, K = 4 classes; counts 4, 2, 2, 0: w_c = N / (K n_c), the absent class as if seen once
    labels = [0, 0, 0, 0, 1, 1, 2, 2, IGNORE, IGNORE]
    assert class_weights_from_counts(labels, 4) == pytest.approx([0.5, 1.0, 1.0, 2.0])
    assert class_weights_from_counts(torch.tensor(labels), 4) == pytest.approx([0.5, 1.0, 1.0, 2.0])
    assert class_weights_from_counts(np.array([0, 1, 2] * 5), 3) == pytest.approx([1.0, 1.0, 1.0])  # balanced
    # every class carries the same total weight, so the weighted loss treats the classes alike
    counts = np.bincount([0, 0, 0, 0, 1, 1, 2, 2], minlength=3)
    totals = counts * np.array(class_weights_from_counts([0, 0, 0, 0, 1, 1, 2, 2], 3))
    assert totals == pytest.approx([totals[0]] * 3)


def test_inverse_frequency_weights_refuse_bad_labels():
    with pytest.raises(ValueError, match="class indices 0..2"):
        class_weights_from_counts([0, 1, 3], 3)
    with pytest.raises(ValueError, match="no labels given"):
        class_weights_from_counts([IGNORE, IGNORE], 3)
