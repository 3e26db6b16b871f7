"""The demo report's pieces: the figure, the "What was done" section and the facts it is written from."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from medguide.cli.report import _precision, _shown_subsets, run_facts, what_was_done
from medguide.data import make_brats_dataset
from medguide.visualize import label_overlay_figure

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "maml_brats_mri_segmentation" / "configs"
BRATS_CLASSES = {"0": "background", "1": "necrotic core", "2": "oedema", "3": "enhancing tumour"}


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_figure_is_a_large_grid_of_every_subset(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.random((24, 24)) for _ in range(2)]
    label = np.zeros((24, 24), int)
    label[6:18, 6:18], label[9:15, 9:15] = 2, 3
    titles = [f"subset {i}\nDice 0.{i:02d} (TC 0.1, WT 0.2, ET 0.3)" for i in range(15)]
    path = label_overlay_figure(
        images,
        ["flair", "t1ce"],
        [label] * 16,
        ["reference", *titles],
        colors={1: "red", 2: "green", 3: "yellow"},
        legend={1: "necrotic core", 2: "oedema", 3: "enhancing tumour"},
        path=tmp_path / "figure.png",
        title="validation case c1, slice 12 along the third axis",
        rows=[4, 4, 6, 4],
    )
    width, height = png_size(path)
    assert width >= 1200 and height >= 4 * 300  # 6 columns by 4 rows of 3-inch panels
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]  # written atomically, nothing left behind


def test_figure_refuses_rows_that_do_not_hold_the_panels(tmp_path):
    with pytest.raises(ValueError, match="add up"):
        label_overlay_figure(
            [np.zeros((4, 4))], ["t1"], [np.zeros((4, 4))], ["ref"], {}, {}, tmp_path / "f.png", rows=[3]
        )


def test_figure_shows_every_subset_up_to_fifteen_else_states_its_selection():
    subsets, sentence = _shown_subsets(["t1", "t1ce", "t2", "flair"])
    assert len(subsets) == 15 and sentence == "all 15 modality subsets"
    subsets, sentence = _shown_subsets(["a", "b", "c", "d", "e"])
    assert len(subsets) == 11 and ("a", "b", "c", "d", "e") in subsets
    assert "11 of the 31 subsets" in sentence and "the table has every subset" in sentence


def facts(**changes) -> dict:
    return {
        "data": "the folder `/data/brats`",
        "train_cases": 8,
        "validation_cases": 2,
        "split_seed": "0",
        "seed": "0",
        "max_epochs": 20,
        "iterations_per_epoch": 25,
        "batch_size": 2,
        "patch_size": [48, 48, 48],
        "precision": "`auto`: bfloat16 autocast on the CPU",
        "threads": 2,
        "cores": 4,
        "machine": "CPU Intel(R) Xeon(R)",
        "regions": [("TC", "tumour core = NCR + ET"), ("ET", "enhancing tumour")],
    } | changes


def test_what_was_done_names_data_split_training_seed_precision_and_machine():
    text = "\n".join(what_was_done(facts()))
    assert text.startswith("## What was done")
    for piece in (
        "**Data**: the folder `/data/brats`.",
        "8 for training, 2 for validation",
        "20 epochs x 25 iterations = 500 iterations, batch 2, patches of 48 x 48 x 48 voxels",
        "**Seed**: 0",
        "bfloat16 autocast",
        "CPU Intel(R) Xeon(R); 2 PyTorch threads (4 logical cores)",
        "**TC**, tumour core = NCR + ET; **ET**, enhancing tumour.",
    ):
        assert piece in text


def parsed_brats(**overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([CONFIGS / "train.json", CONFIGS / "cpu_scale.json"])
    parser.update(overrides)
    return parser


def test_facts_of_a_given_folder(tmp_path):
    data = make_brats_dataset(tmp_path / "brats", num_cases=5, shape=(16, 16, 16))
    found = run_facts(parsed_brats(dataset_dir=str(data), precision="float32", device="cpu"), BRATS_CLASSES)
    assert found["data"] == f"the folder `{data}`"
    assert (found["train_cases"], found["validation_cases"]) == (4, 1)
    assert found["seed"] == "0" and found["split_seed"] == "0"
    assert (found["max_epochs"], found["iterations_per_epoch"], found["patch_size"]) == (20, 25, [48, 48, 48])
    assert found["precision"] == "`float32`: float32" and found["threads"] >= 1 and found["machine"].startswith("CPU")
    assert [name for name, _ in found["regions"]] == ["TC", "WT", "ET"]
    assert found["regions"][1][1] == "whole tumour = NCR + peritumoural oedema (ED) + ET"


def test_facts_of_synthetic_data_and_other_regions(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the synthetic set is made
    parser = parsed_brats(
        synthetic={"num_cases": 5, "shape": [16, 16, 16]},
        region_names=["lesion", "core"],
        regions=[[1, 2, 3], [3]],
        max_epochs=3,
    )
    found = run_facts(parser, BRATS_CLASSES)
    maker = "medguide.data.make_brats_dataset(seed=0, num_cases=5, shape=[16, 16, 16])"
    assert found["data"].startswith(f"synthetic, in the public layout: `{maker}`")
    assert str(tmp_path) in found["data"] and found["max_epochs"] == 3
    assert found["regions"] == [
        ("lesion", "labels necrotic core + oedema + enhancing tumour"),
        ("core", "label enhancing tumour"),
    ]


def test_precision_line_says_what_the_engines_run_on_cuda_too():
    assert parsed_brats()["precision"] == "auto"  # train.json's default, which cpu_scale.json keeps
    cuda = torch.device("cuda")
    assert _precision(parsed_brats(precision="auto"), cuda) == "`auto`: float16 automatic mixed precision"
    assert _precision(parsed_brats(precision="float32"), cuda) == "`float32`: float32"  # no AMP left behind


def test_the_cases_guidance_changed_show_both_sides_with_their_counts():
    """Per task: how many cases guidance fixed, broke or changed while still wrong, then examples of each kind in
    turn, not the fixed ones first."""
    from medguide.visualize.classification import SHOWN_CASES, _changed_cases

    # one task of 3 classes; truth 0 for every case. I predicts the class of `before`, G(I)+I that of `after`
    before = [1, 1, 1, 1, 0, 0, 0, 2, 1, 0]
    after = [0, 0, 0, 0, 1, 2, 1, 1, 1, 0]  # cases 0-3 fixed, 4-6 broke, 7 still wrong, 8-9 unchanged
    logits = {"I": torch.eye(3)[before], "G(I)+I": torch.eye(3)[after]}
    cases = [f"c{i}" for i in range(10)]
    rows = _changed_cases(cases, logits, torch.zeros(10, 1, dtype=torch.long), {"t": 3}, {"t": ["a", "b", "c"]})
    assert rows[0] == "| | t | | | | fixed 4, broke 3, still wrong 1 |"
    shown = [(row.split(" | ")[0].strip("| "), row.rsplit(" | ", 1)[1].strip(" |")) for row in rows[1:]]
    assert len(shown) == SHOWN_CASES == 5
    assert shown == [("c0", "fixed"), ("c4", "broke"), ("c7", "still wrong"), ("c1", "fixed"), ("c5", "broke")]
