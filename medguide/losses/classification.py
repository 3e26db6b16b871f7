"""Cross entropy over several classification tasks at once, each with its own class weights.

A multi-task network returns one tensor of logits, the tasks' logits side by side in task order
(``[B, sum(classes)]``); targets hold one column of class indices per task (``[B, T]``), with ``ignore_index`` for a
label not given. Derm7pt's eight tasks (diagnosis and the seven-point criteria) are the first user; a single-task
classifier is the case ``T = 1``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["MultiTaskCrossEntropy", "check_tasks", "class_weights_from_counts", "split_task_logits", "task_targets"]


def check_tasks(tasks: Mapping[str, int]) -> dict[str, int]:
    """``tasks`` as a dict {task: number of classes}, in order; refused when empty or a task has under 2 classes."""
    tasks = dict(tasks)
    if not tasks:
        raise ValueError("tasks is empty: give {task: number of classes} for at least one task.")
    for name, classes in tasks.items():
        if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
            raise ValueError(f"task {name!r} has {classes!r} classes; a classification task needs an int >= 2.")
    return tasks


def split_task_logits(
    logits: torch.Tensor | Mapping[str, torch.Tensor], tasks: Mapping[str, int]
) -> dict[str, torch.Tensor]:
    """{task: its logits [B, classes]} from the tasks' logits side by side ``[B, sum(classes)]`` in task order, or
    from a dict of them (checked against ``tasks``).

    Example:
        >>> {k: tuple(v.shape) for k, v in split_task_logits(torch.zeros(4, 7), {"diagnosis": 5, "streaks": 2}).items()}
        {'diagnosis': (4, 5), 'streaks': (4, 2)}

    Raises:
        ValueError: when the logits do not have one column per class of every task.
    """
    if isinstance(logits, Mapping):
        if set(logits) != set(tasks):
            raise ValueError(f"logits are given for tasks {sorted(logits)}, expected {sorted(tasks)}.")
        for name, classes in tasks.items():
            if logits[name].ndim != 2 or logits[name].shape[1] != classes:
                raise ValueError(
                    f"logits of task {name!r} have shape {tuple(logits[name].shape)}; expected [B, {classes}]."
                )
        return {name: logits[name] for name in tasks}
    total = sum(tasks.values())
    if logits.ndim != 2 or logits.shape[1] != total:
        raise ValueError(
            f"logits have shape {tuple(logits.shape)}; expected [B, {total}]: the logits of the tasks "
            f"{dict(tasks)} side by side in that order."
        )
    return dict(zip(tasks, logits.split(list(tasks.values()), dim=1)))


def task_targets(targets: torch.Tensor, tasks: Mapping[str, int], ignore_index: int = -100) -> torch.Tensor:
    """Targets as class indices ``[B, T]`` (int64), checked: ``[B]`` is taken for a single task, integral floats (as a
    collated label may be) are converted, and a value that is neither a class of its task nor ``ignore_index`` is
    refused here, naming the task, rather than failing inside ``cross_entropy`` (a device-side assert on CUDA).

    Raises:
        ValueError: on a shape without one column per task, a fractional value, or a class index out of range.
    """
    if targets.ndim == 1 and len(tasks) == 1:
        targets = targets[:, None]
    if targets.ndim != 2 or targets.shape[1] != len(tasks):
        raise ValueError(
            f"targets have shape {tuple(targets.shape)}; expected [B, {len(tasks)}]: one column of class indices per "
            f"task {list(tasks)}."
        )
    if targets.is_floating_point():
        if not torch.equal(targets, targets.round()):
            raise ValueError("targets must be class indices; got fractional values.")
        targets = targets.long()
    classes = torch.tensor(list(tasks.values()), device=targets.device)
    bad = (targets != ignore_index) & ((targets < 0) | (targets >= classes))
    if bad.any():
        case, column = (int(i) for i in bad.nonzero()[0])
        name = list(tasks)[column]
        raise ValueError(
            f"target {int(targets[case, column])} of task {name!r} (batch row {case}) is not one of its "
            f"{tasks[name]} classes 0..{tasks[name] - 1} nor ignore_index {ignore_index}."
        )
    return targets


class MultiTaskCrossEntropy(_Loss):
    """Sum over tasks of each task's class-weighted cross entropy.

    ``L = sum_t sum_i w_t[y_it] * CE(logits_it, y_it) / sum_i w_t[y_it]``, over the cases ``i`` whose label of task
    ``t`` is given: for every task the weighted mean of :func:`torch.nn.functional.cross_entropy` (its
    ``reduction="mean"``), except that a task with no label in the batch adds 0 rather than nan. Deep multimodal
    guidance trains its heads with class-weighted cross entropy (Mallya & Hamarneh, MICCAI 2022,
    https://arxiv.org/abs/2203.05683); on Derm7pt the heads are the diagnosis and the seven criteria, summed.

    Example:
        >>> loss = MultiTaskCrossEntropy({"diagnosis": 5, "streaks": 3}, class_weights={"streaks": [1.0, 2.0, 2.0]})
        >>> loss(torch.zeros(2, 8), torch.tensor([[0, 2], [4, -100]])).item()  # log 5 + log 3, uniform logits
        2.70805...

    Args:
        tasks: {task: number of classes}, in the order of the logits.
        class_weights: {task: one weight per class} for some or all tasks (others unweighted), e.g. from
            :func:`class_weights_from_counts`. Kept as a buffer, so it moves with ``.to(device)``.
        ignore_index: the target value of a label not given.

    Raises:
        ValueError: when a task has fewer than 2 classes, or class weights name an unknown task, do not have one
            value per class, or are negative or not finite.
    """

    def __init__(
        self,
        tasks: Mapping[str, int],
        class_weights: Mapping[str, Sequence[float]] | None = None,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.tasks = check_tasks(tasks)
        self.ignore_index = ignore_index
        class_weights = dict(class_weights or {})
        unknown = set(class_weights) - set(self.tasks)
        if unknown:
            raise ValueError(f"class_weights name tasks {sorted(unknown)} that are not among {list(self.tasks)}.")
        weights = []
        for name, classes in self.tasks.items():
            w = torch.as_tensor(class_weights.get(name, [1.0] * classes), dtype=torch.float32).flatten()
            if len(w) != classes or not torch.isfinite(w).all() or (w < 0).any():
                raise ValueError(
                    f"class weights of task {name!r} are {w.tolist()}; expected {classes} finite values >= 0."
                )
            weights.append(w)
        # one buffer for all tasks, since a task's name need not be a valid attribute name; not a checkpoint's business
        self.register_buffer("class_weights", torch.cat(weights), persistent=False)

    def forward(self, logits: torch.Tensor | Mapping[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        """``logits`` [B, sum(classes)] (or {task: [B, classes]}), ``targets`` [B, T] class indices (``[B]`` for one
        task); returns the scalar loss, in float32 whatever the logits' precision."""
        per_task = split_task_logits(logits, self.tasks)
        targets = task_targets(targets, self.tasks, self.ignore_index)
        weights = self.class_weights.split(list(self.tasks.values()))
        loss = self.class_weights.new_zeros(())
        for column, (task_logits, weight) in enumerate(zip(per_task.values(), weights)):
            target = targets[:, column]
            given = target != self.ignore_index
            per_case = F.cross_entropy(
                task_logits.float(), target, weight=weight, ignore_index=self.ignore_index, reduction="none"
            )
            # the denominator of torch's weighted mean; clamped so a task without labels in the batch adds 0, not nan
            loss = loss + per_case.sum() / (weight[target.where(given, 0)] * given).sum().clamp_min(1e-12)
        return loss


def class_weights_from_counts(
    labels: Sequence[int] | np.ndarray | torch.Tensor, num_classes: int, ignore_index: int = -100
) -> list[float]:
    """Inverse-frequency class weights ``w_c = N / (K * n_c)``: ``N`` labels given, ``K`` classes, ``n_c`` labels of
    class ``c`` (scikit-learn's ``class_weight="balanced"``). Every class then carries the same total weight, and a
    balanced set gets weight 1 for every class.

    A class absent from ``labels`` is counted as if seen once, ``N / K``, the largest weight any class can have,
    instead of an infinite one; it matters only if the class turns up where these weights are used.

    Example:
        >>> class_weights_from_counts([0, 0, 0, 1, -100], num_classes=3)  # N = 4: 4/(3*3), 4/(3*1), absent 4/(3*1)
        [0.4444444444444444, 1.3333333333333333, 1.3333333333333333]

    Args:
        labels: class indices of the training cases (one task); ``ignore_index`` marks a label not given.
        num_classes: number of classes of the task.
        ignore_index: the value of a label not given.

    Raises:
        ValueError: when a label is not one of the ``num_classes`` classes, or no label is given at all.
    """
    values = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).ravel()
    values = values[values != ignore_index]
    if values.size == 0:
        raise ValueError("no labels given: class weights cannot be counted from an empty set.")
    if not np.array_equal(values, values.round()) or values.min() < 0 or values.max() >= num_classes:
        raise ValueError(f"labels must be class indices 0..{num_classes - 1}; got {sorted(set(values.tolist()))}.")
    counts = np.bincount(values.astype(np.int64), minlength=num_classes)
    return (values.size / (num_classes * np.maximum(counts, 1))).tolist()
