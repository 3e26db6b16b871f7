"""Per-attribute ROC AUC of binary attributes, leaving out the attributes a case's report does not state.

For the report-guided localiser (:mod:`medguide.networks.xattn`): logits ``[B, A]``, one per attribute
(:data:`medguide.data.REPORT_ATTRIBUTES`), targets ``[B, A]`` with ``1`` present, ``0`` absent and a negative value
(``-1``) where the report does not mention the attribute. Scored with scikit-learn's ``roc_auc_score`` per attribute
on the stated cases only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from sklearn.metrics import roc_auc_score

__all__ = ["AttributeAUC", "attribute_aucs"]


def attribute_aucs(logits: torch.Tensor, targets: torch.Tensor, attributes: Sequence[str]) -> dict[str, float]:
    """ROC AUC of each attribute over the cases that state it (target 0 or 1); nan where those cases hold one class.

    Args:
        logits: ``[N, A]`` scores (any monotone scale: logits or probabilities).
        targets: ``[N, A]``: 1 present, 0 absent, negative not stated.
        attributes: the ``A`` names.

    Raises:
        ValueError: the shapes differ or do not match ``attributes``.
    """
    if logits.shape != targets.shape or logits.ndim != 2 or logits.shape[1] != len(attributes):
        raise ValueError(
            f"attribute_aucs expects logits and targets [N, {len(attributes)}], got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}."
        )
    scores = logits.detach().float().cpu().numpy()
    truth = targets.detach().float().cpu().numpy()
    result = {}
    for index, name in enumerate(attributes):
        stated = truth[:, index] >= 0
        y = truth[stated, index] > 0.5
        result[name] = float(roc_auc_score(y, scores[stated, index])) if 0 < y.sum() < len(y) else math.nan
    return result


class AttributeAUC(CumulativeIterationMetric):
    """The mean (or one attribute's) ROC AUC over an epoch, for MONAI's ``IgniteMetricHandler``::

        "val_auc": {"_target_": "IgniteMetricHandler",
                    "metric_fn": {"_target_": "medguide.metrics.AttributeAUC", "attributes": "@attributes"},
                    "output_transform": "$monai.handlers.from_engine(['pred', 'label'])", "save_details": false}

    ``pred`` the logits ``[B, A]`` (or a list of ``[A]``), ``label`` the targets (negative: not stated). Cases are
    gathered over the epoch (and the processes of a distributed run) and scored once by :func:`attribute_aucs`.

    Args:
        attributes: the attribute names, in the order of the logits.
        attribute: score this one alone; ``None``: the mean over the attributes with a defined AUC (nan if none).

    Raises:
        ValueError: an ``attribute`` not among ``attributes``.
    """

    def __init__(self, attributes: Sequence[str], attribute: str | None = None) -> None:
        super().__init__()
        self.attributes = tuple(attributes)
        if attribute is not None and attribute not in self.attributes:
            raise ValueError(f"attribute {attribute!r} is not one of {list(self.attributes)}.")
        self.attribute = attribute

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        return y_pred.detach().float().as_subclass(torch.Tensor), y.detach().float().as_subclass(torch.Tensor)

    def aggregate(self) -> float:
        logits, targets = self.get_buffer()
        scores = attribute_aucs(logits, targets, self.attributes)
        if self.attribute is not None:
            return scores[self.attribute]
        defined = [value for value in scores.values() if not math.isnan(value)]
        return float(np.mean(defined)) if defined else math.nan
