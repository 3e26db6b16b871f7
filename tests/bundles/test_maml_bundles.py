"""What the MAML bundles share, on each one's tiny run: one branch per modality in the checkpoint, the
missing-modality table as the config declares it and in agreement with the evaluator's key metric, and
predictions with the declared labels in each input's own space."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import stat

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.bundles.helpers import BUNDLES, configs

MAML = tuple(
    name
    for name in BUNDLES
    if json.loads((configs(name) / "train.json").read_text(encoding="utf-8"))["network_def"]["_target_"]
    == "medguide.networks.MAMLNet"
)

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("name", MAML)]


def read_table(eval_dir) -> list[dict]:
    """The rows of the missing-modality table (the CSV), checked to match the markdown copy row for row."""
    with open(eval_dir / "missing_modality_table.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    markdown = (eval_dir / "missing_modality_table.md").read_text(encoding="utf-8").splitlines()
    assert len([line for line in markdown if line.startswith("|")]) == len(rows) + 2  # header, rule
    return rows


def read_metrics(eval_dir) -> dict[str, float]:
    """MONAI's ``MetricsSaver`` summary: ``name,value`` lines."""
    with open(eval_dir / "metrics.csv", encoding="utf-8", newline="") as f:
        return {name: float(value) for name, value in csv.reader(f)}


def test_the_checkpoint_has_one_branch_per_modality_and_the_fusion(tiny_run, name):
    run = tiny_run(name)
    modalities = run.parsers["train"].get_parsed_content("modalities")
    state = torch.load(run.root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith(f"branches.{len(modalities) - 1}.") for k in state)
    assert not any(k.startswith(f"branches.{len(modalities)}.") for k in state)
    assert any(k.startswith("fusion.") for k in state)


def test_the_table_scores_every_subset_and_the_full_row_is_the_key_metric(tiny_run, name):
    run = tiny_run(name)
    parser = run.parsers["evaluate"]
    modalities = parser.get_parsed_content("modalities")
    regions = parser.get_parsed_content("region_names")
    eval_dir = run.root / "eval"
    rows = read_table(eval_dir)
    subsets = ["+".join(s) for k in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, k)]
    assert [row["modalities"] for row in rows] == subsets
    cases = len(parser.get_parsed_content("validate#datalist"))
    for row in rows:
        assert int(row["n"]) == cases
        assert all(f"Dice {region}" in row for region in regions), f"regions {regions}, columns {list(row)}"
        for column, value in row.items():
            if column != "modalities" and not column.endswith(" sd"):
                assert math.isfinite(float(value)), f"{row['modalities']}: {column} is {value}"
    # the table's full-modality row and the evaluator's key metric are two computations of one number
    (key_metric,) = parser["validate#key_metric"]
    full = [float(rows[-1][f"Dice {region}"]) for region in regions]
    assert sum(full) / len(full) == pytest.approx(read_metrics(eval_dir)[key_metric], abs=1e-6)


def test_predictions_have_the_declared_labels_in_the_input_space(tiny_run, name):
    run = tiny_run(name)
    parser = run.parsers["inference"]
    out = run.root / "predictions"
    postfix = parser.get_parsed_content("output_postfix")
    if "output_label_values" in parser:
        labels = set(parser.get_parsed_content("output_label_values"))
    else:
        labels = set(range(parser.get_parsed_content("num_classes")))
    umask = os.umask(0)
    os.umask(umask)
    cases = parser.get_parsed_content("datalist")
    assert cases
    for case in cases:
        output = out / f"{case['case']}_{postfix}.nii.gz"
        assert output.is_file(), f"no prediction for {case['case']}: {sorted(p.name for p in out.iterdir())}"
        reference, predicted = nib.load(case["image"][0]), nib.load(output)
        assert predicted.shape == reference.shape
        np.testing.assert_allclose(predicted.affine, reference.affine, atol=1e-4)
        assert set(np.unique(np.asarray(predicted.dataobj)).tolist()) <= labels
        # readable by whoever the umask allows, as any new file (the temporary file's 0600 used to stay)
        assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~umask
    assert not list(out.glob(".*")), "temporary files were left behind"
