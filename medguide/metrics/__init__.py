"""Metrics and result tables of the medguide methods."""

from medguide.metrics.attributes import AttributeAUC, attribute_aucs
from medguide.metrics.classification import (
    METRICS,
    ClassificationTable,
    McNemarResult,
    TaskMetric,
    balanced_accuracy,
    class_auroc,
    confusion_matrix,
    macro_auroc,
    macro_f1,
    mcnemar_test,
    task_scores,
)
from medguide.metrics.localization import (
    THRESHOLDS,
    LocalizationMetrics,
    boxes_mask,
    iobb,
    iou,
    map_mask_iou,
    pointing_game_hit,
    protocol_outcome,
)
from medguide.metrics.multiclass import (
    CLASS_METRICS,
    MULTICLASS_METRICS,
    MulticlassTable,
    class_average_precision,
    class_scores,
    multiclass_scores,
)
from medguide.metrics.subsets import SubsetTable

__all__ = [
    "AttributeAUC",
    "attribute_aucs",
    "CLASS_METRICS",
    "METRICS",
    "THRESHOLDS",
    "MULTICLASS_METRICS",
    "ClassificationTable",
    "LocalizationMetrics",
    "McNemarResult",
    "MulticlassTable",
    "SubsetTable",
    "TaskMetric",
    "balanced_accuracy",
    "boxes_mask",
    "class_auroc",
    "class_average_precision",
    "class_scores",
    "confusion_matrix",
    "iobb",
    "iou",
    "macro_auroc",
    "macro_f1",
    "map_mask_iou",
    "mcnemar_test",
    "multiclass_scores",
    "pointing_game_hit",
    "protocol_outcome",
    "task_scores",
]
