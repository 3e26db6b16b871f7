"""Metrics and result tables of the medguide methods."""

from medguide.metrics.subsets import SubsetTable, nonempty_subsets

__all__ = ["SubsetTable", "nonempty_subsets"]
