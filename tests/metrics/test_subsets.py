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

from medguide.data import nonempty_subsets
from medguide.metrics import SubsetTable

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
    assert rows["t1+t2"]["Dice B"] == 0.0 and rows["t1+t2"]["HD95 B (voxels)"] == pytest.approx(DIAGONAL)
    csv_path, md_path = table.save(tmp_path)
    with open(csv_path, encoding="utf-8") as f:
        header, *values = list(csv.reader(f))
    assert header == [
        "modalities", "n", "Dice A", "Dice A sd", "Dice B", "Dice B sd", "HD95 A (voxels)", "HD95 A (voxels) sd",
        "HD95 B (voxels)", "HD95 B (voxels) sd", "Dice mean", "Dice mean sd",
    ]  # fmt: skip
    assert all(float(v) >= 0 for row in values for v in row[1:])  # plain numbers, the spread in its own columns
    markdown = md_path.read_text(encoding="utf-8")
    assert "| modalities | n | Dice A | Dice B | HD95 A (voxels) | HD95 B (voxels) | Dice mean |" in markdown
    assert "| t1+t2 | 2 | 1.000 ± 0.000 | 0.000 ± 0.000 | 0.00 ± 0.00 | 13.86 ± 0.00 | 0.500 ± 0.000 |" in markdown
    assert "n/a" not in markdown and markdown.rstrip().endswith(table.caption)
    assert "13.86 voxels" in table.caption and "standard deviation" in table.caption
    assert not list(tmp_path.glob(".*"))


def test_standard_deviation_over_cases_beside_each_mean():
    table = SubsetTable(["A"])
    y = cube(2, regions=1)
    pred = y.clone()
    pred[1, 0, 2:4] = 0  # case 0 exact (Dice 1), case 1 half predicted (Dice 2/3)
    table.update(["t1"], pred, y)
    (row,) = table.rows()
    assert row["Dice A"] == pytest.approx(5 / 6) and row["Dice A sd"] == pytest.approx(math.sqrt(2) / 6)
    assert row["Dice mean sd"] == pytest.approx(row["Dice A sd"])
    assert f"| 0.833 ± {math.sqrt(2) / 6:.3f} |" in table.to_markdown()


def test_single_case_has_no_spread():
    table = SubsetTable(["A"], hd95=False)
    table.update(["t1"], cube(1, regions=1), cube(1, regions=1))
    (row,) = table.rows()
    assert math.isnan(row["Dice A sd"]) and "| 1.000 |" in table.to_markdown()
    assert math.isnan(float(table.to_csv().splitlines()[1].split(",")[3]))  # "nan" in the CSV, still a number


def test_hd95_in_millimetres_with_anisotropic_spacing():
    """A prediction one slice too deep along the third axis: 1 voxel off, so 3 mm where slices are 3 mm apart."""
    y = cube(regions=1)
    pred = y.clone()
    pred[:, :, 2:6, 2:6, 6] = 1
    voxels, millimetres = SubsetTable(["A"]), SubsetTable(["A"])
    voxels.update(["t1"], pred, y)
    millimetres.update(["t1"], pred, y, spacing=[0.5, 0.5, 3.0])
    assert voxels.rows()[0]["HD95 A (voxels)"] == pytest.approx(1.0)
    assert millimetres.rows()[0]["HD95 A (mm)"] == pytest.approx(3.0)
    missed = torch.zeros_like(y)  # nothing predicted: the worst value, the grid diagonal in mm
    millimetres.update(["t2"], missed, y, spacing=[0.5, 0.5, 3.0])
    diagonal_mm = math.sqrt(4**2 + 4**2 + 24**2)
    assert millimetres.rows()[1]["HD95 A (mm)"] == pytest.approx(diagonal_mm)
    assert "HD95 in millimetres" in millimetres.caption and f"{diagonal_mm:.2f} mm" in millimetres.caption
    for scale in (1.5, 2.0, 2.5):  # cases on more grids than a caption lists: their range
        millimetres.update(["t2"], missed, y, spacing=[0.5, 0.5, scale])
    assert f"to {diagonal_mm:.2f} mm over 4 different grids" in millimetres.caption
    with pytest.raises(ValueError, match="in mm"):
        millimetres.update(["t1"], pred, y)  # voxels cannot join a table in mm


