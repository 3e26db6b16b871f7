"""Acquisition faults of one image: what a scanner does to a sequence (or a CT phase) of one case, here and not there.

Real multi-modal studies rarely have every image clean: one sequence has a strong bias field, another moved during a
few slices, a third has a noisy or missing slab. These faults are local and differ between the images of one case,
so a network that fuses modalities can learn where to trust which one. The synthetic generators
(:func:`medguide.data.make_brats_dataset`, :func:`medguide.data.make_liver_dataset`) draw them per image with
:func:`draw_faults` and apply them with :func:`apply_faults`; the draws are returned as :class:`Fault` records, so a
test or a reader of a benchmark can say which image got which fault.

==============  =====================================================  =============================================
kind            what it imitates                                       ``strength``
==============  =====================================================  =============================================
``bias``        a strong receive-coil bias field (MRI, not N4-fixed)   log-amplitude of the multiplicative field
``blur``        motion or a thick-slice reconstruction over a slab     gaussian sigma, voxels
``ghosting``    periodic motion during a slab of slices: shifted       share of the signal moved into the ghosts
                replicas along the phase-encode axis
``noise``       a low-SNR slab (coil element drop-out, low dose)       added noise sigma, in units of ``level``
``missing``     slices never acquired or cut off (filled)              (unused, 1)
``corrupted``   slices with stripe artefacts (spikes, streaks)         stripe amplitude, in units of ``level``
==============  =====================================================  =============================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
from scipy import ndimage

from medguide.data.synthetic import Shape, smooth_field

__all__ = ["FAULT_KINDS", "Fault", "apply_faults", "draw_faults"]

FAULT_KINDS = ("bias", "blur", "ghosting", "noise", "missing", "corrupted")
# (low, high) of each kind's strength (table in the module docstring)
_STRENGTH = {
    "bias": (0.25, 0.45),
    "blur": (1.2, 2.5),
    "ghosting": (0.2, 0.45),
    "noise": (0.15, 0.35),
    "missing": (1.0, 1.0),
    "corrupted": (0.8, 2.0),
}


class Fault(NamedTuple):
    """One fault of one image: its ``kind`` (:data:`FAULT_KINDS`), the slab of slices ``start:stop`` along
    ``axis`` it covers (the whole axis for ``bias``), and its ``strength`` (units in the module docstring)."""

    kind: str
    axis: int
    start: int
    stop: int
    strength: float


def draw_faults(rng: np.random.Generator, shape: Shape, rates: Mapping[str, float]) -> tuple[Fault, ...]:
    """Draw the faults of one image, each kind independently with its own probability.

    Args:
        rng: the image's own generator (one per image keeps the draws of the images of a case independent).
        shape: the image's voxel grid.
        rates: probability of each kind, 0..1 (kinds left out never occur), e.g. ``{"bias": 0.25, "noise": 0.15}``.

    Returns:
        the faults, in the order of :data:`FAULT_KINDS`; slabs cover 15-35% of an axis (at least 2 slices).

    Raises:
        ValueError: an unknown kind or a probability outside 0..1.
    """
    unknown = sorted(set(rates) - set(FAULT_KINDS))
    if unknown:
        raise ValueError(f"unknown fault kinds {unknown}; expected some of {list(FAULT_KINDS)}")
    if any(not 0.0 <= p <= 1.0 for p in rates.values()):
        raise ValueError(f"fault probabilities must lie in 0..1, got {dict(rates)}")
    faults = []
    for kind in FAULT_KINDS:
        # every kind draws the same numbers whether it occurs or not, so one rate does not reshuffle the others
        occurs = rng.uniform() < rates.get(kind, 0.0)
        axis = int(rng.integers(3))
        size = shape[axis]
        width = min(size, max(2, int(round(rng.uniform(0.15, 0.35) * size))))
        start = int(rng.integers(0, size - width + 1))
        strength = float(rng.uniform(*_STRENGTH[kind]))
        if occurs:
            start, stop = (0, size) if kind == "bias" else (start, start + width)
            faults.append(Fault(kind, axis, start, stop, strength))
    return tuple(faults)


def _slab(fault: Fault, ndim: int = 3) -> tuple[slice, ...]:
    index = [slice(None)] * ndim
    index[fault.axis] = slice(fault.start, fault.stop)
    return tuple(index)


def apply_faults(
    image: np.ndarray, faults: tuple[Fault, ...], rng: np.random.Generator, level: float = 1.0, fill: float = 0.0
) -> np.ndarray:
    """``image`` with ``faults`` (:func:`draw_faults`) applied, as a new float array.

    Args:
        image: one 3D image, any units (relative MRI signal, HU).
        faults: the faults to apply, in the order :func:`draw_faults` gives them.
        rng: draws the fields and the noise.
        level: a typical tissue value above ``fill`` in the image's units (1.0 for relative MRI signal whose brain
            is about 1, ~100 for CT in HU); noise and stripe amplitudes are in these units.
        fill: the value of an image's empty space (0 for MRI, -1000 HU for CT): missing slices get it, and the bias
            field and ghosts act on the signal above it.
    """
    image = np.asarray(image, dtype=float).copy()
    for fault in faults:
        slab = _slab(fault)
        if fault.kind == "bias":
            image = fill + (image - fill) * np.exp(fault.strength * smooth_field(rng, image.shape, 0.2))
        elif fault.kind == "blur":
            sigma = [fault.strength] * 3
            image[slab] = ndimage.gaussian_filter(image, sigma)[slab]
        elif fault.kind == "ghosting":
            # replicas at a third of the phase-encode field of view, as periodic motion puts them
            phase_axis = (fault.axis + 1 + int(rng.integers(2))) % 3
            shift = max(1, image.shape[phase_axis] // 3)
            ghosts = 0.5 * (np.roll(image, shift, phase_axis) + np.roll(image, -shift, phase_axis))
            image[slab] = (1 - fault.strength) * image[slab] + fault.strength * ghosts[slab]
        elif fault.kind == "noise":
            image[slab] += fault.strength * level * rng.standard_normal(image[slab].shape)
        elif fault.kind == "missing":
            image[slab] = fill
        elif fault.kind == "corrupted":
            # stripes across the slab, each slice its own phase, as a spike or streak artefact
            in_plane = [a for a in range(3) if a != fault.axis]
            coords = np.meshgrid(*(np.arange(n) for n in image.shape), indexing="ij")
            frequency = rng.uniform(0.2, 0.8, 2)
            phase = rng.uniform(0, 2 * np.pi, image.shape[fault.axis])
            phase = np.expand_dims(phase, [a for a in range(3) if a != fault.axis])
            stripes = np.sin(frequency[0] * coords[in_plane[0]] + frequency[1] * coords[in_plane[1]] + phase)
            image[slab] += fault.strength * level * stripes[slab]
        else:
            raise ValueError(f"unknown fault kind {fault.kind!r}; expected one of {list(FAULT_KINDS)}")
    return image
