"""Figures for reports."""

from medguide.visualize.classification import confusion_matrix_figure, write_classification_report
from medguide.visualize.segmentation import label_overlay_figure

__all__ = ["confusion_matrix_figure", "label_overlay_figure", "write_classification_report"]
