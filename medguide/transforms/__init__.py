"""MONAI-style transforms that medguide's bundles name by dotted path."""

from medguide.transforms.bags import LoadBagd, load_bag
from medguide.transforms.io import LoadCased, LoadPhotod, read_photo, validate_loading
from medguide.transforms.labels import LabelsToRegions, LabelsToRegionsd

__all__ = [
    "LabelsToRegions",
    "LabelsToRegionsd",
    "LoadBagd",
    "LoadCased",
    "LoadPhotod",
    "load_bag",
    "read_photo",
    "validate_loading",
]
