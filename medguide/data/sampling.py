"""Class-balanced sampling of training cases, as the deep multimodal guidance code samples its brain cases.

Small clinical sets are skewed (Derm7pt: 575 nevi, 42 basal cell carcinomas; CPM-RadPath: about half
glioblastomas). A class-weighted loss (:func:`medguide.losses.class_weights_from_counts`) and class-balanced
sampling are the two usual answers; the bundles weight the loss by default and take this sampler when
``class_balanced_sampling`` is true (using both over-corrects).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

__all__ = ["class_balanced_sampler"]


def class_balanced_sampler(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
) -> WeightedRandomSampler:
    """A ``WeightedRandomSampler`` drawing each class equally often: case ``i`` has weight ``1 / n_{y_i}``.

    Cases are drawn with replacement, so an epoch of ``num_samples`` holds each class about ``num_samples / K``
    times (rare cases repeated, common ones left out now and then). Pass it as a ``DataLoader``'s ``sampler``, with
    ``shuffle`` false. Without a ``generator`` it draws from torch's global generator, which
    ``monai.utils.set_determinism`` seeds.

    Example:
        >>> sampler = class_balanced_sampler([0, 0, 0, 1])  # weights 1/3, 1/3, 1/3, 1
        >>> loader = DataLoader(dataset, batch_size=4, sampler=sampler)

    Args:
        labels: the class index of each training case, in the dataset's order (one task: for several, the task
            to balance, e.g. Derm7pt's diagnosis).
        num_samples: cases per epoch; the number of cases by default.
        generator: the random generator of the draws.

    Raises:
        ValueError: no labels, or a label that is not a non-negative whole number.
    """
    values = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).ravel()
    if values.size == 0:
        raise ValueError("class_balanced_sampler: no labels given.")
    if not np.array_equal(values, np.round(values)) or values.min() < 0:
        raise ValueError(f"class_balanced_sampler: labels must be class indices; got {sorted(set(values.tolist()))}.")
    values = values.astype(np.int64)
    weights = 1.0 / np.bincount(values)[values]
    return WeightedRandomSampler(
        torch.as_tensor(weights, dtype=torch.double), num_samples or len(values), replacement=True, generator=generator
    )
