"""The BraTS MAML bundle end to end on tiny synthetic data, its metadata and exports, and real BraTS files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medguide.data import make_brats_dataset
from tests.bundles.helpers import (
    REPO,
    TINY,
    TRAIN,
    bundle,
    bundle_fails,
    config_list,
    configs,
    evaluate_table,
    export_matches_network,
    overrides,
    train_tiny,
)

CONFIGS = configs("maml_brats_mri_segmentation")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A bundle root holding a model trained for a few iterations on 5 synthetic 32^3 cases."""
    data = make_brats_dataset(tmp_path_factory.mktemp("brats"), num_cases=5, shape=(32, 32, 32), seed=1)
    root = tmp_path_factory.mktemp("bundle")
    return root, data, train_tiny(data, root, CONFIGS)


def test_train_writes_a_checkpoint_that_loads_on_cpu(trained):
    root, _, _ = trained
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("branches.3.") for k in state) and any(k.startswith("fusion.") for k in state)


def test_evaluate_writes_the_missing_modality_table(trained):
    rows = evaluate_table(CONFIGS, trained[2])
    assert len(rows) == 15  # every non-empty subset of four sequences
    assert rows[-1]["modalities"] == "t1+t1ce+t2+flair"
    for row in rows:
        for region in ("TC", "WT", "ET"):
            assert 0.0 <= float(row[f"Dice {region}"]) <= 1.0


def test_inference_writes_brats_labels_in_the_input_space(trained):
    root, data, common = trained
    bundle("run", "--config_file", str(CONFIGS / "inference.json"), *overrides({"num_workers": 0, **common}))
    outputs = sorted((root / "predictions").glob("*_seg.nii.gz"))
    assert len(outputs) == 5
    for output in outputs:
        case = output.name[: -len("_seg.nii.gz")]
        reference = nib.load(data / case / f"{case}_flair.nii.gz")
        predicted = nib.load(output)
        assert predicted.shape == reference.shape
        np.testing.assert_allclose(predicted.affine, reference.affine, atol=1e-4)
        assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1, 2, 4}
        # readable by whoever the umask allows, as any new file (the temporary file's 0600 used to stay)
        umask = os.umask(0)
        os.umask(umask)
        assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~umask
    assert not list((root / "predictions").glob(".*.nii.gz")), "temporary files were left behind"


def test_torchscript_export_gives_the_same_output(trained, tmp_path):
    root, _, _ = trained
    export_matches_network(CONFIGS, root / "models" / "model.pt", 4, TINY, tmp_path / "model.ts")


@pytest.mark.parametrize(
    "folder, present",
    [("brats2023-gli-4seq-brainles", 4), ("brats2015-deepmedic", 2)],
    ids=["brats2023-all-four", "brats2015-flair-t1c"],
)
def test_inference_on_real_brats_cases(trained, sample_data, tmp_path, folder, present):
    root, _, common = trained
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
    from medguide.data import brats_datalist

    cases = brats_datalist(source, require_label=False, require_all=False)
    for case in cases:
        assert len(case["modalities"]) >= present if present == 4 else len(case["modalities"]) == present
        reference = nib.load(case["image"][0])
        output = out / f"{case['case']}_seg.nii.gz"
        assert output.is_file(), f"no prediction for {case['case']}: {sorted(p.name for p in out.iterdir())}"
        predicted = nib.load(output)
        assert predicted.shape == reference.shape
        np.testing.assert_allclose(predicted.affine, reference.affine, atol=1e-4)


def test_a_bad_case_is_named_and_skip_invalid_trains_past_it(tmp_path):
    data = make_brats_dataset(tmp_path / "data", num_cases=5, shape=(32, 32, 32), seed=2)
    broken = data / "BraTS2021_00003" / "BraTS2021_00003_t2.nii.gz"
    broken.write_bytes(broken.read_bytes()[:200])  # a truncated download
    common = {**TRAIN, "bundle_root": str(tmp_path / "run"), "dataset_dir": str(data), "max_epochs": 1}
    with pytest.raises(AssertionError) as failure:
        bundle("run", "--config_file", str(CONFIGS / "train.json"), *overrides(common))
    assert "BraTS2021_00003" in str(failure.value) and "BraTS2021_00003_t2.nii.gz" in str(failure.value)
    result = bundle("run", "--config_file", str(CONFIGS / "train.json"), *overrides({**common, "skip_invalid": True}))
    assert "BraTS2021_00003" in result.stdout + result.stderr  # logged as skipped
    assert (tmp_path / "run" / "models" / "model.pt").is_file()


