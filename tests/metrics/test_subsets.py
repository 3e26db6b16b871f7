"""The missing-modality table, and its agreement with the bundles' ``val_mean_dice`` on empty regions."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine
from monai.bundle import ConfigParser
from monai.handlers import MetricsSaver

from medguide.metrics import SubsetTable, nonempty_subsets

BUNDLES = Path(__file__).resolve().parents[2] / "bundles"
DIAGONAL = math.sqrt(3 * 8**2)  # of the 8 x 8 x 8 grids below, in voxels


def cube(batch: int = 1, regions: int = 2) -> torch.Tensor:
    """[batch, regions, 8, 8, 8] one-hot regions, each the same 4 x 4 x 4 cube."""
    y = torch.zeros(batch, regions, 8, 8, 8)
    y[:, :, 2:6, 2:6, 2:6] = 1
    return y


def test_fifteen_subsets_of_four():
    subsets = nonempty_subsets(["t1", "t1ce", "t2", "flair"])
    assert len(subsets) == 15 and subsets[0] == ("t1",) and subsets[-1] == ("t1", "t1ce", "t2", "flair")


def test_table_values_and_files(tmp_path):
    table = SubsetTable(["A", "B"])
    y = cube(2)
    half = y.clone()
    half[:, 1, 2:4] = 0  # region B predicted on half its voxels: Dice 2 * 32 / (32 + 64) = 2/3
    table.update(["t1"], half, y)
    missed = y.clone()
    missed[:, 1] = 0  # region B not predicted at all: Dice 0, HD95 the grid diagonal
    table.update(["t1", "t2"], missed, y)
    rows = {row["modalities"]: row for row in table.rows()}
    assert rows["t1"]["n"] == 2
    assert rows["t1"]["Dice A"] == 1.0 and abs(rows["t1"]["Dice B"] - 2 / 3) < 1e-6
    assert rows["t1+t2"]["Dice B"] == 0.0 and rows["t1+t2"]["HD95 B"] == pytest.approx(DIAGONAL)
    csv_path, md_path = table.save(tmp_path)
    assert csv_path.read_text().splitlines()[0].startswith("modalities,n,Dice A,Dice B,HD95 A,HD95 B")
    markdown = md_path.read_text()
    assert "| t1+t2 | 2 | 1.000 | 0.000 | 0.000 | 13.856 | 0.500 |" in markdown
    assert "n/a" not in markdown and markdown.rstrip().endswith(table.caption)
    assert not list(tmp_path.glob(".*"))


def test_empty_reference_and_prediction_score_dice_one_hd95_zero():
    table = SubsetTable(["WT", "ET"])
    y = cube()
    y[:, 1] = 0  # no enhancing tumour in the label, none predicted
    table.update(["t1"], y.clone(), y)
    (row,) = table.rows()
    assert row["Dice ET"] == 1.0 and row["HD95 ET"] == 0.0 and row["Dice mean"] == 1.0


def test_false_positive_on_empty_reference_scores_dice_zero_hd95_diagonal():
    table = SubsetTable(["WT", "ET"])
    y = cube()
    y[:, 1] = 0
    table.update(["t1"], cube(), y)  # enhancing tumour predicted where the label has none
    (row,) = table.rows()
    assert row["Dice ET"] == 0.0 and row["HD95 ET"] == pytest.approx(DIAGONAL)
    assert row["Dice mean"] == 0.5


def test_region_absent_from_every_case_still_has_a_mean():
    table = SubsetTable(["WT", "ET"])
    for false_positive in (False, True, False):  # three cases, none with enhancing tumour in its label
        y, pred = cube(), cube()
        y[:, 1] = 0
        if not false_positive:
            pred[:, 1] = 0
        table.update(["t1"], pred, y)
    (row,) = table.rows()
    assert row["n"] == 3
    assert row["Dice ET"] == pytest.approx(2 / 3) and row["HD95 ET"] == pytest.approx(DIAGONAL / 3)
    assert row["Dice mean"] == pytest.approx((1 + 2 / 3) / 2)
    assert "n/a" not in table.to_markdown()


@pytest.mark.parametrize("bundle", ["maml_brats_mri_segmentation", "maml_liver_tumor_ct_segmentation"])
def test_bundle_val_mean_dice_agrees_with_table(bundle, tmp_path):
    """The key metric the training log, checkpoint selection and ``metrics.csv`` report equals the table's mean."""
    y, pred = cube(3), cube(3)
    y[0, 1] = pred[0, 1] = 0  # empty region, empty prediction
    y[1, 1] = 0  # empty region, false positive
    pred[2, 0, 2:4] = 0  # half the region predicted
    parser = ConfigParser()
    parser.read_config(BUNDLES / bundle / "configs" / "train.json")
    key_metric = parser.get_parsed_content("validate#key_metric#val_mean_dice")
    engine = Engine(lambda engine, batch: batch)
    key_metric.attach(engine, "val_mean_dice")
    MetricsSaver(save_dir=str(tmp_path), metrics=["val_mean_dice"]).attach(engine)
    engine.run([{"pred": pred[:2], "label": y[:2]}, {"pred": pred[2:], "label": y[2:]}])

    table = SubsetTable(["A", "B"], hd95=False)
    table.update(["t1"], pred, y)
    (row,) = table.rows()
    assert row["Dice mean"] == pytest.approx((1 + 1 + 1 + 0 + 2 / 3 + 1) / 6)
    assert engine.state.metrics["val_mean_dice"] == pytest.approx(row["Dice mean"])
    with open(tmp_path / "metrics.csv") as f:
        (logged,) = list(csv.reader(f))
    assert logged[0] == "val_mean_dice" and float(logged[1]) == pytest.approx(row["Dice mean"])
