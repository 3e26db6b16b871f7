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

:func:`make_liver_dataset` writes a seeded synthetic set in the Decathlon layout: a body with fat, soft tissue, spine
and aorta; a large irregular liver (label 1) with portal vessels and 1-3 tumours (label 2). Arterial: liver 60-80 HU,
close to the surrounding soft tissue (50-65 HU, the low-contrast liver boundary), tumours hyper-enhancing
(120-150 HU). Venous: liver 100-120 HU (clear boundary), tumours washed out (65-95 HU, some nearly iso-dense),
vessels bright.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from medguide.data.checks import CaseList
from medguide.data.errors import InvalidCaseError, MissingInputError, flag
from medguide.data.files import NIFTI_SUFFIXES, image_stem, visible
from medguide.data.modalities import check_modalities
from medguide.data.synthetic import Shape, blob, render, save_nifti, smooth_field, unit_grid

__all__ = ["decathlon_datalist", "dicom_series_datalist", "make_liver_dataset"]

# Synthetic CT tissue indices; tumours take indices from _TUMOUR up, one per tumour.
_FAT, _SOFT, _BONE, _AORTA, _LIVER, _VESSEL, _TUMOUR = range(1, 8)
# Per phase: HU range (low, high) drawn per case; tumours per tumour.
_CT_HU = {
    "arterial": {
        _FAT: (-110, -90),
        _SOFT: (50, 65),
        _BONE: (350, 450),
        _AORTA: (220, 300),
        _LIVER: (60, 80),
        _VESSEL: (90, 110),
        _TUMOUR: (120, 150),
    },
    "venous": {
        _FAT: (-110, -90),
        _SOFT: (55, 70),
        _BONE: (350, 450),
        _AORTA: (140, 170),
        _LIVER: (100, 120),
        _VESSEL: (150, 190),
        _TUMOUR: (65, 95),
    },
}


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
        ValueError: a requested phase is not in ``dataset.json`` (or is repeated), or a phase subset is asked of
            entries whose single file holds every phase.
    """
    dataset_dir = Path(dataset_dir)
    spec_file = dataset_dir / "dataset.json"
    if not spec_file.is_file():
        raise MissingInputError(f"no dataset.json in {dataset_dir}")
    spec = json.loads(spec_file.read_text(encoding="utf-8"))
    if section not in spec:
        raise MissingInputError(f"section {section!r} not in {spec_file} (has {sorted(spec)})")
    names = [name for _, name in sorted(spec.get("modality", {"0": "image"}).items(), key=lambda kv: int(kv[0]))]
    keep = names if phases is None else check_modalities(phases, names, f"phases of {spec_file}")
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
        case = entry.get("case") or (image_stem(label) if label else re.sub(r"_\d{4}$", "", image_stem(files[0])))
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


def _liver_case(
    rng: np.random.Generator, shape: Shape, phases: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({phase: HU image}, label 0/1/2) of one synthetic multi-phase liver CT case."""
    grid = unit_grid(shape)
    x, y = grid[0], grid[1]
    outline = smooth_field(rng, shape, 0.1)
    body_radius = np.sqrt((x / 0.92) ** 2 + (y / 0.72) ** 2) + 0.03 * outline
    tissue = np.where(body_radius < 1.0, _FAT, 0)
    inner = body_radius < 0.85
    # Abdominal content: soft tissue with patches of intra-abdominal fat.
    tissue[inner & (smooth_field(rng, shape, 0.06) < 1.0)] = _SOFT
    tissue[((x / 0.12) ** 2 + ((y - 0.5) / 0.1) ** 2) < 1.0] = _BONE
    tissue[((x - 0.1) ** 2 + (y - 0.28) ** 2) < 0.07**2] = _AORTA
    liver = inner & blob(rng, grid, (-0.35, -0.05, 0.0), rng.uniform([0.35, 0.35, 0.6], [0.42, 0.45, 0.8]), 0.1)
    tissue[liver] = _LIVER
    for _ in range(3):
        # Portal vessels: straight tubes through the liver.
        start, direction = rng.uniform(-0.4, 0.2, 3), rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        rel = grid - np.reshape(start, (3, 1, 1, 1))
        along = np.tensordot(direction, rel, axes=1)
        dist2 = (rel**2).sum(0) - along**2
        tissue[liver & (dist2 < 0.035**2)] = _VESSEL
    label = np.where(liver, 1, 0).astype(np.uint8)

    depth = ndimage.distance_transform_edt(liver, sampling=[2.0 / n for n in shape])
    candidates = np.argwhere(depth > 0.15)
    if not len(candidates):
        candidates = np.argwhere(depth >= depth.max())
    num_tumours = int(rng.integers(1, 4))
    for k in range(num_tumours):
        centre = grid[(slice(None), *candidates[rng.integers(len(candidates))])]
        tumour = liver & blob(rng, grid, centre, rng.uniform(0.12, 0.2, 3), 0.1)
        tissue[tumour] = _TUMOUR + k
        label[tumour] = 2

    noise = rng.uniform(10.0, 20.0)
    images = {}
    for phase in phases:
        ranges = _CT_HU[phase]
        values = {index: rng.uniform(*hu) for index, hu in ranges.items() if index != _TUMOUR}
        values.update({_TUMOUR + k: rng.uniform(*ranges[_TUMOUR]) for k in range(num_tumours)})
        # Air is -1000 HU; rendering it explicitly keeps the partial-volume blur at the skin right.
        values[0] = -1000.0
        image = render(tissue, values, blur=0.6) + rng.uniform(-10, 10) + noise * rng.standard_normal(shape)
        images[phase] = np.clip(np.round(image), -1024, 3071).astype(np.int16)
    return images, label


