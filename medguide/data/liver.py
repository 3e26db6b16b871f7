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
and aorta; a large irregular liver (label 1) with portal vessels and 1-4 tumours (label 2). Arterial: liver 60-80 HU,
close to the surrounding soft tissue (50-65 HU, the low-contrast liver boundary). Venous: liver 100-120 HU (clear
boundary), vessels bright. Each tumour enhances in its own way (hyper-enhancing with washout, hyper without washout,
iso in the arterial phase, hypovascular, rim-enhancing; :func:`liver_synthetic_case`), so neither phase alone shows
every tumour; the phases are misregistered by a small shift and each has its own acquisition faults.
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
from medguide.data.faults import apply_faults, draw_faults
from medguide.data.files import NIFTI_SUFFIXES, image_stem, visible
from medguide.data.modalities import check_modalities
from medguide.data.synthetic import (
    Shape,
    SyntheticCase,
    blob,
    case_settings,
    render,
    save_nifti,
    smooth_field,
    unit_grid,
)

__all__ = ["decathlon_datalist", "dicom_series_datalist", "liver_synthetic_case", "make_liver_dataset"]

# Synthetic CT tissue indices; tumours take indices from _TUMOUR up, one per tumour.
_FAT, _SOFT, _BONE, _AORTA, _LIVER, _VESSEL, _TUMOUR = range(1, 8)
# Per phase: HU range (low, high) drawn per case; tumours take their HU from the liver's (_TUMOUR_KINDS_HU).
_CT_HU = {
    "arterial": {
        _FAT: (-110, -90),
        _SOFT: (50, 65),
        _BONE: (350, 450),
        _AORTA: (220, 300),
        _LIVER: (60, 80),
        _VESSEL: (90, 110),
    },
    "venous": {
        _FAT: (-110, -90),
        _SOFT: (55, 70),
        _BONE: (350, 450),
        _AORTA: (140, 170),
        _LIVER: (100, 120),
        _VESSEL: (150, 190),
    },
}
# Enhancement of a tumour relative to its case's liver, HU per phase, by kind (table in liver_synthetic_case), and
# how often each kind occurs.
_TUMOUR_KINDS_HU = {
    "hypervascular": {"arterial": (40, 90), "venous": (-35, -10)},
    "venous_iso": {"arterial": (30, 70), "venous": (-8, 8)},
    "arterial_iso": {"arterial": (-8, 8), "venous": (-40, -20)},
    "hypovascular": {"arterial": (-35, -10), "venous": (-45, -20)},
    "rim": {"arterial": (-30, -10), "venous": (-35, -15)},
}
_TUMOUR_KINDS = {"hypervascular": 0.35, "venous_iso": 0.15, "arterial_iso": 0.15, "hypovascular": 0.2, "rim": 0.15}
# Probability of each acquisition fault per phase of a case (medguide.data.faults), drawn independently.
_CT_FAULT_RATES = {"blur": 0.15, "ghosting": 0.1, "noise": 0.2, "missing": 0.05, "corrupted": 0.1}


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


