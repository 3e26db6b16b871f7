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
from monai.bundle import ConfigParser

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
# 60 iterations of the tiny network on its tiny data at the bundle's (nnU-Net's) learning rate, and the margin of
# mean Dice the trained network must keep over the untrained one. With He initialisation and the faulted synthetic
# data (issue 12), 5x that rate (the earlier setting, margins 0.18-0.54 then) drove the tiny liver network to all
# background on data seed 0; at 1x both bundles pass on seed 0 (2026-11-30, 2-core Xeon with AMX).
LEARN = {"iterations_per_epoch": 20, "max_epochs": 3, "val_interval": 3, "learning_rate": 0.01}
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
    """Every subset, each single modality along every configured route beside each other, then the mean over the
    subsets per route; the row of every modality is the evaluator's key metric."""
    run = tiny_run(name)
    parser = run.parsers["evaluate"]
    modalities = parser.get_parsed_content("modalities")
    regions = parser.get_parsed_content("region_names")
    routes = parser.get_parsed_content("single_modality_routes")
    eval_dir = run.root / "eval"
    rows = read_table(eval_dir)
    subsets = [s for k in range(1, len(modalities) + 1) for s in itertools.combinations(modalities, k)]
    expected = [("+".join(s), route) for s in subsets for route in (routes if len(s) == 1 else ["fused"])]
    expected += [(f"mean of {len(subsets)} subsets", route) for route in routes]
    assert [(row["modalities"], row["route"]) for row in rows] == expected
    cases = len(parser.get_parsed_content("validate#datalist"))
    for row in rows:
        assert int(row["n"]) == cases
        assert all(f"Dice {region}" in row for region in regions), f"regions {regions}, columns {list(row)}"
        for column, value in row.items():
            if column not in ("modalities", "route") and not column.endswith(" sd"):
                assert math.isfinite(float(value)), f"{row['modalities']}: {column} is {value}"
    # the table's full-modality row and the evaluator's key metric are two computations of one number
    (key_metric,) = parser["validate#key_metric"]
    (full,) = [row for row in rows if row["modalities"] == "+".join(modalities)]
    dice = [float(full[f"Dice {region}"]) for region in regions]
    assert sum(dice) / len(dice) == pytest.approx(read_metrics(eval_dir)[key_metric], abs=1e-6)


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
        assert all(f"Dice {region}" in read_table(eval_dir)[0] for region in regions)
        scores[run] = metrics = read_metrics(eval_dir)
        assert set(per_region) <= set(metrics), f"{run}: regions {regions}, metrics {sorted(metrics)}"
        # the regions split as declared: their mean is the key metric
        assert sum(metrics[m] for m in per_region) / len(regions) == pytest.approx(metrics[key_metric], abs=1e-6)
    # every region is in the reference the metrics see: an empty one (a dropped label) scores 1 when not predicted
    _, voxels = scored_regions(name, data, tmp_path / "reference")
    assert all(voxels.values()), f"reference voxels per region: {voxels}"
    margin = scores["trained"][key_metric] - scores["untrained"][key_metric]
    assert margin >= MARGIN, f"{key_metric}: trained {scores['trained']}, untrained {scores['untrained']}"


def test_the_route_and_the_mutual_options_reach_the_network_and_the_loss(name):
    """``single_modality`` (inference and evaluation) picks the network's one-modality output; the mutual term's
    options reach the loss, off by default as in the official code, and the trainer tells the loss its progress,
    which a ramp needs."""
    settings = {key: tiny(name)[key] for key in ("base_width", "num_stages")}
    for stage, files in (("train", ["train.json"]), ("inference", ["inference.json"])):
        parser = ConfigParser()
        parser.read_config([str(configs(name) / f) for f in files])
        if stage == "train":
            assert parser["single_modality"] in ("fused", "branch")
        parser.update({**settings, "single_modality": "branch"})
        if stage == "inference":
            parser.update({"modalities": ["a", "b"], "num_classes": 3})
        network = parser.get_parsed_content("network_def")
        assert network.single_modality == "branch", stage
    # the route a model was trained (and chosen) with is saved beside it and is what inference runs by default
    train = ConfigParser()
    train.read_config(str(configs(name) / "train.json"))
    assert train["network_settings"]["single_modality"] == "@single_modality"
    inference = ConfigParser()
    inference.read_config(str(configs(name) / "inference.json"))
    inference.update({"trained": {"single_modality": "branch", "modalities": ["a", "b"], "num_classes": 3, **settings}})
    assert inference.get_parsed_content("network_def").single_modality == "branch"
    parser = ConfigParser()
    parser.read_config(str(configs(name) / "train.json"))
    loss = parser.get_parsed_content("loss")
    assert loss.mutual_weight == 0 and loss.current_mutual_weight() == 0
    parser.update({"mutual_weight": 0.1, "mutual_direction": "fused_to_branches", "mutual_ramp_up": 0.5})
    loss = parser.get_parsed_content("loss", instantiate=True, lazy=False)
    assert (loss.mutual_weight, loss.mutual_direction, loss.mutual_ramp_up) == (0.1, "fused_to_branches", 0.5)
    progress = [h for h in parser["train#handlers"] if h["_target_"] == "medguide.losses.TrainingProgress"]
    assert progress == [{**progress[0], "loss": "@loss"}]
    evaluate = ConfigParser()
    evaluate.read_config([str(configs(name) / f) for f in ("train.json", "evaluate.json")])
    assert set(evaluate["single_modality_routes"]) == {"fused", "branch"}
