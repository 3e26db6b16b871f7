"""Chest X-ray readers: films (PNG, JPEG, DICOM), the MIMIC-CXR layout with its reports, and ChestX-ray8's boxes.

MIMIC-CXR (Johnson et al., "MIMIC-CXR, a de-identified publicly available database of chest radiographs with
free-text reports", Scientific Data 2019, https://doi.org/10.1038/s41597-019-0322-0; MIMIC-CXR-JPG,
https://arxiv.org/abs/1901.07042) trains the report-guided model. Its layout, DICOM (MIMIC-CXR) or JPEG
(MIMIC-CXR-JPG) alike::

    root/files/p10/p10000032/s50414267/<dicom_id>.jpg     (or .dcm) one file per film of study 50414267
    root/files/p10/p10000032/s50414267.txt                the study's free-text report, beside the study folder
    root/mimic-cxr-2.0.0-split.csv(.gz)      optional: dicom_id,study_id,subject_id,split (train/validate/test)
    root/mimic-cxr-2.0.0-chexpert.csv(.gz)   optional: subject_id,study_id, 14 CheXpert labels (1.0, 0.0, -1.0, blank)
    root/mimic-cxr-2.0.0-metadata.csv(.gz)   optional: dicom_id, ..., ViewPosition (PA, AP, LATERAL, ...), ...

ChestX-ray8 (Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised
Classification and Localization of Common Thorax Diseases", CVPR 2017, https://arxiv.org/abs/1705.02315; released
as NIH ChestX-ray14) evaluates the boxes::

    root/images/<Image Index>.png     1024 x 1024 8-bit grey (or the download's images_001/images/, ... folders)
    root/Data_Entry_2017.csv          Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,
                                      View Position,OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]
                                      (labels joined by "|", "No Finding"; the 2020 copy is Data_Entry_2017_v2020.csv)
    root/BBox_List_2017.csv           Image Index,Finding Label,Bbox [x,y,w,h] (x, y, w, h in the 1024-px grid;
                                      984 boxes of 8 findings; some copies end every line with 3 empty columns)

The headers' bracketed names (``OriginalImage[Width,Height]``, ``Bbox [x,y,w,h]``) are unquoted, so each spans
several CSV columns; they are read as such, whether written quoted or not. The box list spells "Infiltrate" where
Data_Entry says "Infiltration"; boxes are labelled here with Data_Entry's names (:data:`CHESTXRAY8_FINDINGS`).

Image and box geometry follow MONAI's layout for 2D images: a film is a ``[1, W, H]`` tensor, x (the file's
columns, left to right) along the first spatial axis and y (its rows, top to bottom) along the second, as MONAI's
``PILReader`` and :func:`medguide.transforms.read_photo` give an image. So one convention holds across medguide: the
localisation maps (``[B, w, h]``), :mod:`medguide.transforms.boxes` and MONAI's ``monai.data.box_utils`` take a box
``[x0, y0, x1, y1]`` with coordinate ``k`` along spatial axis ``k``. Boxes are in pixel-corner coordinates: pixel
``film[0, x, y]`` covers ``[x, x + 1) x [y, y + 1)``, so a box indexes ``film[0, x0:x1, y0:y1]`` and scales between
grids by the ratio of their sizes (:func:`boxes_to_grid`). Shapes, sizes and spacings are given in the same order,
``(W, H)`` and ``(x, y)``. The tensor is the file's pixel grid transposed: show a film with matplotlib as
``imshow(film[0].T)``.
"""

from __future__ import annotations

import csv
import gzip
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pydicom
import torch
from monai.data import MetaTensor
from PIL import Image
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from medguide.data.checks import CaseList, keep_valid
from medguide.data.errors import InputError, InvalidCaseError, MissingInputError, flag
from medguide.data.files import image_stem, is_hidden, visible

__all__ = [
    "CHESTXRAY8_FINDINGS",
    "CHESTXRAY8_SIDE",
    "CHEXPERT_LABELS",
    "MIMIC_CXR_SPLITS",
    "boxes_to_grid",
    "chestxray8_boxes",
    "chestxray8_datalist",
    "mimic_cxr_datalist",
    "read_chest_film",
]

logger = logging.getLogger("medguide.data")

# Data_Entry_2017.csv's 14 findings (the box list's "Infiltrate" is Infiltration)
CHESTXRAY8_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
_FINDING_ALIASES = {"Infiltrate": "Infiltration"}
CHESTXRAY8_SIDE = 1024  # the released PNGs' side, the grid of BBox_List_2017.csv
CHEXPERT_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
MIMIC_CXR_SPLITS = ("train", "validate", "test")
_FILM_SUFFIXES = {".jpg": "jpg", ".jpeg": "jpg", ".dcm": "dcm"}
_DICOM_SUFFIXES = (".dcm", ".dicom")
# a 16-bit film whose values all lie below this probably holds 12 bits; said in the log, read as it is
_TWELVE_BITS = 4096


