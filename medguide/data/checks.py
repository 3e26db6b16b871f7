"""Load and validate the volumes of one case; the single code path behind :class:`medguide.transforms.LoadCased`.

A datalist item is ``{"case": str, "image": [path, ...], "modalities": [name, ...], "label": path}`` (``label``
and ``series`` optional); ``label`` may also be a class label, an integer or ``{task: integer}``, as
:func:`medguide.data.read_class_labels` reads them from a CSV (which it names in ``label_file``). A path is a NIfTI
or any other file MONAI reads, a file only SimpleITK reads (``.mha``, ``.nrrd``, ...), or a folder holding a DICOM
series. Every problem is raised as :class:`~medguide.data.errors.InvalidCaseError` naming the case and the file, so
that one bad case never stops a run without saying which it is. What is refused rather than guessed:

- a file holding several volumes (a 4th axis longer than 1) where one modality or one label map is expected;
- a DICOM folder holding several series (unless one is chosen by SeriesInstanceUID or SeriesDescription), a
  single 2D image, or slices whose positions are not evenly spaced (a missing or duplicated slice);
- label values that are not within 1e-3 of a declared value (values that are, as a resampled float label map
  holds them, are rounded and the count logged); class labels outside their task's declared values. Both go through
  :func:`check_label_values`, so a bad label image and a bad CSV cell read alike.
"""

from __future__ import annotations

import logging
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
import torch
from monai.data import MetaTensor, PydicomReader
from monai.data.utils import orientation_ras_lps
from monai.transforms import LoadImage

from medguide.data.errors import InputError, InvalidCaseError, flag
from medguide.data.files import MONAI_READER_SUFFIXES, image_stem, name_list, visible

__all__ = [
    "CaseList",
    "case_name",
    "check_case",
    "check_class_label",
    "check_label_values",
    "is_class_label",
    "dicom_series_files",
    "load_image_stack",
    "load_label",
    "read_volume",
    "report_skipped_cases",
    "validate_datalist",
]

logger = logging.getLogger("medguide.data")

AFFINE_ATOL = 1e-3
# a float label value this close to a declared integer is that integer (a resampled or float-saved label map)
LABEL_ROUNDING_ATOL = 1e-3
# slice positions may differ from the series' spacing by this share of it (scanners round positions)
SLICE_SPACING_RTOL = 0.05
_DICOMDIR = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage


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
    return image_stem(files if isinstance(files, str | Path) else files[0])


@cache
def _monai_loader() -> LoadImage:
    return LoadImage(image_only=True, ensure_channel_first=True)


def _describe(uid: str, headers: list) -> str:
    description = str(headers[0].get("SeriesDescription", "")).strip()
    return f"{uid or '(no SeriesInstanceUID)'} {description!r} ({len(headers)} files)"


