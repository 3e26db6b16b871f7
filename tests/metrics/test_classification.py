"""Classification metrics against hand computations and scikit-learn, McNemar's test against a textbook example, the
validation metric through MONAI's handler against the table's scores, and the table of models over seeds."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.data import MetaTensor
from monai.handlers import ROCAUC, ConfusionMatrix, IgniteMetricHandler, from_engine
from monai.metrics import ConfusionMatrixMetric
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

from medguide.metrics import (
    METRICS,
    ClassificationTable,
    TaskMetric,
    balanced_accuracy,
    class_auroc,
    confusion_matrix,
    macro_auroc,
    macro_f1,
    mcnemar_test,
    task_scores,
)

IGNORE = -100
TASKS = {"diagnosis": 5, "veil": 2}


def random_cases(n: int = 60, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits [n, 7] of TASKS and labels [n, 2]: diagnosis classes 0-3 only (class 4 absent), some veils unlabelled."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 7, generator=g)
    diagnosis = torch.randint(0, 4, (n,), generator=g)
    veil = torch.randint(0, 2, (n,), generator=g)
    veil[::7] = IGNORE
    return logits, torch.stack([diagnosis, veil], 1)


def run_handler(handler, batches: list) -> float:
    """The value a MONAI/Ignite metric handler reaches over one epoch of ``batches`` (engine outputs)."""
    engine = Engine(lambda engine, batch: batch)
    handler.attach(engine, "metric")
    engine.run(batches)
    return engine.state.metrics["metric"]


def decollated(pred: torch.Tensor, label: torch.Tensor, batch: int = 8) -> list[list[dict]]:
    """Engine outputs as MONAI's evaluators leave them: per batch, one dict per case."""
    return [
        [{"pred": MetaTensor(pred[i]), "label": label[i]} for i in range(start, min(start + batch, len(pred)))]
        for start in range(0, len(pred), batch)
    ]


# the scores, by hand


