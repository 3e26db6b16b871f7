"""Load and validate the volumes of one case; the single code path behind :class:`medguide.transforms.LoadCased`.

A datalist item is ``{"case": str, "image": [path, ...], "modalities": [name, ...], "label": path}`` (``label``
optional). A path is a NIfTI or any other file MONAI reads, a file only SimpleITK reads (``.mha``, ``.nrrd``, ...),
or a folder holding one DICOM series. Every problem is raised as :class:`~medguide.data.errors.InvalidCaseError`
naming the case and the file, so that one bad case never stops a run without saying which it is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.data import MetaTensor, PydicomReader
from monai.data.utils import orientation_ras_lps
from monai.transforms import LoadImage

from medguide.data.errors import InvalidCaseError

__all__ = [
    "case_name",
    "check_case",
    "load_image_stack",
    "load_label",
    "read_volume",
    "validate_datalist",
]

logger = logging.getLogger("medguide.data")

AFFINE_ATOL = 1e-3
# Files that MONAI's installed readers (nibabel, pydicom, numpy, PIL) read; SimpleITK reads everything else.
_MONAI_SUFFIXES = (".nii", ".nii.gz", ".dcm", ".npy", ".npz", ".png", ".jpg", ".jpeg", ".bmp")


def case_name(item: Mapping, image_key: str = "image", case_key: str = "case") -> str:
    """The id used in error messages: ``item[case_key]``, else the stem of the first image file.

    Args:
        item: a datalist item.
        image_key: key of the image path(s) in ``item``.
        case_key: key of the case id in ``item``.
    """
    if item.get(case_key):
        return str(item[case_key])
    files = item.get(image_key) or ""
    first = Path(files if isinstance(files, str | Path) else files[0])
    return Path(first.name.removesuffix(".gz")).stem


@cache
def _monai_loader(dicom_folder: bool) -> LoadImage:
    # A folder is a DICOM series; PydicomReader decodes JPEG 2000 through pylibjpeg-openjpeg.
    reader = PydicomReader() if dicom_folder else None
    return LoadImage(reader=reader, image_only=True, ensure_channel_first=True)


def _read_with_simpleitk(path: Path) -> MetaTensor:
    """Read what MONAI's installed readers cannot (ITK formats without ``itk``, DICOM that only GDCM decodes)."""
    if path.is_dir():
        series = sitk.ImageSeriesReader()
        series.SetFileNames(series.GetGDCMSeriesFileNames(str(path)))
        image = series.Execute()
    else:
        image = sitk.ReadImage(str(path))
    dim = image.GetDimension()
    array = sitk.GetArrayFromImage(image)
    if image.GetNumberOfComponentsPerPixel() == 1:
        array = array[..., None]
    # SimpleITK arrays are (z, y, x, components); MONAI's are (channel, x, y, z).
    array = np.moveaxis(array, -1, 0).transpose(0, *range(dim, 0, -1))
    affine = np.eye(dim + 1)
    affine[:dim, :dim] = np.reshape(image.GetDirection(), (dim, dim)) @ np.diag(image.GetSpacing())
    affine[:dim, dim] = image.GetOrigin()
    affine = orientation_ras_lps(affine)
    meta = {
        "filename_or_obj": str(path),
        "original_affine": affine.copy(),
        "spatial_shape": np.asarray(array.shape[1:]),
        "original_channel_dim": "no_channel" if image.GetNumberOfComponentsPerPixel() == 1 else -1,
        "space": "RAS",
    }
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32), affine=affine, meta=meta)


