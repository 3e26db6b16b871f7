"""Datalists for BraTS brain-tumour MRI in the challenge's own folder layout.

One folder per case (or, as in some tutorials, all files directly in ``dataset_dir``). Three namings are read:

- ``"2021"`` (BraTS 2018-2021): ``<case>_t1/_t1ce/_t2/_flair/_seg.nii.gz``; labels 0, 1 NCR, 2 ED, 4 ET.
- ``"2023"``: ``<case>-t1n/-t1c/-t2w/-t2f/-seg.nii.gz``; labels 0, 1 NCR, 2 ED, 3 ET.
- ``"2015"``: anything else whose name holds a common modality token, matched case-insensitively on the tokens
  of the file name split at ``_``, ``-``, ``.`` (the last matching token wins): ``t1``/``t1n``/``t1w`` -> t1,
  ``t1ce``/``t1c``/``t1gd`` -> t1ce, ``t2``/``t2w`` -> t2, ``flair``/``t2f`` -> flair, ``seg``/``label``/
  ``otmulticlass`` -> label. This reads the BRATS 2013-2015 cases as DeepMedic ships them
  (``Flair_subtrMeanDivStd.nii.gz``, ``T1c_subtrMeanDivStd.nii.gz``, ``OTMultiClass.nii.gz``); their labels are
  0, 1 necrosis, 2 edema, 3 non-enhancing, 4 enhancing.

:func:`make_brats_dataset` writes a seeded synthetic set in the 2021 or 2023 naming (:func:`brats_synthetic_case`): a
deformed brain with white matter, a grey cortical ribbon and deep nuclei, ventricles and thin enhancing vessels; one
to three lesions, each an irregular core whose enhancing part (label 4, or 3 in the 2023 naming) is a rim of varying
thickness, part of a rim, a few nodules or nearly all of it, the rest necrotic or non-enhancing core (label 1),
inside oedema (label 2) of varying extent. Intensities relative to white matter (per-lesion ranges in brackets; each
case also varies them by ~3%, and the tumour is heterogeneous by ~6%), set so that each sequence alone supports
about what it does on real BraTS:

========  ====  ====  ======  ===========  ===========  ===========  =============================================
sequence  GM    CSF   vessel  oedema      core (NCR)   enhancing    what it shows alone
========  ====  ====  ======  ===========  ===========  ===========  =============================================
T1        0.82  0.35  0.9     (0.7-0.86)   0.58         0.84         a little of everything: oedema ~ grey matter
T1ce      0.84  0.38  1.7     0.82         0.58         (1.35-2.1)   enhancing tumour and core; vessels enhance too
T2        1.25  2.4   0.8     (1.5-1.95)   2.1          1.45         whole tumour; CSF brighter still
FLAIR     1.12  0.35  0.9     (1.4-1.9)    (1.1-1.6)    1.5          whole tumour best; core only faintly
========  ====  ====  ======  ===========  ===========  ===========  =============================================

Each sequence of a case also gets its own noise, mild bias field, intensity scale, and, drawn independently per
sequence, acquisition faults (:mod:`medguide.data.faults`: strong bias 25%, blurred 15%, ghosted 15% or noisy 15%
slab, missing 8% or corrupted 8% slab), so which sequence to trust changes from case to case and place to place.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from medguide.data.checks import CaseList
from medguide.data.errors import InvalidCaseError, MissingInputError, flag
from medguide.data.faults import apply_faults, draw_faults
from medguide.data.files import NIFTI_SUFFIXES, image_stem, name_list, visible
from medguide.data.modalities import check_modalities
from medguide.data.synthetic import (
    Shape,
    SyntheticCase,
    blob,
    brain_and_ventricles,
    case_settings,
    render,
    save_nifti,
    smooth_field,
    unit_grid,
)

__all__ = [
    "BRATS_MODALITIES",
    "BratsLabelMap",
    "brats_datalist",
    "brats_label_map",
    "brats_label_values",
    "brats_output_labels",
    "brats_synthetic_case",
    "make_brats_dataset",
]

BRATS_MODALITIES = ("t1", "t1ce", "t2", "flair")

# Official suffix per naming, then the looser tokens accepted from other releases.
_SUFFIXES = {
    "2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "label": "_seg"},
    "2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "label": "-seg"},
}
_TOKENS = {
    "t1": "t1",
    "t1n": "t1",
    "t1w": "t1",
    "t1ce": "t1ce",
    "t1c": "t1ce",
    "t1gd": "t1ce",
    "t2": "t2",
    "t2w": "t2",
    "flair": "flair",
    "t2f": "flair",
    "seg": "label",
    "label": "label",
    "otmulticlass": "label",
}
_LABEL_VALUES = {"2021": (0, 1, 2, 4), "2023": (0, 1, 2, 3), "2015": (0, 1, 2, 3, 4)}
# medguide's class (0 background, 1 NCR, 2 ED, 3 ET) of each label value; BraTS 2017 on merged 2015's
# non-enhancing tumour (3) into the necrotic core (1)
_CLASSES = {"2021": (0, 1, 2, 3), "2023": (0, 1, 2, 3), "2015": (0, 1, 2, 1, 3)}

# Synthetic cases: tissue indices and their intensity per sequence relative to white matter (module docstring).
_WM, _GM, _CSF, _VESSEL, _OEDEMA, _NCR, _ET = range(1, 8)
_MRI_CONTRAST = {
    "t1": {_WM: 1.0, _GM: 0.82, _CSF: 0.35, _VESSEL: 0.9, _OEDEMA: 0.78, _NCR: 0.58, _ET: 0.84},
    "t1ce": {_WM: 1.0, _GM: 0.84, _CSF: 0.38, _VESSEL: 1.7, _OEDEMA: 0.82, _NCR: 0.58, _ET: 1.7},
    "t2": {_WM: 1.0, _GM: 1.25, _CSF: 2.4, _VESSEL: 0.8, _OEDEMA: 1.75, _NCR: 2.1, _ET: 1.45},
    "flair": {_WM: 1.0, _GM: 1.12, _CSF: 0.35, _VESSEL: 0.9, _OEDEMA: 1.65, _NCR: 1.35, _ET: 1.5},
}
# Drawn per lesion instead of the table's value: how strongly it enhances, how bright its oedema and core are.
_TUMOUR_TISSUE = {"oedema": _OEDEMA, "ncr": _NCR, "et": _ET}
_LESION_RANGE = {
    ("t1", "oedema"): (0.7, 0.86),
    ("t1ce", "et"): (1.35, 2.1),
    ("t2", "oedema"): (1.5, 1.95),
    ("flair", "oedema"): (1.4, 1.9),
    ("flair", "ncr"): (1.1, 1.6),
}
_PATTERNS, _PATTERN_P = ("rim", "partial", "nodular", "solid"), (0.4, 0.25, 0.15, 0.2)
# Grey/white matter texture: white matter is brighter on T1-weighted and darker on T2-weighted images.
_TEXTURE_SIGN = {"t1": 1.0, "t1ce": 1.0, "t2": -1.0, "flair": -1.0}
# Probability of each acquisition fault per sequence of a case (medguide.data.faults), drawn independently.
_MRI_FAULT_RATES = {"bias": 0.25, "blur": 0.15, "ghosting": 0.15, "noise": 0.15, "missing": 0.08, "corrupted": 0.08}


def brats_label_values(naming: str) -> tuple[int, ...]:
    """The label set of a BraTS release: (0, 1, 2, 4) for ``"2021"``, (0, 1, 2, 3) for ``"2023"``.

    Args:
        naming: ``"2021"``, ``"2023"`` or ``"2015"`` (0..4, 3 being non-enhancing tumour), as
            :func:`brats_datalist` reports it per item.
    """
    if naming not in _LABEL_VALUES:
        raise ValueError(f"unknown BraTS naming {naming!r}; expected one of {sorted(_LABEL_VALUES)}")
    return _LABEL_VALUES[naming]


def _auto_naming(datalist: Sequence[dict], value: Sequence[int] | str, setting: str) -> str | None:
    """For ``value == "auto"``, the one naming of every item (``"2021"`` for items without one); ``None`` for a list.

    ``setting`` names the option in the errors.
    """
    if not isinstance(value, str):
        return None
    if value != "auto":
        raise ValueError(f"{setting} must be 'auto' or a list of values, got {value!r}.")
    namings: dict[str, str] = {}
    for item in datalist:
        namings.setdefault(item.get("naming", "2021"), item.get("case", "?"))
    if len(namings) != 1:
        found = ", ".join(f"{naming} (e.g. {case})" for naming, case in sorted(namings.items()))
        raise ValueError(
            f"the data mixes BraTS releases whose labels differ: {found or 'no case'}; "
            f"give {setting} explicitly, or one release per dataset_dir."
        )
    return next(iter(namings))


class BratsLabelMap(NamedTuple):
    """The label values in a BraTS data set's files and, pairwise, medguide's class of each.

    A config reads the two by name: ``LoadCased(label_values=@label_map.file_values)`` checks the files, and
    ``MapLabelValued(orig_labels=@label_map.file_values, target_labels=@label_map.classes)`` maps them to classes.
    """

    file_values: list[int]
    classes: list[int]


def brats_label_map(datalist: Sequence[dict], label_values: Sequence[int] | str = "auto") -> BratsLabelMap:
    """The label values of a BraTS data set's files and medguide's class of each.

    Classes are 0 background, 1 necrotic core (NCR), 2 oedema (ED), 3 enhancing tumour (ET).

    Args:
        datalist: items of :func:`brats_datalist`; their ``"naming"`` tells the release.
        label_values: ``"auto"`` reads the release from the items (2018-2021: 0, 1, 2, 4; 2023: 0, 1, 2, 3;
            2013-2015: 0..4, non-enhancing tumour counted as NCR as BraTS has since 2017); a list of values
            is taken as given, the i-th value being class i.

    Returns:
        the files' ``file_values`` and their ``classes``, for :class:`medguide.transforms.LoadCased` and
        ``MapLabelValued``.

    Raises:
        ValueError: with ``"auto"``, the items come from releases with different labels.

    Example:
        >>> brats_label_map([{"case": "BraTS2021_00000", "naming": "2021"}])
        BratsLabelMap(file_values=[0, 1, 2, 4], classes=[0, 1, 2, 3])
    """
    naming = _auto_naming(datalist, label_values, "label_values")
    if naming is None:
        return BratsLabelMap(list(label_values), list(range(len(label_values))))
    return BratsLabelMap(list(brats_label_values(naming)), list(_CLASSES[naming]))


def brats_output_labels(datalist: Sequence[dict], output_labels: Sequence[int] | str = "auto") -> list:
    """The label value to write for each class (background, NCR, ED, ET) in a prediction.

    ``"auto"`` writes the labels of the input's release: 0, 1, 2, 3 for BraTS 2023 names, otherwise the 0, 1, 2, 4
    of BraTS 2018-2021 (which are also 2013-2015's values for those classes). A list is taken as given.

    Raises:
        ValueError: with ``"auto"``, the inputs come from releases with different labels.
    """
    naming = _auto_naming(datalist, output_labels, "output_labels")
    if naming is None:
        return list(output_labels)
    return list(brats_label_values("2023" if naming == "2023" else "2021"))


def _classify(path: Path) -> tuple[str, str, str] | None:
    """(role, prefix, naming) of a NIfTI file, role being a modality or ``"label"``; ``None`` if it is neither."""
    stem = image_stem(path)
    for naming, suffixes in _SUFFIXES.items():
        for role, suffix in suffixes.items():
            if stem.lower().endswith(suffix) and len(stem) > len(suffix):
                return role, stem[: -len(suffix)], naming
    for token in reversed(re.split(r"[_\-.]", stem.lower())):
        if token in _TOKENS:
            return _TOKENS[token], stem, "2015"
    return None


def _groups(
    dataset_dir: Path, exclude: Sequence[str | Path] = ()
) -> list[tuple[str, Path, dict[str, tuple[Path, str]], InvalidCaseError | None]]:
    """(case, folder, {role: (file, naming)}, error) for every case folder, and for files lying in ``dataset_dir``.

    Hidden files and folders (macOS ``._<name>`` copies, ``.DS_Store``) are not images and are passed over, and so
    are the folders in ``exclude``.
    """
    found: dict[tuple[str, Path], dict[str, tuple[Path, str]]] = {}
    errors: dict[tuple[str, Path], InvalidCaseError] = {}
    excluded = {(dataset_dir / p).resolve() for p in exclude}
    folders = visible(p for p in dataset_dir.iterdir() if p.is_dir() and p.resolve() not in excluded)
    for folder in [dataset_dir, *folders]:
        files = visible(p for p in folder.iterdir() if p.is_file())
        classified_files = [(f, _classify(f)) for f in files if f.name.lower().endswith(NIFTI_SUFFIXES)]
        if folder != dataset_dir and files and not any(c for _, c in classified_files):
            # a folder of something else among the cases (DICOM, notes, unnamed NIfTI) is said, not ignored
            reason = (
                f"is not a BraTS case folder: no sequence file named as BraTS names them (found {name_list(files)})"
            )
            found[(folder.name, folder)] = {}
            errors[(folder.name, folder)] = InvalidCaseError(folder.name, folder, reason)
        for file, classified in classified_files:
            if classified is None:
                continue
            role, prefix, naming = classified
            # A case folder names the case; loose files in dataset_dir are grouped by their prefix.
            case = folder.name if folder != dataset_dir else prefix
            roles = found.setdefault((case, folder), {})
            if role in roles:
                reason = f"a second {role} file besides {roles[role][0].name!r}"
                errors.setdefault((case, folder), InvalidCaseError(case, file, reason))
            roles[role] = (file, naming)
    return [(case, folder, roles, errors.get((case, folder))) for (case, folder), roles in found.items()]


def brats_datalist(
    dataset_dir: str | Path,
    modalities: Sequence[str] = BRATS_MODALITIES,
    require_label: bool = True,
    require_all: bool = True,
    skip_invalid: bool = False,
    exclude: Sequence[str | Path] = (),
) -> CaseList:
    """Scan a BraTS folder into datalist items for :class:`medguide.transforms.LoadCased`.

    Items are ``{"case", "image": [files in the order of modalities], "modalities": [present names],
    "label": seg file (if present), "naming": "2021" | "2023" | "2015"}``. Hidden files (``._<name>``) are not
    read.

    Args:
        dataset_dir: folder holding one folder per case (or the case files themselves).
        modalities: the sequences to read, by medguide's names ``t1, t1ce, t2, flair`` (2023 and other aliases
            such as ``t1c`` or ``t2f`` are accepted too).
        require_label: a case without a segmentation is an error (training); false for inference.
        require_all: every modality must be present; false keeps cases with a non-empty subset
            (e.g. BRATS 2015 FLAIR + T1c only).
        skip_invalid: log and leave out a case that lacks a file or has two of one kind, instead of raising
            (the result's ``skipped`` lists them).
        exclude: folders in ``dataset_dir`` that are not cases (relative to it, or absolute), e.g. the histology
            features kept beside the case folders (:func:`medguide.data.cpm_radpath_datalist`).

    Raises:
        MissingInputError (a ``FileNotFoundError``): ``dataset_dir`` is missing or holds no BraTS case.
        InvalidCaseError: a case lacks a required file (named as its naming would spell it) or has two files of
            one modality, without ``skip_invalid``.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise MissingInputError(f"BraTS folder not found: {dataset_dir}")
    wanted = check_modalities(
        [_TOKENS.get(m.lower(), m.lower()) for m in modalities], BRATS_MODALITIES, "BraTS modalities"
    )
    items = CaseList()
    for case, folder, roles, error in _groups(dataset_dir, exclude):
        naming = next(iter(roles.values()))[1] if roles else "2021"
        suffixes = _SUFFIXES.get(naming, _SUFFIXES["2021"])
        present = [m for m in wanted if m in roles]
        absent = [m for m in wanted if m not in roles]
        if require_label and "label" not in roles:
            absent.insert(0, "label")
        elif present and not require_all:
            absent = []
        if absent and error is None:
            expected = folder / f"{case}{suffixes[absent[0]]}.nii.gz"
            error = InvalidCaseError(case, expected, f"missing {absent[0]} file (found {sorted(roles)})")
        if error is not None:
            if not flag(skip_invalid, "skip_invalid"):
                raise error
            items.skip(error)
            continue
        item = {
            "case": case,
            "image": [str(roles[m][0]) for m in present],
            "modalities": present,
            "naming": naming,
        }
        if "label" in roles:
            item["label"] = str(roles["label"][0])
        items.append(item)
    if not items and not items.skipped:
        raise MissingInputError(f"no BraTS case found in {dataset_dir} (expected e.g. <case>/<case>_flair.nii.gz)")
    return items


def _voxel(shape: Shape) -> float:
    """The largest voxel edge in :func:`medguide.data.synthetic.unit_grid` units."""
    return 2.0 / (min(shape) - 1)


def _depth(mask: np.ndarray) -> np.ndarray:
    """Distance (unit-grid units) of each voxel of ``mask`` to the nearest voxel outside it; 0 outside."""
    return ndimage.distance_transform_edt(mask, sampling=[2.0 / (n - 1) for n in mask.shape])


def _pick(rng: np.random.Generator, grid: np.ndarray, where: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Unit-grid position of a random voxel of ``where`` (of ``fallback`` when ``where`` is empty)."""
    voxels = np.argwhere(where if where.any() else fallback)
    return grid[(slice(None), *voxels[rng.integers(len(voxels))])]


def _ball(grid: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    return ((grid - np.reshape(centre, (3, 1, 1, 1))) ** 2).sum(0) <= radius**2


def _enhancing(
    rng: np.random.Generator, grid: np.ndarray, core: np.ndarray, pattern: str, thickness: float
) -> np.ndarray:
    """The enhancing part of one lesion's core for its ``pattern`` (see :func:`brats_synthetic_case`)."""
    shape = core.shape
    depth = _depth(core)
    voxel = _voxel(shape)
    local = np.maximum(thickness * (1 + 0.35 * smooth_field(rng, shape, 0.06)), voxel)
    rim = core & (depth <= local)
    if pattern == "rim":
        return rim
    if pattern == "partial":
        # a wall that enhances over only part of its circumference
        field = smooth_field(rng, shape, 0.1)
        cut = np.quantile(field[rim], 1 - rng.uniform(0.3, 0.7)) if rim.any() else 0.0
        return rim & (field > cut)
    if pattern == "nodular":
        nodules = np.zeros(shape, bool)
        for _ in range(int(rng.integers(1, 5))):
            centre = _pick(rng, grid, core & (depth <= 2 * local), core)
            nodules |= _ball(grid, centre, max(rng.uniform(0.04, 0.09), 1.5 * voxel))
        return core & nodules
    # solid: enhancing throughout but for a small centre
    return core & (depth <= max(thickness, rng.uniform(0.5, 0.85) * depth.max()))


def _brats_tissue(rng: np.random.Generator, shape: Shape) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(tissue index map, lesion number per voxel (0 outside lesions), lesion descriptions) of one head."""
    grid = unit_grid(shape)
    voxel = _voxel(shape)
    brain, ventricles = brain_and_ventricles(rng, grid)
    brain_depth = _depth(brain)
    cortex = brain & (brain_depth < rng.uniform(0.04, 0.07) * (1 + 0.3 * smooth_field(rng, shape, 0.05)))
    nuclei = np.zeros(shape, bool)
    for side in (-1, 1):
        nuclei |= blob(rng, grid, (0.22 * side, 0.0, -0.05), (0.09, 0.13, 0.1), 0.1)
    tissue = np.where(brain, _WM, 0)
    tissue[brain & (cortex | nuclei)] = _GM
    tissue[brain & ventricles] = _CSF
    for _ in range(int(rng.integers(3, 6))):
        # normal enhancing structures (vessels, choroid plexus): bright on T1ce outside the tumour too
        start, direction = _pick(rng, grid, brain, brain), rng.normal(size=3)
        rel = grid - np.reshape(start, (3, 1, 1, 1))
        along = np.tensordot(direction / np.linalg.norm(direction), rel, axes=1)
        tube = ((rel**2).sum(0) - along**2 < max(0.02, 0.6 * voxel) ** 2) & (np.abs(along) < rng.uniform(0.15, 0.4))
        tissue[brain & tube] = _VESSEL

    lesion = np.zeros(shape, np.uint8)
    lesions = []
    count = int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1]))
    for k in range(count):
        radius = max(rng.uniform(0.14, 0.3) if k == 0 else rng.uniform(0.06, 0.14), 2 * voxel)
        centre = _pick(rng, grid, brain_depth > radius, brain)
        core = brain & blob(rng, grid, centre, radius * rng.uniform(0.75, 1.25, 3), rng.uniform(0.1, 0.3))
        if not core.any():
            core = brain & _ball(grid, centre, 2 * voxel)
        pattern = str(rng.choice(_PATTERNS, p=_PATTERN_P))
        thickness = rng.uniform(0.025, 0.11)
        enhancing = _enhancing(rng, grid, core, pattern, thickness)
        margin = rng.uniform(0.06, 0.35) * (1 + 0.5 * smooth_field(rng, shape, 0.08))
        # vasogenic oedema spreads in white matter and spares the cortex and the ventricles
        oedema = brain & ~core & ~ventricles & ~cortex & (_depth(~core) < np.maximum(margin, voxel))
        if not oedema.any():
            oedema = brain & ~core & ndimage.binary_dilation(core)
        tissue[oedema & (tissue < _OEDEMA)] = _OEDEMA
        tissue[core] = _NCR
        tissue[enhancing] = _ET
        lesion[oedema | core] = k + 1
        lesions.append(
            {
                "pattern": pattern,
                "radius": float(radius),
                "rim_thickness": float(thickness),
                "oedema_margin": float(np.mean(margin)),
            }
        )
    # every case carries every label, however small its grid
    if not (tissue == _ET).any():
        tissue[np.unravel_index(np.argmax(np.where(tissue == _NCR, 1.0, 0.0)), shape)] = _ET
    if not (tissue == _NCR).any():
        et = tissue == _ET
        tissue[np.unravel_index(np.argmax(_depth(et)), shape)] = _NCR
    return tissue, lesion, lesions


def brats_synthetic_case(
    shape: Shape = (48, 48, 48), seed: int = 0, index: int = 0, fault_rate: float = 1.0
) -> SyntheticCase:
    """One synthetic BraTS case, as :func:`make_brats_dataset` writes it, with what was drawn for it.

    The head: a deformed brain ellipsoid filling ~80-90% of every axis of ``shape`` (so the grid, not a fixed size,
    sets how many patches it spans), white matter, a grey cortical ribbon and deep nuclei, lateral ventricles and
    thin enhancing vessels. One to three lesions (70% one), each an irregular core of radius 0.14-0.3 of the
    half-width (satellites 0.06-0.14) with an enhancement ``pattern`` drawn per lesion - ``"rim"`` (a wall 0.025-0.11
    half-widths thick, thickness varying along it, around necrosis), ``"partial"`` (that wall over 30-70% of it),
    ``"nodular"`` (1-4 enhancing nodules, the rest non-enhancing core) or ``"solid"`` - and oedema reaching 0.06-0.35
    half-widths out in white matter. Contrast (module docstring table) varies per case and per lesion, and each
    sequence gets its own noise, mild bias, intensity scale and :mod:`medguide.data.faults`.

    Args:
        shape: voxel grid (each axis at least 4).
        seed: data set seed; with ``index``, the same pair gives the same case.
        index: case number within the set.
        fault_rate: multiplies every fault probability (0: clean images; 1: the default rates; probabilities are
            capped at 1).

    Returns:
        :class:`medguide.data.synthetic.SyntheticCase`: int16 images (>= 0, 0 outside the brain) of the four
        sequences, the uint8 label (0, 1 NCR, 2 ED, 4 ET, every value present), faults per sequence, lesions.

    Raises:
        ValueError: an axis under 4 voxels, or a negative ``fault_rate``.
    """
    shape, rates = case_settings(shape, fault_rate, _MRI_FAULT_RATES)
    rng = np.random.default_rng([seed, index])
    tissue, lesion, lesions = _brats_tissue(rng, shape)
    label = np.zeros(shape, np.uint8)
    label[tissue == _OEDEMA] = 2
    label[tissue == _NCR] = 1
    label[tissue == _ET] = 4
    brain = tissue > 0

    texture = smooth_field(rng, shape, 0.04)
    heterogeneity = 1 + 0.06 * smooth_field(rng, shape, 0.03)
    lesion_values = {key: rng.uniform(*span, len(lesions)) for key, span in _LESION_RANGE.items()}
    for k, description in enumerate(lesions):
        description.update({f"{m}_{name}": float(v[k]) for (m, name), v in lesion_values.items()})
    images, faults = {}, {}
    for modality, image_rng in zip(BRATS_MODALITIES, rng.spawn(len(BRATS_MODALITIES)), strict=True):
        values: dict[int, float | np.ndarray] = {
            t: v * (1 + 0.03 * image_rng.standard_normal()) for t, v in _MRI_CONTRAST[modality].items()
        }
        for (m, name), drawn in lesion_values.items():
            if m == modality:
                tumour_tissue = _TUMOUR_TISSUE[name]
                values[tumour_tissue] = np.concatenate([[values[tumour_tissue]], drawn])[lesion]
        for t in (_OEDEMA, _NCR, _ET):
            values[t] = values[t] * heterogeneity
        relative = render(tissue, values, blur=0.6) * (1 + 0.04 * _TEXTURE_SIGN[modality] * texture)
        relative = (relative + image_rng.uniform(-0.05, 0.05)) * np.exp(0.08 * smooth_field(image_rng, shape, 0.25))
        relative += image_rng.uniform(0.05, 0.09) * image_rng.standard_normal(shape)
        scale = image_rng.uniform(300.0, 1200.0)
        # faults draw last, so that a case with and without them differs only where they are
        faults[modality] = draw_faults(image_rng, shape, rates)
        relative = apply_faults(relative, faults[modality], image_rng)
        image = np.clip(relative * scale, 0, None) * brain
        images[modality] = np.round(image).astype(np.int16)
    shifts = {m: (0.0, 0.0, 0.0) for m in BRATS_MODALITIES}
    return SyntheticCase(images, label, faults, tuple(lesions), shifts)


def make_brats_dataset(
    out_dir: str | Path,
    num_cases: int = 6,
    shape: Shape = (48, 48, 48),
    naming: str = "2021",
    seed: int = 0,
    fault_rate: float = 1.0,
) -> Path:
    """Write a synthetic BraTS data set in the challenge's folder layout.

    ``out_dir/<case>/<case>_t1.nii.gz ... _seg.nii.gz`` (``BraTS2021_00000``) for ``naming="2021"`` (ET = 4), or
    ``out_dir/<case>/<case>-t1n.nii.gz ... -seg.nii.gz`` (``BraTS-GLI-00000-000``) for ``"2023"`` (ET = 3).
    Images are int16 on a 1 mm grid oriented as BraTS's (LPS voxel axes), labels uint8. Each case is
    :func:`brats_synthetic_case` ``(shape, seed, index)``; the brain fills ~80-90% of each axis of ``shape``, so
    pick ``shape`` larger than the training patch (by ~1.2-1.5x, as real BraTS brains are against a 128^3 patch)
    for cropping, foreground sampling and the sliding window to matter.

    Args:
        out_dir: folder to write into (created).
        num_cases: number of cases.
        shape: voxel grid of every case (each axis at least 4).
        naming: ``"2021"`` or ``"2023"``.
        seed: random seed; the same seed writes the same files.
        fault_rate: multiplies the probability of every acquisition fault (0 for clean images).

    Returns:
        ``out_dir`` as a path, ready for :func:`medguide.data.brats_datalist`.

    Raises:
        ValueError: an unknown ``naming``, an axis under 4 voxels or a negative ``fault_rate``.
    """
    if naming not in _SUFFIXES:
        raise ValueError(f"naming must be one of {sorted(_SUFFIXES)}, got {naming!r}")
    out_dir = Path(out_dir)
    # BraTS volumes are stored with flipped x and y axes: affine diag(-1, -1, 1), origin at the last y row.
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    suffixes = _SUFFIXES[naming]
    for index in range(num_cases):
        case = f"BraTS2021_{index:05d}" if naming == "2021" else f"BraTS-GLI-{index:05d}-000"
        images, label, *_ = brats_synthetic_case(shape, seed, index, fault_rate)
        label[label == 4] = brats_label_values(naming)[-1]  # ET
        for modality, image in images.items():
            save_nifti(image, affine, out_dir / case / f"{case}{suffixes[modality]}.nii.gz")
        save_nifti(label, affine, out_dir / case / f"{case}{suffixes['label']}.nii.gz")
    return out_dir
