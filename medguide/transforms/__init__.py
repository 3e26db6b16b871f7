"""MONAI-style transforms that medguide's bundles name by dotted path."""

from medguide.transforms.io import LoadCased
from medguide.transforms.labels import LabelsToRegions, LabelsToRegionsd

__all__ = ["LabelsToRegions", "LabelsToRegionsd", "LoadCased"]
