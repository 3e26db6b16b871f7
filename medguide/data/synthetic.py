"""Small seeded synthetic data sets in the real public layouts, so every bundle runs on a fresh machine.

The images are built so that each modality shows a different part of the lesion, as in the real data: fusing
modalities beats any single one and a missing modality costs accuracy.

BraTS (brain MRI): a smoothly deformed brain ellipsoid with ventricles; a tumour made of a necrotic centre
(label 1) inside an enhancing rim (label 4, or 3 in the 2023 naming), inside a wider irregular oedema (label 2).

============  =====  =======  ====  ========  ===========================================
modality      brain  oedema   rim   necrosis  what it shows
============  =====  =======  ====  ========  ===========================================
T1            1.0    0.94     0.92  0.86      little contrast anywhere
T1ce          1.0    0.99     1.9   0.55      the enhancing rim and the core; not oedema
T2            1.0    1.65     1.55  1.9       oedema + core bright, but so are ventricles
FLAIR         1.0    1.8      1.7   0.9       the oedema boundary; rim ~ oedema
============  =====  =======  ====  ========  ===========================================

Liver (multi-phase CT, HU): a body with fat, soft tissue, spine and aorta; a large irregular liver (label 1)
with portal vessels and 1-3 tumours (label 2). Arterial: liver 60-80 HU, close to the surrounding soft tissue
(50-65 HU, the low-contrast liver boundary), tumours hyper-enhancing (120-150 HU). Venous: liver 100-120 HU
(clear boundary), tumours washed out (65-95 HU, some nearly iso-dense), vessels bright.

Each case gets its own intensity scale and offset, a smooth bias field (MRI), partial-volume blur and gaussian
noise, so no single modality segments everything.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from medguide.data.errors import MissingInputError

__all__ = ["dataset_dir_or_synthetic", "make_brats_dataset", "make_dataset", "make_liver_dataset"]

Shape = tuple[int, int, int]

# BraTS tissue indices and their relative intensity per modality (table in the module docstring).
_BRAIN, _CSF, _OEDEMA, _RIM, _NECROSIS = range(1, 6)
_MRI_CONTRAST = {
    "t1": {_BRAIN: 1.0, _CSF: 0.4, _OEDEMA: 0.94, _RIM: 0.92, _NECROSIS: 0.86},
    "t1ce": {_BRAIN: 1.0, _CSF: 0.4, _OEDEMA: 0.99, _RIM: 1.9, _NECROSIS: 0.55},
    "t2": {_BRAIN: 1.0, _CSF: 2.0, _OEDEMA: 1.65, _RIM: 1.55, _NECROSIS: 1.9},
    "flair": {_BRAIN: 1.0, _CSF: 0.3, _OEDEMA: 1.8, _RIM: 1.7, _NECROSIS: 0.9},
}
# Grey/white matter texture: white matter is brighter on T1-weighted and darker on T2-weighted images.
_TEXTURE_SIGN = {"t1": 1.0, "t1ce": 1.0, "t2": -1.0, "flair": -1.0}
_BRATS_FILES = {
    "2021": {"t1": "_t1", "t1ce": "_t1ce", "t2": "_t2", "flair": "_flair", "label": "_seg"},
    "2023": {"t1": "-t1n", "t1ce": "-t1c", "t2": "-t2w", "flair": "-t2f", "label": "-seg"},
}

# Liver CT tissue indices; tumours take indices from _TUMOUR up, one per tumour.
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


def _grid(shape: Shape) -> np.ndarray:
    """Voxel centres in [-1, 1] along each axis, shape (3, *shape)."""
    return np.stack(np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in shape), indexing="ij"))


def _smooth_field(rng: np.random.Generator, shape: Shape, scale: float) -> np.ndarray:
    """Unit-variance random field, smooth over ``scale`` times the volume size."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=[scale * n for n in shape])
    return field / (field.std() + 1e-8)


def _blob(
    rng: np.random.Generator, grid: np.ndarray, centre: Sequence[float], radii: Sequence[float], roughness: float
) -> np.ndarray:
    """An ellipsoid whose surface is pushed in and out by a smooth random field."""
    offsets = (grid - np.reshape(centre, (3, 1, 1, 1))) / np.reshape(radii, (3, 1, 1, 1))
    radius = np.sqrt((offsets**2).sum(0))
    return radius + roughness * _smooth_field(rng, grid.shape[1:], 0.08) < 1.0


