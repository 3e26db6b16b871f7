"""How every medguide figure is written: atomically, then closed."""

from __future__ import annotations

import os
from pathlib import Path

from medguide.data.files import atomic_target

__all__ = ["save_figure"]


def save_figure(fig, path: str | os.PathLike, dpi: int, format: str | None = None) -> Path:
    """Write the matplotlib ``fig`` to ``path`` atomically (a half-written file never replaces a good one; the
    folder is created), close it, and return ``path``.

    Args:
        fig: a matplotlib figure, laid out.
        path: the file to write; its suffix picks the format unless ``format`` is given.
        dpi: resolution.
        format: matplotlib's format name (e.g. ``"png"``) to write whatever the suffix.
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_target(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=format)
    plt.close(fig)
    return path
