"""Losses of the medguide methods."""

from medguide.losses.classification import (
    MultiTaskCrossEntropy,
    check_tasks,
    class_weights_from_counts,
    split_task_logits,
    task_targets,
)
from medguide.losses.concepts import ClassPrototypeMSELoss, OCTCoDALoss, SupervisedContrastiveLoss, switokd_gate
from medguide.losses.maml import MAMLLoss, nnunet_deep_supervision_weights

__all__ = [
    "ClassPrototypeMSELoss",
    "MAMLLoss",
    "MultiTaskCrossEntropy",
    "OCTCoDALoss",
    "SupervisedContrastiveLoss",
    "check_tasks",
    "class_weights_from_counts",
    "nnunet_deep_supervision_weights",
    "split_task_logits",
    "switokd_gate",
    "task_targets",
]
