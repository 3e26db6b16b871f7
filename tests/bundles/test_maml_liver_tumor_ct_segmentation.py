"""The liver MAML bundle's own cases: liver and tumour as the metrics score them, real single-phase CT (NIfTI and
a DICOM series) read as the venous phase, and DICOM folders holding two series or none. What it shares with the
other bundles is in ``test_config_workflow.py`` and ``test_maml_bundles.py``."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from monai.transforms import LoadImage

from medguide.data import decathlon_datalist
from tests.bundles.helpers import bundle, bundle_fails, configs, make_tiny_data, overrides, scored_regions, tiny
from tests.dicom import write_dicom_series

NAME = "maml_liver_tumor_ct_segmentation"
CONFIGS = configs(NAME)
REAL = "totalseg-ct-mr-organs"


def test_the_scored_regions_are_liver_and_tumour_of_the_file_labels(tmp_path):
    """The config's regions end to end: liver is labels 1 and 2, tumour label 2, on the file's own voxels (the
    synthetic set is written at the configured spacing, so resampling keeps every voxel)."""
    item, scored = scored_regions(NAME, make_tiny_data(NAME, tmp_path / "data", num_cases=1), tmp_path)
    labels = np.asarray(nib.load(item["label"]).dataobj)
    assert scored == {"liver": int(np.isin(labels, [1, 2]).sum()), "tumour": int((labels == 2).sum())}
    assert all(scored.values())


@pytest.mark.parametrize(
    "source, phase_entry",
    [("example_ct_sm.nii.gz", "venous.nii.gz"), ("example_ct_dicom", "venous")],
    ids=["nifti-abdomen", "dicom-jpeg2000-series"],
)
@pytest.mark.slow
def test_inference_on_real_single_phase_ct(tiny_run, sample_data, tmp_path, source, phase_entry):
    """A real CT read as the venous phase alone, in the per-case folder layout of ``--input_format dicom``."""
    common = tiny_run(NAME).common
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


@pytest.mark.slow
def test_dicom_folders_with_two_series_or_no_series_are_named(tiny_run, tmp_path):
    """Two reconstructions in one phase folder: refused with both, then read by the chosen one; a stray folder."""
    run = tiny_run(NAME)
    volume = np.asarray(nib.load(decathlon_datalist(run.data, section="test")[0]["image"][1]).dataobj)
    venous = tmp_path / "cases" / "case1" / "venous"
    write_dicom_series(volume, venous, series_uid="1.2.3.1", description="Venous 5mm", prefix="a")
    write_dicom_series(volume[::-1], venous, series_uid="1.2.3.2", description="Venous recon", prefix="b")
    (tmp_path / "cases" / "notes").mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "cases" / "notes" / "scan.nii.gz")
    out = tmp_path / "out"
    values = {
        **tiny(NAME),
        **run.common,
        "input_format": "dicom",
        "dataset_dir": str(tmp_path / "cases"),
        "output_dir": str(out),
    }
    args = ["run", "--config_file", str(CONFIGS / "inference.json")]
    last = bundle_fails(*args, *overrides({**values, "skip_invalid": True}))
    assert "no valid case left out of 2" in last and "1.2.3.1" in last and "'Venous recon'" in last, last[-2000:]
    assert "notes" in last and "not a DICOM series folder" in last
    last = bundle_fails(*args, *overrides({**values, "dicom_series": "Venous 5mm", "skip_invalid": True}))
    assert "1 of 2 cases were skipped" in last.splitlines()[-2] and "notes" in last.splitlines()[-1], last[-2000:]
    predicted = nib.load(out / "case1_seg.nii.gz")
    assert predicted.shape == volume.shape
