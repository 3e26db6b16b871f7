"""Metrics and result tables of the medguide methods."""

from medguide.metrics.subsets import SubsetTable

__all__ = ["SubsetTable"]
