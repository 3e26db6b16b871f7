"""The BraTS MAML bundle's own cases: TC, WT and ET as the metrics score them, BraTS 2023 label names, real BraTS
files, bad cases and output folders, memory estimates, two CPU processes, and repeatable training. What it shares
with the other bundles is in ``test_config_workflow.py`` and ``test_maml_bundles.py``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medguide.data import brats_datalist
from tests.bundles.helpers import (
    bundle,
    bundle_fails,
    bundle_in_two_processes,
    config_list,
    configs,
    make_tiny_data,
    overrides,
    run_tiny,
    scored_regions,
    tiny,
)

NAME = "maml_brats_mri_segmentation"
CONFIGS = configs(NAME)
TINY = tiny(NAME)


@pytest.mark.parametrize("naming, et", [("2021", 4), ("2023", 3)])
def test_the_scored_regions_are_tc_wt_et_of_the_file_labels(tmp_path, naming, et):
    """The config's label map and regions end to end, for either release's ET label: a mapped or dropped label
    changes what a region counts, which a trained-vs-untrained margin would not see."""
    data = make_tiny_data(NAME, tmp_path / "data", naming=naming, num_cases=1)
    item, scored = scored_regions(NAME, data, tmp_path)
    labels = np.asarray(nib.load(item["label"]).dataobj)
    expected = {"TC": [1, et], "WT": [1, 2, et], "ET": [et]}
    assert scored == {region: int(np.isin(labels, values).sum()) for region, values in expected.items()}
    assert all(scored.values())


@pytest.mark.slow
def test_brats_2023_files_train_and_get_2023_labels(tmp_path):
    """ET is label 3 in BraTS 2023 (4 before): labels read (a 3 is no error) and written follow the files' naming."""
    run = run_tiny(NAME, tmp_path, stages=("train", "inference"), naming="2023")
    assert run.parsers["inference"].get_parsed_content("output_label_values") == [0, 1, 2, 3]
    for output in (run.root / "predictions").glob("*_seg.nii.gz"):
        assert set(np.unique(np.asarray(nib.load(output).dataobj)).tolist()) <= {0, 1, 2, 3}


@pytest.mark.parametrize(
    "folder, present",
    [("brats2023-gli-4seq-brainles", 4), ("brats2015-deepmedic", 2)],
    ids=["brats2023-all-four", "brats2015-flair-t1c"],
)
@pytest.mark.slow
def test_inference_on_real_brats_cases(tiny_run, sample_data, tmp_path, folder, present):
    common = tiny_run(NAME).common
    source = sample_data / folder
    if not source.is_dir():
        pytest.skip(f"{source} is not in the sample data")
    out = tmp_path / "out"
    bundle(
        "run",
        "--config_file",
        str(CONFIGS / "inference.json"),
        # one window over the cropped brain: much faster on a CPU than eight overlapping 128^3 ones
        *overrides(
            {
                "num_workers": 0,
                **common,
                "dataset_dir": str(source),
                "output_dir": str(out),
                "patch_size": [160, 192, 160],
            }
        ),
    )
    cases = brats_datalist(source, require_label=False, require_all=False)
    for case in cases:
        assert len(case["modalities"]) >= present if present == 4 else len(case["modalities"]) == present
        reference = nib.load(case["image"][0])
        output = out / f"{case['case']}_seg.nii.gz"
        assert output.is_file(), f"no prediction for {case['case']}: {sorted(p.name for p in out.iterdir())}"
        predicted = nib.load(output)
        assert predicted.shape == reference.shape
        np.testing.assert_allclose(predicted.affine, reference.affine, atol=1e-4)


@pytest.mark.slow
def test_a_bad_case_is_named_and_skip_invalid_trains_past_it(tmp_path):
    data = make_tiny_data(NAME, tmp_path / "data", seed=2, num_cases=5)
    broken = data / "BraTS2021_00003" / "BraTS2021_00003_t2.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated download
    common = {**TINY, "bundle_root": str(tmp_path / "run"), "dataset_dir": str(data), "max_epochs": 1}
    with pytest.raises(AssertionError) as failure:
        bundle("run", "--config_file", str(CONFIGS / "train.json"), *overrides(common))
    assert "BraTS2021_00003" in str(failure.value) and "BraTS2021_00003_t2.nii.gz" in str(failure.value)
    result = bundle("run", "--config_file", str(CONFIGS / "train.json"), *overrides({**common, "skip_invalid": True}))
    assert "BraTS2021_00003" in result.stdout + result.stderr  # logged as skipped
    assert (tmp_path / "run" / "models" / "model.pt").is_file()


@pytest.mark.slow
def test_two_cpu_processes_train_together(tmp_path):
    """The multi-GPU overlay on CPU: torchrun with two processes and the gloo backend."""
    data = make_tiny_data(NAME, tmp_path / "data", seed=4, num_cases=10)  # 2 validate: one per rank
    files = config_list(CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json")
    args = [
        "--config_file",
        files,
        *overrides({**TINY, "max_epochs": 1, "bundle_root": str(tmp_path / "run"), "dataset_dir": str(data)}),
    ]
    result = bundle_in_two_processes("run", *args)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    # channels-last weights whose gradients DDP would have to copy into its buckets at every step
    assert "Grad strides do not match bucket view strides" not in result.stderr


def _infer(common: dict, **values) -> list[str]:
    """The inference command's arguments on the trained tiny bundle, with ``values`` overridden."""
    return ["run", "--config_file", str(CONFIGS / "inference.json"), *overrides({**TINY, **common, **values})]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_an_output_folder_inside_the_data_is_refused_and_the_reference_kept(tiny_run, tmp_path):
    run = tiny_run(NAME)
    data, common = run.data, run.common
    case = sorted(p for p in data.iterdir() if p.is_dir())[0]
    reference = case / f"{case.name}_seg.nii.gz"
    before = _digest(reference)
    for output_dir, allow in ((case, False), (data, False), (case, True)):
        last = bundle_fails(*_infer(common, output_dir=str(output_dir), allow_output_in_data=allow))
        assert str(output_dir) in last and (str(data) in last or str(reference) in last), last[-2000:]
        assert "Failed to evaluate" not in last.splitlines()[-1]
    assert _digest(reference) == before and not list(case.glob(".*"))
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in data.iterdir() if p.is_dir())


