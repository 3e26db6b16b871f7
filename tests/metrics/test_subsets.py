"""The missing-modality table."""

from __future__ import annotations

import math

import torch

from medguide.metrics import SubsetTable, nonempty_subsets


def test_fifteen_subsets_of_four():
    subsets = nonempty_subsets(["t1", "t1ce", "t2", "flair"])
    assert len(subsets) == 15 and subsets[0] == ("t1",) and subsets[-1] == ("t1", "t1ce", "t2", "flair")


def test_table_values_and_files(tmp_path):
    table = SubsetTable(["A", "B"])
    y = torch.zeros(2, 2, 8, 8, 8)
    y[:, :, 2:6, 2:6, 2:6] = 1
    half = y.clone()
    half[:, 1, 2:4] = 0  # region B predicted on half its voxels: Dice 2 * 32 / (32 + 64) = 2/3
    table.update(["t1"], half, y)
    empty = y.clone()
    empty[:, 1] = 0  # region B not predicted at all: Dice 0, HD95 undefined
    table.update(["t1", "t2"], empty, y)
    rows = {row["modalities"]: row for row in table.rows()}
    assert rows["t1"]["n"] == 2
    assert rows["t1"]["Dice A"] == 1.0 and abs(rows["t1"]["Dice B"] - 2 / 3) < 1e-6
    assert rows["t1+t2"]["Dice B"] == 0.0 and math.isnan(rows["t1+t2"]["HD95 B"])
    csv_path, md_path = table.save(tmp_path)
    assert csv_path.read_text().splitlines()[0].startswith("modalities,n,Dice A,Dice B,HD95 A,HD95 B")
    assert "| t1+t2 | 2 | 1.000 | 0.000 | 0.000 | n/a |" in md_path.read_text()
    assert not list(tmp_path.glob(".*"))
