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
from medguide.metrics.subsets import SubsetTable

__all__ = [
    "METRICS",
    "ClassificationTable",
    "McNemarResult",
    "SubsetTable",
    "TaskMetric",
    "balanced_accuracy",
    "class_auroc",
    "confusion_matrix",
    "macro_auroc",
    "macro_f1",
    "mcnemar_test",
    "task_scores",
]