def test_spacing_per_case():
    y = cube(2, regions=1)
    pred = y.clone()
    pred[:, :, 2:6, 2:6, 6] = 1
    table = SubsetTable(["A"])
    table.update(["t1"], pred, y, spacing=[[1.0, 1.0, 1.0], [1.0, 1.0, 2.0]])
    (row,) = table.rows()
    assert row["HD95 A (mm)"] == pytest.approx(1.5) and row["HD95 A (mm) sd"] == pytest.approx(math.sqrt(0.5))


def test_empty_reference_and_prediction_score_dice_one_hd95_zero():
    table = SubsetTable(["WT", "ET"])
    y = cube()
    y[:, 1] = 0  # no enhancing tumour in the label, none predicted
    table.update(["t1"], y.clone(), y)
    (row,) = table.rows()
    assert row["Dice ET"] == 1.0 and row["HD95 ET (voxels)"] == 0.0 and row["Dice mean"] == 1.0


def test_false_positive_on_empty_reference_scores_dice_zero_hd95_diagonal():
    table = SubsetTable(["WT", "ET"])
    y = cube()
    y[:, 1] = 0
    table.update(["t1"], cube(), y)  # enhancing tumour predicted where the label has none
    (row,) = table.rows()
    assert row["Dice ET"] == 0.0 and row["HD95 ET (voxels)"] == pytest.approx(DIAGONAL)
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
    assert row["Dice ET"] == pytest.approx(2 / 3) and row["HD95 ET (voxels)"] == pytest.approx(DIAGONAL / 3)
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
    with open(tmp_path / "metrics.csv", encoding="utf-8") as f:
        (logged,) = list(csv.reader(f))
    assert logged[0] == "val_mean_dice" and float(logged[1]) == pytest.approx(row["Dice mean"])


def test_routes_sit_side_by_side_and_the_subset_mean_averages_each_case_over_the_subsets():
    """Two cases, subsets a, b and a+b; a scored along two routes. The mean row of a route takes that route's
    one-modality row: per case the mean over the 3 subsets, then mean and sd over the 2 cases."""
    table = SubsetTable(["A"], hd95=False, subset_mean=True)
    y = cube(2, regions=1)
    empty = torch.zeros_like(y)
    first_only = torch.cat([y[:1], empty[:1]])  # Dice 1 for case 0, 0 for case 1
    table.update(["a"], y, y, route="fused")
    table.update(["b"], empty, y, route="fused")
    table.update(["a", "b"], first_only, y, route="fused")
    table.update(["a"], empty, y, route="branch")
    rows = table.rows()
    assert [(r["modalities"], r["route"]) for r in rows] == [
        ("a", "fused"), ("a", "branch"), ("b", "fused"), ("a+b", "fused"),
        ("mean of 3 subsets", "fused"), ("mean of 3 subsets", "branch"),
    ]  # fmt: skip
    fused, branch = rows[-2], rows[-1]
    # per case (1 + 0 + 1) / 3 and (1 + 0 + 0) / 3 along fused; (0 + 0 + 1) / 3 and 0 along branch
    assert fused["Dice A"] == pytest.approx(0.5) and fused["Dice A sd"] == pytest.approx(math.sqrt(2) / 6)
    assert branch["Dice A"] == pytest.approx(1 / 6) and branch["n"] == 2
    markdown = table.to_markdown()
    assert "| modalities | route | n | Dice A | Dice mean |" in markdown and "mean of K subsets" in markdown