def dicom_series_files(folder: str | Path, case: str, series: str | None = None) -> list[Path]:
    """The files of the one DICOM series a folder holds (or of the chosen one), in slice order, checked.

    Hidden files (``._name``, ``.DS_Store``) and files that are not DICOM are passed over.

    Args:
        folder: a folder of DICOM files.
        case: the case id to name in errors.
        series: the series to take where the folder holds several: its SeriesInstanceUID or its
            SeriesDescription (case-insensitive).

    Raises:
        InvalidCaseError: naming the folder, when it holds no DICOM file; several series and none chosen (every
            SeriesInstanceUID and SeriesDescription listed); a ``series`` that none matches; a single 2D image
            (a volume needs several slices); or slice positions along the slice normal that are not evenly spaced
            (the gap and where it is are named).
    """
    folder = Path(folder)
    groups: dict[str, list] = {}
    files = visible(p for p in folder.iterdir() if p.is_file())
    for file in files:
        if not pydicom.misc.is_dicom(file):
            continue
        try:
            header = pydicom.dcmread(file, stop_before_pixels=True)
        except Exception as error:
            raise InvalidCaseError(case, file, f"unreadable DICOM header ({type(error).__name__}: {error})") from error
        if str(header.get("MediaStorageSOPClassUID", "")) == _DICOMDIR:
            continue  # the directory record of a DICOM medium, not a slice
        if "SeriesInstanceUID" not in header:
            raise InvalidCaseError(
                case, file, "a DICOM file without SeriesInstanceUID: truncated, or not an image slice"
            )
        header.filename = str(file)
        groups.setdefault(str(header.SeriesInstanceUID), []).append(header)
    if not groups:
        reason = f"is not a DICOM series folder: it holds no DICOM file (found {name_list(files)})"
        raise InvalidCaseError(case, folder, reason)
    found = "; ".join(_describe(uid, headers) for uid, headers in groups.items())
    if series is not None:
        wanted = str(series).strip()
        chosen = [
            uid
            for uid, headers in groups.items()
            if wanted == uid or wanted.lower() == str(headers[0].get("SeriesDescription", "")).strip().lower()
        ]
        if len(chosen) != 1:
            which = "matches no series" if not chosen else "matches several series"
            raise InvalidCaseError(case, folder, f"series {wanted!r} {which}; the folder holds: {found}")
        headers = groups[chosen[0]]
    elif len(groups) > 1:
        raise InvalidCaseError(
            case,
            folder,
            f"holds {len(groups)} DICOM series: {found}. Choose one by its SeriesInstanceUID or SeriesDescription "
            "(the item's 'series' entry, or the dicom_series setting), or put each series in a folder of its own",
        )
    else:
        headers = next(iter(groups.values()))
    if len(headers) == 1 and int(headers[0].get("NumberOfFrames", 1) or 1) < 2:
        raise InvalidCaseError(
            case, headers[0].filename, "is a single 2D DICOM image; a series needs several slices to make a volume"
        )
    return [Path(h.filename) for h in _checked_slice_order(headers, case, folder)]


def _checked_slice_order(headers: list, case: str, folder: Path) -> list:
    """Headers sorted along the slice normal; their positions must be evenly spaced (no missing slice)."""
    try:
        orientation = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
        positions = np.asarray([h.ImagePositionPatient for h in headers], dtype=float)
    except (AttributeError, TypeError, ValueError):
        return headers  # without positions, the reader's own order is all there is
    normal = np.cross(orientation[:3], orientation[3:])
    along = positions @ normal
    order = np.argsort(along)
    along = along[order]
    headers = [headers[i] for i in order]
    # MONAI's PydicomReader stacks slices by InstanceNumber and drops those without one: it must follow the positions
    numbers = [h.get("InstanceNumber") for h in headers]
    steps_in_number = np.diff([float(n) if n is not None else np.nan for n in numbers])
    if any(n is None for n in numbers) or not (np.all(steps_in_number > 0) or np.all(steps_in_number < 0)):
        missing = next((h for h, n in zip(headers, numbers, strict=True) if n is None), None)
        why = (
            f"{Path(missing.filename).name} has no InstanceNumber"
            if missing is not None
            else "their InstanceNumbers do not run in the order of their positions along the slice normal"
        )
        raise InvalidCaseError(
            case, folder, f"slices cannot be stacked safely: {why}, and the reader orders slices by InstanceNumber"
        )
    if len(along) < 3:
        return headers
    steps = np.diff(along)
    spacing = float(np.median(steps))
    worst = int(np.argmax(np.abs(steps - spacing)))
    if spacing <= 0 or abs(steps[worst] - spacing) > SLICE_SPACING_RTOL * spacing:
        raise InvalidCaseError(
            case,
            folder,
            f"slice positions are not evenly spaced: {steps[worst]:.3f} mm between the slices at "
            f"{along[worst]:.2f} mm ({Path(headers[worst].filename).name}) and {along[worst + 1]:.2f} mm "
            f"({Path(headers[worst + 1].filename).name}) where the others are {spacing:.3f} mm apart "
            "(a missing or duplicated slice?). Stacking them would misplace every slice past the gap; "
            "resample the series to even spacing first",
        )
    return headers


