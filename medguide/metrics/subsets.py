"""The missing-modality table: segmentation metrics per region for every subset of modalities."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch

from medguide.data.files import atomic_write_text
from medguide.metrics import conventions
from medguide.metrics.tables import csv_text, markdown_table, mean_sd_cell, sample_sd

__all__ = ["SubsetTable"]


class SubsetTable:
    """Accumulates Dice and HD95 per case and region for each modality subset; renders CSV and markdown.

    Every case counts in every mean: a region empty in the reference or the prediction is scored by the BraTS
    convention (:mod:`medguide.metrics.conventions`), which :attr:`caption` states under the markdown table. Dice
    is MONAI's ``DiceMetric(ignore_empty=False)``, the bundles' ``val_mean_dice``, so the table's Dice agrees with
    the training log and ``metrics.csv``.

    Each mean comes with the standard deviation over the cases (``<column> sd``; the sample standard deviation,
    ``nan`` for a single case). HD95 is in millimetres when :meth:`update` is given the cases' voxel spacing, and
    in voxels of the evaluated grid when it is not; its column names say which (``HD95 TC (mm)``).

    A subset can be scored along several routes (:meth:`update`'s ``route``, e.g. MAML's ``"fused"`` and
    ``"branch"`` outputs for one present modality); the table then has a ``route`` column and one row per subset
    and route, the routes of a subset side by side. With ``subset_mean`` it ends with the mean over the subsets, as
    missing-modality papers report it: per case the mean over every subset, then mean and spread over the cases;
    one such row per route of the one-modality rows, each taking a subset's row of that route where it has one (its
    only row otherwise).

    Example:
        >>> table = SubsetTable(["WT"], hd95=False)
        >>> y = torch.ones(2, 1, 4, 4, 4)
        >>> table.update(["t1"], y, y)
        >>> table.rows()
        [{'modalities': 't1', 'n': 2, 'Dice WT': 1.0, 'Dice WT sd': 0.0, 'Dice mean': 1.0, 'Dice mean sd': 0.0}]

    Args:
        regions: region names, one per channel of the one-hot predictions and labels it is given.
        hd95: also compute the symmetric 95th-percentile Hausdorff distance.
        subset_mean: end with the mean over the subsets (``modalities`` ``"mean of K subsets"``), one row per route.
    """

    def __init__(self, regions: Sequence[str], hd95: bool = True, subset_mean: bool = False) -> None:
        self.regions = list(regions)
        self.hd95 = hd95
        self.subset_mean = subset_mean
        self.reset()

    def update(
        self,
        subset: Sequence[str],
        y_pred: torch.Tensor,
        y: torch.Tensor,
        spacing: Sequence[float] | Sequence[Sequence[float]] | None = None,
        route: str | None = None,
    ) -> None:
        """Add a batch for ``subset``: binary one-hot predictions and labels, both [B, regions, *spatial].

        Args:
            subset: the modalities the prediction was made from.
            y_pred: binary one-hot prediction.
            y: binary one-hot reference.
            spacing: voxel spacing in mm (one value per spatial axis, for all cases or per case, as
                :func:`medguide.metrics.conventions.hd95` takes it); ``None`` measures HD95 in voxels.
            route: which output of the network made the prediction (e.g. ``"fused"``, ``"branch"``), its own row;
                ``None`` for a table without routes.

        Raises:
            ValueError: when ``y_pred`` and ``y`` differ in shape or do not have one channel per region, or when
                one table is given batches with and without spacing.
        """
        if y.ndim < 3 or y.shape[1] != len(self.regions):
            raise ValueError(f"expected [B, {len(self.regions)} regions, *spatial], got {tuple(y.shape)}.")
        unit = "voxels" if spacing is None else "mm"
        if self.hd95 and self.unit not in (None, unit):
            raise ValueError(f"HD95 of this table is in {self.unit}; a batch in {unit} cannot join it.")
        key = (tuple(subset), route)
        scores = self.scores.setdefault(key, {"Dice": []} | ({"HD95": []} if self.hd95 else {}))
        scores["Dice"].append(conventions.dice(y_pred, y))
        if self.hd95:
            self.unit = unit
            scores["HD95"].append(conventions.hd95(y_pred, y, spacing=spacing))
            per_case = [None] * len(y) if spacing is None else torch.as_tensor(spacing).expand(len(y), -1).tolist()
            self.diagonals.update(round(conventions.grid_diagonal(y.shape[2:], s), 2) for s in per_case)

    def column(self, metric: str, region: str) -> str:
        """The name of the mean column of ``metric`` (``"Dice"``, ``"HD95"``) for ``region``, unit included."""
        return f"{metric} {region} ({self.unit})" if metric == "HD95" else f"{metric} {region}"

    def rows(self) -> list[dict[str, object]]:
        """One row per subset (and route): ``modalities``, ``route`` (in a table with routes), ``n`` (cases), and
        for each metric and region the mean over the cases and its standard deviation (``<column> sd``); last
        ``Dice mean``, the per-case mean over regions of Dice, averaged over the cases, and its ``sd``. Dice is in
        [0, 1]; HD95 in the unit its column names. With ``subset_mean``, the mean rows over the subsets follow."""
        rows = [self._row("+".join(subset), route, self._per_case(scores)) for (subset, route), scores in self._keys()]
        if self.subset_mean and self.scores:
            rows += self._subset_mean_rows()
        return rows

    def _keys(self) -> list[tuple[tuple[tuple[str, ...], str | None], dict[str, list[torch.Tensor]]]]:
        """The scores in table order: subsets as first seen, each subset's routes side by side."""
        subsets = list(dict.fromkeys(subset for subset, _ in self.scores))
        return sorted(self.scores.items(), key=lambda item: subsets.index(item[0][0]))

    @property
    def routes(self) -> list[str | None]:
        """The routes the table holds, in the order first seen; ``[None]`` for a table without routes."""
        return list(dict.fromkeys(route for _, route in self.scores)) or [None]

    def _per_case(self, scores: dict[str, list[torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {name: torch.cat(per_batch).double() for name, per_batch in scores.items()}

    def _row(self, modalities: str, route: str | None, values: dict[str, torch.Tensor]) -> dict[str, object]:
        """A table row from per-case values ``{metric: [cases, regions]}``."""
        row: dict[str, object] = {"modalities": modalities}
        if self.routes != [None]:
            row["route"] = route or ""
        row["n"] = len(values["Dice"])
        for name, per_case in values.items():
            for region, mean, sd in zip(self.regions, per_case.mean(0).tolist(), sample_sd(per_case).tolist()):
                row[self.column(name, region)] = mean
                row[f"{self.column(name, region)} sd"] = sd
        per_case = values["Dice"].mean(1, keepdim=True)
        row["Dice mean"] = per_case.mean().item()
        row["Dice mean sd"] = sample_sd(per_case).item()
        return row

    def _subset_mean_rows(self) -> list[dict[str, object]]:
        """Per route, each case's mean over every subset (that route's row of a subset where it has one), then the
        row of those per-case means; none where the subsets were not scored on the same number of cases."""
        by_subset: dict[tuple[str, ...], dict[str | None, dict[str, torch.Tensor]]] = {}
        for (subset, route), scores in self._keys():
            by_subset.setdefault(subset, {})[route] = self._per_case(scores)
        if len({len(next(iter(routes.values()))["Dice"]) for routes in by_subset.values()}) != 1:
            return []
        rows = []
        one_modality_routes = [route for subset, route in self.scores if len(subset) == 1]
        for route in dict.fromkeys(one_modality_routes or self.routes):
            chosen = [routes.get(route, next(iter(routes.values()))) for routes in by_subset.values()]
            mean = {name: torch.stack([values[name] for values in chosen]).mean(0) for name in chosen[0]}
            rows.append(self._row(f"mean of {len(by_subset)} subsets", route, mean))
        return rows

    @property
    def caption(self) -> str:
        """What the cells hold: mean and spread, HD95's unit, and the empty-region convention with the grid
        diagonals (the worst HD95) of the cases evaluated so far."""
        parts = ["Each cell: mean ± sample standard deviation over the n cases (no spread where n is 1)."]
        if self.routes != [None]:
            parts.append(
                "route: the network output scored, `fused` the fusion head, `branch` the present modality's own "
                "branch; it differs only where one modality is present, rows of two or more use the fusion head."
            )
        if self.subset_mean and self.scores:
            parts.append(
                "mean of K subsets: per case the mean over all K subsets (for each route, the one-modality rows of "
                "that route), then mean ± sd over the cases, as missing-modality papers report it."
            )
        if self.hd95 and self.unit == "mm":
            parts.append("HD95 in millimetres, from each case's voxel spacing.")
        elif self.hd95 and self.unit == "voxels":
            parts.append("HD95 in voxels of the evaluated grid.")
        diagonals = sorted(self.diagonals)
        if not diagonals:
            return " ".join([*parts, f"{conventions.EMPTY_REGION_CONVENTION}."])
        if len(diagonals) <= 3:
            worst = f"{', '.join(f'{d:.2f}' for d in diagonals)} {self.unit}"
        else:
            worst = f"{diagonals[0]:.2f} to {diagonals[-1]:.2f} {self.unit} over {len(diagonals)} different grids"
        return " ".join([*parts, f"{conventions.EMPTY_REGION_CONVENTION} ({worst})."])

    def reset(self) -> None:
        """Forget every score, to start a new evaluation."""
        self.scores: dict[tuple[tuple[str, ...], str | None], dict[str, list[torch.Tensor]]] = {}
        self.diagonals: set[float] = set()
        self.unit: str | None = None

    def to_csv(self) -> str:
        return csv_text(self.rows())

    def to_markdown(self) -> str:
        """The rows as a markdown table, each mean beside its standard deviation (``0.812 ± 0.050``; Dice to three
        decimals, HD95 to two), with :attr:`caption` under it."""
        rows = self.rows()
        if not rows:
            return ""
        columns = [c for c in rows[0] if not c.endswith(" sd")]

        def cell(row: dict, column: str) -> str:
            value = row[column]
            if not isinstance(value, float):
                return str(value)
            return mean_sd_cell(value, row.get(f"{column} sd"), digits=2 if column.startswith("HD95") else 3)

        lines = markdown_table(columns, [[cell(row, c) for c in columns] for row in rows])
        return "\n".join([*lines, "", self.caption]) + "\n"

    def save(self, output_dir: str | os.PathLike, name: str = "missing_modality_table") -> tuple[Path, Path]:
        """Write ``<name>.csv`` and ``<name>.md`` atomically into ``output_dir``; returns their paths."""
        csv_path, md_path = Path(output_dir) / f"{name}.csv", Path(output_dir) / f"{name}.md"
        atomic_write_text(csv_path, self.to_csv())
        atomic_write_text(md_path, self.to_markdown())
        return csv_path, md_path
