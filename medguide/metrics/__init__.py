"""Metrics and result tables of the medguide methods."""

from medguide.metrics.subsets import SubsetTable, atomic_write_text, nonempty_subsets

__all__ = ["SubsetTable", "atomic_write_text", "nonempty_subsets"]
