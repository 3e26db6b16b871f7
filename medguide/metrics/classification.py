"""Classification metrics per task, McNemar's test of two classifiers, and the table of models over seeds.

The scores are scikit-learn's (``balanced_accuracy_score``, ``f1_score``, ``roc_auc_score``, ``confusion_matrix``),
as in the deep multimodal guidance paper's published evaluation code, so our numbers and the paper's are computed
alike; each function below states its convention for a class absent from the test labels, and the tests pin it.
The table (:class:`ClassificationTable`) and the validation metric of the bundles (:class:`TaskMetric`, through
MONAI's ``IgniteMetricHandler``) both score with these functions, so the training log, ``metrics.csv`` and the
table agree.

Why not MONAI's ``ConfusionMatrix`` handler with ``metric_name="sensitivity"`` for balanced accuracy: with
``reduction="mean"`` it averages the true-positive and false-negative counts over the classes before dividing, which
is the micro-averaged recall, that is accuracy (``tests/metrics/test_classification.py`` shows it); the per-class
reductions return a vector, which a key metric cannot be. MONAI's ``ROCAUC`` handler gives the same one-vs-rest
AUROC as :func:`macro_auroc` when every class is in the labels, and nan when one is missing.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from scipy.stats import binom, binomtest
from sklearn import metrics as skm

from medguide.data.files import atomic_write_text
from medguide.losses.classification import check_tasks, split_task_logits, task_targets
from medguide.metrics.tables import csv_text, markdown_table, mean_sd_cell, mean_sd_columns

__all__ = [
    "METRICS",
    "ClassificationTable",
    "McNemarResult",
    "TaskMetric",
    "balanced_accuracy",
    "class_auroc",
    "confusion_matrix",
    "macro_auroc",
    "macro_f1",
    "mcnemar_test",
    "task_scores",
]

METRICS = {"balanced_accuracy": "balanced accuracy", "f1": "F1", "auroc": "AUROC"}
"""The metrics :func:`task_scores` computes, with the names the table gives them."""


def _labels(values) -> np.ndarray:
    return np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values).ravel()


def balanced_accuracy(y_true, y_pred) -> float:
    """Balanced accuracy: the mean over classes of the recall, ``mean_c TP_c / (TP_c + FN_c)``.

    Over the classes present in ``y_true``; a class only predicted counts through the recall it takes from the others
    (scikit-learn's ``balanced_accuracy_score``, whose warning about such a class is not repeated here).

    Example:
        >>> balanced_accuracy([0, 0, 0, 1], [0, 0, 1, 1])  # (2/3 + 1) / 2
        0.8333333333333333
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "y_pred contains classes not in y_true")
        return float(skm.balanced_accuracy_score(_labels(y_true), _labels(y_pred)))


