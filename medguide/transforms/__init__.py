"""MONAI-style transforms that medguide's bundles name by dotted path."""

from medguide.transforms.bags import LoadBagd, load_bag
from medguide.transforms.batch import RandBatchAugment
from medguide.transforms.io import LoadCased, LoadPhotod, photo_kind, read_photo, validate_loading
from medguide.transforms.labels import LabelsToRegions, LabelsToRegionsd

__all__ = [
    "LabelsToRegions",
    "LabelsToRegionsd",
    "LoadBagd",
    "LoadCased",
    "LoadPhotod",
    "RandBatchAugment",
    "load_bag",
    "photo_kind",
    "read_photo",
    "validate_loading",
]