def test_two_cpu_processes_train_together(tmp_path):
    """The multi-GPU overlay on CPU: torchrun with two processes and the gloo backend."""
    data = make_brats_dataset(tmp_path / "data", num_cases=10, shape=(32, 32, 32), seed=4)  # 2 validate: one per rank
    files = config_list(CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json")
    args = [
        "--config_file",
        files,
        *overrides({**TRAIN, "max_epochs": 1, "bundle_root": str(tmp_path / "run"), "dataset_dir": str(data)}),
    ]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "-m", "monai.bundle", "run", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    # channels-last weights whose gradients DDP would have to copy into its buckets at every step
    assert "Grad strides do not match bucket view strides" not in result.stderr


def _infer(common: dict, **values) -> list[str]:
    """The inference command's arguments on the trained tiny bundle, with ``values`` overridden."""
    return ["run", "--config_file", str(CONFIGS / "inference.json"), *overrides({**TINY, **common, **values})]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_output_folder_inside_the_data_is_refused_and_the_reference_kept(trained, tmp_path):
    _, data, common = trained
    case = sorted(p for p in data.iterdir() if p.is_dir())[0]
    reference = case / f"{case.name}_seg.nii.gz"
    before = _digest(reference)
    for output_dir, allow in ((case, False), (data, False), (case, True)):
        last = bundle_fails(*_infer(common, output_dir=str(output_dir), allow_output_in_data=allow))
        assert str(output_dir) in last and (str(data) in last or str(reference) in last), last[-2000:]
        assert "Failed to evaluate" not in last.splitlines()[-1]
    assert _digest(reference) == before and not list(case.glob(".*"))
    assert sorted(p.name for p in data.iterdir()) == sorted(p.name for p in data.iterdir() if p.is_dir())


def test_one_bad_case_is_named_last_or_skipped_and_the_good_ones_predicted(trained, tmp_path):
    _, data, common = trained
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


def test_a_one_slice_volume_gets_a_one_slice_prediction(trained, tmp_path):
    _, _, common = trained
    source = make_brats_dataset(tmp_path / "thick", num_cases=1, shape=(40, 40, 8), seed=3)
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


def test_the_official_recipe_stops_with_a_memory_estimate_instead_of_being_killed(trained, tmp_path):
    """train.json's own 128^3, batch 2, 6-stage settings against an 8 GiB limit: one message, before training."""
    _, data, _ = trained
    values = {"bundle_root": str(tmp_path / "run"), "dataset_dir": str(data), "num_workers": 0, "memory_limit": 8}
    last = bundle_fails("run", "--config_file", str(CONFIGS / "train.json"), *overrides(values))
    message = last.splitlines()[-1]
    assert "training needs about" in message and "8.0 GiB" in message, last[-3000:]
    assert "patch [128, 128, 128], batch 2" in message and "cpu_scale.json" in message
    assert not list((tmp_path / "run").rglob("*.pt"))


def test_inference_stops_with_a_memory_estimate_when_it_cannot_fit(trained, tmp_path):
    _, _, common = trained
    last = bundle_fails(*_infer(common, output_dir=str(tmp_path / "out"), memory_limit=0.01))
    assert "inference needs about" in last.splitlines()[-1] and "patch_size" in last.splitlines()[-1], last[-3000:]
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_the_same_seed_and_command_train_the_same_weights(trained, tmp_path):
    """Two runs of one command, with data loader workers and random augmentation: identical weights."""
    _, data, _ = trained
    states = []
    for run in ("a", "b"):
        values = {**TRAIN, "num_workers": 2, "bundle_root": str(tmp_path / run), "dataset_dir": str(data)}
        bundle("run", "--config_file", str(CONFIGS / "train.json"), *overrides(values))
        states.append(torch.load(tmp_path / run / "models" / "model.pt", map_location="cpu", weights_only=True))
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    settings = json.loads((tmp_path / "a" / "models" / "network.json").read_text(encoding="utf-8"))
    assert settings["bundle"] == "maml_brats_mri_segmentation"
    assert settings["settings"] == {
        "modalities": ["t1", "t1ce", "t2", "flair"],
        "num_classes": 4,
        "base_width": TINY["base_width"],
        "num_stages": TINY["num_stages"],
        "patch_size": TINY["patch_size"],
    }
