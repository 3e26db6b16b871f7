"""The liver MAML bundle end to end on tiny synthetic data, its metadata and exports, and real CT (NIfTI, DICOM)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImage

from medguide.data import decathlon_datalist, make_liver_dataset
from tests.bundles.helpers import (
    TINY,
    bundle,
    bundle_fails,
    configs,
    evaluate_table,
    export_matches_network,
    overrides,
    train_tiny,
)
from tests.dicom import write_dicom_series

CONFIGS = configs("maml_liver_tumor_ct_segmentation")
REAL = "totalseg-ct-mr-organs"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A bundle root holding a model trained for a few iterations on 5 synthetic 32^3 two-phase cases."""
    data = make_liver_dataset(tmp_path_factory.mktemp("liver"), num_cases=5, shape=(32, 32, 32), seed=1)
    root = tmp_path_factory.mktemp("bundle")
    return root, data, train_tiny(data, root, CONFIGS)


def test_train_writes_a_checkpoint_that_loads_on_cpu(trained):
    root, _, _ = trained
    state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    assert any(k.startswith("branches.1.") for k in state) and any(k.startswith("fusion.") for k in state)
    assert not any(k.startswith("branches.2.") for k in state), "one branch per phase: arterial, venous"


def test_evaluate_writes_the_missing_phase_table(trained):
    rows = evaluate_table(CONFIGS, trained[2])
    assert len(rows) == 3  # arterial, venous, both
    assert rows[-1]["modalities"] == "arterial+venous"
    for row in rows:
        for region in ("liver", "tumour"):
            assert 0.0 <= float(row[f"Dice {region}"]) <= 1.0


def test_inference_writes_liver_labels_in_the_input_space(trained):
    root, data, common = trained
    bundle("run", "--config_file", str(CONFIGS / "inference.json"), *overrides({"num_workers": 0, **common}))
    cases = decathlon_datalist(data, section="test")
    assert len(cases) == 2
    for case in cases:
        reference = nib.load(case["image"][0])
        output = root / "predictions" / f"{case['case']}_seg.nii.gz"
        assert output.is_file(), f"no prediction for {case['case']}"
        predicted = nib.load(output)
        assert predicted.shape == reference.shape
        np.testing.assert_allclose(predicted.affine, reference.affine, atol=1e-4)
        assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1, 2}
    assert not list((root / "predictions").glob(".*.nii.gz")), "temporary files were left behind"


def test_torchscript_export_gives_the_same_output(trained, tmp_path):
    root, _, _ = trained
    export_matches_network(CONFIGS, root / "models" / "model.pt", 2, TINY, tmp_path / "model.ts")


@pytest.mark.parametrize(
    "source, phase_entry",
    [("example_ct_sm.nii.gz", "venous.nii.gz"), ("example_ct_dicom", "venous")],
    ids=["nifti-abdomen", "dicom-jpeg2000-series"],
)
def test_inference_on_real_single_phase_ct(trained, sample_data, tmp_path, source, phase_entry):
    """A real CT read as the venous phase alone, in the per-case folder layout of ``--input_format dicom``."""
    root, _, common = trained
    source = sample_data / REAL / source
    if not source.exists():
        pytest.skip(f"{source} is not in the sample data")
    case_dir = tmp_path / "cases" / "real_ct"
    case_dir.mkdir(parents=True)
    (case_dir / phase_entry).symlink_to(source, target_is_directory=source.is_dir())
    out = tmp_path / "out"
    values = {
        "num_workers": 0,
        **common,
        "input_format": "dicom",
        "dataset_dir": str(tmp_path / "cases"),
        "output_dir": str(out),
        # coarser than the 0.8 mm default: a 512^2 slice then takes a few windows, not dozens, on CPU
        "pixdim": [1.5, 1.5, 2.5],
        "patch_size": [128, 128, 32],
    }
    bundle("run", "--config_file", str(CONFIGS / "inference.json"), *overrides(values))
    reference = LoadImage(reader="PydicomReader" if source.is_dir() else None, image_only=True)(source)
    output = out / "real_ct_seg.nii.gz"
    assert output.is_file(), f"no prediction: {sorted(p.name for p in out.iterdir())}"
    predicted = nib.load(output)
    assert predicted.shape == tuple(reference.shape)
    np.testing.assert_allclose(predicted.affine, np.asarray(reference.affine), atol=1e-3)
    assert set(np.unique(np.asarray(predicted.dataobj))) <= {0, 1, 2}


def test_dicom_folders_with_two_series_or_no_series_are_named(trained, tmp_path):
    """Two reconstructions in one phase folder: refused with both, then read by the chosen one; a stray folder."""
    _, data, common = trained
    volume = np.asarray(nib.load(decathlon_datalist(data, section="test")[0]["image"][1]).dataobj)
    venous = tmp_path / "cases" / "case1" / "venous"
    write_dicom_series(volume, venous, series_uid="1.2.3.1", description="Venous 5mm", prefix="a")
    write_dicom_series(volume[::-1], venous, series_uid="1.2.3.2", description="Venous recon", prefix="b")
    (tmp_path / "cases" / "notes").mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "cases" / "notes" / "scan.nii.gz")
    out = tmp_path / "out"
    values = {**TINY, **common, "input_format": "dicom", "dataset_dir": str(tmp_path / "cases"), "output_dir": str(out)}
    args = ["run", "--config_file", str(CONFIGS / "inference.json")]
    last = bundle_fails(*args, *overrides({**values, "skip_invalid": True}))
    assert "no valid case left out of 2" in last and "1.2.3.1" in last and "'Venous recon'" in last, last[-2000:]
    assert "notes" in last and "not a DICOM series folder" in last
    last = bundle_fails(*args, *overrides({**values, "dicom_series": "Venous 5mm", "skip_invalid": True}))
    assert "1 of 2 cases were skipped" in last.splitlines()[-2] and "notes" in last.splitlines()[-1], last[-2000:]
    predicted = nib.load(out / "case1_seg.nii.gz")
    assert predicted.shape == volume.shape
