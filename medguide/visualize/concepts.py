"""The explanation of a concept model's prediction for one image: the image beside its strongest concepts.

:class:`medguide.engines.ConceptWriter` writes one per image when asked (OCT-CoDA's fundus inference).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medguide.visualize.figures import save_figure

__all__ = ["concept_figure", "display_image"]


def display_image(image) -> np.ndarray:
    """An image as matplotlib shows it: ``[H, W]`` (grey) or ``[H, W, 3]``, scaled to ``[0, 1]`` by its own range.

    Takes MONAI's layout, channel first then the spatial axes x, y (``[C, W, H]`` with 1 or 3 channels, as
    ``LoadPhotod`` and MONAI's ``PILReader`` load a photograph), or ``[W, H]``.

    Raises:
        ValueError: for any other shape, naming it.

    Example:
        >>> display_image(np.zeros((3, 8, 5))).shape  # 8 wide, 5 high
        (5, 8, 3)
    """
    array = np.asarray(image.detach().float().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] in (1, 3):
        array = array[0] if array.shape[0] == 1 else np.moveaxis(array, 0, -1)
    elif array.ndim != 2:
        raise ValueError(f"image must be [C, W, H] with 1 or 3 channels, or [W, H]; got shape {array.shape}.")
    array = array.swapaxes(0, 1)
    low, high = np.nanmin(array), np.nanmax(array)
    return (array - low) / (high - low) if high > low else np.zeros_like(array)


def concept_figure(
    image,
    concepts: Sequence[str],
    similarities: Sequence[float],
    path: str | os.PathLike,
    title: str = "",
    dpi: int = 110,
) -> Path:
    """The image (left) beside a horizontal bar chart of its concepts' similarities (right), strongest at the top.

    Args:
        image: the image, as :func:`display_image` takes it.
        concepts: the concept names, strongest first (e.g. the top k of a :class:`ConceptOutputs` similarity row).
        similarities: their cosine similarities with the image, in ``[-1, 1]``, in the same order.
        path: the PNG to write (atomically; its folder is created).
        title: the figure's title (e.g. the case and its predicted class).
        dpi: resolution.

    Returns:
        ``path``.

    Raises:
        ValueError: when ``concepts`` and ``similarities`` differ in length or are empty.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = [float(s) for s in similarities]
    if not concepts or len(concepts) != len(values):
        raise ValueError(f"concept_figure: {len(concepts)} concept names for {len(values)} similarities.")
    shown = display_image(image)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(9, max(3.2, 0.4 * len(values) + 1.2)), gridspec_kw={"width_ratios": [1, 1.3]}
    )
    left.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1)
    left.axis("off")
    rows = np.arange(len(values))
    right.barh(rows, values, color=["tab:blue" if v >= 0 else "tab:red" for v in values])
    right.set_yticks(rows, list(concepts))
    right.invert_yaxis()
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlim(min(0.0, *values) - 0.05, max(0.0, *values) + 0.05)
    right.set_xlabel("cosine similarity with the image")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi, format="png")