def _read_with_simpleitk(path: Path, dicom_files: Sequence[Path] = ()) -> MetaTensor:
    """Read what MONAI's installed readers cannot (ITK formats without ``itk``, DICOM that only GDCM decodes)."""
    if path.is_dir():
        series = sitk.ImageSeriesReader()
        series.SetFileNames([str(f) for f in dicom_files])
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


def _series_loader(folder: Path, files: Sequence[Path]) -> LoadImage:
    """``PydicomReader`` restricted to the given files of ``folder`` (it globs the folder and matches names).

    PydicomReader, not SimpleITK, reads series first: it decodes JPEG 2000 through pylibjpeg-openjpeg.
    """
    names = "|".join(re.escape(os.path.join(str(folder), f.name)) for f in files)
    return LoadImage(reader=PydicomReader(fname_regex=f"(?:{names})$"), image_only=True, ensure_channel_first=True)


def read_volume(path: str | Path, case: str, series: str | None = None) -> MetaTensor:
    """Read one file or DICOM series folder as a channel-first float32 ``MetaTensor`` with a RAS affine.

    MONAI's ``LoadImage`` chooses the reader (nibabel for NIfTI, pydicom for DICOM); SimpleITK reads what those
    cannot. A DICOM folder is checked first (:func:`dicom_series_files`). The voxels must all be finite.

    Args:
        path: the file, or a folder holding a DICOM series.
        case: the case id to name in errors.
        series: for a DICOM folder holding several series, the one to read (SeriesInstanceUID or
            SeriesDescription).

    Returns:
        ``(C, X, Y, Z)`` float32, ``C`` the volumes the file holds (1 for a 3D image).

    Raises:
        InvalidCaseError: the path is missing, unreadable or corrupted, holds NaN or infinite voxels, or is a DICOM
            folder that :func:`dicom_series_files` refuses.
    """
    path = Path(path)
    if not path.exists():
        raise InvalidCaseError(case, path, "file not found")
    dicom_files = dicom_series_files(path, case, series) if path.is_dir() else []
    try:
        volume = (_series_loader(path, dicom_files) if dicom_files else _monai_loader())(path)
    except Exception as error:
        reason = f"unreadable or corrupted ({type(error).__name__}: {error})"
        # SimpleITK zero-fills a truncated .nii.gz without a word, so it never gets the files MONAI's readers own.
        if path.is_file() and path.name.lower().endswith(MONAI_READER_SUFFIXES):
            raise InvalidCaseError(case, path, reason) from error
        try:
            volume = _read_with_simpleitk(path, dicom_files)
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


def _series_of(series: str | Mapping[str, str] | None, modality: str | None) -> str | None:
    """The DICOM series chosen for one modality: a mapping per modality, or one choice for every folder."""
    if isinstance(series, Mapping):
        return series.get(modality) if modality is not None else None
    return series


