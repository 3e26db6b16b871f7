"""ClassProbabilityWriter: one row per case, a column per class, softmax per task, the file whole or not at all."""

from __future__ import annotations

import csv

import torch
from ignite.engine import Engine

from medguide.engines import ClassProbabilityWriter


def run(writer: ClassProbabilityWriter, batches: list) -> None:
    def step(engine, batch):
        engine.state.batch = batch[0]  # what an evaluator's handlers see: the inputs, then the output
        return batch[1]

    engine = Engine(step)
    writer.attach(engine)
    engine.run(batches, max_epochs=1)


def read(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_batched_and_decollated_outputs_give_one_row_per_case(tmp_path):
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    batched = ({"case": ["a", "b"]}, {"pred": logits})
    decollated = ([{"case": "c"}], [{"pred": logits[0]}])
    writer = ClassProbabilityWriter(tmp_path / "out", ["G", "A", "O"])
    run(writer, [batched, decollated])
    rows = read(tmp_path / "out" / "probabilities.csv")
    assert [row["case"] for row in rows] == ["a", "b", "c"] and list(rows[0]) == ["case", "G", "A", "O"]
    expected = logits.softmax(1)
    assert abs(float(rows[1]["O"]) - expected[1, 2].item()) < 1e-6
    assert all(abs(sum(float(row[c]) for c in "GAO") - 1) < 1e-5 for row in rows)


def test_several_tasks_get_a_softmax_each_and_task_class_columns(tmp_path):
    writer = ClassProbabilityWriter(tmp_path, {"diagnosis": ["BCC", "NEV"], "streaks": ["ABS", "REG", "IR"]})
    run(writer, [({"case": ["x"]}, {"pred": torch.zeros(1, 5)})])
    (row,) = read(tmp_path / "probabilities.csv")
    assert list(row) == ["case", "diagnosis:BCC", "diagnosis:NEV", "streaks:ABS", "streaks:REG", "streaks:IR"]
    assert float(row["diagnosis:BCC"]) == 0.5 and abs(float(row["streaks:IR"]) - 1 / 3) < 1e-6
