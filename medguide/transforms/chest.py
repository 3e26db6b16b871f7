"""Loading chest films (PNG, JPEG, DICOM) in a MONAI pipeline, naming the case and file of any that does not load."""

from __future__ import annotations

from pathlib import Path

from monai.config import KeysCollection
from monai.data import MetaTensor

from medguide.data.chest_xray import read_chest_film
from medguide.transforms.io import CaseFileLoadd

__all__ = ["LoadChestFilmd"]


class LoadChestFilmd(CaseFileLoadd):
    """Load the chest film of each key as a grey ``[1, W, H]`` float32 tensor in [0, 1] (:func:`read_chest_film`).

    MONAI's layout for 2D images, as ``LoadImage`` with ``PILReader`` and :class:`medguide.transforms.LoadPhotod`
    give them: x (the file's columns) along the first spatial axis, y (its rows) along the second, so a box
    ``[x0, y0, x1, y1]`` covers ``image[0, x0:x1, y0:y1]``.

    PNG and JPEG (MIMIC-CXR-JPG, ChestX-ray8) and DICOM (MIMIC-CXR) alike; a film that does not decode, a colour
    image, a multi-frame or colour DICOM raises :class:`medguide.data.InvalidCaseError` naming the case and the file,
    so :func:`medguide.transforms.validate_loading` can check (or, with ``skip_invalid``, leave out) every film before
    training. ``meta`` holds the file's ``original_shape`` ``(W, H)`` (what :func:`medguide.data.boxes_to_grid` maps
    boxes back to), ``pixel_spacing`` ``(x, y)`` and ``bits``; ``meta["case"]`` is set as :class:`LoadCased` sets it.

    Example:
        >>> load = LoadChestFilmd(keys="image")
        >>> item = load({"case": "10000032/50414267/02aa804e", "image": "files/p10/p10000032/s50414267/02aa804e.jpg"})
        >>> item["image"].shape  # (1, W, H)
        >>> items = validate_loading(mimic_cxr_datalist(root, "train"), load, skip_invalid=True)

    Args:
        keys: the keys holding a film's path.
        case_key: key of the case id used in error messages.
        allow_missing_keys: skip absent keys.
    """

    def __init__(
        self, keys: KeysCollection = "image", case_key: str = "case", allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, case_key, allow_missing_keys)

    def load(self, path: str | Path, case: str) -> MetaTensor:
        return read_chest_film(path, case)
