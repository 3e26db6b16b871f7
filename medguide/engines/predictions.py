"""``ClassProbabilityWriter``: an inference run's class probabilities, one CSV row per case, written atomically."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from ignite.engine import Events
from monai.utils import CommonKeys

from medguide.data.files import atomic_write_text
from medguide.losses.classification import split_task_logits

__all__ = ["ClassProbabilityWriter"]


class ClassProbabilityWriter:
    """Handler writing ``<output_dir>/<filename>``: a ``case`` column, then one column per class of every task.

    The engine's ``pred`` is taken as the tasks' logits side by side (``[sum(classes)]`` per case, as
    :class:`medguide.networks.blocks.MultiTaskHead` gives them); each task's softmax is written. Columns are the class
    names for a single task (``case,G,A,O``), ``<task>:<class>`` for several. The file is written once, when the
    engine completes, through :func:`medguide.data.atomic_write_text` (temporary file, then rename), so a run that
    stops half way leaves no partial table.

    Example::

        {"_target_": "medguide.engines.ClassProbabilityWriter", "output_dir": "@output_dir",
         "classes": {"class": ["G", "A", "O"]}}

    Args:
        output_dir: the folder of the CSV (created).
        classes: ``{task: [class names]}`` in the order of the logits (a plain list: one task).
        filename: the CSV's name.
        case_key: the batch key holding each case's id.
        digits: decimals written per probability.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Mapping[str, Sequence[str]] | Sequence[str],
        filename: str = "probabilities.csv",
        case_key: str = "case",
        digits: int = 6,
    ) -> None:
        self.path = Path(output_dir) / filename
        self.classes = (
            {"class": list(classes)} if not isinstance(classes, Mapping) else {t: list(c) for t, c in classes.items()}
        )
        self.tasks = {task: len(names) for task, names in self.classes.items()}
        self.case_key, self.digits = case_key, digits
        self.rows: list[list[str]] = []

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def header(self) -> list[str]:
        """``case`` then the class columns."""
        if len(self.classes) == 1:
            return [self.case_key, *next(iter(self.classes.values()))]
        return [self.case_key, *(f"{task}:{name}" for task, names in self.classes.items() for name in names)]

    def reset(self, engine=None) -> None:
        self.rows = []

    def collect(self, engine) -> None:
        """Add the iteration's cases (decollated or batched output alike)."""
        batch, output = engine.state.batch, engine.state.output
        if isinstance(output, Mapping):
            logits, cases = output[CommonKeys.PRED], list(batch[self.case_key])
        else:
            logits = torch.stack([torch.as_tensor(item[CommonKeys.PRED]).reshape(-1) for item in output])
            cases = [item[self.case_key] for item in batch]
        logits = torch.as_tensor(logits).detach().float().cpu().reshape(len(cases), -1)
        per_task = split_task_logits(logits, self.tasks)
        probabilities = torch.cat([task.softmax(dim=1) for task in per_task.values()], dim=1)
        for case, values in zip(cases, probabilities.tolist()):
            self.rows.append([str(case), *(f"{v:.{self.digits}f}" for v in values)])

    def write(self, engine=None) -> Path:
        """Write the CSV (header only when there were no cases); returns its path."""
        lines = [",".join(self.header()), *(",".join(row) for row in self.rows)]
        atomic_write_text(self.path, "\n".join(lines) + "\n")
        return self.path
