"""Datalists for multi-phase liver CT: a Decathlon-style ``dataset.json``, or DICOM series folders for inference.

Decathlon layout (``decathlon_datalist``)::

    dataset_dir/dataset.json   {"modality": {"0": "arterial", "1": "venous"},
                                "labels": {"0": "background", "1": "liver", "2": "tumour"},
                                "training": [{"image": ["./imagesTr/liver_000_0000.nii.gz",
                                                        "./imagesTr/liver_000_0001.nii.gz"],
                                              "label": "./labelsTr/liver_000.nii.gz"}, ...],
                                "test": [["./imagesTs/liver_100_0000.nii.gz", ...], ...]}

An ``image`` entry may also be one (possibly 4D) file holding every phase, as in the original Decathlon.

Inference layout (``dicom_series_datalist``), one folder per case::

    dataset_dir/<case>/arterial/   one DICOM series (or arterial.nii.gz)
    dataset_dir/<case>/venous/     one DICOM series (or venous.nii.gz)
    dataset_dir/<case>/*.dcm       or: DICOM files directly in the case folder = a single-phase case
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from medguide.data.checks import CaseList
from medguide.data.errors import InvalidCaseError, MissingInputError, flag
from medguide.data.files import NIFTI_SUFFIXES, visible

__all__ = ["decathlon_datalist", "dicom_series_datalist"]


def _stem(path: str) -> str:
    return Path(path).name.removesuffix(".gz").removesuffix(".nii")


def _resolve(dataset_dir: Path, path: str) -> str:
    return str(dataset_dir / path.removeprefix("./"))


def decathlon_datalist(
    dataset_dir: str | Path, section: str = "training", phases: Sequence[str] | None = None
) -> list[dict]:
    """Read one section of a Decathlon-style ``dataset.json`` into datalist items.

    Items are ``{"case", "image": [phase files], "modalities": [phase names], "label"}`` (no ``label`` in a test
    section), plus an entry's ``"series"`` (a SeriesInstanceUID or SeriesDescription, or ``{phase: choice}``) for
    phases given as DICOM folders that hold several series. The case id is the entry's ``"case"``, else the label's
    stem, else the first image's stem without its nnU-Net channel suffix (``_0000``).

    Args:
        dataset_dir: folder holding ``dataset.json``; paths in it are relative to this folder.
        section: ``"training"``, ``"validation"`` or ``"test"``; test entries may be image lists, single paths
            or dicts without label.
        phases: phase names to keep, in this order (default: all, in the ``"modality"`` order).

    Raises:
        MissingInputError (a ``FileNotFoundError``): no ``dataset.json``, or no such section in it.
        KeyError: a requested phase is not in ``dataset.json``.
        ValueError: a phase subset is asked of entries whose single file holds every phase.
    """
    dataset_dir = Path(dataset_dir)
    spec_file = dataset_dir / "dataset.json"
    if not spec_file.is_file():
        raise MissingInputError(f"no dataset.json in {dataset_dir}")
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    if section not in spec:
        raise MissingInputError(f"section {section!r} not in {spec_file} (has {sorted(spec)})")
    names = [name for _, name in sorted(spec.get("modality", {"0": "image"}).items(), key=lambda kv: int(kv[0]))]
    keep = list(names if phases is None else phases)
    absent = [p for p in keep if p not in names]
    if absent:
        raise KeyError(f"phases {absent} not in {spec_file} modality {names}")
    items = []
    for entry in spec[section]:
        entry = entry if isinstance(entry, Mapping) else {"image": entry}
        files = [entry["image"]] if isinstance(entry["image"], str) else list(entry["image"])
        if len(files) == len(names):
            files = [files[names.index(p)] for p in keep]
            modalities = keep
        elif len(files) == 1 and keep == names:
            modalities = names
        else:
            raise ValueError(f"{spec_file}: entry {files} does not list one file per phase of {names}")
        label = entry.get("label")
        case = entry.get("case") or (_stem(label) if label else re.sub(r"_\d{4}$", "", _stem(files[0])))
        item = {"case": case, "image": [_resolve(dataset_dir, f) for f in files], "modalities": list(modalities)}
        if label:
            item["label"] = _resolve(dataset_dir, label)
        if entry.get("series"):
            # a DICOM folder holding several series names the one to read
            item["series"] = entry["series"]
        items.append(item)
    return items


def _phase_path(case_dir: Path, phase: str) -> Path | None:
    """The phase's DICOM folder or NIfTI file in a case folder, matched case-insensitively; hidden files passed over."""
    for path in visible(case_dir.iterdir()):
        name = path.name.lower()
        if (path.is_dir() and name == phase.lower()) or name in {phase.lower() + ext for ext in NIFTI_SUFFIXES}:
            return path
    return None


def dicom_series_datalist(
    dataset_dir: str | Path,
    phases: Sequence[str] = ("arterial", "venous"),
    require_all: bool = True,
    series: str | Mapping[str, str] | None = None,
    skip_invalid: bool = False,
) -> CaseList:
    """Datalist items for inference from one folder per case holding one DICOM series (or NIfTI) per phase.

    A phase is a sub-folder named after it (a DICOM series) or a ``<phase>.nii.gz`` file, matched
    case-insensitively. A case folder with no phase entry but files of its own is one DICOM series, read as a
    single-phase case of ``phases[0]`` (a folder whose files are not DICOM is refused when it is loaded, named as
    not a case). Items are ``{"case", "image", "modalities"}``, plus ``"series"`` when one is chosen. Hidden
    files and folders (``._<name>``, ``.DS_Store``) are passed over.

    Args:
        dataset_dir: folder holding one folder per case.
        phases: phase names, in channel order.
        require_all: a case lacking a phase is an error; false keeps cases with a non-empty subset.
        series: where a phase folder holds several DICOM series, the one to read: its SeriesInstanceUID or
            SeriesDescription, for every folder, or ``{phase: choice}``.
        skip_invalid: log and leave out a case that lacks a required phase, instead of raising (the result's
            ``skipped`` lists them).

    Raises:
        MissingInputError (a ``FileNotFoundError``): ``dataset_dir`` is missing or holds no case folder.
        InvalidCaseError: a case lacks a required phase, without ``skip_invalid``.
    """
    dataset_dir = Path(dataset_dir)
    if not dataset_dir.is_dir():
        raise MissingInputError(f"case folder not found: {dataset_dir}")
    items = CaseList()
    for case_dir in visible(p for p in dataset_dir.iterdir() if p.is_dir()):
        found = {phase: _phase_path(case_dir, phase) for phase in phases}
        present = [phase for phase in phases if found[phase] is not None]
        if not present and visible(p for p in case_dir.iterdir() if p.is_file()):
            # files of its own and no phase entry: one series, the first phase
            item = {"case": case_dir.name, "image": [str(case_dir)], "modalities": [phases[0]]}
        else:
            item = {"case": case_dir.name, "image": [str(found[p]) for p in present], "modalities": present}
            absent = [phase for phase in phases if found[phase] is None]
            if absent and (require_all or not present):
                error = InvalidCaseError(case_dir.name, case_dir / absent[0], f"missing {absent[0]} phase")
                if not flag(skip_invalid, "skip_invalid"):
                    raise error
                items.skip(error)
                continue
        if series is not None:
            item["series"] = series
        items.append(item)
    if not items and not items.skipped:
        raise MissingInputError(f"no case folder found in {dataset_dir} (expected <case>/<phase>/ DICOM series)")
    return items
