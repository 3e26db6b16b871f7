"""Figures of multi-modal segmentations: modalities, the reference and predictions from modality subsets."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medguide.visualize.figures import save_figure

__all__ = ["label_overlay_figure"]


def _rgba(labels: np.ndarray, colors: Mapping[int, str]) -> np.ndarray:
    from matplotlib.colors import to_rgba

    out = np.zeros((*labels.shape, 4))
    for value, color in colors.items():
        out[labels == value] = to_rgba(color, 0.55)
    return out


def _window(image: np.ndarray) -> tuple[float, float]:
    """Grey levels from the 0.5th to the 99.5th percentile of the non-zero voxels, so a few bright voxels or the
    zero background do not wash the tissue out."""
    values = image[image != 0]
    if values.size == 0:
        return float(image.min()), float(image.max()) or 1.0
    low, high = np.percentile(values, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def label_overlay_figure(
    images: Sequence[np.ndarray],
    image_titles: Sequence[str],
    labels: Sequence[np.ndarray],
    label_titles: Sequence[str],
    colors: Mapping[int, str],
    legend: Mapping[int, str],
    path: str | os.PathLike,
    title: str | None = None,
    rows: Sequence[int] | None = None,
    panel_inches: float = 3.0,
    dpi: int = 110,
) -> Path:
    """Save a grid of 2D slices: the images in grey, then label maps drawn over the first image.

    The panels are the images followed by the label maps, in order, filling ``rows``; with 6 panels per row of
    3 inches at 110 dpi a figure is about 2000 pixels wide, readable where the markdown that shows it is rendered.

    Example:
        >>> slices = [np.random.rand(32, 32) for _ in range(2)]
        >>> reference = np.zeros((32, 32), int)
        >>> reference[8:16, 8:16] = 1
        >>> label_overlay_figure(slices, ["flair", "t1ce"], [reference, reference], ["reference", "pred"],
        ...                      {1: "red"}, {1: "lesion"}, "/tmp/figure.png", rows=[3, 1])  # doctest: +SKIP

    Args:
        images: 2D intensity slices (e.g. one per shown modality); the first is the background of every label map.
        image_titles: a title per image.
        labels: 2D label maps (reference, then predictions), on the grid of the images.
        label_titles: a title per label map (several lines allowed, e.g. the prediction's Dice on the second).
        colors: matplotlib colour per label value (0 is left transparent unless given).
        legend: name per label value, for the legend.
        path: PNG file to write; written through a temporary file and a rename.
        title: a line above the grid (e.g. the case and slice shown).
        rows: number of panels in each row, summing to the number of panels; default: rows of at most 6.
        panel_inches: width and height of a panel, in inches.
        dpi: resolution of the PNG.

    Raises:
        ValueError: when titles and panels differ in number, or ``rows`` does not add up to the panels.
    """
    if len(images) != len(image_titles) or len(labels) != len(label_titles):
        raise ValueError(
            f"one title per panel: {len(images)} images with {len(image_titles)} titles, {len(labels)} label maps "
            f"with {len(label_titles)} titles."
        )
    panels = len(images) + len(labels)
    if rows is None:
        rows = [min(6, panels - start) for start in range(0, panels, 6)]
    if sum(rows) != panels or min(rows, default=0) < 1:
        raise ValueError(f"rows {list(rows)} must be positive and add up to the {panels} panels.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = max(rows)
    header = 0.5 if title else 0.0
    footer = 0.45
    fig, axes = plt.subplots(
        len(rows),
        columns,
        figsize=(panel_inches * columns, panel_inches * len(rows) + header + footer),
        squeeze=False,
    )
    background = np.rot90(images[0])
    vmin, vmax = _window(images[0])
    slots = [(r, c) for r, count in enumerate(rows) for c in range(count)]
    titles = list(image_titles) + list(label_titles)
    for i, (r, c) in enumerate(slots):
        ax = axes[r, c]
        if i < len(images):
            low, high = _window(images[i])
            ax.imshow(np.rot90(images[i]), cmap="gray", vmin=low, vmax=high)
        else:
            ax.imshow(background, cmap="gray", vmin=vmin, vmax=vmax)
            ax.imshow(np.rot90(_rgba(labels[i - len(images)], colors)), interpolation="nearest")
        ax.set_title(titles[i], fontsize=10)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=13)
    handles = [Patch(color=colors[v], label=name) for v, name in legend.items()]
    fig.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), fontsize=11, frameon=False)
    height = fig.get_figheight()
    fig.tight_layout(rect=(0, footer / height, 1, 1 - header / height), h_pad=1.2)
    return save_figure(fig, path, dpi)
