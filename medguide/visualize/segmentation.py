"""Figures of multi-modal segmentations: each modality, the reference and predictions from modality subsets."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from medguide.data.files import atomic_target

__all__ = ["label_overlay_figure"]


def _rgba(labels: np.ndarray, colors: Mapping[int, str]) -> np.ndarray:
    from matplotlib.colors import to_rgba

    out = np.zeros((*labels.shape, 4))
    for value, color in colors.items():
        out[labels == value] = to_rgba(color, 0.55)
    return out


def label_overlay_figure(
    images: Sequence[np.ndarray],
    image_titles: Sequence[str],
    labels: Sequence[np.ndarray],
    label_titles: Sequence[str],
    colors: Mapping[int, str],
    legend: Mapping[int, str],
    path: str | os.PathLike,
) -> Path:
    """Save one row of 2D slices: the images in grey, then label maps drawn over the first image.

    Args:
        images: 2D intensity slices (one per modality).
        image_titles: a title per image.
        labels: 2D label maps (reference, then predictions).
        label_titles: a title per label map.
        colors: matplotlib colour per label value (0 is left transparent unless given).
        legend: name per label value, for the legend.
        path: PNG file to write; written through a temporary file and a rename.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    panels = len(images) + len(labels)
    fig, axes = plt.subplots(1, panels, figsize=(2.2 * panels, 2.9), squeeze=False)
    for ax, image, title in zip(axes[0], images, image_titles):
        ax.imshow(np.rot90(image), cmap="gray")
        ax.set_title(title, fontsize=9)
    for ax, label, title in zip(axes[0, len(images) :], labels, label_titles):
        ax.imshow(np.rot90(images[0]), cmap="gray")
        ax.imshow(np.rot90(_rgba(label, colors)), interpolation="nearest")
        ax.set_title(title, fontsize=9)
    for ax in axes[0]:
        ax.axis("off")
    handles = [Patch(color=colors[v], label=name) for v, name in legend.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    path = Path(path)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)
    return path
