"""Single-label multi-class scores as the MultiEYE benchmark reports them, per class and macro, and their table of
models over seeds.

The conventions are those of MultiEYE's evaluation (Wang et al., IEEE TMI 2025, https://arxiv.org/abs/2412.09402;
``utils/eval_single.py`` of https://github.com/xmed-lab/MultiEYE, which its ``test.ipynb`` and
``process/finetune.py`` call), so our numbers and the published ones are computed alike:

- the predicted class is the argmax of the softmax;
- precision, recall and F1 are scikit-learn's ``average="macro"``: over the classes present in the labels or the
  predictions, a class never predicted scoring precision 0 (scikit-learn's default ``zero_division``, whose value
  is 0);
- specificity ``TN / (TN + FP)`` per class from the confusion matrix over all ``C`` classes, averaged over all of
  them (a class absent from labels and predictions alike has specificity 1 and counts);
- accuracy and Cohen's kappa are scikit-learn's, kappa unweighted (the classes are not ordered);
- AUC and AP are one class against the rest on that class's probability column (scikit-learn's ``roc_auc_score``
  and ``average_precision_score``), averaged over the classes with an unweighted mean (AUC, mAP).

Where MultiEYE's code has no answer, ours says n/a: a class absent from the test labels has no AUC (scikit-learn
raises there, so MultiEYE's evaluation stops) and no AP (scikit-learn returns 0 there, which would pull mAP down for
a class that was never tested); both are nan and left out of the mean, as :func:`medguide.metrics.macro_auroc` and
:class:`medguide.metrics.ClassificationTable` do. On MultiEYE's test split every class is present, so the two agree.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from sklearn import metrics as skm

from medguide.data.files import atomic_write_text
from medguide.metrics.classification import (
    ClassificationTable,
    _labels,
    _task_arrays,
    class_auroc,
    confusion_matrix,
    macro_f1,
)
from medguide.metrics.tables import csv_text, markdown_table, mean_sd_cell, mean_sd_columns

__all__ = [
    "CLASS_METRICS",
    "MULTICLASS_METRICS",
    "MulticlassTable",
    "class_average_precision",
    "class_scores",
    "multiclass_scores",
]

MULTICLASS_METRICS = {
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "specificity": "specificity",
    "accuracy": "accuracy",
    "kappa": "kappa",
    "auc": "AUC",
    "map": "mAP",
}
"""The scores :func:`multiclass_scores` returns (all macro but accuracy and kappa), with the table's names."""

CLASS_METRICS = {
    "precision": "precision",
    "recall": "recall",
    "f1": "F1",
    "specificity": "specificity",
    "auc": "AUC",
    "ap": "AP",
    "support": "support",
}
"""The per-class columns :func:`class_scores` returns, with the table's names."""

PROBABILITY_TOLERANCE = 1e-2
"""How far a row of probabilities may sum from 1 (a bfloat16 softmax rounds)."""


def _check_inputs(probabilities, labels) -> tuple[np.ndarray, np.ndarray]:
    """``([N, C] float64 probabilities, [N] int labels)``, checked."""
    p = np.asarray(probabilities.detach().float().cpu() if isinstance(probabilities, torch.Tensor) else probabilities)
    p = p.astype(np.float64)
    y = _labels(labels)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be [N cases, C >= 2 classes], got shape {p.shape}.")
    if len(p) != len(y):
        raise ValueError(f"{len(p)} rows of probabilities for {len(y)} labels.")
    if len(y) == 0:
        raise ValueError("no case to score: the probabilities and labels are empty.")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"labels must be class indices in [0, {p.shape[1]}), got values {np.unique(y)[:10].tolist()}.")
    bad = ~np.isfinite(p).all(1) | (p < 0).any(1) | (p > 1).any(1) | (np.abs(p.sum(1) - 1) > PROBABILITY_TOLERANCE)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"probabilities row {row} is not a distribution over the classes ({p[row].tolist()}): "
            "pass the softmax of the logits."
        )
    return p, y


