"""Class-balanced sampling: each class drawn about equally often, whatever its share of the training cases."""

from __future__ import annotations

import collections

import pytest
import torch

from medguide.data import class_balanced_sampler


def test_a_skewed_set_is_drawn_class_balanced():
    labels = [0] * 90 + [1] * 8 + [2] * 2
    sampler = class_balanced_sampler(labels, num_samples=6000, generator=torch.Generator().manual_seed(0))
    drawn = collections.Counter(labels[i] for i in sampler)
    assert len(sampler) == 6000 and sorted(drawn) == [0, 1, 2]
    assert all(abs(count / 6000 - 1 / 3) < 0.03 for count in drawn.values()), drawn


def test_an_epoch_has_as_many_draws_as_cases_by_default():
    assert len(list(class_balanced_sampler(torch.tensor([1, 1, 0])))) == 3


@pytest.mark.parametrize("labels", [[], [0, -1], [0.5, 1]])
def test_labels_that_are_not_class_indices_are_refused(labels):
    with pytest.raises(ValueError, match="class_balanced_sampler"):
        class_balanced_sampler(labels)
