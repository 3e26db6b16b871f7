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

:func:`make_brats_dataset` writes a seeded synthetic set in the 2021 or 2023 naming: a smoothly deformed brain
ellipsoid with ventricles; a tumour made of a necrotic centre (label 1) inside an enhancing rim (label 4, or 3 in the
2023 naming), inside a wider irregular oedema (label 2). Each sequence shows a different part of it:

============  =====  =======  ====  ========  ===========================================
modality      brain  oedema   rim   necrosis  what it shows
============  =====  =======  ====  ========  ===========================================
T1            1.0    0.94     0.92  0.86      little contrast anywhere
T1ce          1.0    0.99     1.9   0.55      the enhancing rim and the core; not oedema
T2            1.0    1.65     1.55  1.9       oedema + core bright, but so are ventricles
FLAIR         1.0    1.8      1.7   0.9       the oedema boundary; rim ~ oedema
============  =====  =======  ====  ========  ===========================================

Each case also gets a smooth bias field per sequence, grey/white matter texture, its own scale and noise.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from medguide.data.checks import CaseList
from medguide.data.errors import InvalidCaseError, MissingInputError, flag
from medguide.data.files import NIFTI_SUFFIXES, image_stem, name_list, visible
from medguide.data.modalities import check_modalities
from medguide.data.synthetic import Shape, brain_and_ventricles, render, save_nifti, smooth_field, unit_grid

__all__ = [
    "BRATS_MODALITIES",
    "BratsLabelMap",
    "brats_datalist",
    "brats_label_map",
    "brats_label_values",
    "brats_output_labels",
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

# Synthetic cases: tissue indices and their relative intensity per modality (table in the module docstring).
_BRAIN, _CSF, _OEDEMA, _RIM, _NECROSIS = range(1, 6)
_MRI_CONTRAST = {
    "t1": {_BRAIN: 1.0, _CSF: 0.4, _OEDEMA: 0.94, _RIM: 0.92, _NECROSIS: 0.86},
    "t1ce": {_BRAIN: 1.0, _CSF: 0.4, _OEDEMA: 0.99, _RIM: 1.9, _NECROSIS: 0.55},
    "t2": {_BRAIN: 1.0, _CSF: 2.0, _OEDEMA: 1.65, _RIM: 1.55, _NECROSIS: 1.9},
    "flair": {_BRAIN: 1.0, _CSF: 0.3, _OEDEMA: 1.8, _RIM: 1.7, _NECROSIS: 0.9},
}
# Grey/white matter texture: white matter is brighter on T1-weighted and darker on T2-weighted images.
_TEXTURE_SIGN = {"t1": 1.0, "t1ce": 1.0, "t2": -1.0, "flair": -1.0}


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


def _brats_case(rng: np.random.Generator, shape: Shape) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({modality: image}, label with ET = 4) of one synthetic BraTS case (tissues in the module docstring)."""
    grid = unit_grid(shape)
    brain, ventricles = brain_and_ventricles(rng, grid)

    # The tumour core is a sum of gaussians: its top is necrosis, the rest enhancing rim; oedema is a wider,
    # rougher version of the same field.
    centre = rng.uniform(-0.3, 0.3, 3)
    core_field = np.zeros(shape)
    oedema_field = np.zeros(shape)
    for _ in range(int(rng.integers(3, 6))):
        c = np.reshape(centre + rng.uniform(-0.1, 0.1, 3), (3, 1, 1, 1))
        sigma = rng.uniform(0.14, 0.19)
        dist2 = ((grid - c) ** 2).sum(0)
        core_field += np.exp(-dist2 / (2 * sigma**2))
        oedema_field += np.exp(-dist2 / (2 * (2.0 * sigma) ** 2))
    core_field /= core_field.max()
    oedema_field = oedema_field / oedema_field.max() + 0.12 * smooth_field(rng, shape, 0.06)
    core = core_field > 0.35
    necrosis = core_field > rng.uniform(0.6, 0.7)
    oedema = oedema_field > 0.55

    tissue = np.where(brain, _BRAIN, 0)
    tissue[ventricles & brain] = _CSF
    tissue[oedema & brain] = _OEDEMA
    tissue[core & brain] = _RIM
    tissue[necrosis & brain] = _NECROSIS
    label = np.zeros(shape, np.uint8)
    label[tissue == _OEDEMA] = 2
    label[tissue == _RIM] = 4
    label[tissue == _NECROSIS] = 1

    texture = smooth_field(rng, shape, 0.04)
    images = {}
    for modality, contrast in _MRI_CONTRAST.items():
        bias = np.exp(0.12 * smooth_field(rng, shape, 0.25))
        relative = render(tissue, contrast, blur=0.6) * (1 + 0.05 * _TEXTURE_SIGN[modality] * texture)
        relative = (relative + rng.uniform(-0.05, 0.05)) * bias
        relative += rng.uniform(0.07, 0.12) * rng.standard_normal(shape)
        image = np.clip(relative * rng.uniform(300.0, 1200.0), 0, None) * brain
        images[modality] = np.round(image).astype(np.int16)
    return images, label


def make_brats_dataset(
    out_dir: str | Path, num_cases: int = 6, shape: Shape = (48, 48, 48), naming: str = "2021", seed: int = 0
) -> Path:
    """Write a synthetic BraTS data set in the challenge's folder layout.

    ``out_dir/<case>/<case>_t1.nii.gz ... _seg.nii.gz`` (``BraTS2021_00000``) for ``naming="2021"`` (ET = 4), or
    ``out_dir/<case>/<case>-t1n.nii.gz ... -seg.nii.gz`` (``BraTS-GLI-00000-000``) for ``"2023"`` (ET = 3).
    Images are int16 on a 1 mm grid oriented as BraTS's (LPS voxel axes), labels uint8.

    Args:
        out_dir: folder to write into (created).
        num_cases: number of cases.
        shape: voxel grid of every case.
        naming: ``"2021"`` or ``"2023"``.
        seed: random seed; the same seed writes the same files.

    Returns:
        ``out_dir`` as a path, ready for :func:`medguide.data.brats_datalist`.
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
        images, label = _brats_case(np.random.default_rng([seed, index]), shape)
        label[label == 4] = brats_label_values(naming)[-1]  # ET
        for modality, image in images.items():
            save_nifti(image, affine, out_dir / case / f"{case}{suffixes[modality]}.nii.gz")
        save_nifti(label, affine, out_dir / case / f"{case}{suffixes['label']}.nii.gz")
    return out_dir
