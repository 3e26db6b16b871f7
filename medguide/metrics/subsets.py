"""The missing-modality table: segmentation metrics per region for every subset of modalities."""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric

__all__ = ["SubsetTable", "atomic_write_text", "nonempty_subsets"]


def nonempty_subsets(modalities: Sequence[str]) -> list[tuple[str, ...]]:
    """Every non-empty subset of ``modalities``, smallest first, each in the given order.

    Example:
        >>> nonempty_subsets(["a", "b"])
        [('a',), ('b',), ('a', 'b')]
    """
    return [s for k in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, k)]


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename, so no reader sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", newline="") as f:
        f.write(text)
    os.replace(tmp, path)


class SubsetTable:
    """Accumulates Dice and HD95 per region for each modality subset; renders CSV and markdown.

    Each value is the mean over the cases where it is defined: HD95 of a case whose prediction (or label) of a
    region is empty is left out, and a column with no defined value reads ``n/a``.

    Args:
        regions: region names, one per channel of the one-hot predictions and labels it is given.
        hd95: also compute the 95th-percentile Hausdorff distance (in voxels of the evaluated grid).
    """

    def __init__(self, regions: Sequence[str], hd95: bool = True) -> None:
        self.regions = list(regions)
        self.hd95 = hd95
        self.metrics: dict[tuple[str, ...], dict[str, object]] = {}

    def update(self, subset: Sequence[str], y_pred: torch.Tensor, y: torch.Tensor) -> None:
        """Add a batch of one-hot predictions and labels ([B, regions, ...]) for ``subset``."""
        subset = tuple(subset)
        if subset not in self.metrics:
            self.metrics[subset] = {"Dice": DiceMetric(include_background=True, reduction="none")}
            if self.hd95:
                self.metrics[subset]["HD95"] = HausdorffDistanceMetric(
                    include_background=True, percentile=95, reduction="none"
                )
        for metric in self.metrics[subset].values():
            metric(y_pred=y_pred, y=y)

    def rows(self) -> list[dict[str, object]]:
        """One row per subset: ``modalities``, ``n`` and ``<metric> <region>`` columns, plus the mean Dice."""
        rows = []
        for subset, metrics in self.metrics.items():
            row: dict[str, object] = {"modalities": "+".join(subset), "n": None}
            for name, metric in metrics.items():
                per_case = metric.get_buffer().float()
                row["n"] = len(per_case)
                # an empty prediction has no surface: MONAI gives nan/inf there, and its reduction then reports 0
                finite = torch.isfinite(per_case)
                values = torch.where(finite, per_case, 0).sum(0) / finite.sum(0)
                for region, value in zip(self.regions, values.tolist()):
                    row[f"{name} {region}"] = value
            row["Dice mean"] = sum(row[f"Dice {r}"] for r in self.regions) / len(self.regions)
            rows.append(row)
        return rows

    def reset(self) -> None:
        self.metrics = {}

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
        rows = self.rows()
        if not rows:
            return ""
        columns = list(rows[0])

        def cell(value: object) -> str:
            if isinstance(value, float):
                return "n/a" if math.isnan(value) or math.isinf(value) else f"{value:.3f}"
            return str(value)

        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
        return "\n".join(lines) + "\n"

    def save(self, output_dir: str | os.PathLike, name: str = "missing_modality_table") -> tuple[Path, Path]:
        """Write ``<name>.csv`` and ``<name>.md`` atomically into ``output_dir``; returns their paths."""
        csv_path, md_path = Path(output_dir) / f"{name}.csv", Path(output_dir) / f"{name}.md"
        atomic_write_text(csv_path, self.to_csv())
        atomic_write_text(md_path, self.to_markdown())
        return csv_path, md_path
