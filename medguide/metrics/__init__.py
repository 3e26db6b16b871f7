"""Metrics and result tables of the medguide methods."""

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
    "CLASS_METRICS",
    "METRICS",
    "MULTICLASS_METRICS",
    "ClassificationTable",
    "McNemarResult",
    "MulticlassTable",
    "SubsetTable",
    "TaskMetric",
    "balanced_accuracy",
    "class_auroc",
    "class_average_precision",
    "class_scores",
    "confusion_matrix",
    "macro_auroc",
    "macro_f1",
    "mcnemar_test",
    "multiclass_scores",
    "task_scores",
]