def test_scores_by_hand():
    y = [0, 0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 2, 1, 0, 2]
    assert balanced_accuracy(y, pred) == pytest.approx((2 / 4 + 1 / 2 + 1) / 3)  # recall per class
    # F1 = 2TP / (2TP + FP + FN): class 0 4/7, class 1 2/4, class 2 2/3
    assert macro_f1(y, pred) == pytest.approx((4 / 7 + 1 / 2 + 2 / 3) / 3)
    assert confusion_matrix(y, pred, 4).tolist() == [[2, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]


def test_class_only_predicted():
    y, pred = [0, 0, 1, 1], [0, 2, 1, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scikit-learn's warning about such a class is not passed on
        assert balanced_accuracy(y, pred) == pytest.approx((1 / 2 + 1) / 2)  # recall over the classes in the labels
    assert macro_f1(y, pred) == pytest.approx((2 / 3 + 1 + 0) / 3)  # the predicted-only class scores 0


def test_auroc_ranks_and_undefined_cases():
    y = [0, 0, 1, 1, 2, 2]
    p = np.array([[0.8, 0.1, 0.1], [0.4, 0.5, 0.1], [0.3, 0.6, 0.1], [0.2, 0.3, 0.5], [0.1, 0.1, 0.8], [0.5, 0.2, 0.3]])
    # class 1 vs rest: positives score 0.6, 0.3; negatives 0.1, 0.5, 0.1, 0.2: 4 + 3 of 8 pairs ranked right
    assert class_auroc(y, p, 1) == pytest.approx(7 / 8)
    assert class_auroc(y, p[:, 1], 1) == pytest.approx(7 / 8)  # the class's scores alone
    assert macro_auroc(y, p) == pytest.approx(roc_auc_score(y, p, multi_class="ovr"))
    with pytest.warns(RuntimeWarning, match="no case of class 2"):
        assert math.isnan(class_auroc([0, 1, 1], p[:3], 2))
    with pytest.warns(RuntimeWarning, match=r"labels hold a single class \[1\]"):
        assert math.isnan(macro_auroc([1, 1, 1], p[:3]))
    # a class missing from the labels is left out of the mean, not a crash or a nan
    present = [0, 0, 1, 1, 0, 1]
    expected = np.mean([roc_auc_score(np.array(present) == c, p[:, c]) for c in (0, 1)])
    assert macro_auroc(present, p) == pytest.approx(expected)


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")  # scikit-learn, called directly
def test_task_scores_split_the_logits_and_skip_missing_labels():
    logits, labels = random_cases()
    given = labels[:, 1] != IGNORE
    scores = task_scores(logits, labels, TASKS)
    assert scores["diagnosis"] == pytest.approx(balanced_accuracy_score(labels[:, 0], logits[:, :5].argmax(1)))
    assert scores["veil"] == pytest.approx(balanced_accuracy_score(labels[given, 1], logits[given, 5:].argmax(1)))
    f1 = task_scores(logits, labels, TASKS, metric="f1")
    assert f1["veil"] == pytest.approx(f1_score(labels[given, 1], logits[given, 5:].argmax(1), average="macro"))
    auroc = task_scores(logits, labels, TASKS, metric="auroc")
    # two classes: the softmax ranks the cases as the difference of the two logits does
    assert auroc["veil"] == pytest.approx(roc_auc_score(labels[given, 1], logits[given, 6] - logits[given, 5]))
    with pytest.raises(ValueError, match="metric 'kappa' is not one of"):
        task_scores(logits, labels, TASKS, metric="kappa")


# McNemar's exact test


def paired(b: int, c: int, both_right: int = 5, both_wrong: int = 3) -> tuple[list[int], list[int], list[int]]:
    """Labels and two classifiers' predictions with b cases only A gets right, c only B, and concordant ones."""
    y = [1] * (b + c + both_right + both_wrong)
    a = [1] * b + [0] * c + [1] * both_right + [0] * both_wrong
    bb = [0] * b + [1] * c + [1] * both_right + [0] * both_wrong
    return y, a, bb


def test_mcnemar_by_hand():
    # b = 2, c = 8: P[X <= 2] = (1 + 10 + 45) / 1024 for X ~ Bin(10, 1/2)
    result = mcnemar_test(*paired(2, 8))
    assert (result.only_a, result.only_b) == (2, 8)
    assert result.p_value == pytest.approx(2 * 56 / 1024)
    assert mcnemar_test(*paired(2, 8), mid_p=True).p_value == pytest.approx(2 * (11 + 45 / 2) / 1024)
    y, a, b = paired(8, 2)
    assert mcnemar_test(y, b, a).p_value == mcnemar_test(y, a, b).p_value  # symmetric
    assert mcnemar_test(*paired(4, 4)).p_value == 1.0
    assert mcnemar_test(*paired(0, 0)).p_value == 1.0  # no discordant case: no evidence either way


def test_mcnemar_textbook_example():
    # Fagerland, Lydersen & Laake, BMC Med Res Methodol 13:91 (2013), airway hyper-responsiveness before and after
    # stem cell transplantation (Bentur et al.), 21 children, discordant pairs 1 and 7: they report the exact
    # conditional p = 0.070 and the mid-p = 0.039
    y, a, b = paired(1, 7, both_right=1, both_wrong=12)
    assert len(y) == 21
    assert round(mcnemar_test(y, a, b).p_value, 3) == 0.070
    assert round(mcnemar_test(y, a, b, mid_p=True).p_value, 3) == 0.039


def test_mcnemar_needs_the_same_cases():
    with pytest.raises(ValueError, match="same cases"):
        mcnemar_test([0, 1], [0, 1, 1], [0, 1])


# during validation: stock MONAI handlers against our scores


def test_monai_confusion_matrix_sensitivity_is_accuracy_not_balanced_accuracy():
    """Why the bundles do not declare balanced accuracy as MONAI's ConfusionMatrix(metric_name="sensitivity")."""
    logits, labels = random_cases(90, seed=1)
    y = labels[:, 0]
    y[:60] = 0
    pred = logits[:, :5].argmax(1)
    pred[:70] = 0  # mostly the common class: accuracy well above balanced accuracy
    onehot = torch.nn.functional.one_hot
    outputs = decollated(onehot(pred, 5).float(), onehot(y, 5).float())
    handler = ConfusionMatrix(metric_name="sensitivity", output_transform=from_engine(["pred", "label"]))
    monai_value = run_handler(handler, outputs)
    assert monai_value == pytest.approx(accuracy_score(y, pred))  # counts averaged over classes first: micro recall
    assert abs(monai_value - balanced_accuracy(y, pred)) > 0.05
    # per class (reduction "mean_batch") it is the recall of each class, whose mean is balanced accuracy: a vector,
    # which a key metric cannot be
    per_class = ConfusionMatrixMetric(metric_name="sensitivity", reduction="mean_batch")
    per_class(onehot(pred, 5).float(), onehot(y, 5).float())
    assert torch.nanmean(per_class.aggregate()[0]).item() == pytest.approx(balanced_accuracy(y, pred))


def test_monai_rocauc_handler_agrees_with_ours():
    logits, labels = random_cases(80, seed=2)
    y = labels[:, 0]
    probabilities = logits[:, :4].softmax(1)  # a 4-class task with every class present
    outputs = decollated(probabilities, torch.nn.functional.one_hot(y, 4).float())
    value = run_handler(ROCAUC(output_transform=from_engine(["pred", "label"])), outputs)
    assert value == pytest.approx(macro_auroc(y, probabilities))
    # one class against the rest (melanoma), the class's column and its labels picked by the output transform
    melanoma = 2
    binary = decollated(probabilities[:, melanoma], (y == melanoma).float())
    value = run_handler(ROCAUC(output_transform=from_engine(["pred", "label"])), binary)
    assert value == pytest.approx(class_auroc(y, probabilities, melanoma))


@pytest.mark.parametrize("metric", list(METRICS))
def test_task_metric_in_an_epoch_equals_the_table_scores(metric):
    logits, labels = random_cases()
    outputs = decollated(logits, labels)
    expected = task_scores(logits, labels, TASKS, metric=metric)

    def handler(**kwargs):
        metric_fn = TaskMetric(TASKS, metric=metric, **kwargs)
        return IgniteMetricHandler(metric_fn, output_transform=from_engine(["pred", "label"]), save_details=False)

    assert run_handler(handler(), outputs) == pytest.approx(np.mean(list(expected.values())))
    for task in TASKS:
        assert run_handler(handler(task=task), outputs) == pytest.approx(expected[task])
    # undecollated batches (an engine with decollate=False) give the same
    batches = [{"pred": logits[s : s + 8], "label": labels[s : s + 8]} for s in range(0, len(logits), 8)]
    assert run_handler(handler(), batches) == pytest.approx(np.mean(list(expected.values())))


def test_task_metric_melanoma_auroc_and_single_task_labels():
    logits, labels = random_cases()
    outputs = decollated(logits, labels)
    metric_fn = TaskMetric(TASKS, metric="auroc", task="diagnosis", positive=2)
    value = run_handler(IgniteMetricHandler(metric_fn, output_transform=from_engine(["pred", "label"])), outputs)
    assert value == pytest.approx(class_auroc(labels[:, 0], logits[:, :5].softmax(1), 2))
    grade = TaskMetric({"grade": 3})  # one task: labels [B], or a scalar per case once decollated
    outputs = decollated(logits[:, :3], labels[:, 0].clamp(max=2))
    value = run_handler(IgniteMetricHandler(grade, output_transform=from_engine(["pred", "label"])), outputs)
    assert value == pytest.approx(balanced_accuracy(labels[:, 0].clamp(max=2), logits[:, :3].argmax(1)))


def test_task_metric_from_a_bundle_config():
    config = {
        "tasks": {"diagnosis": 5, "veil": 2},
        "val_balanced_accuracy": {
            "_target_": "IgniteMetricHandler",
            "metric_fn": {"_target_": "medguide.metrics.TaskMetric", "tasks": "@tasks"},
            "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            "save_details": False,
        },
    }
    handler = ConfigParser(config).get_parsed_content("val_balanced_accuracy")
    logits, labels = random_cases()
    expected = np.mean(list(task_scores(logits, labels, TASKS).values()))
    assert run_handler(handler, decollated(logits, labels)) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "accuracy"}, "metric 'accuracy' is not one of"),
        ({"task": "streaks"}, "task 'streaks' is not one of"),
        ({"positive": 2}, "positive=2 needs metric='auroc'"),
        ({"metric": "auroc", "task": "veil", "positive": 2}, "positive=2 needs"),
    ],
)
def test_task_metric_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TaskMetric(TASKS, **kwargs)


