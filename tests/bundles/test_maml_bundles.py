"""What the MAML bundles share: data keys named once in the configs; on each one's tiny run, one branch per
modality in the checkpoint, the missing-modality table as the config declares it and in agreement with the
evaluator's key metric, and predictions with the declared labels in each input's own space; and a few training
steps that beat the untrained network, scored on every declared region."""

from __future__ import annotations

import csv
import itertools
import json
import math
import os
import shutil
import stat

import nibabel as nib
import numpy as np
import pytest
import torch

from tests.bundles.helpers import BUNDLES, configs, make_tiny_data, run_stage, scored_regions, stage_workflow, tiny

MAML = tuple(
    name
    for name in BUNDLES
    if json.loads((configs(name) / "train.json").read_text(encoding="utf-8"))["network_def"]["_target_"]
    == "medguide.networks.MAMLNet"
)

pytestmark = pytest.mark.parametrize("name", MAML)

# new names for every data key id the configs declare
RENAMED = {"image_key": "img", "label_key": "seg", "modality_key": "mods", "case_key": "id"}
# 60 iterations of the tiny network on its tiny data at 5x the bundle's learning rate, and the margin of mean Dice
# the trained network must keep over the untrained one. Margins measured on 2026-11-30 (2-core Xeon with AMX): data
# seeds 0-4 with precision auto (bfloat16 here) BraTS 0.18-0.54, liver 0.22-0.33; seeds 0-2 with float32 (CPUs
# without bfloat16) BraTS 0.43-0.54, liver 0.19-0.32. 30 iterations (in float32) or the bundle's own rate (in
# bfloat16) left the liver network predicting only background on a seed.
LEARN = {"iterations_per_epoch": 20, "max_epochs": 3, "val_interval": 3, "learning_rate": 0.05}
LEARN_SEED = 0
MARGIN = 0.1


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


def test_data_keys_are_named_once(tmp_path, name):
    """Every data key renamed at the top of the configs (and in the datalist): every transform follows."""
    data = make_tiny_data(name, tmp_path / "data")
    composes = {"train": ("train#preprocessing", "validate#preprocessing"), "inference": ("preprocessing",)}
    for stage, ids in composes.items():
        workflow = stage_workflow(name, stage, **tiny(name), bundle_root=str(tmp_path / "run"), dataset_dir=str(data))
        parser = workflow.parser
        keys = {key: new for key, new in RENAMED.items() if key in parser}
        assert {"image_key", "modality_key", "case_key"} <= set(keys), f"{stage}: data keys {sorted(keys)}"
        renames = {parser[key]: new for key, new in keys.items()}
        for key, new in keys.items():
            parser[key] = new
        parser["datalist_as_read"] = parser["datalist"]
        parser["datalist"] = f"$[{{{renames!r}.get(k, k): v for k, v in item.items()}} for item in @datalist_as_read]"
        workflow.initialize()
        datalist = parser.get_parsed_content("datalist")
        for compose in ids:
            item = parser.get_parsed_content(compose)(datalist[0])
            item = item[0] if isinstance(item, list) else item  # a random crop gives a list of samples
            assert set(keys.values()) <= set(item) and not set(renames) & set(item), f"{compose}: {sorted(item)}"
            assert isinstance(item[keys["image_key"]], torch.Tensor) and item[keys["image_key"]].meta["case"]


@pytest.mark.slow
def test_the_checkpoint_has_one_branch_per_modality_and_the_fusion(tiny_run, name):
    run = tiny_run(name)
    modalities = run.parsers["train"].get_parsed_content("modalities")
    state = torch.load(run.root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith(f"branches.{len(modalities) - 1}.") for k in state)
    assert not any(k.startswith(f"branches.{len(modalities)}.") for k in state)
    assert any(k.startswith("fusion.") for k in state)


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_few_training_steps_beat_the_untrained_network(tmp_path, name):
    """The tiny network trained for ``LEARN`` on its easy synthetic set against the same network untrained, both
    scored by the evaluate overlay, with every declared region scored and present. A config that drops a label or
    splits the regions under other names, or a network that learns nothing (all background), fails here; bounds
    on the Dice alone would not."""
    data = make_tiny_data(name, tmp_path / "data", seed=LEARN_SEED)
    values = {**tiny(name), **LEARN, "dataset_dir": str(data)}
    trained, untrained = tmp_path / "trained", tmp_path / "untrained"
    run_stage(name, "train", **values, bundle_root=str(trained))
    # the same network untrained: built afresh from the settings the training saved beside its weights
    (untrained / "models").mkdir(parents=True)
    shutil.copy(trained / "models" / "network.json", untrained / "models" / "network.json")
    torch.manual_seed(0)
    fresh = stage_workflow(name, "evaluate", **values, bundle_root=str(untrained)).parser
    torch.save(fresh.get_parsed_content("network_def").state_dict(), untrained / "models" / "model.pt")
    for root in (trained, untrained):
        parser = run_stage(name, "evaluate", **values, bundle_root=str(root))
    regions = parser.get_parsed_content("region_names")
    (key_metric,) = parser["validate#key_metric"]
    per_region = [f"val_{region.lower()}_dice" for region in regions]
    scores = {}
    for run in ("trained", "untrained"):
        eval_dir = tmp_path / run / "eval"
        assert all(f"Dice {region}" in read_table(eval_dir)[-1] for region in regions)
        scores[run] = metrics = read_metrics(eval_dir)
        assert set(per_region) <= set(metrics), f"{run}: regions {regions}, metrics {sorted(metrics)}"
        # the regions split as declared: their mean is the key metric
        assert sum(metrics[m] for m in per_region) / len(regions) == pytest.approx(metrics[key_metric], abs=1e-6)
    # every region is in the reference the metrics see: an empty one (a dropped label) scores 1 when not predicted
    _, voxels = scored_regions(name, data, tmp_path / "reference")
    assert all(voxels.values()), f"reference voxels per region: {voxels}"
    margin = scores["trained"][key_metric] - scores["untrained"][key_metric]
    assert margin >= MARGIN, f"{key_metric}: trained {scores['trained']}, untrained {scores['untrained']}"