def class_average_precision(y_true, scores, positive: int) -> float:
    """Average precision of class ``positive`` against all others, ranking the cases by ``scores`` (that class's
    column of ``[N, C]`` probabilities, or ``[N]`` scores): ``sum_n (R_n - R_{n-1}) P_n`` over the thresholds
    (scikit-learn's ``average_precision_score``, no interpolation).

    Undefined, nan with a warning saying why, when the labels hold no case of the class (scikit-learn returns 0).

    Example:
        >>> class_average_precision([0, 1, 0, 1], [0.1, 0.9, 0.8, 0.3], positive=1)  # hits at ranks 1, 3: (1 + 2/3) / 2
        0.8333333333333333
    """
    y = _labels(y_true) == positive
    s = np.asarray(scores.cpu() if isinstance(scores, torch.Tensor) else scores, dtype=np.float64)
    s = s[:, positive] if s.ndim == 2 else s
    if not y.any():
        warnings.warn(
            f"AP of class {positive} vs rest is undefined (nan): the {len(y)} labels hold no case of class {positive}.",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    return float(skm.average_precision_score(y, s))


def class_scores(probabilities, labels) -> dict[str, np.ndarray]:
    """Per class ``[C]`` arrays, keyed as :data:`CLASS_METRICS`: precision, recall, F1, specificity, AUC, AP and
    support (the number of cases of the class in the labels).

    Each macro score of :func:`multiclass_scores` (but accuracy and kappa) is the mean of its column here over the
    classes where it is defined. nan marks undefined: precision, recall and F1 of a class neither in the labels nor
    predicted; specificity of a class every case belongs to; AUC and AP of a class absent from the labels (AUC also
    when every case is of it). A class in the labels and never predicted has precision 0, one predicted and absent
    from the labels recall 0, as scikit-learn's macro average counts them.

    Args:
        probabilities: ``[N, C]`` class probabilities (the softmax of the logits), rows summing to 1.
        labels: ``[N]`` class indices.

    Raises:
        ValueError: on shapes that disagree, labels off ``[0, C)``, no case, or a row that is not a distribution.

    Example:
        >>> scores = class_scores([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]], [0, 1, 1, 2])
        >>> scores["recall"].tolist(), scores["specificity"].tolist()  # class 1: 1 of 2 found; class 0: 1 FP in 3
        ([1.0, 0.5, 1.0], [0.6666666666666666, 1.0, 1.0])
    """
    return _class_scores(*_check_inputs(probabilities, labels))


def _class_scores(p: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
    num_classes = p.shape[1]
    pred = p.argmax(1)
    classes = list(range(num_classes))
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y, pred, labels=classes, average=None, zero_division=0.0
    )
    seen = np.isin(classes, np.union1d(y, pred))
    matrix = confusion_matrix(y, pred, num_classes)
    false_positives = matrix.sum(0) - np.diag(matrix)
    negatives = len(y) - matrix.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        specificity = (negatives - false_positives) / negatives
    return {
        "precision": np.where(seen, precision, np.nan),
        "recall": np.where(seen, recall, np.nan),
        "f1": np.where(seen, f1, np.nan),
        "specificity": specificity.astype(np.float64),
        "auc": np.array([class_auroc(y, p, c) for c in classes]),
        "ap": np.array([class_average_precision(y, p, c) for c in classes]),
        "support": support.astype(np.float64),
    }


def _defined_mean(values: np.ndarray) -> float:
    """Mean over the defined (not nan) values; nan when none is."""
    defined = values[~np.isnan(values)]
    return float(defined.mean()) if len(defined) else math.nan


def multiclass_scores(probabilities, labels) -> dict[str, float]:
    """MultiEYE's scores of ``[N, C]`` class probabilities against ``[N]`` labels, keyed as
    :data:`MULTICLASS_METRICS`: macro precision, recall, F1, specificity, accuracy, Cohen's kappa, one-vs-rest AUC
    (macro) and mAP (macro average precision); the conventions are in the module's docstring.

    Example (worked by hand): labels ``[0, 1, 1, 2]``, predictions (argmax) ``[0, 1, 0, 2]``. Precision per class
    ``1/2, 1, 1`` -> 5/6; recall ``1, 1/2, 1`` -> 5/6; F1 ``2/3, 2/3, 1`` -> 7/9; specificity ``2/3, 1, 1`` -> 8/9;
    accuracy ``p_o = 3/4``; kappa ``(p_o - p_e) / (1 - p_e)``, ``p_e`` the sum over classes of true count times
    predicted count over ``N^2``: ``(1*2 + 2*1 + 1*1) / 16 = 5/16``, so kappa ``(7/16) / (11/16) = 7/11``.

        >>> scores = multiclass_scores(
        ...     [[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]], [0, 1, 1, 2]
        ... )
        >>> round(scores["f1"], 4), scores["accuracy"], round(scores["kappa"], 4)
        (0.7778, 0.75, 0.6364)

    Args:
        probabilities: ``[N, C]`` class probabilities (the softmax of the logits), rows summing to 1.
        labels: ``[N]`` class indices.

    Raises:
        ValueError: as :func:`class_scores`.
    """
    p, y = _check_inputs(probabilities, labels)
    per_class, pred = _class_scores(p, y), p.argmax(1)
    return {
        "precision": float(skm.precision_score(y, pred, average="macro", zero_division=0.0)),
        "recall": float(skm.recall_score(y, pred, average="macro", zero_division=0.0)),
        "f1": macro_f1(y, pred),
        "specificity": _defined_mean(per_class["specificity"]),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "kappa": float(skm.cohen_kappa_score(y, pred)),
        "auc": _defined_mean(per_class["auc"]),
        "map": _defined_mean(per_class["ap"]),
    }


class MulticlassTable(ClassificationTable):
    """The MultiEYE table of single-label classifiers over seeds: :func:`multiclass_scores` per model (rows) and,
    per model, the per-class table of :func:`class_scores`.

    What it shares with :class:`ClassificationTable` (the table of the deep multimodal guidance bundles): the
    predictions kept per (model, seed) from :meth:`update` (logits, not probabilities; the softmax is taken here),
    each seed scored on all its cases, cells the mean over seeds with the sample standard deviation, n/a where a
    score is undefined, and the files written atomically. OCT-CoDA's rows are "fundus only", "fundus + concept head"
    and "OCT-CoDA".

    Example:
        >>> table = MulticlassTable(["NOR", "AMD", "DR"])
        >>> labels = torch.tensor([0, 1, 2, 2])
        >>> for seed in (0, 1, 2):
        ...     table.update("fundus only", seed, torch.randn(4, 3), labels)
        >>> paths = table.save(output_dir, "octcoda_table")  # .csv, .md, _per_class.csv

    Args:
        classes: the class names, in the order of the logits.
        ignore_index: the label value of a case without a label (left out).

    Raises:
        ValueError: for fewer than two classes.
    """

    def __init__(self, classes: Sequence[str], ignore_index: int = -100) -> None:
        self.classes = [str(c) for c in classes]
        super().__init__({"class": len(self.classes)}, ignore_index=ignore_index)

    def columns(self) -> dict[str, list[str]]:
        """{section: its score columns}: one section, the names of :data:`MULTICLASS_METRICS`."""
        return {"MultiEYE scores": list(MULTICLASS_METRICS.values())}

    def _probabilities(self, model: str, seed: int) -> tuple[torch.Tensor, np.ndarray]:
        labels, logits = _task_arrays(*self._cases(model, seed), self.tasks, self.ignore_index)["class"]
        return logits.softmax(1), labels

    def _seed_scores(self, model: str, seed: int) -> dict[str, float]:
        scores = multiclass_scores(*self._probabilities(model, seed))
        return {MULTICLASS_METRICS[key]: value for key, value in scores.items()}

    def class_rows(self) -> list[dict[str, object]]:
        """One row per model and class: ``model``, ``seeds``, ``class``, and for each :data:`CLASS_METRICS` column
        the mean over seeds and its sample standard deviation (``<column> sd``)."""
        rows = []
        for model, seeds in self.predictions.items():
            per_seed = [class_scores(*self._probabilities(model, seed)) for seed in sorted(seeds)]
            for c, name in enumerate(self.classes):
                repeats = [{CLASS_METRICS[k]: float(v[c]) for k, v in s.items()} for s in per_seed]
                rows.append({"model": model, "seeds": len(per_seed), "class": name, **mean_sd_columns(repeats)})
        return rows

    @property
    def caption(self) -> str:
        """What the cells hold and each score's convention."""
        return (
            "Each cell: mean ± sample standard deviation over the seeds (no spread for a single seed). "
            "Predicted class: argmax of the softmax. Precision, recall, F1: macro over the classes in the test labels "
            "or the predictions, a class never predicted scoring precision 0. Specificity: TN / (TN + FP) per class, "
            "macro over all classes. Kappa: Cohen's, unweighted. AUC, AP: one class vs the rest on its probability; "
            "AUC and mAP average them over the classes in the test labels. "
            "n/a: undefined on these test labels (e.g. AUC of a class with no case). As MultiEYE's evaluation."
        )

    def to_markdown(self) -> str:
        """The models' table (rows: models; columns: the scores), its caption, then one per-class table per model
        (rows: classes; columns: the per-class scores), cells ``mean ± sd`` to three decimals."""
        rows = self.rows()
        if not rows:
            return ""
        names = list(MULTICLASS_METRICS.values())
        body = [[str(r["model"]), str(r["seeds"]), *(mean_sd_cell(r[c], r[f"{c} sd"]) for c in names)] for r in rows]
        lines = ["**MultiEYE scores**", "", *markdown_table(["model", "seeds", *names], body), "", self.caption]
        class_columns = list(CLASS_METRICS.values())
        class_rows = self.class_rows()
        for model in self.predictions:
            body = [
                [str(r["class"]), *(mean_sd_cell(r[c], r[f"{c} sd"]) for c in class_columns)]
                for r in class_rows
                if r["model"] == model
            ]
            lines += ["", f"**Per class: {model}**", "", *markdown_table(["class", *class_columns], body)]
        return "\n".join(lines) + "\n"

    def save(self, output_dir: str | os.PathLike, name: str = "multiclass_table") -> list[Path]:
        """Write ``<name>.csv`` (the models), ``<name>.md`` (both tables) and ``<name>_per_class.csv`` atomically
        into ``output_dir``; returns their paths."""
        paths = super().save(output_dir, name)
        per_class = Path(output_dir) / f"{name}_per_class.csv"
        atomic_write_text(per_class, csv_text(self.class_rows()))
        return [*paths, per_class]
