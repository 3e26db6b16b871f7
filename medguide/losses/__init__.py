"""Losses of the medguide methods."""

from medguide.losses.classification import (
    MultiTaskCrossEntropy,
    check_tasks,
    class_weights_from_counts,
    split_task_logits,
    task_targets,
)
from medguide.losses.concepts import ClassPrototypeMSELoss, OCTCoDALoss, SupervisedContrastiveLoss, switokd_gate
from medguide.losses.maml import (
    MUTUAL_DIRECTIONS,
    MAMLLoss,
    TrainingProgress,
    nnunet_deep_supervision_weights,
    sigmoid_ramp_up,
)
from medguide.losses.xattn import LocationPriorLoss, MapAlignmentLoss, MaskedAttributeBCE, location_prior

__all__ = [
    "ClassPrototypeMSELoss",
    "LocationPriorLoss",
    "MAMLLoss",
    "MapAlignmentLoss",
    "MaskedAttributeBCE",
    "MUTUAL_DIRECTIONS",
    "MultiTaskCrossEntropy",
    "OCTCoDALoss",
    "SupervisedContrastiveLoss",
    "TrainingProgress",
    "check_tasks",
    "class_weights_from_counts",
    "location_prior",
    "nnunet_deep_supervision_weights",
    "sigmoid_ramp_up",
    "split_task_logits",
    "switokd_gate",
    "task_targets",
]