def _pil_pixels(image: Image.Image, path: Path) -> tuple[np.ndarray, int]:
    """The grey pixels of a decoded PIL image scaled to [0, 1], and the stored bit depth; refuses a colour image."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image)
        if mode == "I" and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"a 32-bit integer image (values {values.min()} to {values.max()}), not a 16-bit film")
        if values.max() < _TWELVE_BITS:
            logger.info("'%s': 16-bit film whose values all lie below 4096 (12 bits?); scaled by 65535", path)
        return values.astype(np.float32) / 65535.0, 16
    if mode == "F":
        raise ValueError(
            "a floating-point image, whose grey levels have no defined range; save the film as 8 or 16 bit"
        )
    if mode in ("1", "L", "LA", "La"):
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0, 1 if mode == "1" else 8
    # imported here: medguide.transforms imports this module (its LoadChestFilmd)
    from medguide.transforms.io import photo_kind

    if photo_kind(image) != "grey":
        raise _ColourFilm(mode)
    logger.info("'%s': a grey film stored as %s (its channels agree); read as grey", path, mode)
    return np.asarray(image.convert("RGB").convert("L"), dtype=np.float32) / 255.0, 8


class _ColourFilm(Exception):
    pass


def _read_pil(path: Path, case: str) -> tuple[np.ndarray, int]:
    try:
        with Image.open(path) as image:
            image.load()
            return _pil_pixels(image, path)
    except _ColourFilm as colour:
        reason = (
            f"is a colour image ({colour}, its channels differ): a chest film is grey. A grey film saved as RGB is "
            "read; this one is a photograph or an annotated screenshot"
        )
        raise InvalidCaseError(case, path, reason) from None
    except Exception as error:
        raise InvalidCaseError(case, path, f"does not decode as an image ({type(error).__name__}: {error})") from error


def _modality_range(ds: pydicom.Dataset) -> tuple[float, float]:
    """The range of the modality LUT's output, as pydicom's ``apply_windowing`` takes it (DICOM PS3.3 C.11.2)."""
    if ds.get("ModalityLUTSequence"):
        low, high = 0.0, 2.0 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
    elif int(ds.get("PixelRepresentation", 0)) == 0:
        low, high = 0.0, 2.0 ** int(ds.BitsStored) - 1
    else:
        low, high = -(2.0 ** (int(ds.BitsStored) - 1)), 2.0 ** (int(ds.BitsStored) - 1) - 1
    if ds.get("RescaleSlope") is not None and ds.get("RescaleIntercept") is not None:
        slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        low, high = sorted((low * slope + intercept, high * slope + intercept))
    return low, high


def _read_dicom(path: Path, case: str) -> tuple[np.ndarray, int, tuple[float, float] | None]:
    try:
        ds = pydicom.dcmread(path)
    except Exception as error:
        raise InvalidCaseError(case, path, f"is not a readable DICOM file ({type(error).__name__}: {error})") from error
    if "PixelData" not in ds:
        raise InvalidCaseError(case, path, "DICOM file without an image (no Pixel Data): a report or structured data?")
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames > 1:
        raise InvalidCaseError(
            case, path, f"holds {frames} frames; a chest film is one frame (a cine or tomosynthesis?)"
        )
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if int(ds.get("SamplesPerPixel", 1)) != 1 or photometric not in ("MONOCHROME1", "MONOCHROME2"):
        reason = (
            f"is a colour DICOM image ({photometric or 'no Photometric Interpretation'}); a chest film is MONOCHROME1/2"
        )
        raise InvalidCaseError(case, path, reason)
    try:
        values = apply_voi_lut(apply_modality_lut(ds.pixel_array, ds), ds)
    except Exception as error:
        raise InvalidCaseError(
            case, path, f"DICOM pixel data do not decode ({type(error).__name__}: {error})"
        ) from error
    if ds.get("VOILUTSequence"):
        low, high = 0.0, 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
    else:  # a window maps onto the modality range, and without one the modality range is shown
        low, high = _modality_range(ds)
    film = np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0).astype(np.float32)
    if photometric == "MONOCHROME1":  # 0 is white: bone bright again
        film = 1.0 - film
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    # DICOM writes (row, column) spacing, i.e. (y, x); returned as (x, y), the order of the film's axes
    return film, int(ds.BitsStored), (float(spacing[1]), float(spacing[0])) if spacing else None


def read_chest_film(
    path: str | os.PathLike, case: str | None = None, pixel_spacing: Sequence[float] | None = None
) -> MetaTensor:
    """Read one chest film (PNG, JPEG or another format PIL decodes; DICOM) as a grey ``[1, W, H]`` float32 tensor.

    MONAI's layout (``PILReader``'s ``(C, W, H)``): x, the file's columns from left to right, along the first spatial
    axis, y, its rows from top to bottom, along the second (see the module docstring).

    Values lie in [0, 1], 0 black, bone bright. Conversions, each documented here rather than guessed:

    - 8-bit grey: / 255. 16-bit grey (PIL mode ``I;16``, or ``I`` within 0-65535): / 65535, so a film that holds
      12-bit values in 16 bits reads within [0, 0.0625] (logged); it is not stretched.
    - RGB, RGBA, palette: a grey film saved in colour (channels agreeing, as
      :func:`medguide.transforms.photo_kind` decides) is read as grey and logged; a colour image is refused.
      Alpha is dropped. Floating-point images are refused (no defined grey range).
    - DICOM: the modality LUT or rescale, then the VOI LUT or window (the first), through pydicom; the output is
      scaled over the range those steps map onto (the VOI LUT's bit depth; else the rescaled stored range, as
      pydicom's windowing takes it), so a window's full width spans 0 to 1. MONOCHROME1 is inverted. Multi-frame
      and colour DICOM are refused.

    ``meta`` holds ``filename_or_obj``, ``spatial_shape`` and ``original_shape`` (the file's ``(W, H)``, as
    MONAI's ``PILReader`` records them), ``pixel_spacing`` (mm, ``(x, y)``: column spacing, then row spacing, the
    order of the tensor's axes; DICOM Pixel Spacing, else Imager Pixel Spacing, both written ``(row, column)`` in
    the file and swapped here; else the given ``pixel_spacing``, else nan), ``bits`` (the stored bit depth) and
    ``case``; the affine is the identity.

    Example:
        >>> film = read_chest_film("files/p10/p10000032/s50414267/02aa804e.dcm")  # 3056 rows of 2544 columns
        >>> film.shape, film.meta["pixel_spacing"]
        (torch.Size([1, 2544, 3056]), array([0.139, 0.139]))

    Args:
        path: the film's file; ``.dcm`` (``.dicom``) read as DICOM, any other as an image.
        case: the case to name in errors (default: the file name without its suffix).
        pixel_spacing: ``(x, y)`` mm (column spacing, then row spacing), for a file that does not carry its own
            (PNG, JPEG).

    Raises:
        InvalidCaseError: naming the case and file: missing, does not decode (truncated, corrupted, not an image),
            a colour image, a floating-point image, a DICOM without pixel data, multi-frame or colour DICOM.
    """
    path = Path(path)
    case = str(case) if case is not None else image_stem(path)
    if not path.is_file():
        raise InvalidCaseError(case, path, "file not found" if not path.exists() else "is a folder, not a film")
    if path.suffix.lower() in _DICOM_SUFFIXES:
        film, bits, own_spacing = _read_dicom(path, case)
    else:
        (film, bits), own_spacing = _read_pil(path, case), None
    spacing = own_spacing or (tuple(pixel_spacing) if pixel_spacing is not None else (math.nan, math.nan))
    film = film.T  # the decoded (rows, columns) grid to MONAI's (x, y)
    shape = np.asarray(film.shape)
    meta = {
        "filename_or_obj": str(path),
        "spatial_shape": shape,
        "original_shape": shape.copy(),
        "original_channel_dim": "no_channel",
        "pixel_spacing": np.asarray(spacing, dtype=np.float64),
        "bits": bits,
        "case": case,
    }
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(film)[None]), meta=meta)


def _open_text(path: Path):
    """A CSV file (or its ``.gz``, as PhysioNet ships MIMIC-CXR's) opened as UTF-8 text."""
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _header_names(fields: Sequence[str]) -> list[str]:
    """Column names of a header whose bracketed names span several columns (``OriginalImage[Width,Height]`` gives
    ``OriginalImage Width``, ``OriginalImage Height``), quoted or not; trailing empty names dropped."""
    names = []
    for token in re.split(r",(?![^\[]*\])", ",".join(fields)):
        match = re.fullmatch(r"\s*(.*?)\s*\[(.*)\]\s*", token)
        if match:
            names += [f"{match[1]} {part.strip()}".strip() for part in match[2].split(",")]
        else:
            names.append(token.strip())
    while names and not names[-1]:
        names.pop()
    return names


def _read_table(path: Path, required: Sequence[str], what: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, {column: text}) of every non-empty row of a CSV file; extra empty trailing cells are allowed.

    Raises:
        InputError: naming the file (and line): not UTF-8, a required column missing, a row of another length.
    """
    try:
        with _open_text(path) as f:
            rows = list(csv.reader(f))
    except (UnicodeDecodeError, OSError, EOFError, csv.Error) as error:
        raise InputError(f"{what} '{path}' cannot be read as UTF-8 CSV ({type(error).__name__}: {error})") from error
    if not rows:
        raise InputError(f"{what} '{path}' is empty")
    names = _header_names(rows[0])
    missing = [name for name in required if name not in names]
    if missing:
        raise InputError(f"{what} '{path}' lacks the column(s) {missing}; its header reads {names}")
    table = []
    for number, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        cells = list(row)
        while len(cells) > len(names) and not cells[-1].strip():
            cells.pop()
        if len(cells) != len(names):
            raise InputError(
                f"{what} '{path}', line {number}: {len(cells)} fields where the header has {len(names)}: {row}"
            )
        table.append((number, dict(zip(names, (cell.strip() for cell in cells), strict=True))))
    return table


def _number(text: str, path: Path, line: int, column: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InputError(f"{what} '{path}', line {line}: {column} is {text!r}, not a number")
    return value


def _finding(name: str | None) -> str | None:
    if name is None:
        return None
    name = _FINDING_ALIASES.get(name, name)
    if name not in CHESTXRAY8_FINDINGS:
        raise InputError(f"finding must be one of ChestX-ray8's {list(CHESTXRAY8_FINDINGS)}, got {name!r}")
    return name


def _image_size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``(W, H)`` of an int (a square) or a ``(W, H)`` pair."""
    if size is None:
        return None
    width, height = (size, size) if np.ndim(size) == 0 else size
    return int(width), int(height)


def _mimic_csv(root: Path, name: str) -> Path | None:
    return next((root / n for n in (name, f"{name}.gz") if (root / n).is_file()), None)


def _study_entry(image: Path, kind: str, subject: int, study: int, report: Path) -> dict:
    case = f"{subject}/{study}/{image_stem(image)}"
    entry = {"case": case, "image": str(image), "report": str(report), "subject": subject, "study": study}
    if not report.is_file():
        entry["error"] = InvalidCaseError(case, image, f"no report: expected '{report}' beside the study folder")
    elif report.stat().st_size == 0:
        entry["error"] = InvalidCaseError(case, report, "the study's report is empty")
    entry["format"] = kind
    return entry


def _mimic_images(files: Path, reports: Path, image_format: str | None) -> list[dict]:
    """One entry per film under ``files/pNN/p<subject>/s<study>/``, in path order."""
    entries = []
    for group in visible(files.iterdir()):
        for patient in visible(group.iterdir()) if group.is_dir() else ():
            if not (patient.is_dir() and re.fullmatch(r"p\d+", patient.name)):
                continue
            for study in visible(patient.iterdir()):
                if not (study.is_dir() and re.fullmatch(r"s\d+", study.name)):
                    continue
                report = reports / group.name / patient.name / f"{study.name}.txt"
                found: dict[str, Path] = {}
                for image in visible(study.iterdir()):
                    kind = _FILM_SUFFIXES.get(image.suffix.lower())
                    if kind is None or not image.is_file() or (image_format and kind != image_format):
                        continue
                    if image.stem in found:
                        entry = {"case": f"{patient.name[1:]}/{study.name[1:]}/{image.stem}"}
                        reason = f"a second file of this film beside '{found[image.stem].name}'; keep one"
                        entry["error"] = InvalidCaseError(entry["case"], image, reason)
                        entries.append(entry)
                        continue
                    found[image.stem] = image
                    entries.append(_study_entry(image, kind, int(patient.name[1:]), int(study.name[1:]), report))
    return entries


def _mimic_column(root: Path, name: str, column: str) -> dict[str, str] | None:
    """{dicom_id: ``column``} of one of MIMIC-CXR's per-film CSV files; ``None`` when the file is not there."""
    path = _mimic_csv(root, name)
    if path is None:
        return None
    return {row["dicom_id"]: row[column] for _, row in _read_table(path, ("dicom_id", column), f"MIMIC-CXR {name}")}


def _chexpert_labels(root: Path) -> dict[tuple[int, int], dict[str, float | None]] | None:
    """{(subject, study): {label: 1.0, 0.0, -1.0 or None}} of ``mimic-cxr-2.0.0-chexpert.csv``, if there."""
    path = _mimic_csv(root, "mimic-cxr-2.0.0-chexpert.csv")
    if path is None:
        return None
    what = "CheXpert labels"
    labels = {}
    for line, row in _read_table(path, ("subject_id", "study_id", *CHEXPERT_LABELS), what):
        study = tuple(int(_number(row[key], path, line, key, what)) for key in ("subject_id", "study_id"))
        labels[study] = {name: _chexpert_value(row[name], path, line, name) for name in CHEXPERT_LABELS}
    return labels


def _chexpert_value(text: str, path: Path, line: int, column: str) -> float | None:
    if not text:
        return None
    value = _number(text, path, line, column, "CheXpert labels")
    if value not in (1.0, 0.0, -1.0):
        raise InputError(
            f"CheXpert labels '{path}', line {line}: {column} is {text!r}; expected 1.0, 0.0, -1.0 or blank"
        )
    return value


def mimic_cxr_datalist(
    root: str | os.PathLike,
    split: str | None = None,
    views: Sequence[str] | None = ("PA", "AP"),
    labels: bool = True,
    skip_invalid: bool = False,
    reports_root: str | os.PathLike | None = None,
    image_format: str | None = None,
) -> CaseList:
    """Read a MIMIC-CXR (DICOM) or MIMIC-CXR-JPG tree with its reports (layout in the module docstring).

    Items, one per film, sorted by path::

        {"case": "10000032/50414267/02aa804e-bde0afdd-...", "image": ".../s50414267/02aa804e-....jpg",
         "report": ".../p10000032/s50414267.txt", "subject": 10000032, "study": 50414267, "split": "train",
         "view": "PA", "format": "jpg", "chexpert": {"Pneumonia": 1.0, "Lung Opacity": None, ...}}

    - ``split`` of each film from ``mimic-cxr-2.0.0-split.csv(.gz)``; without that file every film is ``"train"``
      (logged), and a film missing from it is ``""`` (kept only when ``split`` is ``None``).
    - ``view`` (ViewPosition) from ``mimic-cxr-2.0.0-metadata.csv(.gz)``, ``""`` where unknown; ``views`` keeps only
      those views when the file is there (without it nothing is filtered, logged).
    - ``chexpert``, when ``labels`` and ``mimic-cxr-2.0.0-chexpert.csv(.gz)`` is there: the 14 CheXpert labels of
      the film's study, 1.0 positive, 0.0 negative, -1.0 uncertain, ``None`` unmentioned (blank, or a study the file
      leaves out). Not collatable as it is: turn ``None`` into a mask before batching.

    Nothing is decoded here: :class:`medguide.transforms.LoadChestFilmd` names a film that does not decode, and
    :func:`medguide.transforms.validate_loading` runs it over the list before training. Hidden files (``._x.jpg``,
    ``.DS_Store``), other files (PhysioNet's ``index.html``) and folders not named ``p<digits>``/``s<digits>`` are
    passed over.

    Args:
        root: the folder holding ``files/`` (and the CSV files).
        split: ``"train"``, ``"validate"``, ``"test"``, or ``None`` for every film.
        views: the ViewPositions to keep (``None``: all).
        labels: add the CheXpert labels when their file is there.
        skip_invalid: log and leave out a refused film, instead of raising (the result's ``skipped`` lists them).
        reports_root: the folder holding the reports' ``files/`` tree, when apart from the images (MIMIC-CXR-JPG
            ships without reports; they come with MIMIC-CXR's ``mimic-cxr-reports``). Default: ``root``.
        image_format: ``"jpg"`` or ``"dcm"`` to read only those films; ``None`` reads both.

    Raises:
        MissingInputError: ``root`` or its ``files/`` missing, or no film (of ``split`` and ``views``) in it.
        InputError: an unknown split or image format; a CSV file that is malformed (naming it and the line).
        InvalidCaseError: without ``skip_invalid``, naming the film: its report missing (and where it was expected)
            or empty, a film both as ``.jpg`` and ``.dcm``.
    """
    if split is not None and split not in MIMIC_CXR_SPLITS:
        raise InputError(f"MIMIC-CXR split must be one of {list(MIMIC_CXR_SPLITS)} or None, got {split!r}")
    if image_format not in (None, "jpg", "dcm"):
        raise InputError(f"image_format must be 'jpg', 'dcm' or None, got {image_format!r}")
    skip = flag(skip_invalid, "skip_invalid")
    views = (views,) if isinstance(views, str) else views
    root = Path(root)
    files = root / "files"
    if not files.is_dir():
        what = "folder not found" if not root.is_dir() else "holds no files/ folder (root is the folder above files/)"
        raise MissingInputError(f"MIMIC-CXR root '{root}': {what}")
    entries = _mimic_images(files, Path(reports_root or root) / "files", image_format)
    if not entries:
        raise MissingInputError(f"no MIMIC-CXR film (.jpg, .dcm) in '{files}' (files/pNN/p<subject>/s<study>/)")

    split_of = _mimic_column(root, "mimic-cxr-2.0.0-split.csv", "split")
    if split_of is None:
        logger.warning("no mimic-cxr-2.0.0-split.csv in '%s': every film is taken as 'train'", root)
    view_of = _mimic_column(root, "mimic-cxr-2.0.0-metadata.csv", "ViewPosition")
    if view_of is None:
        logger.warning("no mimic-cxr-2.0.0-metadata.csv in '%s': views unknown, not filtered", root)
    labels_of = _chexpert_labels(root) if labels else None

    kept = []
    for entry in entries:
        dicom_id = entry["case"].rsplit("/", 1)[-1]
        entry["split"] = "train" if split_of is None else split_of.get(dicom_id, "")
        entry["view"] = "" if view_of is None else view_of.get(dicom_id, "")
        if (split is not None and entry["split"] != split) or (
            views is not None and view_of is not None and entry["view"] not in views
        ):
            continue
        if labels_of is not None and "error" not in entry:
            entry["chexpert"] = dict(labels_of.get((entry["subject"], entry["study"]), dict.fromkeys(CHEXPERT_LABELS)))
        kept.append(entry)
    if not kept:
        raise MissingInputError(
            f"no MIMIC-CXR film of split {split!r} and views {views} in '{files}' (of {len(entries)} films)"
            + ("; without mimic-cxr-2.0.0-split.csv every film is 'train'" if split_of is None else "")
        )
    return keep_valid(kept, _raise_error, skip)


def _raise_error(entry: Mapping) -> None:
    if "error" in entry:
        raise entry["error"]


def chestxray8_boxes(
    csv_path: str | os.PathLike, finding: str | None = None, image_size: int | Sequence[int] | None = None
) -> dict[str, list[dict]]:
    """Read ChestX-ray8's ``BBox_List_2017.csv``: ``{image index: [{"label", "box": [x0, y0, x1, y1], "line"}]}``.

    Each line's ``x, y, w, h`` becomes the corners ``[x, y, x + w, y + h]`` in the same (the 1024-px) pixel grid,
    floats as written (float64), in the file's order, with the line it was read from (so a later check against the
    film's own size can name it). Labels take Data_Entry's names ("Infiltrate" is read as
    "Infiltration"); the header is read whether its bracketed name is quoted or spans four columns, and trailing
    empty columns (some copies have three) are allowed.

    Example:
        >>> boxes = chestxray8_boxes("BBox_List_2017.csv", finding="Pneumonia", image_size=1024)
        >>> boxes["00013111_010.png"]
        [{'label': 'Pneumonia', 'box': [...], 'line': ...}]

    Args:
        csv_path: the box list.
        finding: keep only the boxes of this finding (either spelling of Infiltration); ``None`` keeps all.
        image_size: the grid the boxes lie in, ``(W, H)`` or a side (ChestX-ray8's is :data:`CHESTXRAY8_SIDE`),
            every box checked to lie within it; ``None`` checks only that boxes start at 0 or after.

    Raises:
        MissingInputError: the file is missing.
        InputError: naming the file and line: a malformed line, an unknown finding, a coordinate that is not a
            number, a non-positive width or height, a box outside the image; an unknown ``finding``.
    """
    path = Path(csv_path)
    if not path.is_file():
        raise MissingInputError(f"ChestX-ray8 box list not found: '{path}'")
    wanted = _finding(finding)
    size = _image_size(image_size)
    what = "ChestX-ray8 box list"
    boxes: dict[str, list[dict]] = {}
    for line, row in _read_table(path, ("Image Index", "Finding Label", "Bbox x", "Bbox y", "Bbox w", "Bbox h"), what):
        label = _FINDING_ALIASES.get(row["Finding Label"], row["Finding Label"])
        if label not in CHESTXRAY8_FINDINGS:
            raise InputError(f"{what} '{path}', line {line}: unknown finding {row['Finding Label']!r}")
        x, y, w, h = (_number(row[f"Bbox {c}"], path, line, f"Bbox {c}", what) for c in "xywh")
        if w <= 0 or h <= 0:
            raise InputError(f"{what} '{path}', line {line}: box of width {w} and height {h}; both must be positive")
        box = [x, y, x + w, y + h]
        if x < 0 or y < 0 or (size is not None and (box[2] > size[0] or box[3] > size[1])):
            grid = f"the {size[0]} x {size[1]} (W x H) image" if size else "the image (x and y from 0)"
            raise InputError(f"{what} '{path}', line {line}: box {box} (x0, y0, x1, y1) lies outside {grid}")
        if wanted is None or label == wanted:
            boxes.setdefault(row["Image Index"], []).append({"label": label, "box": box, "line": line})
    return boxes


def _film_size(path: Path, boxes: Sequence[Mapping], box_file: Path | None) -> tuple[int, int]:
    """The film's ``(W, H)`` from its header, every box of it checked to lie inside, naming the box list's line."""
    try:
        with Image.open(path) as image:
            size = image.size
    except Exception:  # an undecodable film is named by the loader, as any other
        return CHESTXRAY8_SIDE, CHESTXRAY8_SIDE
    for box in boxes:
        if box["box"][2] > size[0] or box["box"][3] > size[1]:
            raise InputError(
                f"ChestX-ray8 box list '{box_file}', line {box['line']}: box {box['box']} (x0, y0, x1, y1) lies "
                f"outside its film '{path}' of {size[0]} x {size[1]} (W x H) pixels"
            )
    return size


_DATA_ENTRY_NAMES = ("Data_Entry_2017.csv", "Data_Entry_2017_v2020.csv")
_DATA_ENTRY_COLUMNS = (
    "Image Index",
    "Finding Labels",
    "Patient ID",
    "View Position",
    "OriginalImage Width",
    "OriginalImage Height",
    "OriginalImagePixelSpacing x",
    "OriginalImagePixelSpacing y",
)


def _image_index(root: Path, image_folder: str) -> dict[str, Path]:
    """{file name: path} of the images in ``root/image_folder`` and in the download's ``images_NNN/images``."""
    folders = [root / image_folder, *sorted(root.glob(f"images_*/{image_folder}"))]
    index: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            with os.scandir(folder) as found:
                for entry in found:
                    if not is_hidden(entry.name):
                        index.setdefault(entry.name, Path(entry.path))
    return index


def chestxray8_datalist(
    root: str | os.PathLike,
    finding: str = "Pneumonia",
    boxed_only: bool = True,
    data_entry: str | os.PathLike | None = None,
    bbox_list: str | os.PathLike | None = "BBox_List_2017.csv",
    image_folder: str = "images",
    image_size: int | Sequence[int] = CHESTXRAY8_SIDE,
    skip_invalid: bool = False,
) -> CaseList:
    """Read a ChestX-ray8 (NIH ChestX-ray14) folder for box evaluation (layout in the module docstring).

    Items, in Data_Entry's order::

        {"case": "00013118_008", "image": ".../images/00013118_008.png", "subject": 13118, "view": "PA",
         "labels": ["Atelectasis", "Infiltration"], "label": 0, "boxes": [[x0, y0, x1, y1], ...],
         "box_labels": ["Pneumonia", ...], "original_size": (2992, 2991), "pixel_spacing": (0.418..., 0.417...)}

    ``labels`` are Data_Entry's findings (``[]`` for "No Finding"), ``label`` is 1 when ``finding`` is among them;
    ``boxes`` are the box list's boxes of ``finding`` in the image grid (see :func:`chestxray8_boxes`), with their
    ``box_labels``; ``original_size`` is the original film's ``(W, H)`` and ``pixel_spacing`` the ``(x, y)`` mm of
    the released image (the order of :func:`read_chest_film`'s axes): the original's spacing times its size over
    ``image_size`` (the release resized every film to 1024 x 1024).

    The box protocol (``boxed_only``) keeps the images with a box of ``finding``, and every one must be on disk;
    otherwise all of Data_Entry's images found on disk are kept (a partial download is normal: how many were not
    found is logged).

    Example:
        >>> items = chestxray8_datalist("/data/ChestX-ray14")  # the 120 pneumonia boxes' images
        >>> items = chestxray8_datalist(root, boxed_only=False, bbox_list=None, data_entry="my_subset.csv")

    Args:
        root: the folder holding ``images/`` and the CSV files.
        finding: the finding whose boxes are evaluated (one of :data:`CHESTXRAY8_FINDINGS`).
        boxed_only: keep only the images with a box of ``finding``.
        data_entry: the Data_Entry file (relative to ``root``, or a path); default ``Data_Entry_2017.csv``, else
            ``Data_Entry_2017_v2020.csv``.
        bbox_list: the box list (relative to ``root``, or a path); ``None`` for none (every ``boxes`` empty; only
            with ``boxed_only`` false).
        image_folder: the folder of the PNGs under ``root`` (and under each ``images_NNN/``).
        image_size: the images' grid ``(W, H)`` or side, in which the boxes are checked; ``None``: each film's own
            size, read from its header (a copy of ChestX-ray8 whose films are not 1024 px must give its boxes in
            that grid).
        skip_invalid: log and leave out a boxed image that is not on disk, instead of raising.

    Raises:
        MissingInputError: ``root``, the Data_Entry file or the box list missing; no image left.
        InputError: naming the file and line: a malformed Data_Entry or box list line, a box outside the image;
            an unknown ``finding``; ``boxed_only`` without a box list.
        InvalidCaseError: without ``skip_invalid``: a boxed image not on disk (naming where it was expected).
    """
    root = Path(root)
    if not root.is_dir():
        raise MissingInputError(f"ChestX-ray8 folder not found: '{root}'")
    wanted = _finding(finding)
    boxed = flag(boxed_only, "boxed_only")
    per_film = image_size is None
    width, height = (0, 0) if per_film else _image_size(image_size)
    if data_entry is None:
        data_entry = next((name for name in _DATA_ENTRY_NAMES if (root / name).is_file()), _DATA_ENTRY_NAMES[0])
    entry_file = root / data_entry
    if not entry_file.is_file():
        raise MissingInputError(f"ChestX-ray8 Data_Entry file not found: '{entry_file}'")
    if bbox_list is None and boxed:
        raise InputError("chestxray8_datalist: boxed_only needs the box list (bbox_list)")
    box_file = root / bbox_list if bbox_list is not None else None
    boxes = chestxray8_boxes(box_file, wanted, None if per_film else (width, height)) if box_file else {}
    what = "ChestX-ray8 Data_Entry"
    images = _image_index(root, image_folder)
    entries, absent = [], 0
    for line, row in _read_table(entry_file, _DATA_ENTRY_COLUMNS, what):
        name = row["Image Index"]
        found = boxes.get(name, [])
        if boxed and not found:
            continue
        path = images.get(name, root / image_folder / name)
        if name not in images and not boxed:
            absent += 1
            continue
        size = [
            _number(row[f"OriginalImage {c}"], entry_file, line, f"OriginalImage[{c}]", what)
            for c in ("Width", "Height")
        ]
        spacing = [_number(row[f"OriginalImagePixelSpacing {c}"], entry_file, line, c, what) for c in "xy"]
        if per_film:
            width, height = _film_size(images[name], found, box_file) if name in images else (CHESTXRAY8_SIDE,) * 2
        labels = [label for label in row["Finding Labels"].split("|") if label and label != "No Finding"]
        case = image_stem(name)
        entry = {
            "case": case,
            "image": str(path),
            "subject": int(_number(row["Patient ID"], entry_file, line, "Patient ID", what)),
            "view": row["View Position"],
            "labels": labels,
            "label": int(wanted in labels),
            "boxes": [box["box"] for box in found],
            "box_labels": [box["label"] for box in found],
            "original_size": (int(size[0]), int(size[1])),
            "pixel_spacing": (spacing[0] * size[0] / width, spacing[1] * size[1] / height),
        }
        if name not in images:
            entry["error"] = InvalidCaseError(case, path, f"image not found (it has a {wanted} box in the box list)")
        entries.append(entry)
    if absent:
        logger.info(
            "%d of the images listed in '%s' are not in '%s'; left out", absent, entry_file, root / image_folder
        )
    if not entries:
        kind = f"with a {wanted} box" if boxed else "found on disk"
        raise MissingInputError(f"no image of '{entry_file}' {kind} (in '{root / image_folder}')")
    return keep_valid(entries, _raise_error, flag(skip_invalid, "skip_invalid"))


def boxes_to_grid(
    boxes: np.ndarray | torch.Tensor | Sequence[Sequence[float]], from_shape: Sequence[int], to_shape: Sequence[int]
) -> np.ndarray | torch.Tensor:
    """Scale corner boxes ``[x0, y0, x1, y1]`` from an image grid of ``(W, H)`` ``from_shape`` to one of ``to_shape``.

    Shapes in the tensor's spatial order (MONAI's, see the module docstring), so a film's ``meta["original_shape"]``
    or ``shape`` passes straight in: x is scaled by the first size, y by the second. In pixel-corner coordinates a
    resize that maps the whole image onto the other grid (MONAI's ``Resize``, PIL's ``resize``) maps a box by the
    ratio of the sizes, and ``boxes_to_grid(boxes_to_grid(b, a, c), c, a)`` gives ``b`` back (to float64 rounding).
    Computed in float64 (MONAI's ``zoom_boxes`` rounds to float32, a tenth of a pixel off on a 3000-px film).

    Example:
        >>> boxes_to_grid([[100.0, 200.0, 300.0, 500.0]], (1024, 1024), (256, 512))
        array([[ 25., 100.,  75., 250.]])

    Args:
        boxes: ``N x 4`` boxes (a list, numpy array or torch tensor).
        from_shape: ``(W, H)`` of the grid the boxes are in (e.g. ``film.meta["original_shape"]``); a longer shape
            (``film.shape``, ``[1, W, H]``) gives its last two.
        to_shape: ``(W, H)`` of the grid to put them in.

    Returns:
        The boxes in ``to_shape``'s grid: a float64 tensor (on the input's device) for a tensor, else a float64 array.
    """
    (from_w, from_h), (to_w, to_h) = (tuple(float(s) for s in shape[-2:]) for shape in (from_shape, to_shape))
    if isinstance(boxes, torch.Tensor):
        scale = torch.tensor([to_w, to_h, to_w, to_h], dtype=torch.float64, device=boxes.device)
        size = torch.tensor([from_w, from_h, from_w, from_h], dtype=torch.float64, device=boxes.device)
        return boxes.to(torch.float64).reshape(-1, 4) * scale / size
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return array * np.array([to_w, to_h, to_w, to_h]) / np.array([from_w, from_h, from_w, from_h])
