"""What every synthetic data set shares: made once per setting and reused, and the shapes its cases are drawn from.

Each data set's generator sits beside its reader and writes that reader's public layout
(:func:`medguide.data.make_brats_dataset` in ``brats.py``, :func:`medguide.data.make_liver_dataset` in ``liver.py``).
A generator is a function ``maker(out_dir, **settings) -> out_dir`` whose ``seed`` setting makes it repeatable; a
bundle names it in its config, and :func:`dataset_dir_or_synthetic` makes the set when no ``dataset_dir`` is given.

The images are built so that each modality shows a different part of the lesion, as in the real data: fusing
modalities beats any single one and a missing modality costs accuracy. Each case gets its own intensity scale and
offset, partial-volume blur and gaussian noise, and each image of a case its own acquisition faults (bias field,
motion, a noisy, blurred, missing or corrupted slab; :mod:`medguide.data.faults`), so no single modality segments
everything and which one to trust changes from place to place.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from pydoc import locate
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np
from scipy import ndimage

from medguide.data.errors import InputError, MissingInputError
from medguide.data.files import atomic_folder

__all__ = [
    "Shape",
    "SyntheticCase",
    "blob",
    "brain_and_ventricles",
    "case_settings",
    "dataset_dir_or_synthetic",
    "generator_version",
    "render",
    "resolve_maker",
    "save_nifti",
    "smooth_field",
    "unit_grid",
]

logger = logging.getLogger("medguide.data")

Shape = tuple[int, int, int]


class SyntheticCase(NamedTuple):
    """One generated case and what was drawn for it, for tests and benchmarks that ask why it looks as it does.

    ``images``: {modality: 3D image} as written; ``label``: the label image as written; ``faults``: {modality:
    the :class:`medguide.data.faults.Fault` records of that image}; ``lesions``: one dict per lesion (its pattern,
    size, contrast); ``shifts``: {modality: voxel shift of the image against the label} (zeros where registered).
    """

    images: dict[str, np.ndarray]
    label: np.ndarray
    faults: dict[str, tuple]
    lesions: tuple[dict[str, Any], ...]
    shifts: dict[str, tuple[float, float, float]]


def case_settings(shape: Sequence[int], fault_rate: float, rates: dict[str, float]) -> tuple[Shape, dict[str, float]]:
    """A synthetic case's checked grid, and its fault probabilities: ``rates`` times ``fault_rate``, capped at 1.

    Raises:
        ValueError: ``shape`` is not 3 axes of at least 4 voxels, or ``fault_rate`` is negative.
    """
    grid = tuple(int(n) for n in shape)
    if len(grid) != 3 or min(grid) < 4:
        raise ValueError(f"shape must be 3 axes of at least 4 voxels, got {grid}")
    if fault_rate < 0:
        raise ValueError(f"fault_rate must be >= 0, got {fault_rate}")
    return grid, {kind: min(1.0, fault_rate * p) for kind, p in rates.items()}


def unit_grid(shape: Shape) -> np.ndarray:
    """Voxel centres in [-1, 1] along each axis, shape (3, *shape)."""
    return np.stack(np.meshgrid(*(np.linspace(-1.0, 1.0, n) for n in shape), indexing="ij"))


def smooth_field(rng: np.random.Generator, shape: Shape, scale: float) -> np.ndarray:
    """Unit-variance random field, smooth over ``scale`` times the volume size."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=[scale * n for n in shape])
    return field / (field.std() + 1e-8)


def blob(
    rng: np.random.Generator, grid: np.ndarray, centre: Sequence[float], radii: Sequence[float], roughness: float
) -> np.ndarray:
    """An ellipsoid whose surface is pushed in and out by a smooth random field."""
    offsets = (grid - np.reshape(centre, (3, 1, 1, 1))) / np.reshape(radii, (3, 1, 1, 1))
    radius = np.sqrt((offsets**2).sum(0))
    return radius + roughness * smooth_field(rng, grid.shape[1:], 0.08) < 1.0