def macro_f1(y_true, y_pred) -> float:
    """Macro F1: the mean over classes of ``2 TP_c / (2 TP_c + FP_c + FN_c)``, over the classes present in the labels
    or the predictions (scikit-learn's ``f1_score(average="macro")``); a class predicted but never true scores 0.

    The paper's brain-tumour code reports micro F1, which for one label per case equals accuracy; the table here
    gives macro F1, which like balanced accuracy weighs rare classes as much as common ones.

    Example:
        >>> macro_f1([0, 0, 0, 1], [0, 0, 1, 1])  # class 0: 4/5, class 1: 2/3
        0.7333333333333334
    """
    return float(skm.f1_score(_labels(y_true), _labels(y_pred), average="macro", zero_division=0.0))


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` counts, row: true class, column: predicted class (scikit-learn's)."""
    return skm.confusion_matrix(_labels(y_true), _labels(y_pred), labels=list(range(num_classes)))


def class_auroc(y_true, scores, positive: int) -> float:
    """AUROC of class ``positive`` against all others (melanoma vs rest on Derm7pt), ranking the cases by ``scores``:
    that class's column of ``[N, C]`` probabilities, or ``[N]`` scores of that class.

    Ties count one half (scikit-learn's ``roc_auc_score``). Undefined, nan with a warning saying why, when the labels
    hold no case of the class or only cases of it.

    Example:
        >>> class_auroc([0, 1, 1, 2], [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]], positive=1)
        1.0
    """
    y = _labels(y_true) == positive
    s = np.asarray(scores.cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    s = s[:, positive] if s.ndim == 2 else s
    if y.all() or not y.any():
        warnings.warn(
            f"AUROC of class {positive} vs rest is undefined (nan): the {len(y)} labels hold "
            f"{'only cases' if y.any() else 'no case'} of class {positive}.",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    return float(skm.roc_auc_score(y, s))


def macro_auroc(y_true, probabilities) -> float:
    """One-vs-rest AUROC averaged over the classes present in the labels (``[N, C]`` probabilities).

    With every class present this is scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")``; a class
    with no case in the labels has no AUROC and is left out of the mean. Undefined, nan with a warning, when the
    labels hold a single class.
    """
    y = _labels(y_true)
    present = np.unique(y)
    if len(present) < 2:
        warnings.warn(
            f"one-vs-rest AUROC is undefined (nan): the {len(y)} labels hold a single class {present.tolist()}.",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    return float(np.mean([class_auroc(y, probabilities, int(c)) for c in present]))


class McNemarResult(NamedTuple):
    """McNemar's test of classifiers A and B on the same cases: the discordant pairs and the two-sided p-value."""

    only_a: int
    """cases A classifies correctly and B does not (``b``)"""
    only_b: int
    """cases B classifies correctly and A does not (``c``)"""
    p_value: float


def mcnemar_test(y_true, pred_a, pred_b, mid_p: bool = False) -> McNemarResult:
    """McNemar's exact test of two classifiers' paired correctness on the same cases (Dietterich, Neural Computation
    1998, for comparing classifiers; the deep multimodal guidance paper compares G(I)+I with I this way).

    Under the null hypothesis that both err equally often, each of the ``n = b + c`` discordant cases is a fair coin,
    so ``min(b, c) ~ Bin(n, 1/2)``; the exact conditional two-sided p-value is ``min(1, 2 P[X <= min(b, c)])``
    (``scipy.stats.binomtest``). No continuity correction: that belongs to the chi-square approximation, which the
    exact test replaces. ``mid_p=True`` gives the mid-p value ``2 P[X < min(b, c)] + P[X = min(b, c)]``, less
    conservative, as Fagerland, Lydersen & Laake (BMC Med Res Methodol 2013) recommend. Without discordant cases
    ``p = 1``.

    Example:
        >>> mcnemar_test([1] * 8, [1] + [0] * 7, [0] + [1] * 7)  # b = 1, c = 7: 2 * 9/256
        McNemarResult(only_a=1, only_b=7, p_value=0.0703125)

    Raises:
        ValueError: when the three do not have one value per case each.
    """
    y, a, b = _labels(y_true), _labels(pred_a), _labels(pred_b)
    if not len(y) == len(a) == len(b):
        raise ValueError(f"labels and the two predictions must cover the same cases; got {len(y)}, {len(a)}, {len(b)}.")
    only_a = int(((a == y) & (b != y)).sum())
    only_b = int(((b == y) & (a != y)).sum())
    n, k = only_a + only_b, min(only_a, only_b)
    if n == 0:
        return McNemarResult(only_a, only_b, 1.0)
    p = binomtest(k, n, 0.5).pvalue
    if mid_p:
        p = p - binom.pmf(k, n, 0.5)
    return McNemarResult(only_a, only_b, float(p))


def _task_arrays(
    logits, targets, tasks: Mapping[str, int], ignore_index: int
) -> dict[str, tuple[np.ndarray, torch.Tensor]]:
    """{task: (its given labels [n], its logits [n, classes])}, the cases without that task's label left out."""
    per_task = split_task_logits(logits, tasks)
    targets = task_targets(torch.as_tensor(targets), tasks, ignore_index).cpu()
    arrays = {}
    for column, (name, task_logits) in enumerate(per_task.items()):
        given = targets[:, column] != ignore_index
        arrays[name] = targets[given, column].numpy(), task_logits.detach().float().cpu()[given]
    return arrays


def _score(metric: str, y: np.ndarray, logits: torch.Tensor, positive: int | None = None) -> float:
    if len(y) == 0:
        warnings.warn(f"{METRICS[metric]} is undefined (nan): no case has a label.", RuntimeWarning, stacklevel=3)
        return math.nan
    if metric == "auroc":
        probabilities = logits.softmax(1).numpy()
        return macro_auroc(y, probabilities) if positive is None else class_auroc(y, probabilities, positive)
    pred = logits.argmax(1).numpy()
    return balanced_accuracy(y, pred) if metric == "balanced_accuracy" else macro_f1(y, pred)


def _check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"metric {metric!r} is not one of {list(METRICS)}.")
    return metric


def task_scores(
    logits: torch.Tensor | Mapping[str, torch.Tensor],
    targets: torch.Tensor,
    tasks: Mapping[str, int],
    metric: str = "balanced_accuracy",
    ignore_index: int = -100,
) -> dict[str, float]:
    """{task: score} of the tasks' logits side by side ``[N, sum(classes)]`` against class indices ``[N, T]``.

    Each task is predicted by the argmax of its own logits (balanced accuracy, F1) or scored by the softmax of them
    (AUROC, one-vs-rest, macro); cases whose label of a task is ``ignore_index`` are left out of that task.

    Args:
        logits: the network's output, as :class:`medguide.losses.MultiTaskCrossEntropy` takes it.
        targets: class indices, one column per task.
        tasks: {task: number of classes}, in the order of the logits.
        metric: one of :data:`METRICS`.
        ignore_index: the target value of a label not given.
    """
    _check_metric(metric)
    return {name: _score(metric, y, lg) for name, (y, lg) in _task_arrays(logits, targets, tasks, ignore_index).items()}


class TaskMetric(CumulativeIterationMetric):
    """A classification metric over an epoch, of one task or averaged over the tasks, from the tasks' logits side by
    side; for MONAI's ``IgniteMetricHandler``, so a bundle declares it as its key metric:

    .. code-block:: json

        "val_balanced_accuracy": {
            "_target_": "IgniteMetricHandler",
            "metric_fn": {"_target_": "medguide.metrics.TaskMetric", "tasks": "@tasks"},
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            "save_details": false
        }

    ``pred`` must be the logits (``[B, sum(classes)]``, or a list of ``[sum(classes)]`` per case), ``label`` the class
    indices (``[B, T]``; ``[B]`` for a single task). The cases are gathered over the epoch (and over the processes in
    distributed runs, as MONAI's metrics are) and scored once with :func:`task_scores`, as the result table is.

    Args:
        tasks: {task: number of classes}, in the order of the logits.
        metric: one of :data:`METRICS`: ``"balanced_accuracy"``, ``"f1"`` (macro), ``"auroc"`` (one-vs-rest, macro).
        task: score this task alone; ``None`` averages over the tasks (those with a defined score).
        positive: with ``metric="auroc"`` and a ``task``: the AUROC of this class against the rest (melanoma).
        ignore_index: the target value of a label not given.

    Raises:
        ValueError: on an unknown metric or task, or ``positive`` without ``metric="auroc"`` and a task.
    """

    def __init__(
        self,
        tasks: Mapping[str, int],
        metric: str = "balanced_accuracy",
        task: str | None = None,
        positive: int | None = None,
        ignore_index: int = -100,
    ) -> None:
        super().__init__()
        self.tasks = check_tasks(tasks)
        self.metric = _check_metric(metric)
        if task is not None and task not in self.tasks:
            raise ValueError(f"task {task!r} is not one of {list(self.tasks)}.")
        if positive is not None and (metric != "auroc" or task is None or not 0 <= positive < self.tasks[task]):
            raise ValueError(f"positive={positive} needs metric='auroc', a task, and one of that task's classes.")
        self.task, self.positive, self.ignore_index = task, positive, ignore_index

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        # plain tensors: an engine's MetaTensors carry per-case metadata the buffers have no use for
        y_pred, y = y_pred.detach().float().as_subclass(torch.Tensor), y.detach().as_subclass(torch.Tensor)
        split_task_logits(y_pred, self.tasks)  # checks the shape now, not at the end of the epoch
        return y_pred, task_targets(y, self.tasks, self.ignore_index)

    def aggregate(self) -> float:
        logits, targets = self.get_buffer()
        arrays = _task_arrays(logits, targets, self.tasks, self.ignore_index)
        if self.task is not None:
            return _score(self.metric, *arrays[self.task], positive=self.positive)
        values = [_score(self.metric, *pair) for pair in arrays.values()]
        return math.nan if all(math.isnan(v) for v in values) else float(np.nanmean(values))


class ClassificationTable:
    """The result table of classification models over seeds: per task balanced accuracy, macro F1 and (optionally)
    one-vs-rest AUROC, the AUROC of single classes, and McNemar's test of one model against a baseline.

    The deep multimodal guidance paper's rows are S+I, S, I, G(I), G(I)+I (``compare=("G(I)+I", "I")``); Derm7pt adds
    the melanoma AUROC (``class_auroc={"MEL": ("diagnosis", 2)}``). Each (model, seed) is scored on all its cases;
    cells give the mean over seeds with the sample standard deviation (``<column> sd``), ``mean`` columns the mean
    over tasks. McNemar's test is run per seed (each seed a separate training), never pooled over seeds.

    Example:
        >>> table = ClassificationTable({"grade": 3}, compare=("G(I)+I", "I"))
        >>> labels = torch.tensor([0, 1, 2, 2])
        >>> table.update("I", 0, torch.eye(3)[[0, 1, 1, 2]], labels)  # logits; one seed here, three or more in a study
        >>> table.update("G(I)+I", 0, torch.eye(3)[[0, 1, 2, 2]], labels)
        >>> [(row["model"], round(row["balanced accuracy grade"], 3)) for row in table.rows()]
        [('I', 0.833), ('G(I)+I', 1.0)]
        >>> paths = table.save(output_dir, "dmg_table")  # .csv, .md, _mcnemar.csv

    Args:
        tasks: {task: number of classes}, in the order of the logits.
        auroc: add the one-vs-rest macro AUROC of every task.
        class_auroc: {column label: (task, class index)}: AUROC of one class against the rest.
        compare: (model, baseline): McNemar's exact test of the model against the baseline, per task and seed.
        mid_p: McNemar's mid-p value instead of the exact conditional one (:func:`mcnemar_test`).
        ignore_index: the target value of a label not given.
    """

    def __init__(
        self,
        tasks: Mapping[str, int],
        auroc: bool = False,
        class_auroc: Mapping[str, tuple[str, int]] | None = None,
        compare: tuple[str, str] | None = None,
        mid_p: bool = False,
        ignore_index: int = -100,
    ) -> None:
        self.tasks = check_tasks(tasks)
        self.metrics = ["balanced_accuracy", "f1"] + (["auroc"] if auroc else [])
        self.class_auroc = {label: (task, int(c)) for label, (task, c) in (class_auroc or {}).items()}
        for label, (task, c) in self.class_auroc.items():
            if task not in self.tasks or not 0 <= c < self.tasks[task]:
                raise ValueError(f"class_auroc {label!r}: class {c} of task {task!r} is not among {self.tasks}.")
        self.compare = tuple(compare) if compare else None
        self.mid_p = mid_p
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Forget every prediction, to start a new evaluation."""
        self.predictions: dict[str, dict[int, list[tuple[torch.Tensor, torch.Tensor]]]] = {}

    def update(self, model: str, seed: int, logits: torch.Tensor | Mapping[str, torch.Tensor], targets: torch.Tensor):
        """Add a batch of ``model`` trained with ``seed``: its logits [B, sum(classes)] (not probabilities: AUROC
        takes the softmax of each task's logits) and the class indices [B, T]."""
        per_task = split_task_logits(logits, self.tasks)
        targets = task_targets(torch.as_tensor(targets), self.tasks, self.ignore_index)
        logits = torch.cat(list(per_task.values()), dim=1).detach().float().cpu()
        if len(logits) != len(targets):
            raise ValueError(f"{len(logits)} predictions for {len(targets)} labels.")
        self.predictions.setdefault(model, {}).setdefault(int(seed), []).append((logits, targets.cpu()))

    def _cases(self, model: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        logits, targets = zip(*self.predictions[model][seed])
        return torch.cat(logits), torch.cat(targets)

    def columns(self) -> dict[str, list[str]]:
        """{section: its score columns}: one section per metric (a column per task, and ``<metric> mean`` for several
        tasks) and ``AUROC, one class vs rest`` for :attr:`class_auroc`."""
        sections = {}
        for metric in self.metrics:
            name = METRICS[metric]
            sections[name] = [f"{name} {t}" for t in self.tasks] + ([f"{name} mean"] if len(self.tasks) > 1 else [])
        if self.class_auroc:
            sections["AUROC, one class vs rest"] = [f"AUROC {label}" for label in self.class_auroc]
        return sections

    def _seed_scores(self, model: str, seed: int) -> dict[str, float]:
        arrays = _task_arrays(*self._cases(model, seed), self.tasks, self.ignore_index)
        scores = {}
        for metric in self.metrics:
            name = METRICS[metric]
            values = {t: _score(metric, *arrays[t]) for t in self.tasks}
            scores |= {f"{name} {t}": v for t, v in values.items()}
            if len(self.tasks) > 1:
                scores[f"{name} mean"] = float(np.mean(list(values.values())))
        for label, (task, c) in self.class_auroc.items():
            scores[f"AUROC {label}"] = _score("auroc", *arrays[task], positive=c)
        return scores

    def rows(self) -> list[dict[str, object]]:
        """One row per model, in the order they were first updated: ``model``, ``seeds`` (how many), and for each
        score column the mean over seeds and its sample standard deviation (``<column> sd``, nan for one seed)."""
        rows = []
        for model, seeds in self.predictions.items():
            per_seed = [self._seed_scores(model, seed) for seed in sorted(seeds)]
            rows.append({"model": model, "seeds": len(per_seed), **mean_sd_columns(per_seed)})
        return rows

    def mcnemar_rows(self) -> list[dict[str, object]]:
        """With ``compare=(model, baseline)``: one row per task and seed both were updated with: ``task``, ``seed``,
        ``<model> only correct`` (b), ``<baseline> only correct`` (c), ``p``. Empty without ``compare``.

        Raises:
            ValueError: when the model and the baseline of a seed were not given the same labels in the same order.
        """
        if self.compare is None:
            return []
        model, baseline = self.compare
        seeds = sorted(set(self.predictions.get(model, {})) & set(self.predictions.get(baseline, {})))
        rows = []
        for seed in seeds:
            (logits_m, targets_m), (logits_b, targets_b) = self._cases(model, seed), self._cases(baseline, seed)
            if not torch.equal(targets_m, targets_b):
                raise ValueError(f"seed {seed}: {model} and {baseline} were scored on different labels or case order.")
            arrays_m = _task_arrays(logits_m, targets_m, self.tasks, self.ignore_index)
            arrays_b = _task_arrays(logits_b, targets_b, self.tasks, self.ignore_index)
            for task in self.tasks:
                (y, lg_m), (_, lg_b) = arrays_m[task], arrays_b[task]
                result = mcnemar_test(y, lg_m.argmax(1), lg_b.argmax(1), mid_p=self.mid_p)
                rows.append(
                    {
                        "task": task,
                        "seed": seed,
                        f"{model} only correct": result.only_a,
                        f"{baseline} only correct": result.only_b,
                        "p": result.p_value,
                    }
                )
        return rows

    def confusion_matrices(self, model: str, seed: int) -> dict[str, np.ndarray]:
        """{task: confusion matrix} of ``model`` with ``seed`` (rows true class, columns predicted)."""
        arrays = _task_arrays(*self._cases(model, seed), self.tasks, self.ignore_index)
        return {t: confusion_matrix(y, lg.argmax(1), self.tasks[t]) for t, (y, lg) in arrays.items()}

    @property
    def caption(self) -> str:
        """What the cells hold: the spread, each metric's convention, n/a."""
        parts = [
            "Each cell: mean ± sample standard deviation over the seeds (no spread for a single seed).",
            "Balanced accuracy: mean recall over the classes in the test labels. F1: macro, over the classes in the "
            "labels or the predictions.",
        ]
        if "auroc" in self.metrics or self.class_auroc:
            parts.append("AUROC: one class vs the rest from the softmax of the task's logits; macro over the classes.")
        parts.append("n/a: undefined on these test labels (e.g. AUROC of a class with no case).")
        return " ".join(parts)

    @property
    def mcnemar_caption(self) -> str:
        """How the McNemar cells read and which p-value they give."""
        model, baseline = self.compare or ("A", "B")
        test = (
            "mid-p value, 2 P[X < min(b, c)] + P[X = min(b, c)]"
            if self.mid_p
            else "exact conditional p-value, min(1, 2 P[X ≤ min(b, c)])"
        )
        return (
            f"McNemar's exact test of {model} against {baseline}, per task and seed on the same test cases: "
            f"b / c = cases only {model} / only {baseline} classifies correctly; two-sided {test}, "
            "X ~ Bin(b + c, 1/2), no continuity correction."
        )

    def to_csv(self) -> str:
        """The rows as CSV: mean and ``sd`` columns, plain numbers."""
        return csv_text(self.rows())

    def to_markdown(self) -> str:
        """One markdown table per metric (rows: models; columns: tasks), each cell ``mean ± sd`` to three decimals,
        then the McNemar table (rows: tasks; columns: seeds; cells ``p (b / c)``), each with its caption."""
        rows = self.rows()
        if not rows:
            return ""
        lines = []
        for section, columns in self.columns().items():
            prefix = "AUROC " if section.startswith("AUROC,") else f"{section} "
            header = ["model", "seeds", *(c.removeprefix(prefix) for c in columns)]
            body = [
                [str(row["model"]), str(row["seeds"]), *(mean_sd_cell(row[c], row[f"{c} sd"]) for c in columns)]
                for row in rows
            ]
            lines += [f"**{section[0].upper()}{section[1:]}**", "", *markdown_table(header, body), ""]
        lines.append(self.caption)
        tests = self.mcnemar_rows()
        if tests:
            model, baseline = self.compare
            seeds = sorted({r["seed"] for r in tests})
            cells = {(r["task"], r["seed"]): r for r in tests}
            body = []
            for task in self.tasks:
                body.append([task])
                for seed in seeds:
                    r = cells[task, seed]
                    body[-1].append(f"{r['p']:.3g} ({r[f'{model} only correct']} / {r[f'{baseline} only correct']})")
            header = ["task", *(f"seed {s}" for s in seeds)]
            lines += [
                "",
                f"**McNemar, {model} vs {baseline}**",
                "",
                *markdown_table(header, body),
                "",
                self.mcnemar_caption,
            ]
        return "\n".join(lines) + "\n"

    def save(self, output_dir: str | os.PathLike, name: str = "classification_table") -> list[Path]:
        """Write ``<name>.csv``, ``<name>.md`` and, with ``compare``, ``<name>_mcnemar.csv`` atomically into
        ``output_dir``; returns their paths."""
        out = Path(output_dir)
        texts = {out / f"{name}.csv": self.to_csv(), out / f"{name}.md": self.to_markdown()}
        if self.compare:
            texts[out / f"{name}_mcnemar.csv"] = csv_text(self.mcnemar_rows())
        for path, text in texts.items():
            atomic_write_text(path, text)
        return list(texts)
