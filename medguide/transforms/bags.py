"""``LoadBagd``: a case's bag of histology patches, as CLAM writes them or as patch images, loaded and checked.

A whole-slide image enters a multiple-instance model as a bag: one row per tissue patch. CLAM's
``extract_features_fp.py`` writes each slide's bag twice, ``pt_files/<slide>.pt`` (an N x D float tensor) and
``h5_files/<slide>.h5`` (datasets ``features`` [N, D] and ``coords`` [N, 2], the patches' positions in the slide);
a folder of patch images (PNG, JPEG) is a bag a patch encoder turns into features itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from monai.config import KeysCollection

from medguide.data.errors import InvalidCaseError
from medguide.data.files import PHOTO_SUFFIXES, image_suffix, name_list, visible
from medguide.transforms.io import CaseFileLoadd, read_photo

__all__ = ["BAG_SUFFIXES", "PATCH_SUFFIXES", "LoadBagd", "load_bag"]

BAG_SUFFIXES = (".pt", ".h5")
PATCH_SUFFIXES = PHOTO_SUFFIXES


def _rows_as_matrix(rows: Sequence, case: str, path: Path) -> torch.Tensor:
    """Patch feature vectors given one by one (a list in a ``.pt``, a variable-length HDF5 dataset) as N x D."""
    vectors = [torch.as_tensor(np.asarray(row)) for row in rows]
    for index, vector in enumerate(vectors):
        if vector.ndim != 1 or vector.shape != vectors[0].shape:
            raise InvalidCaseError(
                case,
                path,
                f"ragged bag: patch {index} has features of shape {tuple(vector.shape)} where patch 0 has "
                f"{tuple(vectors[0].shape)}; every patch needs a feature vector of one length (N x D)",
            )
    return torch.stack(vectors) if vectors else torch.zeros(0, 0)


def _read_pt(path: Path, case: str) -> torch.Tensor:
    bag = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(bag, Mapping) and "features" in bag:
        bag = bag["features"]
    if isinstance(bag, list | tuple):
        return _rows_as_matrix(bag, case, path)
    if not isinstance(bag, torch.Tensor):
        found = f"keys {sorted(map(str, bag))}" if isinstance(bag, Mapping) else type(bag).__name__
        raise InvalidCaseError(case, path, f"holds {found}, not a tensor of patch features (N x D)")
    return bag


def _read_h5(path: Path, case: str) -> torch.Tensor:
    with h5py.File(path, "r") as f:
        if "features" not in f:
            raise InvalidCaseError(case, path, f"has no 'features' dataset (datasets: {sorted(f.keys())})")
        features = f["features"][()]
        coords = f["coords"][()] if "coords" in f else None
    if features.dtype == object:
        features = _rows_as_matrix(list(features), case, path)
    else:
        features = torch.as_tensor(features)
    if coords is not None and features.ndim == 2 and (coords.ndim != 2 or len(coords) != len(features)):
        raise InvalidCaseError(
            case, path, f"'coords' has shape {coords.shape} for {len(features)} patches; expected ({len(features)}, 2)"
        )
    return features


def _read_patches(folder: Path, case: str, mode: str) -> torch.Tensor:
    files = visible(p for p in folder.iterdir() if p.is_file())
    patches = [p for p in files if image_suffix(p).lower() in PATCH_SUFFIXES]
    if not patches:
        raise InvalidCaseError(case, folder, f"empty bag: no patch image in the folder (found {name_list(files)})")
    images = []
    for patch in patches:
        image = read_photo(patch, case, mode)
        if images and image.shape != images[0].shape:
            reason = f"patch of shape {tuple(image.shape)} where {patches[0].name} has {tuple(images[0].shape)}"
            raise InvalidCaseError(case, patch, reason)
        images.append(image.as_tensor())
    return torch.stack(images)


def _check_features(features: torch.Tensor, case: str, path: Path, feature_dim: int | None) -> torch.Tensor:
    if features.is_complex() or features.dtype == torch.bool:
        raise InvalidCaseError(case, path, f"patch features of type {features.dtype}; expected real numbers")
    if features.ndim != 2:
        raise InvalidCaseError(
            case, path, f"expected an N x D tensor of patch features, got shape {tuple(features.shape)}"
        )
    if len(features) == 0:
        raise InvalidCaseError(case, path, "empty bag: 0 patches")
    if feature_dim is not None and features.shape[1] != feature_dim:
        raise InvalidCaseError(
            case, path, f"patch features of dimension {features.shape[1]} where {feature_dim} are expected"
        )
    features = features.to(torch.float32)
    bad = ~torch.isfinite(features).all(dim=1)
    if bad.any():
        first = int(torch.nonzero(bad)[0])
        raise InvalidCaseError(
            case, path, f"NaN or infinite values in {int(bad.sum())} of {len(features)} patches (first: row {first})"
        )
    return features


def load_bag(path: str | Path, case: str, feature_dim: int | None = None, mode: str = "RGB") -> torch.Tensor:
    """Read one case's bag and check it.

    Args:
        path: ``<case>.pt`` (a float tensor N x D; a list of N vectors, or a dict whose ``features`` is the
            tensor, are read too), ``<case>.h5`` (dataset ``features`` N x D; ``coords``, when present, must have
            N rows), or a folder of patch images (PNG, JPEG, BMP, TIFF; hidden files passed over).
        case: the case id to name in errors.
        feature_dim: the feature length the network takes (D); ``None`` accepts any.
        mode: the PIL mode patch images are converted to.

    Returns:
        float32 ``(N, D)`` features; for a folder of patches, float32 ``(N, C, W, H)`` pixel values (0-255, axes as
        MONAI's ``LoadImage`` gives 2D images), in file name order.

    Raises:
        InvalidCaseError: naming the case and the file: missing or unreadable file, another format, no
            ``features`` dataset, an empty bag (N = 0), a ragged bag (feature vectors of different lengths) or one
            that is not N x D, a feature length other than ``feature_dim``, NaN or infinite values, patch images
            that do not decode or differ in size.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidCaseError(case, path, "bag not found")
    if path.is_dir():
        return _read_patches(path, case, mode)
    suffix = path.suffix.lower()
    if suffix not in BAG_SUFFIXES:
        raise InvalidCaseError(
            case, path, f"is not a bag: expected <case>.pt, <case>.h5 or a folder of patch images, got {suffix!r}"
        )
    try:
        features = _read_pt(path, case) if suffix == ".pt" else _read_h5(path, case)
    except InvalidCaseError:
        raise
    except Exception as error:
        raise InvalidCaseError(case, path, f"unreadable or corrupted ({type(error).__name__}: {error})") from error
    return _check_features(features, case, path, feature_dim)


class LoadBagd(CaseFileLoadd):
    """Load a case's bag of histology patches (see :func:`load_bag`) and check it, naming case and file on failure.

    Example:
        >>> item = LoadBagd(keys="bag", feature_dim=1024)({"case": "CPM19_CBICA_AAB_1", "bag": "CPM19_CBICA_AAB_1.pt"})
        >>> item["bag"].shape  # float32 (N, 1024)

    Args:
        keys: the keys holding a bag's path (a ``.pt`` or ``.h5`` file, or a folder of patch images).
        feature_dim: the feature length D the network takes; a bag of another length is refused, naming it.
            ``None`` accepts any.
        mode: the PIL mode patch images are converted to (``"RGB"``).
        case_key: key of the case id used in error messages.
        allow_missing_keys: skip absent keys (e.g. no bag at inference, which needs the MRI only).
    """

    def __init__(
        self,
        keys: KeysCollection = "bag",
        feature_dim: int | None = None,
        mode: str = "RGB",
        case_key: str = "case",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, case_key, allow_missing_keys)
        self.feature_dim = feature_dim
        self.mode = mode

    def load(self, path: str | Path, case: str) -> torch.Tensor:
        return load_bag(path, case, self.feature_dim, self.mode)
