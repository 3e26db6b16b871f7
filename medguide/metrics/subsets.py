"""The missing-modality table: segmentation metrics per region for every subset of modalities."""

from __future__ import annotations

import csv
import io
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

import torch

from medguide.data.files import atomic_write_text
from medguide.metrics import conventions

__all__ = ["SubsetTable", "nonempty_subsets"]


def nonempty_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, smallest first, each in the given order.

    Example:
        >>> nonempty_subsets(["a", "b"])
        [('a',), ('b',), ('a', 'b')]
    """
    return [s for k in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, k)]


class SubsetTable:
    """Accumulates Dice and HD95 per case and region for each modality subset; renders CSV and markdown.

    Every case counts in every mean: a region empty in the reference or the prediction is scored by the BraTS
    convention (:mod:`medguide.metrics.conventions`), which :attr:`caption` states under the markdown table. Dice
    is MONAI's ``DiceMetric(ignore_empty=False)``, the bundles' ``val_mean_dice``, so the table's Dice agrees with
    the training log and ``metrics.csv``.

    Args:
        regions: region names, one per channel of the one-hot predictions and labels it is given.
        hd95: also compute the symmetric 95th-percentile Hausdorff distance, in voxels of the evaluated grid.
    """

    def __init__(self, regions: Sequence[str], hd95: bool = True) -> None:
        self.regions = list(regions)
        self.hd95 = hd95
        self.scores: dict[tuple[str, ...], dict[str, list[torch.Tensor]]] = {}
        self.grids: set[tuple[int, ...]] = set()

    def update(self, subset: Sequence[str], y_pred: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch for ``subset``: binary one-hot predictions and labels, both [B, regions, *spatial].

        Raises:
            ValueError: when ``y_pred`` and ``y`` differ in shape or do not have one channel per region.
        """
        if y.ndim < 3 or y.shape[1] != len(self.regions):
            raise ValueError(f"expected [B, {len(self.regions)} regions, *spatial], got {tuple(y.shape)}.")
        scores = self.scores.setdefault(tuple(subset), {"Dice": []} | ({"HD95": []} if self.hd95 else {}))
        scores["Dice"].append(conventions.dice(y_pred, y))
        if self.hd95:
            scores["HD95"].append(conventions.hd95(y_pred, y))
        self.grids.add(tuple(y.shape[2:]))

    def rows(self) -> list[dict[str, object]]:
        """One row per subset: ``modalities``, ``n`` (cases), ``<metric> <region>`` means over the cases, and
        ``Dice mean``, the mean over regions of the Dice columns (Dice in [0, 1], HD95 in voxels)."""
        rows = []
        for subset, scores in self.scores.items():
            row: dict[str, object] = {"modalities": "+".join(subset), "n": sum(len(s) for s in scores["Dice"])}
            for name, per_batch in scores.items():
                for region, value in zip(self.regions, torch.cat(per_batch).mean(0).tolist()):
                    row[f"{name} {region}"] = value
            row["Dice mean"] = sum(row[f"Dice {r}"] for r in self.regions) / len(self.regions)
            rows.append(row)
        return rows

    @property
    def caption(self) -> str:
        """The empty-region convention, with the grid diagonal (in voxels) of each grid evaluated so far."""
        if not self.grids:
            return f"{conventions.EMPTY_REGION_CONVENTION}."
        diagonals = [f"{conventions.grid_diagonal(g):.2f} for {'x'.join(map(str, g))}" for g in sorted(self.grids)]
        return f"{conventions.EMPTY_REGION_CONVENTION} ({', '.join(diagonals)} voxels)."

    def reset(self) -> None:
        """Forget every score, to start a new evaluation."""
        self.scores = {}
        self.grids = set()

    def to_csv(self) -> str:
        rows = self.rows()
        if not rows:
            return ""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def to_markdown(self) -> str:
        """The rows as a markdown table, values to three decimals, with :attr:`caption` under it."""
        rows = self.rows()
        if not rows:
            return ""
        columns = list(rows[0])

        def cell(value: object) -> str:
            return f"{value:.3f}" if isinstance(value, float) else str(value)

        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
        return "\n".join([*lines, "", self.caption]) + "\n"

    def save(self, output_dir: str | os.PathLike, name: str = "missing_modality_table") -> tuple[Path, Path]:
        """Write ``<name>.csv`` and ``<name>.md`` atomically into ``output_dir``; returns their paths."""
        csv_path, md_path = Path(output_dir) / f"{name}.csv", Path(output_dir) / f"{name}.md"
        atomic_write_text(csv_path, self.to_csv())
        atomic_write_text(md_path, self.to_markdown())
        return csv_path, md_path