def _render(tissue: np.ndarray, values: dict[int, float], blur: float) -> np.ndarray:
    """Intensity image of a tissue map, each boundary softened as by partial volume."""
    image = np.zeros(tissue.shape)
    for index, value in values.items():
        image += value * ndimage.gaussian_filter((tissue == index).astype(float), blur)
    return image


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def _brats_case(rng: np.random.Generator, shape: Shape) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({modality: image}, label with ET = 4) of one synthetic BraTS case."""
    grid = _grid(shape)
    brain = _blob(rng, grid, rng.uniform(-0.03, 0.03, 3), rng.uniform(0.78, 0.9, 3), 0.05)
    ventricles = np.zeros(shape, bool)
    for side in (-1, 1):
        ventricles |= _blob(rng, grid, (0.12 * side, 0.05, 0.05), (0.07, 0.22, 0.12), 0.1)

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
    oedema_field = oedema_field / oedema_field.max() + 0.12 * _smooth_field(rng, shape, 0.06)
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

    texture = _smooth_field(rng, shape, 0.04)
    images = {}
    for modality, contrast in _MRI_CONTRAST.items():
        bias = np.exp(0.12 * _smooth_field(rng, shape, 0.25))
        relative = _render(tissue, contrast, blur=0.6) * (1 + 0.05 * _TEXTURE_SIGN[modality] * texture)
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
    if naming not in _BRATS_FILES:
        raise ValueError(f"naming must be one of {sorted(_BRATS_FILES)}, got {naming!r}")
    out_dir = Path(out_dir)
    # BraTS volumes are stored with flipped x and y axes: affine diag(-1, -1, 1), origin at the last y row.
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    suffixes = _BRATS_FILES[naming]
    for index in range(num_cases):
        case = f"BraTS2021_{index:05d}" if naming == "2021" else f"BraTS-GLI-{index:05d}-000"
        images, label = _brats_case(np.random.default_rng([seed, index]), shape)
        if naming == "2023":
            label[label == 4] = 3
        for modality, image in images.items():
            _save(image, affine, out_dir / case / f"{case}{suffixes[modality]}.nii.gz")
        _save(label, affine, out_dir / case / f"{case}{suffixes['label']}.nii.gz")
    return out_dir


def _liver_case(
    rng: np.random.Generator, shape: Shape, phases: Sequence[str]
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """({phase: HU image}, label 0/1/2) of one synthetic multi-phase liver CT case."""
    grid = _grid(shape)
    x, y = grid[0], grid[1]
    outline = _smooth_field(rng, shape, 0.1)
    body_radius = np.sqrt((x / 0.92) ** 2 + (y / 0.72) ** 2) + 0.03 * outline
    tissue = np.where(body_radius < 1.0, _FAT, 0)
    inner = body_radius < 0.85
    # Abdominal content: soft tissue with patches of intra-abdominal fat.
    tissue[inner & (_smooth_field(rng, shape, 0.06) < 1.0)] = _SOFT
    tissue[((x / 0.12) ** 2 + ((y - 0.5) / 0.1) ** 2) < 1.0] = _BONE
    tissue[((x - 0.1) ** 2 + (y - 0.28) ** 2) < 0.07**2] = _AORTA
    liver = inner & _blob(rng, grid, (-0.35, -0.05, 0.0), rng.uniform([0.35, 0.35, 0.6], [0.42, 0.45, 0.8]), 0.1)
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
        tumour = liver & _blob(rng, grid, centre, rng.uniform(0.12, 0.2, 3), 0.1)
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
        image = _render(tissue, values, blur=0.6) + rng.uniform(-10, 10) + noise * rng.standard_normal(shape)
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
    unknown = sorted(set(phases) - set(_CT_HU))
    if unknown:
        raise ValueError(f"unknown phases {unknown}; expected some of {sorted(_CT_HU)}")
    out_dir = Path(out_dir)
    affine = np.diag([-0.8, -0.8, 2.5, 1.0])
    affine[:3, 3] = (150.0, 150.0, -300.0)
    training, test = [], []
    for index in range(num_cases + num_test):
        images, label = _liver_case(np.random.default_rng([seed, index]), shape, phases)
        split = "Tr" if index < num_cases else "Ts"
        files = [f"./images{split}/liver_{index:03d}_{c:04d}.nii.gz" for c in range(len(phases))]
        for file, phase in zip(files, phases, strict=True):
            _save(images[phase], affine, out_dir / file)
        if split == "Tr":
            _save(label, affine, out_dir / f"labelsTr/liver_{index:03d}.nii.gz")
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


_MAKERS: dict[str, Callable[..., Path]] = {"brats": make_brats_dataset, "liver": make_liver_dataset}


def make_dataset(kind: str, out_dir: str | Path, **kwargs) -> Path:
    """Write a synthetic data set by name, for command lines and bundle configs.

    Args:
        kind: ``"brats"`` or ``"liver"``.
        out_dir: folder to write into.
        kwargs: passed to :func:`make_brats_dataset` or :func:`make_liver_dataset`.
    """
    if kind not in _MAKERS:
        raise ValueError(f"unknown synthetic data set {kind!r}; expected one of {sorted(_MAKERS)}")
    return _MAKERS[kind](out_dir, **kwargs)


def dataset_dir_or_synthetic(
    dataset_dir: str | Path | None, kind: str, root: str | Path | None = None, **kwargs
) -> Path:
    """``dataset_dir`` when one is given, else a seeded synthetic set of ``kind`` (made once, then reused).

    This is what lets a bundle run with no ``--dataset_dir`` on a fresh machine. The set is written under
    ``root`` (default: ``<system temp>/medguide-synthetic``) in a folder named by its arguments, built in a
    temporary folder and renamed into place, so processes started together (``torchrun``) never see half a set.

    Args:
        dataset_dir: the user's data folder; empty or ``None`` selects the synthetic set.
        kind: ``"brats"`` or ``"liver"``.
        root: where synthetic sets are kept.
        kwargs: passed to :func:`make_dataset` (``num_cases``, ``shape``, ``seed``, ...).
    """
    if dataset_dir:
        path = Path(dataset_dir)
        if not path.is_dir():
            raise MissingInputError(f"dataset_dir '{path}' does not exist or is not a folder.")
        return path
    root = Path(root) if root else Path(tempfile.gettempdir()) / "medguide-synthetic"
    tag = "-".join(
        [kind]
        + [f"{k}{'x'.join(map(str, v)) if isinstance(v, tuple | list) else v}" for k, v in sorted(kwargs.items())]
    )
    target = root / tag
    if target.is_dir():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".{tag}."))
    made = make_dataset(kind, staging / "data", **kwargs)
    try:
        os.replace(made, target)
    except OSError:
        if not target.is_dir():
            raise
    shutil.rmtree(staging, ignore_errors=True)
    return target
