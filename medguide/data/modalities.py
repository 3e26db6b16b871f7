"""Modality (MRI sequence, CT phase) names: the one check of a requested set, and the subsets a method is scored on."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

__all__ = ["check_modalities", "distinct_modalities", "nonempty_subsets"]


def check_modalities(requested: Sequence[str] | str, known: Sequence[str], what: str = "modalities") -> list[str]:
    """``requested`` as a list, checked to be a non-empty subset of ``known`` without repeats.

    Every place that takes modality names (networks, ``prepare_batch``, readers) checks them here, so a wrong name
    gives the same message wherever it is caught.

    Args:
        requested: names asked for, e.g. ``["t1ce", "flair"]``; a single string is one name.
        known: the names available, in their canonical order (a network's modalities, a case's files).
        what: what the names are called in the message (``"modalities"``, ``"phases"``).

    Raises:
        ValueError: naming the unknown or repeated names and the known ones.

    Example:
        >>> check_modalities("t2", ["t1", "t2"])
        ['t2']
    """
    names = [requested] if isinstance(requested, str) else list(requested)
    unknown = [m for m in names if m not in known]
    repeated = sorted({m for m in names if names.count(m) > 1})
    if not names or unknown or repeated:
        problem = f"unknown {unknown}" if unknown else f"repeated {repeated}" if repeated else "none given"
        raise ValueError(f"{what} must be a non-empty subset of {list(known)} without repeats: {problem} in {names}.")
    return names


def distinct_modalities(names: Sequence[str] | str, what: str = "modalities") -> tuple[str, ...]:
    """``names`` as a tuple, checked to be non-empty and without repeats: the modalities a network is built for.

    Args:
        names: the modality names, e.g. ``["t1", "t1ce", "t2", "flair"]``; a single string is one name.
        what: what the names are called in the message (``"MAMLNet's modalities"``).

    Raises:
        ValueError: no name is given, or one is repeated (naming it).

    Example:
        >>> distinct_modalities("t1")
        ('t1',)
    """
    names = (names,) if isinstance(names, str) else tuple(names)
    if not names:
        raise ValueError(f"{what} must name at least one modality, got none.")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise ValueError(f"{what} must be distinct, but {repeated} appear more than once in {list(names)}.")
    return names


def nonempty_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, smallest first, each in the given order.

    Example:
        >>> nonempty_subsets(["a", "b"])
        [('a',), ('b',), ('a', 'b')]
    """
    return [s for k in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, k)]
