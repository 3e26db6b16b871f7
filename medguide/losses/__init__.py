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
from medguide.losses.xattn import LocationPriorLoss, MapAlignmentLoss, MaskedAttributeBCE, location_prior

__all__ = [
    "ClassPrototypeMSELoss",
    "LocationPriorLoss",
    "MAMLLoss",
    "MapAlignmentLoss",
    "MaskedAttributeBCE",
    "MultiTaskCrossEntropy",
    "OCTCoDALoss",
    "SupervisedContrastiveLoss",
    "check_tasks",
    "class_weights_from_counts",
    "location_prior",
    "nnunet_deep_supervision_weights",
    "split_task_logits",
    "switokd_gate",
    "task_targets",
]
