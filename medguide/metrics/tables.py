"""What every result table shares: the spread over its rows' repeats, the CSV text and the markdown cells."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence

import torch

__all__ = ["csv_text", "markdown_table", "mean_sd_cell", "mean_sd_columns", "sample_sd"]


def sample_sd(values: torch.Tensor) -> torch.Tensor:
    """Sample standard deviation over dim 0 (the cases, the seeds); nan for a single value, without torch's warning.

    Example:
        >>> sample_sd(torch.tensor([[1.0], [3.0]]))
        tensor([1.4142])
    """
    if len(values) < 2:
        return torch.full(values.shape[1:], math.nan, dtype=values.dtype)
    return values.std(0)


def mean_sd_columns(repeats: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Each column of the repeats' scores (one dict per seed, the same keys) as its mean and, under ``<column> sd``,
    its sample standard deviation (nan for a single repeat); nan where a repeat's score is nan.

    Example:
        >>> mean_sd_columns([{"F1": 0.5}, {"F1": 0.7}])
        {'F1': 0.6, 'F1 sd': 0.14142135623730948}
    """
    columns = list(repeats[0])
    values = torch.tensor([[r[c] for c in columns] for r in repeats], dtype=torch.float64)
    row: dict[str, float] = {}
    for column, mean, sd in zip(columns, values.mean(0).tolist(), sample_sd(values).tolist()):
        row[column] = mean
        row[f"{column} sd"] = sd
    return row


def csv_text(rows: Sequence[Mapping[str, object]]) -> str:
    """The rows as CSV with a header line (the first row's keys); ``""`` for no rows."""
    if not rows:
        return ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def mean_sd_cell(mean: float, sd: float | None, digits: int = 3) -> str:
    """A mean beside its standard deviation, ``0.812 ± 0.050``; the mean alone where the spread is ``None`` or nan
    (a single repeat), and ``n/a`` where the mean itself is undefined (nan).

    Example:
        >>> mean_sd_cell(0.8125, 0.05), mean_sd_cell(0.8125, math.nan), mean_sd_cell(math.nan, math.nan)
        ('0.812 ± 0.050', '0.812', 'n/a')
    """
    if math.isnan(mean):
        return "n/a"
    spread = "" if sd is None or math.isnan(sd) else f" ± {sd:.{digits}f}"
    return f"{mean:.{digits}f}{spread}"


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    """The lines of a markdown table: ``header``, the separator, one line per row of ``body``."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in body]