def load_image_stack(
    files: str | Path | Sequence[str | Path],
    case: str,
    modalities: Sequence[str] | None = None,
    series: str | Mapping[str, str] | None = None,
) -> MetaTensor:
    """Read the modalities of one case and stack them channel-first.

    The result keeps the first modality's affine and meta data, so ``Invertd`` + ``SaveImaged`` write predictions
    in the input's own space. With one file per modality each file must hold one volume: an (X, Y, Z, 1) file
    is one volume, an (X, Y, Z, 2) file is refused, since its second volume would shift every later modality into
    the wrong branch. A single file may hold every modality as its 4th axis (a 4D Decathlon NIfTI).

    Args:
        files: one path per modality (a single path is one modality, or all of them as a 4D file).
        case: the case id to name in errors.
        modalities: the modality names, in the order of ``files``; it sets how many volumes are expected.
        series: DICOM series to read from folders holding several (``{modality: UID or description}``, or one
            choice for every folder); see :func:`dicom_series_files`.

    Returns:
        ``(M, X, Y, Z)`` float32, one channel per modality.

    Raises:
        InvalidCaseError: a file is missing, unreadable, has NaN/inf voxels, another shape or affine, or holds
            another number of volumes than expected (the case, file, its shape and the expected count named).
    """
    files = [files] if isinstance(files, str | Path) else list(files)
    if not files:
        raise InvalidCaseError(case, "", "no image file listed")
    names = list(modalities) if modalities is not None else [None] * len(files)
    # one file per modality holds one volume each; a lone file may hold them all
    per_file = len(names) if len(files) == 1 and modalities is not None else 1
    if len(files) not in (1, len(names)):
        raise InvalidCaseError(case, files[0], f"{len(files)} image files listed for modalities {names}")
    volumes = []
    for file, name in zip(files, names if len(files) == len(names) else [None], strict=True):
        volume = read_volume(file, case, _series_of(series, name))
        if volume.shape[0] != per_file and (len(files) > 1 or modalities is not None):
            what = f"the {len(names)} volumes of {names}" if per_file > 1 else f"one {name or 'image'} volume"
            raise InvalidCaseError(
                case,
                file,
                f"holds {volume.shape[0]} volumes (shape {(*volume.shape[1:], volume.shape[0])}) where {what} "
                "is expected; keep one volume per modality file",
            )
        if volumes:
            _check_same_grid(volume, volumes[0], case, file, "modality")
        volumes.append(volume)
    if len(volumes) == 1:
        return volumes[0]
    stacked = torch.cat([v.as_tensor() for v in volumes])
    return MetaTensor(stacked, meta=dict(volumes[0].meta), applied_operations=list(volumes[0].applied_operations))


def _shown(value: object) -> str:
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return str(int(value)) if float(value).is_integer() else f"{float(value):g}"
    return repr(value)


def check_label_values(
    values: Iterable,
    allowed: Sequence,
    case: str,
    file: str | Path,
    what: str = "label values",
    where: str = "",
) -> None:
    """Refuse values outside the declared set, naming the case, the file and the values (up to five).

    The one check behind label images (:func:`load_label`), class labels in a CSV
    (:func:`medguide.data.read_class_labels`) and in a datalist (:func:`check_class_label`).

    Args:
        values: the values found (a label map's distinct voxel values, a CSV cell's value).
        allowed: the declared values, e.g. ``(0, 1, 2, 4)`` or ``("G", "A", "O")``.
        case: the case id to name.
        file: the file the values come from.
        what: what the values are, to start the message.
        where: appended to the message, e.g. ``", in 12 voxels"`` or ``", in row 4"``.

    Raises:
        InvalidCaseError: e.g. ``case 'c1': file 'labels.csv': column 'class' value ['X'] outside the declared set
            ['G', 'A', 'O'], in row 4``.
    """
    bad = [v for v in values if v not in allowed]
    if bad:
        shown = ", ".join(_shown(v) for v in bad[:5]) + (f", ... ({len(bad)} values)" if len(bad) > 5 else "")
        raise InvalidCaseError(case, file, f"{what} [{shown}] outside the declared set {list(allowed)}{where}")


def _check_label_values(label: MetaTensor, label_values: Sequence[int], case: str, file: str | Path) -> MetaTensor:
    """Round values within ``LABEL_ROUNDING_ATOL`` of a declared value; refuse the others, briefly."""
    allowed = np.asarray(label_values, dtype=float)
    found, counts = np.unique(label.as_tensor().numpy(), return_counts=True)
    distance = np.abs(found[:, None] - allowed[None]).min(1)
    bad = distance > LABEL_ROUNDING_ATOL
    snapped = np.where(bad, found, allowed[np.abs(found[:, None] - allowed[None]).argmin(1)])
    where = f", in {int(counts[bad].sum())} voxels"
    check_label_values(snapped.tolist(), list(label_values), case, file, where=where)
    inexact = distance > 0
    if inexact.any():
        logger.info(
            "case %r: file '%s': rounded %d voxels of float label values to the nearest declared value (within %g)",
            case,
            file,
            int(counts[inexact].sum()),
            LABEL_ROUNDING_ATOL,
        )
        label = label.round()
    return label


