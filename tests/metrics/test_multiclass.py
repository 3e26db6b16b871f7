"""MultiEYE's scores (OCT-CoDA's evaluation): hand-worked values, scikit-learn's where it defines them, the
conventions for a class absent from the test labels, and the table of models over seeds."""

from __future__ import annotations

import csv
import math
import warnings

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from medguide.metrics import (
    CLASS_METRICS,
    MULTICLASS_METRICS,
    MulticlassTable,
    class_average_precision,
    class_scores,
    multiclass_scores,
)

# 5 cases, 3 classes; argmax predictions [0, 1, 0, 2, 2] against labels [0, 0, 1, 1, 2]
PROBABILITIES = [
    [0.6, 0.3, 0.1],
    [0.3, 0.4, 0.3],
    [0.5, 0.4, 0.1],
    [0.2, 0.3, 0.5],
    [0.1, 0.2, 0.7],
]
LABELS = [0, 0, 1, 1, 2]


def test_macro_scores_worked_by_hand():
    scores = multiclass_scores(PROBABILITIES, LABELS)
    assert list(scores) == list(MULTICLASS_METRICS)
    expected = {
        # precision per class: 1/2 (c0, c2 predicted 0; c0 right), 0 (c1 predicted 1, is 0), 1/2 (c3, c4; c4 right)
        "precision": (1 / 2 + 0 + 1 / 2) / 3,
        # recall per class: 1/2 (c0 of c0, c1), 0 (neither c2 nor c3), 1 (c4)
        "recall": (1 / 2 + 0 + 1) / 3,
        # F1 = 2PR / (P + R): 1/2, 0, 2/3
        "f1": (1 / 2 + 0 + 2 / 3) / 3,
        # TN / (TN + FP): class 0: 3 negatives, c2 a false positive; class 1: 3, c1; class 2: 4, c3
        "specificity": (2 / 3 + 2 / 3 + 3 / 4) / 3,
        "accuracy": 2 / 5,
        # p_o = 2/5; p_e = (true x predicted counts: 2*2 + 2*1 + 1*2) / 25 = 8/25; (10 - 8) / (25 - 8)
        "kappa": 2 / 17,
        # AUC class 0: positives 0.6, 0.3 vs negatives 0.5, 0.2, 0.1: 3 + 2 of 6 pairs; class 1: positives 0.4, 0.3
        # vs 0.3, 0.4, 0.2, ties count 1/2: (1 + 1/2 + 1) + (1/2 + 0 + 1) = 4 of 6; class 2: its one case ranks first
        "auc": (5 / 6 + 4 / 6 + 1) / 3,
        # AP class 0: ranking 0.6 (+), 0.5, 0.3 (+): (1 + 2/3) / 2; class 1: threshold 0.4 takes c1, c2: P 1/2 at R 1/2,
        # threshold 0.3 adds c0, c3: P 2/4 at R 1: 1/2 * 1/2 + 1/2 * 1/2; class 2: 1
        "map": (5 / 6 + 1 / 2 + 1) / 3,
    }
    for key, value in expected.items():
        assert scores[key] == pytest.approx(value, abs=1e-12), key


