"""MONAI-style transforms that medguide's bundles name by dotted path."""

from medguide.transforms.bags import LoadBagd, load_bag
from medguide.transforms.batch import RandBatchAugment
from medguide.transforms.boxes import MapToBoxes, MapToBoxesd, map_to_boxes, threshold_heat_map
from medguide.transforms.chest import LoadChestFilmd
from medguide.transforms.io import LoadCased, LoadPhotod, photo_kind, read_photo, validate_loading
from medguide.transforms.labels import LabelsToRegions, LabelsToRegionsd

__all__ = [
    "LabelsToRegions",
    "LabelsToRegionsd",
    "LoadBagd",
    "LoadCased",
    "LoadChestFilmd",
    "LoadPhotod",
    "MapToBoxes",
    "MapToBoxesd",
    "RandBatchAugment",
    "load_bag",
    "map_to_boxes",
    "photo_kind",
    "read_photo",
    "threshold_heat_map",
    "validate_loading",
]