def load_label(
    file: str | Path, reference: MetaTensor, case: str, label_values: Sequence[int] | None = None
) -> MetaTensor:
    """Read a label map and check it against the case's stacked image.

    Values within 1e-3 of a declared value (as a label map resampled or saved as float holds them, e.g. 1.9998)
    are rounded to it, and the number of such voxels is logged.

    Args:
        file: the label file or DICOM folder.
        reference: the case's image, as returned by :func:`load_image_stack`.
        case: the case id to name in errors.
        label_values: the declared label set; ``None`` skips the value check.

    Returns:
        ``(1, X, Y, Z)`` float32 label values.

    Raises:
        InvalidCaseError: the label is missing, unreadable, holds several volumes, lies on another grid, or holds
            values farther than 1e-3 from the set (up to five named, with their voxel count).
    """
    label = read_volume(file, case)
    if label.shape[0] != 1:
        raise InvalidCaseError(
            case,
            file,
            f"holds {label.shape[0]} volumes (shape {(*label.shape[1:], label.shape[0])}) where one label map is "
            "expected",
        )
    _check_same_grid(label, reference, case, file, "label")
    if label_values is not None:
        label = _check_label_values(label, label_values, case, file)
    return label


def is_class_label(label: object) -> bool:
    """Whether a datalist item's ``label`` is a class label (an integer or ``{task: integer}``) rather than a file."""
    return isinstance(label, Mapping | numbers.Real)


def check_class_label(
    label: int | Mapping[str, int],
    label_values: Sequence[int] | Mapping[str, Sequence[int]] | None,
    case: str,
    file: str | Path = "(datalist)",
) -> None:
    """Check a class label against the declared values, as :func:`load_label` checks a label image.

    Args:
        label: one class index, or ``{task: class index}`` for several tasks per case.
        label_values: the allowed values (e.g. ``[0, 1, 2]``); ``{task: allowed values}`` for a label of several
            tasks; ``None`` skips the check.
        case: the case id to name in errors.
        file: where the label comes from (a labels CSV), to name in errors.

    Raises:
        InvalidCaseError: a value outside its set (the task and value named), or a label whose tasks are not the
            declared ones.
        InputError: ``label_values`` declares one set for a label of several tasks, or tasks for a single label.
    """
    if label_values is None:
        return
    if isinstance(label, Mapping) != isinstance(label_values, Mapping):
        raise InputError(
            f"case {case!r}: label {label!r} and label_values {label_values!r} do not match: a label of several "
            "tasks ({task: class}) needs label_values as {task: [values]}, a single class label a list of values."
        )
    if not isinstance(label, Mapping):
        check_label_values([label], list(label_values), case, file, what="class label")
        return
    if set(label) != set(label_values):
        raise InvalidCaseError(case, file, f"label tasks {sorted(label)} are not the declared {sorted(label_values)}")
    for task, allowed in label_values.items():
        check_label_values([label[task]], list(allowed), case, file, what=f"task {task!r} class label")


def check_case(item: Mapping, label_values: Sequence[int] | Mapping[str, Sequence[int]] | None = None) -> None:
    """Load every file of a datalist item and raise if anything is wrong with it.

    Args:
        item: ``{"case": str, "image": [paths], "modalities": [names], "label": path, "series": choice}``;
            ``label``, ``modalities`` and ``series`` optional. ``label`` may be a class label instead of a file: an
            integer or ``{task: integer}``, from the CSV named in ``label_file``
            (:func:`medguide.data.read_class_labels`).
        label_values: the declared label set (for ``{task: integer}`` labels, ``{task: values}``); ``None`` skips the
            value check.

    Raises:
        InvalidCaseError: naming the case and the file (see :func:`load_image_stack`, :func:`load_label` and
            :func:`check_class_label`).
    """
    case = case_name(item)
    image = load_image_stack(item["image"], case, item.get("modalities"), item.get("series"))
    label = item.get("label")
    if is_class_label(label):
        check_class_label(label, label_values, case, item.get("label_file", "(datalist)"))
    elif label:
        load_label(label, image, case, label_values)


