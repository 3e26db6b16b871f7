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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from medguide.data.checks import CaseList
from medguide.data.errors import InvalidCaseError, MissingInputError, flag
from medguide.data.files import name_list, visible

__all__ = ["BRATS_MODALITIES", "brats_datalist", "brats_label_map", "brats_label_values", "brats_output_labels"]

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
_NIFTI = re.compile(r"\.nii(\.gz)?$", re.IGNORECASE)


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


def brats_label_map(datalist: Sequence[dict], label_values: Sequence[int] | str = "auto") -> tuple[list, list]:
    """The label values of a BraTS data set's files and medguide's class of each.

    Classes are 0 background, 1 necrotic core (NCR), 2 oedema (ED), 3 enhancing tumour (ET).

    Args:
        datalist: items of :func:`brats_datalist`; their ``"naming"`` tells the release.
        label_values: ``"auto"`` reads the release from the items (2018-2021: 0, 1, 2, 4; 2023: 0, 1, 2, 3;
            2013-2015: 0..4, non-enhancing tumour counted as NCR as BraTS has since 2017); a list of values
            is taken as given, the i-th value being class i.

    Returns:
        ``(label values, classes)``, for :class:`medguide.transforms.LoadCased` and ``MapLabelValued``.

    Raises:
        ValueError: with ``"auto"``, the items come from releases with different labels.

    Example:
        >>> brats_label_map([{"case": "BraTS-GLI-00001-000", "naming": "2023"}])
        ([0, 1, 2, 3], [0, 1, 2, 3])
    """
    naming = _auto_naming(datalist, label_values, "label_values")
    if naming is None:
        return list(label_values), list(range(len(label_values)))
    return list(brats_label_values(naming)), list(_CLASSES[naming])


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
    stem = _NIFTI.sub("", path.name)
    for naming, suffixes in _SUFFIXES.items():
        for role, suffix in suffixes.items():
            if stem.lower().endswith(suffix) and len(stem) > len(suffix):
                return role, stem[: -len(suffix)], naming
    for token in reversed(re.split(r"[_\-.]", stem.lower())):
        if token in _TOKENS:
            return _TOKENS[token], stem, "2015"
    return None


def _groups(dataset_dir: Path) -> list[tuple[str, Path, dict[str, tuple[Path, str]], InvalidCaseError | None]]:
    """(case, folder, {role: (file, naming)}, error) for every case folder, and for files lying in ``dataset_dir``.

    Hidden files and folders (macOS ``._<name>`` copies, ``.DS_Store``) are not images and are passed over.
    """
    found: dict[tuple[str, Path], dict[str, tuple[Path, str]]] = {}
    errors: dict[tuple[str, Path], InvalidCaseError] = {}
    for folder in [dataset_dir, *visible(p for p in dataset_dir.iterdir() if p.is_dir())]:
        files = visible(p for p in folder.iterdir() if p.is_file())
        classified_files = [(f, _classify(f)) for f in files if _NIFTI.search(f.name)]
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

    Raises:
        MissingInputError (a ``FileNotFoundError``): ``dataset_dir`` is missing or holds no BraTS case.
        InvalidCaseError: a case lacks a required file (named as its naming would spell it) or has two files of
            one modality, without ``skip_invalid``.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise MissingInputError(f"BraTS folder not found: {dataset_dir}")
    wanted = [_TOKENS.get(m.lower(), m.lower()) for m in modalities]
    unknown = sorted(set(wanted) - set(BRATS_MODALITIES))
    if unknown:
        raise ValueError(f"unknown BraTS modalities {unknown}; expected some of {BRATS_MODALITIES}")
    items = CaseList()
    for case, folder, roles, error in _groups(dataset_dir):
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
