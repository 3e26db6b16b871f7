"""Seeded train / validation / test splits that keep every class in every part, for data sets that ship without one.

CPM-RadPath's labels CSV has no split; Derm7pt ships its own (``meta/{train,valid,test}_indexes.csv``) and needs none.
MONAI's ``partition_dataset_classes`` shuffles the whole data set and rounds per class, so with the tens of cases of
a small class set a part can lose a class; :func:`stratified_split` counts per class so that it cannot, and keeps
the parts' sizes close to the ratios overall.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence

import numpy as np

from medguide.data.errors import InputError

__all__ = ["proportional_counts", "stratified_split"]


def proportional_counts(size: int, shares: Sequence[float], debt: Sequence[float] | None = None) -> np.ndarray:
    """How many of ``size`` things each share gets: the largest-remainder rounding of ``size * shares``.

    Each non-zero share gets at least one when there are as many things as such shares. The synthetic generators
    use it for their class counts, :func:`stratified_split` for each class's part sizes.

    Example:
        >>> proportional_counts(10, [0.6, 0.25, 0.15]).tolist()
        [6, 3, 1]

    Args:
        size: how many there are.
        shares: the shares, summing to 1.
        debt: added to the remainders: what each share is short of over earlier rounds (so that, split class by
            class, small classes do not all round into the same part).
    """
    shares = np.asarray(shares, dtype=float)
    exact = size * shares
    counts = np.floor(exact).astype(int)
    remainder = exact - counts + (0 if debt is None else np.asarray(debt, dtype=float))
    counts[np.argsort(-remainder, kind="stable")[: size - counts.sum()]] += 1
    nonzero = np.flatnonzero(shares > 0)
    if size >= len(nonzero):
        for part in nonzero:
            if counts[part] == 0:
                counts[int(np.argmax(counts))] -= 1
                counts[part] = 1
    return counts


def stratified_split(
    datalist: Sequence[Mapping],
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    key: str | Callable[[Mapping], Hashable] = "label",
) -> list[list[dict]]:
    """Split a datalist into parts (train / validation / test) of the given ratios, class by class, seeded.

    Each class's cases are shuffled with ``seed`` and shared out by the ratios; every part with a non-zero ratio
    gets at least one case of every class that has as many cases as there are such parts. Within a part, items keep
    their order in ``datalist``. The same datalist, ratios and seed give the same parts.

    Example:
        >>> items = [{"case": f"c{i}", "label": i % 3} for i in range(30)]
        >>> train, val, test = stratified_split(items, (0.6, 0.2, 0.2), seed=0)
        >>> len(train), len(val), len(test)
        (18, 6, 6)
        >>> # several tasks per case: stratify by one of them
        >>> stratified_split(derm_items, (0.7, 0.3), key=lambda item: item["label"]["diagnosis"])

    Args:
        datalist: items with a class under ``key`` (as :func:`medguide.data.read_class_labels` gives them).
        ratios: the parts' shares, at least one; normalised to sum to 1.
        seed: random seed of the shuffle.
        key: the item key holding the class, or a function of the item returning it.

    Returns:
        One list of items per ratio.

    Raises:
        InputError: a ratio is negative, or none is positive; an item has no class under ``key`` (the case named).
    """
    shares = np.asarray(ratios, dtype=float)
    if shares.ndim != 1 or not len(shares) or (shares < 0).any() or shares.sum() <= 0:
        raise InputError(f"split ratios must be non-negative with a positive sum, got {list(ratios)}")
    shares = shares / shares.sum()
    classes: dict[Hashable, list[int]] = {}
    for index, item in enumerate(datalist):
        try:
            value = key(item) if callable(key) else item[key]
        except (KeyError, TypeError) as error:
            raise InputError(f"case {item.get('case', index)!r} has no class to stratify by ({error!r})") from error
        classes.setdefault(value, []).append(index)

    rng = np.random.default_rng(seed)
    part_of = np.zeros(len(datalist), dtype=int)
    assigned = np.zeros(len(shares))
    # classes in order of first appearance; the debt carries rounding across them
    for indices in classes.values():
        order = rng.permutation(indices)
        counts = proportional_counts(len(order), shares, assigned.sum() * shares - assigned)
        part_of[order] = np.repeat(np.arange(len(shares)), counts)
        assigned += counts
    return [[dict(item) for item, p in zip(datalist, part_of, strict=True) if p == part] for part in range(len(shares))]