class CaseList(list):
    """Datalist items, plus the cases refused on the way (``skipped``, :class:`InvalidCaseError` each).

    What :func:`validate_datalist` and the layout readers return with ``skip_invalid``, so the end of a run can
    list what it left out (:func:`report_skipped_cases`).
    """

    def __init__(self, items=(), skipped=()) -> None:
        super().__init__(items)
        self.skipped: list[InvalidCaseError] = list(skipped)

    def skip(self, error: InvalidCaseError) -> None:
        """Record and log a refused case."""
        logger.warning("skipping invalid %s", error)
        self.skipped.append(error)


def validate_datalist(
    datalist: Sequence[Mapping],
    label_values: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    skip_invalid: bool = False,
) -> CaseList:
    """Check every item of a datalist before training or inference starts.

    Args:
        datalist: datalist items as :func:`check_case` takes them (a :class:`CaseList` keeps its skipped cases); an
            item's ``label`` is a label image, or a class label (an integer, or ``{task: integer}``).
        label_values: the declared label set (``{task: values}`` for class labels of several tasks); ``None`` skips
            the value check.
        skip_invalid: log a warning naming the case and file and drop the item, instead of raising.

    Returns:
        The valid items, in order, with every skipped case in ``skipped``.

    Raises:
        InvalidCaseError: the first bad case, when ``skip_invalid`` is false.
        InputError: no valid case is left.
    """
    return keep_valid(datalist, lambda item: check_case(item, label_values), skip_invalid)


def keep_valid(datalist: Sequence[Mapping], check: Callable[[Mapping], object], skip_invalid: bool = False) -> CaseList:
    """The items for which ``check`` raises no :class:`InvalidCaseError`: the one loop behind every validation.

    Args:
        datalist: the items (a :class:`CaseList` keeps its skipped cases).
        check: called with each item; raises ``InvalidCaseError`` for a bad case.
        skip_invalid: log and leave out a bad case, instead of raising.

    Returns:
        The valid items, in order, with every skipped case in ``skipped``.

    Raises:
        InvalidCaseError: the first bad case, when ``skip_invalid`` is false.
        InputError: no valid case is left.
    """
    earlier = list(getattr(datalist, "skipped", ()))
    valid = CaseList(skipped=earlier)
    for item in datalist:
        try:
            check(item)
        except InvalidCaseError as error:
            if not flag(skip_invalid, "skip_invalid"):
                raise
            valid.skip(error)
            continue
        valid.append(dict(item))
    if not valid:
        reasons = "".join(f"\n  {error}" for error in valid.skipped)
        raise InputError(f"no valid case left out of {len(datalist) + len(earlier)}:{reasons}")
    return valid


def report_skipped_cases(datalist: Sequence[Mapping], output_dir: str | os.PathLike | None = None) -> None:
    """The last step of an inference run: say what it wrote, and exit non-zero when it skipped cases.

    Logs how many cases were predicted (and where); with cases skipped, the run has still written everything it
    could, but a caller scripting it must learn that some cases got nothing.

    Args:
        datalist: the run's items, a :class:`CaseList` when ``skip_invalid`` left cases out.
        output_dir: where the predictions went, for the summary.

    Raises:
        SystemExit: when ``datalist`` skipped any case; the message counts and names them.
    """
    skipped = getattr(datalist, "skipped", [])
    where = f" in '{output_dir}'" if output_dir is not None else ""
    logger.info("predicted %d of %d cases%s", len(datalist), len(datalist) + len(skipped), where)
    if skipped:
        lines = "\n".join(f"  {error}" for error in skipped)
        raise SystemExit(
            f"{len(skipped)} of {len(datalist) + len(skipped)} cases were skipped as invalid "
            f"(skip_invalid), and got no output:\n{lines}"
        )
