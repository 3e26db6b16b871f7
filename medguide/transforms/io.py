"""Loaders that name the case and the file of whatever they cannot load.

``LoadCased`` loads a multi-modal case (the segmentation bundles use it instead of ``LoadImaged``); ``LoadPhotod``
loads 2D photographs (clinical and dermoscopic photos, fundus photographs, OCT B-scans), each key its own image, and
can refuse an image of the wrong kind (grey where a colour photograph is expected, or colour where a grey scan is).
:func:`validate_loading` runs a bundle's loaders over a datalist before training, so ``skip_invalid`` can leave bad
cases out up front.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from monai.config import KeysCollection
from monai.data import MetaTensor, PILReader
from monai.transforms import LoadImage, MapTransform
from PIL import Image

from medguide.data.checks import (
    case_name,
    check_class_label,
    is_class_label,
    keep_valid,
    load_image_stack,
    load_label,
)
from medguide.data.errors import InvalidCaseError

__all__ = ["PHOTO_KINDS", "CaseFileLoadd", "LoadCased", "LoadPhotod", "photo_kind", "read_photo", "validate_loading"]


class LoadCased(MapTransform):
    """Load a case's modalities as one channel-first ``MetaTensor`` and its label map, validating both.

    The first key holds the image: a list of per-modality files (or DICOM series folders), stacked in that order
    into one tensor that keeps the first modality's affine and meta data, so ``Invertd`` + ``SaveImaged`` write
    predictions in the input's space. Every later key holds a label map, loaded as one channel and checked against
    the image; a label key holding a class label (an integer or ``{task: integer}``, as
    :func:`medguide.data.read_class_labels` gives them) is checked against ``label_values`` and kept as it is. Each
    file is read by MONAI's ``LoadImage`` (reader chosen by MONAI; ``PydicomReader`` for a folder, so JPEG 2000 DICOM
    decodes; SimpleITK for formats neither reads).

    Every failure raises :class:`medguide.data.InvalidCaseError` naming the case (``data[case_key]``, else the first
    file's stem) and the file: missing, unreadable or corrupted file, NaN or infinite voxels, a modality or label
    with another shape or affine, a file with several volumes where one is expected, a DICOM folder with several
    series, one slice or a missing slice, label values outside ``label_values``. The checks are those of
    :func:`medguide.data.check_case`.

    Example:
        >>> load = LoadCased(keys=("image", "label"), label_values=(0, 1, 2, 4))
        >>> item = load({"case": "c1", "image": ["c1_t1.nii.gz", "c1_flair.nii.gz"], "label": "c1_seg.nii.gz"})
        >>> item["image"].shape  # (2, X, Y, Z)

    Args:
        keys: the image key first, then label keys.
        label_values: the declared label set (``{task: values}`` for class labels of several tasks); ``None`` skips
            the value check.
        case_key: key of the case id used in error messages.
        modality_key: key of the list naming each image file's modality (sets how many volumes each holds).
        allow_missing_keys: skip absent keys (e.g. no label at inference).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        label_values: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        case_key: str = "case",
        modality_key: str = "modalities",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        keep = label_values is None or isinstance(label_values, Mapping)
        self.label_values = label_values if keep else tuple(label_values)
        self.case_key = case_key
        self.modality_key = modality_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        """Replace the paths under ``keys`` by the loaded tensors.

        Args:
            data: a datalist item.
        """
        d = dict(data)
        image_key = self.keys[0]
        case = case_name(d, image_key=image_key, case_key=self.case_key)
        image = None
        for key in self.key_iterator(d):
            if key == image_key:
                # an item's "series" chooses the DICOM series of folders that hold several
                d[key] = image = load_image_stack(d[key], case, d.get(self.modality_key), d.get("series"))
                # outputs are named by the case (medguide.data.case_name_formatter), not by its first file
                image.meta["case"] = case
            elif is_class_label(d[key]):
                check_class_label(d[key], self.label_values, case, d.get("label_file", "(datalist)"))
            elif image is None:
                raise KeyError(f"case {case!r}: label key {key!r} needs the image key {image_key!r} present")
            else:
                d[key] = load_label(d[key], image, case, self.label_values)
        return d


@cache
def _photo_loader() -> LoadImage:
    return LoadImage(image_only=True, ensure_channel_first=True)


PHOTO_KINDS = ("rgb", "grey")
# a grey image saved with three channels (an OCT export, a JPEG's chroma noise) keeps them within a few levels of one
# another; a colour photograph's channels differ by tens of levels over most of its pixels
GREY_CHANNEL_SPREAD = 6.0
_GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
_KIND_SAMPLE_SIDE = 512


def photo_kind(image: Image.Image) -> str:
    """``"grey"`` or ``"rgb"``: what an image shows, whatever its file stores.

    A grey mode (``L``, ``I;16``, ...) is grey; a colour mode (RGB, RGBA, palette, CMYK, YCbCr) is grey too when its
    channels agree: when the mean over pixels of (largest - smallest channel) is below :data:`GREY_CHANNEL_SPREAD`
    levels of 255, as in a grey B-scan saved as RGB, where a few coloured marks (an export's annotations) do not
    make it a colour image. Measured on a copy at most 512 pixels on a side.

    Args:
        image: a PIL image (not yet converted).
    """
    if image.mode in _GREY_MODES:
        return "grey"
    factor = max(1, max(image.size) // _KIND_SAMPLE_SIDE)
    sample = np.asarray(image.convert("RGB").reduce(factor), dtype=np.int16)
    spread = float((sample.max(-1) - sample.min(-1)).mean()) if sample.size else 0.0
    return "grey" if spread < GREY_CHANNEL_SPREAD else "rgb"


class _WrongKind(Exception):
    def __init__(self, found: str) -> None:
        super().__init__(found)
        self.found = found


@dataclass(frozen=True)
class _Converter:
    """PILReader's converter: checks the image's kind on the file's own pixels, then converts it to ``mode``."""

    mode: str
    expect: str | None

    def __call__(self, image: Image.Image) -> Image.Image:
        found = photo_kind(image) if self.expect is not None else None
        if found != self.expect:
            raise _WrongKind(found)
        # PIL's own conversion: a palette image is looked up, grey replicated, alpha dropped, CMYK converted
        return image.convert(self.mode)


@cache
def _photo_reader(mode: str, expect: str | None = None) -> PILReader:
    return PILReader(converter=_Converter(mode, expect))


def _check_expect(expect: str | None) -> str | None:
    if expect is not None and expect not in PHOTO_KINDS:
        raise ValueError(f"expect must be one of {list(PHOTO_KINDS)} or None, got {expect!r}")
    return expect


def read_photo(path: str | Path, case: str, mode: str = "RGB", expect: str | None = None) -> MetaTensor:
    """Read a 2D photograph (JPEG, PNG, BMP, TIFF: whatever PIL decodes) as a channel-first float32 ``MetaTensor``.

    The axes are MONAI's for 2D images (``(C, W, H)``, as ``LoadImage`` with ``PILReader`` gives them), so photos
    read here and through ``LoadImaged`` agree. The file name's suffix may be in any case (``NEL025.JPG``). Values
    are the file's own (0-255 for 8-bit images).

    Args:
        path: the image file.
        case: the case id to name in errors.
        mode: the PIL mode every photo is converted to (``"RGB"``: 3 channels whatever the file holds; ``"L"``:
            one grey channel).
        expect: the kind of image the file must hold, checked before the conversion to ``mode``: ``"rgb"`` (a
            colour photograph, e.g. a fundus photograph), ``"grey"`` (e.g. an OCT B-scan, stored grey or as three
            equal channels), or ``None`` for either; see :func:`photo_kind`.

    Raises:
        InvalidCaseError: the file is missing, does not decode (truncated, corrupted, not an image), or holds
            another kind of image than ``expect``.
        ValueError: ``expect`` is not one of :data:`PHOTO_KINDS` or ``None``.
    """
    path = Path(path)
    reader = _photo_reader(mode, _check_expect(expect))
    if not path.is_file():
        raise InvalidCaseError(case, path, "file not found" if not path.exists() else "is a folder, not an image file")
    try:
        return _photo_loader()(path, reader=reader)
    except _WrongKind as wrong:
        wanted = "a colour (RGB) image" if expect == "rgb" else "a grey image"
        found = "a grey image (its channels are equal)" if wrong.found == "grey" else "a colour image"
        reason = f"is {found} where {wanted} is expected: an image of the wrong modality?"
        raise InvalidCaseError(case, path, reason) from None
    except Exception as error:
        reason = f"unreadable or corrupted image ({type(error).__name__}: {error})"
        raise InvalidCaseError(case, path, reason) from error


class CaseFileLoadd(MapTransform):
    """Base of the loaders that replace each key's file path by what it holds, naming the case of a bad file.

    Subclasses define :meth:`load`; the case name comes from ``case_key`` (or the file's name) as for
    :class:`LoadCased`.

    Args:
        keys: the keys holding a path each.
        case_key: key of the case id used in error messages.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, case_key: str = "case", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.case_key = case_key

    def load(self, path: str | Path, case: str) -> object:
        """What the file at ``path`` of ``case`` holds; raises ``InvalidCaseError`` naming both when it is bad."""
        raise NotImplementedError

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        """Replace the paths under ``keys`` by what they hold.

        Args:
            data: a datalist item.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.load(d[key], case_name(d, image_key=key, case_key=self.case_key))
        return d


class LoadPhotod(CaseFileLoadd):
    """Load the 2D photographs of a case, one per key, naming the case and file of any that does not decode.

    Each key holds one image file, read by :func:`read_photo` (MONAI's ``PILReader``) and converted to ``mode``;
    the photos of one case may differ in size (a clinical and a dermoscopic photo). With ``expect``, an image of the
    other kind is refused before the conversion (a grey image where a colour fundus photograph is expected, or a
    colour photograph where a grey OCT B-scan is). ``meta["case"]`` is set as :class:`LoadCased` sets it.

    Example:
        >>> load = LoadPhotod(keys=("clinic", "derm"))
        >>> item = load({"case": "1", "clinic": "images/NEL/NEL025.JPG", "derm": "images/NEL/Nel026.jpg"})
        >>> item["clinic"].shape  # (3, W, H)
        >>> LoadPhotod(keys="oct", mode="L", expect="grey")({"case": "o1", "oct": "fundus.png"})
        InvalidCaseError: case 'o1': file 'fundus.png': is a colour image where a grey image is expected: ...

    Args:
        keys: the keys holding image files.
        mode: the PIL mode of every loaded image (``"RGB"`` gives 3 channels from grey, palette or RGBA files).
        expect: ``"rgb"``, ``"grey"`` or ``None``: the kind of image every key must hold (see
            :func:`photo_kind`); ``None`` takes either.
        case_key: key of the case id used in error messages.
        allow_missing_keys: skip absent keys (e.g. no superior photo at inference).

    Raises:
        ValueError: ``expect`` is not ``"rgb"``, ``"grey"`` or ``None``.
    """

    def __init__(
        self,
        keys: KeysCollection,
        mode: str = "RGB",
        case_key: str = "case",
        allow_missing_keys: bool = False,
        expect: str | None = None,
    ) -> None:
        super().__init__(keys, case_key, allow_missing_keys)
        self.mode = mode
        self.expect = _check_expect(expect)

    def load(self, path: str | Path, case: str) -> MetaTensor:
        image = read_photo(path, case, self.mode, self.expect)
        image.meta["case"] = case
        return image


def _invalid_case(error: BaseException | None) -> InvalidCaseError | None:
    """The :class:`InvalidCaseError` in ``error``'s chain (MONAI's ``Compose`` wraps it in a ``RuntimeError``)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InvalidCaseError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def validate_loading(
    datalist: Sequence[Mapping], load: Callable[[dict], object], skip_invalid: bool = False
) -> list[dict]:
    """Load every item through a bundle's own loaders before training starts, and keep those that load.

    :func:`medguide.data.validate_datalist` checks an item's ``image`` and ``label``; items with other keys (a
    histology bag, a pair of photos) are checked here, by the very transforms the run applies, so nothing is
    checked twice in two ways. The loaded data are dropped; the items are returned as they were.

    Example:
        >>> load = Compose([LoadCased(keys=("image", "label"), label_values=[0, 1, 2]), LoadBagd("bag")])
        >>> items = validate_loading(cpm_radpath_datalist(data_dir), load, skip_invalid=True)

    Args:
        datalist: the items (a :class:`~medguide.data.CaseList` keeps its skipped cases).
        load: a transform (or ``Compose``) that raises :class:`~medguide.data.InvalidCaseError` for a bad case.
        skip_invalid: log and leave out a case that does not load, instead of raising.

    Returns:
        The items that loaded, in order, with every skipped case in ``skipped``.

    Raises:
        InvalidCaseError: the first bad case (unwrapped from MONAI's ``RuntimeError``), without ``skip_invalid``.
        InputError: no valid case is left.
    """

    def check(item: Mapping) -> None:
        try:
            load(dict(item))
        except Exception as error:
            invalid = _invalid_case(error)
            if invalid is None or invalid is error:
                raise
            raise invalid from invalid.__cause__

    return keep_valid(datalist, check, skip_invalid)
