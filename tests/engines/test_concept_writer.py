"""ConceptInferer and ConceptWriter (OCT-CoDA inference): a tiny ConceptClassifier through MONAI's evaluator writes
probabilities and its strongest concepts per image, the evaluator's pred staying plain logits, the CSV whole or not
at all, and a PNG per image when asked."""

from __future__ import annotations

import csv

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.inferers import SimpleInferer
from torch import nn

from medguide.engines import ClassProbabilityWriter, ConceptInferer, ConceptWriter
from medguide.networks import ConceptClassifier

CLASSES = ["NOR", "AMD", "DR"]
CONCEPTS = ["drusen", "haemorrhages, dot and blot", "optic disc cupping", "macular oedema", "tigroid fundus"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def network() -> ConceptClassifier:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return ConceptClassifier(encoder, 8, torch.randn(len(CONCEPTS), 4), len(CLASSES)).eval()


def images(count: int = 5) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    return [{"case": f"case/{i}", "image": torch.rand(3, 12, 10, generator=generator)} for i in range(count)]


def run(net, writers, inferer, data=None, batch_size=2) -> SupervisedEvaluator:
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data or images(), batch_size=batch_size),
        network=net,
        inferer=inferer,
        val_handlers=writers,
    )
    evaluator.run()
    return evaluator


def read(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_csv_rows_probabilities_and_top_k_order(tmp_path):
    net, inferer = network(), ConceptInferer()
    writer = ConceptWriter(tmp_path, CLASSES, CONCEPTS, inferer, top_k=3)
    probabilities_writer = ClassProbabilityWriter(tmp_path, CLASSES)  # reads the same pred: plain logits
    run(net, [writer, probabilities_writer], inferer)
    rows = read(tmp_path / "concepts.csv")
    ranks = [f"top{i}_{part}" for i in (1, 2, 3) for part in ("concept", "similarity")]
    assert list(rows[0]) == ["case", "predicted", *CLASSES, *ranks]
    assert [r["case"] for r in rows] == [f"case/{i}" for i in range(5)]
    with torch.no_grad():
        expected = net(torch.stack([item["image"] for item in images()]), with_concepts=True)
    probabilities = expected.logits.softmax(1)
    strongest, order = expected.similarity.topk(3, dim=1)
    for i, (row, other) in enumerate(zip(rows, read(tmp_path / "probabilities.csv"))):
        values = [float(row[c]) for c in CLASSES]
        assert sum(values) == pytest.approx(1, abs=1e-5)
        assert values == pytest.approx(probabilities[i].tolist(), abs=1e-6)
        assert values == [float(other[c]) for c in CLASSES]
        assert row["predicted"] == CLASSES[int(probabilities[i].argmax())]
        assert [row[f"top{r}_concept"] for r in (1, 2, 3)] == [CONCEPTS[c] for c in order[i].tolist()]
        similarities = [float(row[f"top{r}_similarity"]) for r in (1, 2, 3)]
        assert similarities == sorted(similarities, reverse=True)
        assert similarities == pytest.approx(strongest[i].tolist(), abs=1e-6)
    assert not (tmp_path / "concept_figures").exists()  # figures only when asked


def test_a_run_that_stops_leaves_no_csv_and_a_full_run_no_temporary_file(tmp_path):
    net, inferer = network(), ConceptInferer()
    writer = ConceptWriter(tmp_path / "stopped", CLASSES, CONCEPTS, inferer)
    evaluator = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(images(), batch_size=2),
        network=net,
        inferer=inferer,
        val_handlers=[writer],
    )

    @evaluator.on(Events.ITERATION_COMPLETED(once=2))
    def fail(engine):
        raise RuntimeError("stopped half way")

    with pytest.raises(RuntimeError, match="stopped half way"):
        evaluator.run()
    assert not (tmp_path / "stopped").exists() or not any((tmp_path / "stopped").iterdir())
    run(network(), [ConceptWriter(tmp_path / "full", CLASSES, CONCEPTS, inferer)], inferer)
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["concepts.csv"]


def test_figures_when_asked_are_pngs(tmp_path):
    inferer = ConceptInferer()
    writer = ConceptWriter(tmp_path, CLASSES, CONCEPTS, inferer, top_k=5, figures="true", max_figures=3)
    run(network(), [writer], inferer)
    figures = sorted((tmp_path / "concept_figures").iterdir())
    assert [p.name for p in figures] == ["case_0.png", "case_1.png", "case_2.png"]
    assert [p.name for p in writer.figure_paths] == [p.name for p in figures]
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in figures)
    rows = read(tmp_path / "concepts.csv")
    assert len(rows) == 5  # every image in the CSV, figures for the first three
    # all five concepts per row, the name with a comma quoted in the file and read back whole
    assert all(sorted(row[f"top{r}_concept"] for r in range(1, 6)) == sorted(CONCEPTS) for row in rows)


def test_case_ids_that_make_the_same_file_name_keep_a_figure_each(tmp_path):
    # "case/0" and "case:0" both become case_0.png; the second must not overwrite the first
    data = [dict(item, case=case) for item, case in zip(images(3), ["case/0", "case:0", "case_0"])]
    inferer = ConceptInferer()
    writer = ConceptWriter(tmp_path, CLASSES, CONCEPTS, inferer, figures=True)
    run(network(), [writer], inferer, data=data)
    names = [p.name for p in writer.figure_paths]
    assert names == ["case_0.png", "case_0_2.png", "case_0_3.png"]
    assert sorted(p.name for p in (tmp_path / "concept_figures").iterdir()) == sorted(names)


def test_settings_and_a_missing_inferer_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"top_k must be an integer in \[1, 5\]"):
        ConceptWriter(tmp_path, CLASSES, CONCEPTS, ConceptInferer(), top_k=6)
    with pytest.raises(ValueError, match="concepts is empty"):
        ConceptWriter(tmp_path, CLASSES, [], ConceptInferer())
    writer = ConceptWriter(tmp_path, CLASSES, CONCEPTS, ConceptInferer())  # not the evaluator's inferer
    with pytest.raises(RuntimeError, match="holds no concept similarities"):
        run(network(), [writer], SimpleInferer())