def test_task_metric_names_wrong_logits_at_once():
    with pytest.raises(ValueError, match=r"expected \[B, 7\]"):
        TaskMetric(TASKS)(torch.zeros(4, 6), torch.zeros(4, 2, dtype=torch.long))


# the result table


def one_hot_logits(diagnosis: list[int], veil: list[int]) -> torch.Tensor:
    """Logits of TASKS-like tasks (diagnosis 3 classes, veil 2) predicting the given classes."""
    return torch.cat([3 * torch.eye(3)[diagnosis], 3 * torch.eye(2)[veil]], 1)


def test_table_values_and_files(tmp_path):
    tasks = {"diagnosis": 3, "veil": 2}
    labels = torch.tensor([[0, 0], [0, 1], [1, 1], [2, IGNORE]])
    table = ClassificationTable(tasks, auroc=True, class_auroc={"MEL": ("diagnosis", 1)}, compare=("G(I)+I", "I"))
    # I, seed 0: diagnosis recall 1/2, 1, 1 -> 5/6; seed 1: 1, 1, 0 -> 2/3. veil right on all labelled cases
    table.update("I", 0, one_hot_logits([0, 1, 1, 2], [0, 1, 1, 0]), labels)
    table.update("I", 1, one_hot_logits([0, 0, 1, 1], [0, 1, 1, 1]), labels)
    # G(I)+I, seeds 0 and 1, given in two batches: all diagnoses right; veil wrong on case 1 in seed 0
    for seed, veil in [(0, [0, 0, 1, 0]), (1, [0, 1, 1, 0])]:
        table.update("G(I)+I", seed, one_hot_logits([0, 0], veil[:2]), labels[:2])
        table.update("G(I)+I", seed, one_hot_logits([1, 2], veil[2:]), labels[2:])
    rows = {row["model"]: row for row in table.rows()}
    assert list(rows) == ["I", "G(I)+I"] and rows["I"]["seeds"] == 2
    assert rows["I"]["balanced accuracy diagnosis"] == pytest.approx((5 / 6 + 2 / 3) / 2)
    assert rows["I"]["balanced accuracy diagnosis sd"] == pytest.approx(math.sqrt(2) / 12)  # sample sd of 5/6, 2/3
    assert rows["I"]["balanced accuracy mean"] == pytest.approx(((5 / 6 + 1) / 2 + (2 / 3 + 1) / 2) / 2)
    assert rows["G(I)+I"]["balanced accuracy veil"] == pytest.approx((3 / 4 + 1) / 2)  # seed 0: recall 1 and 1/2
    # the one melanoma (case 2) outranks two other cases and ties with the third, in both seeds: (1 + 1 + 1/2) / 3
    assert (rows["I"]["AUROC MEL"], rows["I"]["AUROC MEL sd"]) == pytest.approx((5 / 6, 0.0))

    tests = {(r["task"], r["seed"]): r for r in table.mcnemar_rows()}
    assert tests["diagnosis", 0] == {
        "task": "diagnosis",
        "seed": 0,
        "G(I)+I only correct": 1,
        "I only correct": 0,
        "p": 1.0,
    }
    assert (tests["veil", 0]["G(I)+I only correct"], tests["veil", 0]["I only correct"]) == (0, 1)
    assert tests["veil", 1]["G(I)+I only correct"] == tests["veil", 1]["I only correct"] == 0

    csv_path, md_path, mcnemar_path = table.save(tmp_path, "dmg")
    with open(csv_path, encoding="utf-8") as f:
        header, *values = list(csv.reader(f))
    assert header[:4] == ["model", "seeds", "balanced accuracy diagnosis", "balanced accuracy diagnosis sd"]
    assert "F1 mean sd" in header and "AUROC veil" in header and header[-2:] == ["AUROC MEL", "AUROC MEL sd"]
    assert len(values) == 2
    markdown = md_path.read_text(encoding="utf-8")
    assert "**Balanced accuracy**" in markdown and "**AUROC, one class vs rest**" in markdown
    assert "| model | seeds | diagnosis | veil | mean |" in markdown and "| model | seeds | MEL |" in markdown
    assert "| I | 2 | 0.750 ± 0.118 | 1.000 ± 0.000 | 0.875 ± 0.059 |" in markdown
    assert "| diagnosis | 1 (1 / 0) | 1 (1 / 0) |" in markdown and "| veil | 1 (0 / 1) | 1 (0 / 0) |" in markdown
    assert table.caption in markdown and table.mcnemar_caption in markdown and "exact conditional" in markdown
    with open(mcnemar_path, encoding="utf-8") as f:
        assert next(csv.reader(f)) == ["task", "seed", "G(I)+I only correct", "I only correct", "p"]
    assert not list(tmp_path.glob(".*"))  # written through temporary files, none left behind
    assert table.confusion_matrices("I", 1)["diagnosis"].tolist() == [[2, 0, 0], [0, 1, 0], [0, 1, 0]]


