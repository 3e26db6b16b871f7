"""What every bundle meets: required workflow properties, valid metadata, a network that matches it, and
train -> evaluate -> infer in-process through ``ConfigWorkflow``, as Python users run them."""

from __future__ import annotations

from functools import partial

import pytest
from monai.bundle import ConfigWorkflow

from medguide.data import make_brats_dataset, make_liver_dataset
from tests.bundles.helpers import BUNDLES, SCHEMA, TINY, bundle, configs, verify_network

TRAIN = {**TINY, "iterations_per_epoch": 1, "max_epochs": 1, "val_interval": 1, "batch_size": 1}


@pytest.mark.parametrize("name", BUNDLES)
def test_workflow_properties(tmp_path, name):
    for config, kind in (("train.json", "train"), ("inference.json", "infer")):
        workflow = ConfigWorkflow(
            config_file=str(configs(name) / config), workflow_type=kind, bundle_root=str(tmp_path), **TINY
        )
        workflow.initialize()
        assert not workflow.check_properties(), f"{config} is missing required properties"


@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"MONAI metadata schema not found at {SCHEMA}")
@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_is_valid(name):
    bundle("verify_metadata", "--meta_file", str(configs(name) / "metadata.json"), "--filepath", str(SCHEMA))


@pytest.mark.parametrize("name", BUNDLES)
def test_network_matches_its_metadata(name):
    verify_network(configs(name), {"num_stages": 3, "base_width": 4})


@pytest.mark.parametrize(
    "bundle, make, tables, written_labels",
    [
        ("maml_brats_mri_segmentation", make_brats_dataset, 15, [0, 1, 2, 4]),
        # ET is label 3 in BraTS 2023 (4 before): labels read and written follow the files' naming
        ("maml_brats_mri_segmentation", partial(make_brats_dataset, naming="2023"), 15, [0, 1, 2, 3]),
        ("maml_liver_tumor_ct_segmentation", make_liver_dataset, 3, None),
    ],
    ids=["brats", "brats2023", "liver"],
)
def test_train_evaluate_infer_in_process(tmp_path, bundle, make, tables, written_labels):
    data = make(tmp_path / "data", num_cases=4, shape=(32, 32, 32), seed=3)
    common = {"bundle_root": str(tmp_path / "run"), "dataset_dir": str(data)}
    folder = configs(bundle)
    runs = [
        ([folder / "train.json"], "train", TRAIN),
        ([folder / "train.json", folder / "evaluate.json"], "train", TINY),  # an overlay on train.json
        ([folder / "inference.json"], "infer", TINY),
    ]
    for files, kind, overrides in runs:
        workflow = ConfigWorkflow(config_file=[str(f) for f in files], workflow_type=kind, **overrides, **common)
        workflow.initialize()
        assert not workflow.check_properties()
        workflow.run()
        workflow.finalize()
    if written_labels is not None:
        assert workflow.parser.get_parsed_content("output_label_values") == written_labels
    eval_dir = tmp_path / "run" / "eval"
    assert len((eval_dir / "missing_modality_table.csv").read_text(encoding="utf-8").strip().splitlines()) == tables + 1
    assert list((tmp_path / "run" / "predictions").glob("*_seg.nii.gz"))