@pytest.mark.slow
def test_one_bad_case_is_named_last_or_skipped_and_the_good_ones_predicted(tiny_run, tmp_path):
    run = tiny_run(NAME)
    data, common = run.data, run.common
    cases = sorted(p for p in data.iterdir() if p.is_dir())[:2]
    inputs = tmp_path / "inputs"
    for case in cases:
        shutil.copytree(case, inputs / case.name, ignore=shutil.ignore_patterns("*_seg.nii.gz"))
    broken = inputs / cases[0].name / f"{cases[0].name}_t1ce.nii.gz"
    broken.write_bytes(broken.read_bytes()[:300])  # a truncated copy
    out = tmp_path / "out"
    last = bundle_fails(*_infer(common, dataset_dir=str(inputs), output_dir=str(out)))
    assert cases[0].name in last.splitlines()[-1] and broken.name in last.splitlines()[-1], last[-2000:]
    assert len(last.splitlines()) < 10, last  # the message, not a 250-line traceback
    last = bundle_fails(*_infer(common, dataset_dir=str(inputs), output_dir=str(out), skip_invalid=True))
    assert (out / f"{cases[1].name}_seg.nii.gz").is_file() and not (out / f"{cases[0].name}_seg.nii.gz").exists()
    assert "1 of 2 cases were skipped" in last and broken.name in last.splitlines()[-1], last[-2000:]


@pytest.mark.slow
def test_a_one_slice_volume_gets_a_one_slice_prediction(tiny_run, tmp_path):
    common = tiny_run(NAME).common
    source = make_tiny_data(NAME, tmp_path / "thick", seed=3, num_cases=1, shape=(40, 40, 8))
    (case,) = [p for p in source.iterdir() if p.is_dir()]
    inputs = tmp_path / "inputs" / case.name
    inputs.mkdir(parents=True)
    for file in (f for f in case.glob("*.nii.gz") if not f.name.endswith("_seg.nii.gz")):
        image = nib.load(file)
        nib.save(nib.Nifti1Image(np.asarray(image.dataobj)[:, :, 4:5], image.affine), inputs / file.name)
    out = tmp_path / "out"
    bundle(*_infer(common, dataset_dir=str(inputs.parent), output_dir=str(out)))
    predicted = nib.load(out / f"{case.name}_seg.nii.gz")
    assert predicted.shape == (40, 40, 1)
    np.testing.assert_allclose(predicted.affine, nib.load(inputs / f"{case.name}_flair.nii.gz").affine, atol=1e-4)


def test_the_official_recipe_stops_with_a_memory_estimate_instead_of_being_killed(tmp_path):
    """train.json's own 128^3, batch 2, 6-stage settings against an 8 GiB limit: one message, before training."""
    data = make_tiny_data(NAME, tmp_path / "data")
    values = {"bundle_root": str(tmp_path / "run"), "dataset_dir": str(data), "num_workers": 0, "memory_limit": 8}
    last = bundle_fails("run", "--config_file", str(CONFIGS / "train.json"), *overrides(values))
    message = last.splitlines()[-1]
    assert "training needs about" in message and "8.0 GiB" in message, last[-3000:]
    assert "patch [128, 128, 128], batch 2" in message and "cpu_scale.json" in message
    assert not list((tmp_path / "run").rglob("*.pt"))


@pytest.mark.slow
def test_inference_stops_with_a_memory_estimate_when_it_cannot_fit(tiny_run, tmp_path):
    common = tiny_run(NAME).common
    last = bundle_fails(*_infer(common, output_dir=str(tmp_path / "out"), memory_limit=0.01))
    assert "inference needs about" in last.splitlines()[-1] and "patch_size" in last.splitlines()[-1], last[-3000:]
    assert not list((tmp_path / "out").glob("*.nii.gz"))


@pytest.mark.slow
def test_the_same_seed_and_command_train_the_same_weights(tmp_path):
    """Two runs of one command, with data loader workers and random augmentation: identical weights."""
    data = make_tiny_data(NAME, tmp_path / "data")
    states = []
    for run in ("a", "b"):
        values = {**TINY, "num_workers": 2, "bundle_root": str(tmp_path / run), "dataset_dir": str(data)}
        bundle("run", "--config_file", str(CONFIGS / "train.json"), *overrides(values))
        states.append(torch.load(tmp_path / run / "models" / "model.pt", map_location="cpu", weights_only=True))
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    settings = json.loads((tmp_path / "a" / "models" / "network.json").read_text(encoding="utf-8"))
    assert settings["bundle"] == NAME
    assert settings["settings"] == {
        "modalities": ["t1", "t1ce", "t2", "flair"],
        "num_classes": 4,
        "base_width": TINY["base_width"],
        "num_stages": TINY["num_stages"],
        "patch_size": TINY["patch_size"],
        "single_modality": "branch",
    }