def make_liver_dataset(
    out_dir: str | Path,
    num_cases: int = 6,
    shape: Shape = (48, 48, 48),
    phases: Sequence[str] = ("arterial", "venous"),
    seed: int = 0,
    num_test: int = 2,
) -> Path:
    """Write a synthetic multi-phase liver CT data set in the Decathlon layout.

    ``dataset.json`` + ``imagesTr/liver_000_0000.nii.gz`` (one file per phase, nnU-Net channel suffix) +
    ``labelsTr/liver_000.nii.gz`` (0 background, 1 liver, 2 tumour) + ``num_test`` unlabelled cases in
    ``imagesTs/`` listed under ``"test"``. HU as int16, 0.8 x 0.8 x 2.5 mm voxels.

    Args:
        out_dir: folder to write into (created).
        num_cases: number of labelled training cases.
        shape: voxel grid of every case.
        phases: contrast phases, each ``"arterial"`` or ``"venous"``.
        seed: random seed; the same seed writes the same files.
        num_test: number of unlabelled test cases.

    Returns:
        ``out_dir`` as a path, ready for :func:`medguide.data.decathlon_datalist`.
    """
    phases = check_modalities(phases, tuple(_CT_HU), "phases")
    out_dir = Path(out_dir)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = (150.0, 150.0, -300.0)
    training, test = [], []
    for index in range(num_cases + num_test):
        images, label = _liver_case(np.random.default_rng([seed, index]), shape, phases)
        split = "Tr" if index < num_cases else "Ts"
        files = [f"./images{split}/liver_{index:03d}_{c:04d}.nii.gz" for c in range(len(phases))]
        for file, phase in zip(files, phases, strict=True):
            save_nifti(images[phase], affine, out_dir / file)
        if split == "Tr":
            save_nifti(label, affine, out_dir / f"labelsTr/liver_{index:03d}.nii.gz")
            training.append({"image": files, "label": f"./labelsTr/liver_{index:03d}.nii.gz"})
        else:
            test.append(files)
    spec = {
        "name": "SyntheticMultiPhaseLiver",
        "description": "medguide synthetic multi-phase liver CT (seeded)",
        "tensorImageSize": "3D",
        "modality": {str(c): phase for c, phase in enumerate(phases)},
        "labels": {"0": "background", "1": "liver", "2": "tumour"},
        "numTraining": num_cases,
        "numTest": num_test,
        "training": training,
        "test": test,
    }
    (out_dir / "dataset.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    return out_dir