def brain_and_ventricles(rng: np.random.Generator, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(brain, ventricles) masks of one synthetic head on ``grid`` (:func:`unit_grid`): a smoothly deformed brain
    ellipsoid, its size and centre drawn per case, and two lateral ventricles beside the midline."""
    brain = blob(rng, grid, rng.uniform(-0.03, 0.03, 3), rng.uniform(0.78, 0.9, 3), 0.05)
    ventricles = np.zeros(grid.shape[1:], bool)
    for side in (-1, 1):
        ventricles |= blob(rng, grid, (0.12 * side, 0.05, 0.05), (0.07, 0.22, 0.12), 0.1)
    return brain, ventricles


def render(tissue: np.ndarray, values: dict[int, float | np.ndarray], blur: float) -> np.ndarray:
    """Intensity image of a tissue map, each boundary softened as by partial volume.

    Args:
        tissue: integer tissue index per voxel.
        values: intensity of each tissue index: a number, or an array of ``tissue``'s shape for a tissue whose
            intensity varies in space (per lesion, heterogeneous); indices left out render as 0.
        blur: gaussian sigma of the partial-volume blur, voxels.
    """
    image = np.zeros(tissue.shape)
    for index, value in values.items():
        image += value * ndimage.gaussian_filter((tissue == index).astype(float), blur)
    return image


def save_nifti(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """Write ``array`` as a NIfTI file, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))


def resolve_maker(maker: Callable[..., Path] | str) -> Callable[..., Path]:
    """A synthetic data set's generator, given as the function or as its dotted path.

    Args:
        maker: e.g. :func:`medguide.data.make_brats_dataset` or ``"medguide.data.make_brats_dataset"``.

    Raises:
        InputError: a dotted path that names no function.
    """
    found = locate(maker) if isinstance(maker, str) else maker
    if not callable(found):
        raise InputError(
            f"synthetic data maker {maker!r} is not a function (expected e.g. 'medguide.data.make_brats_dataset')"
        )
    return found


def generator_version(maker: Callable[..., Path]) -> str:
    """8 hex digits of the SHA-256 of the Python sources beside the file that defines ``maker`` (its folder's
    ``*.py``, so the helpers a generator calls count too; "" when it has no source file, e.g. a function made at run
    time): part of a synthetic set's folder name, so a set written by an older generator is never reused after the
    generator changes, which the settings alone would name the same."""
    try:
        source = inspect.getsourcefile(maker)
    except TypeError:
        return ""
    if not source or not Path(source).is_file():
        return ""
    digest = hashlib.sha256()
    for path in sorted(Path(source).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:8]


def dataset_dir_or_synthetic(
    dataset_dir: str | Path | None,
    maker: Callable[..., Path] | str,
    root: str | Path | None = None,
    **kwargs,
) -> Path:
    """``dataset_dir`` when one is given, else the seeded synthetic set ``maker`` writes (made once, then reused).

    This is what lets a bundle run with no ``--dataset_dir`` on a fresh machine. The set is written under ``root``
    (default: ``<system temp>/medguide-synthetic``) in a folder named by the maker, its arguments and
    :func:`generator_version`, built in a temporary folder and renamed into place, so processes started together
    (``torchrun``) never see half a set.

    Example:
        >>> dataset_dir_or_synthetic("", "medguide.data.make_brats_dataset", num_cases=4, shape=[32, 32, 32])
        PosixPath('/tmp/medguide-synthetic/medguide.data.brats.make_brats_dataset-num_cases4-shape32x32x32-v1a2b3c4d')

    Args:
        dataset_dir: the user's data folder; empty or ``None`` selects the synthetic set.
        maker: the generator, ``maker(out_dir, **kwargs)``, or its dotted path (see :func:`resolve_maker`); its
            settings go in ``kwargs``, so that they name the folder (a ``functools.partial`` is refused).
        root: where synthetic sets are kept.
        kwargs: passed to ``maker`` (``num_cases``, ``shape``, ``seed``, ...).

    Raises:
        MissingInputError: ``dataset_dir`` is given but is not a folder.
        InputError: ``maker`` names no function, or a function without a name.
    """
    if dataset_dir:
        path = Path(dataset_dir)
        if not path.is_dir():
            raise MissingInputError(f"dataset_dir '{path}' does not exist or is not a folder.")
        return path
    maker = resolve_maker(maker)
    if not hasattr(maker, "__qualname__"):
        raise InputError(
            f"synthetic data maker {maker!r} has no name to keep its data set under; give the function and pass its "
            "settings as keyword arguments"
        )
    root = Path(root) if root else Path(tempfile.gettempdir()) / "medguide-synthetic"
    tag = "-".join(
        [f"{maker.__module__}.{maker.__qualname__}"]
        + [f"{k}{'x'.join(map(str, v)) if isinstance(v, tuple | list) else v}" for k, v in sorted(kwargs.items())]
        + [f"v{version}" for version in [generator_version(maker)] if version]
    )
    target = root / tag
    if not target.is_dir():
        with atomic_folder(target) as staging:
            maker(staging, **kwargs)
    logger.info("no dataset_dir given: using the synthetic data set at '%s' (--dataset_dir DIR for yours)", target)
    return target