def read_volume(path: str | Path, case: str) -> MetaTensor:
    """Read one file or DICOM series folder as a channel-first float32 ``MetaTensor`` with a RAS affine.

    MONAI's ``LoadImage`` chooses the reader (nibabel for NIfTI, pydicom for DICOM); SimpleITK reads what those
    cannot. The voxels must all be finite.

    Args:
        path: the file, or a folder holding one DICOM series.
        case: the case id to name in errors.

    Raises:
        InvalidCaseError: the path is missing, unreadable or corrupted, or holds NaN or infinite voxels.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidCaseError(case, path, "file not found")
    try:
        volume = _monai_loader(path.is_dir())(path)
    except Exception as error:
        reason = f"unreadable or corrupted ({type(error).__name__}: {error})"
        # SimpleITK zero-fills a truncated .nii.gz without a word, so it never gets the files MONAI's readers own.
        if path.is_file() and path.name.lower().endswith(_MONAI_SUFFIXES):
            raise InvalidCaseError(case, path, reason) from error
        try:
            volume = _read_with_simpleitk(path)
        except Exception:
            raise InvalidCaseError(case, path, reason) from error
    if not torch.isfinite(volume).all():
        raise InvalidCaseError(case, path, "contains NaN or infinite voxels")
    return volume


def _check_same_grid(volume: MetaTensor, reference: MetaTensor, case: str, file: str | Path, what: str) -> None:
    """Modalities and label of one case must share one voxel grid, or stacking them silently misaligns them."""
    shape, ref_shape = tuple(volume.shape[1:]), tuple(reference.shape[1:])
    if shape != ref_shape:
        raise InvalidCaseError(case, file, f"{what} shape {shape} differs from the first image's {ref_shape}")
    affine, ref_affine = np.asarray(volume.affine), np.asarray(reference.affine)
    if not np.allclose(affine, ref_affine, atol=AFFINE_ATOL):
        raise InvalidCaseError(
            case,
            file,
            f"{what} affine differs from the first image's:\n{np.round(affine, 4)}\nvs\n{np.round(ref_affine, 4)}",
        )


def load_image_stack(files: str | Path | Sequence[str | Path], case: str) -> MetaTensor:
    """Read the modalities of one case and stack them channel-first.

    The result keeps the first modality's affine and meta data, so ``Invertd`` + ``SaveImaged`` write predictions
    in the input's own space. A multi-channel file (e.g. a 4D Decathlon NIfTI) adds all its channels.

    Args:
        files: one path per modality (a single path is one modality).
        case: the case id to name in errors.

    Raises:
        InvalidCaseError: a file is missing, unreadable, has NaN/inf voxels, or another shape or affine.
    """
    files = [files] if isinstance(files, str | Path) else list(files)
    if not files:
        raise InvalidCaseError(case, "", "no image file listed")
    volumes = [read_volume(files[0], case)]
    for file in files[1:]:
        volume = read_volume(file, case)
        _check_same_grid(volume, volumes[0], case, file, "modality")
        volumes.append(volume)
    if len(volumes) == 1:
        return volumes[0]
    stacked = torch.cat([v.as_tensor() for v in volumes])
    return MetaTensor(stacked, meta=dict(volumes[0].meta), applied_operations=list(volumes[0].applied_operations))


def load_label(
    file: str | Path, reference: MetaTensor, case: str, label_values: Sequence[int] | None = None
) -> MetaTensor:
    """Read a label map and check it against the case's stacked image.

    Args:
        file: the label file or DICOM folder.
        reference: the case's image, as returned by :func:`load_image_stack`.
        case: the case id to name in errors.
        label_values: the declared label set; ``None`` skips the value check.

    Raises:
        InvalidCaseError: the label is missing, unreadable, on another grid, or holds values outside the set.
    """
    label = read_volume(file, case)
    _check_same_grid(label, reference, case, file, "label")
    if label_values is not None:
        found = torch.unique(label.as_tensor()).numpy()
        unexpected = ", ".join(f"{v:g}" for v in found[~np.isin(found, np.asarray(label_values))])
        if unexpected:
            raise InvalidCaseError(
                case, file, f"label values [{unexpected}] outside the declared set {list(label_values)}"
            )
    return label


def check_case(item: Mapping, label_values: Sequence[int] | None = None) -> None:
    """Load every file of a datalist item and raise if anything is wrong with it.

    Args:
        item: ``{"case": str, "image": [paths], "modalities": [names], "label": path}``; ``label`` optional.
        label_values: the declared label set; ``None`` skips the value check.

    Raises:
        InvalidCaseError: naming the case and the file (see :func:`load_image_stack` and :func:`load_label`).
    """
    case = case_name(item)
    image = load_image_stack(item["image"], case)
    if item.get("label"):
        load_label(item["label"], image, case, label_values)


def validate_datalist(
    datalist: Sequence[Mapping], label_values: Sequence[int] | None = None, skip_invalid: bool = False
) -> list[dict]:
    """Check every item of a datalist before training starts.

    Args:
        datalist: datalist items as :func:`check_case` takes them.
        label_values: the declared label set; ``None`` skips the value check.
        skip_invalid: log a warning naming the case and file and drop the item, instead of raising.

    Returns:
        The valid items, in order.

    Raises:
        InvalidCaseError: the first bad case, when ``skip_invalid`` is false.
        ValueError: no valid item is left.
    """
    valid = []
    for item in datalist:
        try:
            check_case(item, label_values)
        except InvalidCaseError as error:
            if not skip_invalid:
                raise
            logger.warning("skipping invalid %s", error)
            continue
        valid.append(dict(item))
    if not valid:
        raise ValueError(f"no valid case left out of {len(datalist)}")
    return valid