def test_scores_agree_with_scikit_learn_on_random_cases():
    generator = torch.Generator().manual_seed(3)
    probabilities = torch.randn(60, 5, generator=generator).softmax(1)
    labels = torch.arange(60) % 5
    pred = probabilities.argmax(1).numpy()
    y = labels.numpy()
    scores = multiclass_scores(probabilities, labels)
    onehot = label_binarize(y, classes=range(5))
    assert scores["precision"] == pytest.approx(skm.precision_score(y, pred, average="macro", zero_division=0))
    assert scores["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro", zero_division=0))
    assert scores["f1"] == pytest.approx(skm.f1_score(y, pred, average="macro", zero_division=0))
    assert scores["kappa"] == pytest.approx(skm.cohen_kappa_score(y, pred))
    assert scores["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert scores["auc"] == pytest.approx(skm.roc_auc_score(y, probabilities.numpy(), multi_class="ovr"))
    assert scores["map"] == pytest.approx(skm.average_precision_score(onehot, probabilities.numpy(), average="macro"))
    per_class = class_scores(probabilities, labels)
    assert set(per_class) == set(CLASS_METRICS) and all(v.shape == (5,) for v in per_class.values())
    for key in ("precision", "recall", "f1", "specificity", "auc"):  # each macro is the mean of its column
        assert scores[key] == pytest.approx(per_class[key].mean())
    assert scores["map"] == pytest.approx(per_class["ap"].mean())
    assert per_class["support"].tolist() == [12.0] * 5


def test_a_class_absent_from_the_labels():
    # 4 classes; class 3 has no case and is never predicted, class 2 has no case but is predicted once
    probabilities = torch.tensor(
        [[0.7, 0.1, 0.1, 0.1], [0.2, 0.6, 0.1, 0.1], [0.1, 0.2, 0.6, 0.1], [0.5, 0.3, 0.1, 0.1]]
    )
    labels = [0, 1, 1, 0]
    with pytest.warns(RuntimeWarning, match="undefined"):
        per_class = class_scores(probabilities, labels)
        scores = multiclass_scores(probabilities, labels)
    assert math.isnan(per_class["auc"][2]) and math.isnan(per_class["ap"][3]) and math.isnan(per_class["f1"][3])
    assert per_class["recall"][2] == 0.0 and per_class["specificity"].tolist() == [1.0, 1.0, 0.75, 1.0]
    # macro over the classes in labels or predictions: class 2 counts (recall 0), class 3 does not
    y, pred = np.array(labels), probabilities.argmax(1).numpy()
    assert scores["recall"] == pytest.approx(skm.recall_score(y, pred, average="macro", zero_division=0))
    assert scores["recall"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    # specificity over all 4 classes (MultiEYE's): (1 + 1 + 3/4 + 1) / 4
    assert scores["specificity"] == pytest.approx(3.75 / 4)
    # AUC and AP over classes 0 and 1 only (scikit-learn would give class 2 and 3 an AP of 0)
    assert scores["auc"] == pytest.approx(np.mean(per_class["auc"][:2]))
    assert scores["map"] == pytest.approx(np.mean(per_class["ap"][:2]))


def test_class_average_precision_by_hand_and_undefined():
    # ranking 0.9 (+), 0.8, 0.3 (+), 0.1: precision 1 at the first hit, 2/3 at the second
    assert class_average_precision([0, 1, 0, 1], [0.1, 0.9, 0.8, 0.3], positive=1) == pytest.approx(5 / 6)
    with pytest.warns(RuntimeWarning, match="no case of class 2"):
        assert math.isnan(class_average_precision([0, 1], [[0.5, 0.3, 0.2], [0.1, 0.8, 0.1]], positive=2))


@pytest.mark.parametrize(
    ("probabilities", "labels", "message"),
    [
        ([[2.0, -1.0], [0.0, 1.0]], [0, 1], "softmax of the logits"),  # logits, not probabilities
        ([[0.5, 0.5]], [0, 1], "1 rows of probabilities for 2 labels"),
        ([[0.5, 0.5], [0.1, 0.9]], [0, 2], r"class indices in \[0, 2\)"),
        ([0.5, 0.5], [0], "shape"),
        (np.zeros((0, 3)), [], "no case"),
    ],
)
def test_bad_inputs_are_named(probabilities, labels, message):
    with pytest.raises(ValueError, match=message):
        multiclass_scores(probabilities, labels)


ROWS = ("fundus only", "fundus + concept head", "OCT-CoDA")
CLASSES = ["NOR", "AMD", "DR", "GLC"]


def filled_table(seeds=(0, 1, 2)) -> MulticlassTable:
    table = MulticlassTable(CLASSES)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])  # GLC has no test case
    for shift, model in enumerate(ROWS):
        for seed in seeds:
            logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(10 * shift + seed))
            logits[torch.arange(8), labels] += shift  # later rows better
            table.update(model, seed, logits[:5], labels[:5])  # two batches per seed
            table.update(model, seed, logits[5:], labels[5:])
    return table


def test_table_shape_spread_and_files(tmp_path):
    table = filled_table()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # GLC's AUC and AP are undefined, and said so
        rows = table.rows()
        class_rows = table.class_rows()
        paths = table.save(tmp_path, "octcoda_table")
    assert [r["model"] for r in rows] == list(ROWS) and all(r["seeds"] == 3 for r in rows)
    names = list(MULTICLASS_METRICS.values())
    assert list(rows[0]) == ["model", "seeds", *(c for n in names for c in (n, f"{n} sd"))]
    assert all(not math.isnan(r[n]) for r in rows for n in names)
    assert rows[2]["accuracy"] > rows[0]["accuracy"]
    assert len(class_rows) == len(ROWS) * len(CLASSES)
    glc = [r for r in class_rows if r["class"] == "GLC"]
    assert all(math.isnan(r["AUC"]) and math.isnan(r["AP"]) and r["support"] == 0 for r in glc)
    assert [p.name for p in paths] == ["octcoda_table.csv", "octcoda_table.md", "octcoda_table_per_class.csv"]
    with open(paths[0], newline="", encoding="utf-8") as f:
        assert [r["model"] for r in csv.DictReader(f)] == list(ROWS)
    with open(paths[2], newline="", encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 12
    markdown = paths[1].read_text(encoding="utf-8")
    assert "| model | seeds | precision | recall | F1 | specificity | accuracy | kappa | AUC | mAP |" in markdown
    assert " ± " in markdown and "**Per class: OCT-CoDA**" in markdown
    # GLC: never true nor predicted here, so no precision, recall, F1, AUC or AP; its specificity is defined
    glc_line = next(line for line in markdown.splitlines() if line.startswith("| GLC |"))
    assert glc_line.startswith("| GLC | n/a | n/a | n/a | 0.") and glc_line.endswith("| n/a | n/a | 0.000 ± 0.000 |")


def test_table_seed_scores_match_the_function_and_one_seed_has_no_spread():
    table = filled_table(seeds=(0,))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        row = table.rows()[0]
        logits, labels = table._cases("fundus only", 0)
        direct = multiclass_scores(logits.softmax(1), labels[:, 0])
        first_row = table.to_markdown().splitlines()[4]
    assert row["seeds"] == 1 and math.isnan(row["F1 sd"])
    assert row["F1"] == pytest.approx(direct["f1"]) and row["kappa"] == pytest.approx(direct["kappa"])
    assert first_row.startswith("| fundus only | 1 |") and "±" not in first_row