def test_table_undefined_auroc_reads_na_and_one_seed_has_no_spread():
    table = ClassificationTable({"grade": 3}, auroc=True)
    with pytest.warns(RuntimeWarning, match="single class"):
        table.update("I", 0, torch.eye(3)[[0, 0, 1]], torch.tensor([0, 0, 0]))
        markdown = table.to_markdown()
    assert "| I | 1 | 0.667 |" in markdown  # balanced accuracy of one seed: no ± spread
    assert "| I | 1 | n/a |" in markdown and "n/a: undefined" in markdown
    assert "McNemar" not in markdown and table.mcnemar_rows() == []


def test_table_refuses_unpaired_comparisons_and_unknown_classes():
    table = ClassificationTable({"grade": 3}, compare=("G(I)+I", "I"))
    table.update("I", 0, torch.eye(3)[[0, 1]], torch.tensor([0, 1]))
    table.update("G(I)+I", 0, torch.eye(3)[[0, 1]], torch.tensor([1, 0]))
    with pytest.raises(ValueError, match="seed 0: G\\(I\\)\\+I and I were scored on different labels"):
        table.mcnemar_rows()
    with pytest.raises(ValueError, match="class 3 of task 'grade'"):
        ClassificationTable({"grade": 3}, class_auroc={"X": ("grade", 3)})