def _liver_tissue(rng: np.random.Generator, shape: Shape) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(tissue map, label 0/1/2, tumour descriptions) of one abdomen; tumour k has tissue index ``_TUMOUR + k``."""
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
    # the liver spans about half the abdomen's width and most of the scanned length, as on a real abdominal CT
    radii = rng.uniform([0.45, 0.36, 0.55], [0.55, 0.46, 0.8])
    liver = inner & blob(rng, grid, (-0.3, -0.05, rng.uniform(-0.1, 0.1)), radii, 0.1)
    tissue[liver] = _LIVER
    voxel = 2.0 / (min(shape) - 1)
    for _ in range(int(rng.integers(3, 6))):
        # Portal and hepatic vessels: straight tubes through the liver.
        start, direction = rng.uniform(-0.5, 0.2, 3), rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        rel = grid - np.reshape(start, (3, 1, 1, 1))
        along = np.tensordot(direction, rel, axes=1)
        dist2 = (rel**2).sum(0) - along**2
        tissue[liver & (dist2 < max(0.03, 0.6 * voxel) ** 2)] = _VESSEL
    label = np.where(liver, 1, 0).astype(np.uint8)

    depth = ndimage.distance_transform_edt(liver, sampling=[2.0 / n for n in shape])
    candidates = np.argwhere(depth > 0.12)
    if not len(candidates):
        candidates = np.argwhere(depth >= depth.max())
    tumours = []
    for k in range(int(rng.choice([1, 2, 3, 4], p=[0.4, 0.3, 0.2, 0.1]))):
        centre = grid[(slice(None), *candidates[rng.integers(len(candidates))])]
        radius = max(rng.uniform(0.08, 0.24), 2 * voxel)
        tumour = liver & blob(rng, grid, centre, radius * rng.uniform(0.8, 1.2, 3), 0.1)
        if not tumour.any():
            tumour = liver & (((grid - np.reshape(centre, (3, 1, 1, 1))) ** 2).sum(0) <= (2 * voxel) ** 2)
        tissue[tumour] = _TUMOUR + k
        label[tumour] = 2
        kind = str(rng.choice(list(_TUMOUR_KINDS), p=list(_TUMOUR_KINDS.values())))
        tumours.append({"kind": kind, "radius": float(radius)})
    if not (label == 2).any():
        label[tuple(candidates[0])] = 2
        tissue[tuple(candidates[0])] = _TUMOUR
    return tissue, label, tumours


def liver_synthetic_case(
    shape: Shape = (48, 48, 48),
    phases: Sequence[str] = ("arterial", "venous"),
    seed: int = 0,
    index: int = 0,
    fault_rate: float = 1.0,
) -> SyntheticCase:
    """One synthetic multi-phase liver CT case, as :func:`make_liver_dataset` writes it, with what was drawn for it.

    A body with fat, soft tissue, spine and aorta; a liver (label 1) spanning about half the body's width and
    55-80% of the scanned length, with portal vessels; 1-4 tumours (label 2) of radius 0.08-0.24 of the half-width,
    each with its own enhancement ``kind`` (HU relative to the case's liver, per phase):

    =================  ==================  ===================  =========================================
    kind               arterial            venous               imitates
    =================  ==================  ===================  =========================================
    ``hypervascular``  +40..+90            -10..-35 (washout)   hepatocellular carcinoma
    ``venous_iso``     +30..+70            -8..+8               HCC without washout, adenoma
    ``arterial_iso``   -8..+8              -20..-40             hypovascular HCC, some metastases
    ``hypovascular``   -10..-35            -20..-45             colorectal metastasis, cyst-like
    ``rim``            rim +30..+70,       -15..-35             metastasis with arterial rim enhancement
                       centre -10..-30
    =================  ==================  ===================  =========================================

    Liver HU per case: arterial 60-80 (close to the surrounding soft tissue), venous 100-120; vessels bright. The
    label is drawn on the venous phase (the first phase when there is no venous one); every other phase is
    misregistered by a random sub-voxel to few-voxel shift (up to 2.5 voxels = 2 mm in-plane, 1.5 slices = 3.75 mm
    along z), as breathing moves the liver between phases. Each phase gets its own
    :mod:`medguide.data.faults` (no bias field: CT has none).

    Args:
        shape: voxel grid (each axis at least 4).
        phases: contrast phases, each ``"arterial"`` or ``"venous"``.
        seed: data set seed; with ``index``, the same pair gives the same case.
        index: case number within the set.
        fault_rate: multiplies every fault probability (0: no faults; probabilities are capped at 1).

    Returns:
        :class:`medguide.data.synthetic.SyntheticCase`: int16 HU images (-1024..3071, air -1000), the uint8 label
        (0, 1 liver, 2 tumour, every value present), faults per phase, tumours, the shift of each phase (voxels).

    Raises:
        ValueError: an unknown phase, an axis under 4 voxels, or a negative ``fault_rate``.
    """
    phases = check_modalities(phases, tuple(_CT_HU), "phases")
    shape, rates = case_settings(shape, fault_rate, _CT_FAULT_RATES)
    rng = np.random.default_rng([seed, index])
    tissue, label, tumours = _liver_tissue(rng, shape)
    reference = "venous" if "venous" in phases else phases[0]
    heterogeneity = smooth_field(rng, shape, 0.03)
    for tumour in tumours:
        contrast = _TUMOUR_KINDS_HU[tumour["kind"]]
        tumour.update({phase: float(rng.uniform(*contrast[phase])) for phase in _CT_HU})
        tumour["rim"] = float(rng.uniform(30, 70)) if tumour["kind"] == "rim" else 0.0
    noise = rng.uniform(10.0, 20.0)
    images, faults, shifts = {}, {}, {}
    # one generator per phase of _CT_HU, whichever phases are asked for, so a phase looks the same in every set
    for phase, phase_rng in zip(_CT_HU, rng.spawn(len(_CT_HU)), strict=True):
        values: dict[int, float | np.ndarray] = {index: phase_rng.uniform(*hu) for index, hu in _CT_HU[phase].items()}
        shift = phase_rng.uniform(-1, 1, 3) * np.array([2.5, 2.5, 1.5])
        if phase not in phases:
            continue
        for k, tumour in enumerate(tumours):
            inside = tissue == _TUMOUR + k
            value = values[_LIVER] + tumour[phase] + 8.0 * heterogeneity
            if tumour["rim"] and phase == "arterial":
                wall = inside & ~ndimage.binary_erosion(inside, iterations=max(1, int(0.02 * min(shape))))
                value = np.where(wall, values[_LIVER] + tumour["rim"], value)
            values[_TUMOUR + k] = value
        # Air is -1000 HU; rendering it explicitly keeps the partial-volume blur at the skin right.
        values[0] = -1000.0
        image = render(tissue, values, blur=0.6) + phase_rng.uniform(-10, 10)
        if phase != reference:
            image = ndimage.shift(image, shift, order=1, mode="nearest")
        shifts[phase] = (0.0, 0.0, 0.0) if phase == reference else tuple(float(s) for s in shift)
        image += noise * phase_rng.standard_normal(shape)
        faults[phase] = draw_faults(phase_rng, shape, rates)
        image = apply_faults(image, faults[phase], phase_rng, level=100.0, fill=-1000.0)
        images[phase] = np.clip(np.round(image), -1024, 3071).astype(np.int16)
    return SyntheticCase(images, label, faults, tuple(tumours), shifts)


def make_liver_dataset(
    out_dir: str | Path,
    num_cases: int = 6,
    shape: Shape = (48, 48, 48),
    phases: Sequence[str] = ("arterial", "venous"),
    seed: int = 0,
    num_test: int = 2,
    fault_rate: float = 1.0,
) -> Path:
    """Write a synthetic multi-phase liver CT data set in the Decathlon layout.

    ``dataset.json`` + ``imagesTr/liver_000_0000.nii.gz`` (one file per phase, nnU-Net channel suffix) +
    ``labelsTr/liver_000.nii.gz`` (0 background, 1 liver, 2 tumour) + ``num_test`` unlabelled cases in
    ``imagesTs/`` listed under ``"test"``. HU as int16, 0.8 x 0.8 x 2.5 mm voxels. Each case is
    :func:`liver_synthetic_case` ``(shape, phases, seed, index)``: the body fills most of the grid and the liver about
    half its width, so pick ``shape`` about twice the training patch in-plane for cropping, foreground sampling and
    the sliding window to matter.

    Args:
        out_dir: folder to write into (created).
        num_cases: number of labelled training cases.
        shape: voxel grid of every case (each axis at least 4).
        phases: contrast phases, each ``"arterial"`` or ``"venous"``.
        seed: random seed; the same seed writes the same files.
        num_test: number of unlabelled test cases.
        fault_rate: multiplies the probability of every acquisition fault (0 for none).

    Returns:
        ``out_dir`` as a path, ready for :func:`medguide.data.decathlon_datalist`.

    Raises:
        ValueError: an unknown phase, an axis under 4 voxels or a negative ``fault_rate``.
    """
    phases = check_modalities(phases, tuple(_CT_HU), "phases")
    out_dir = Path(out_dir)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = (150.0, 150.0, -300.0)
    training, test = [], []
    for index in range(num_cases + num_test):
        images, label, *_ = liver_synthetic_case(shape, phases, seed, index, fault_rate)
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
