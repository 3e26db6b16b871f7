"""Figures for reports."""

from medguide.visualize.segmentation import label_overlay_figure

__all__ = ["label_overlay_figure"]
