"""Figures for reports."""

from medguide.visualize.classification import confusion_matrix_figure, write_classification_report
from medguide.visualize.concepts import concept_figure, display_image
from medguide.visualize.localization import localization_figure
from medguide.visualize.segmentation import label_overlay_figure

__all__ = [
    "concept_figure",
    "confusion_matrix_figure",
    "display_image",
    "label_overlay_figure",
    "localization_figure",
    "write_classification_report",
]
