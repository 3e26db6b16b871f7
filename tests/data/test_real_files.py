"""The real sample files (BraTS 2023 and 2015, abdominal CT NIfTI and JPEG 2000 DICOM) load with LoadCased."""

import nibabel as nib
import numpy as np
import pytest

from medguide.data import brats_datalist, brats_label_values, check_case, dicom_series_datalist
from medguide.transforms import LoadCased


def _folder(sample_data, name):
    folder = sample_data / name
    if not folder.exists():
        pytest.skip(f"{folder} not present in the sample data")
    return folder


def test_brats_2023_four_sequences(sample_data):
    # The snapshot holds the four sequences of one case directly in the folder, without segmentation.
    (item,) = brats_datalist(_folder(sample_data, "brats2023-gli-4seq-brainles"), require_label=False)
    assert item["case"] == "BraTS-GLI-00001-000" and item["naming"] == "2023"
    image = LoadCased(keys="image")(item)["image"]
    reference = nib.load(item["image"][0])
    assert image.shape == (4, 240, 240, 155) == (4, *reference.shape)
    np.testing.assert_allclose(image.affine.numpy(), reference.affine, atol=1e-4)


def test_brats_2015_flair_t1c(sample_data):
    items = brats_datalist(_folder(sample_data, "brats2015-deepmedic"), require_all=False)
    assert [item["case"] for item in items] == ["brats_2013_pat0001_1", "brats_2013_pat0005_1"]
    item = items[0]
    assert item["modalities"] == ["t1ce", "flair"] and item["naming"] == "2015"
    loaded = LoadCased(label_values=brats_label_values("2015"))(item)
    assert loaded["image"].shape == (2, 240, 240, 155) and loaded["label"].shape == (1, 240, 240, 155)
    np.testing.assert_allclose(loaded["image"].affine.numpy(), nib.load(item["image"][1]).affine, atol=1e-4)
    assert set(np.unique(loaded["label"].numpy())) == {0, 1, 2, 3, 4}


def test_abdominal_ct_nifti_with_label(sample_data):
    folder = _folder(sample_data, "totalseg-ct-mr-organs")
    item = {
        "case": "example_ct_sm",
        "image": [str(folder / "example_ct_sm.nii.gz")],
        "label": str(folder / "example_seg.nii.gz"),
    }
    check_case(item)
    loaded = LoadCased()(item)
    reference = nib.load(item["image"][0])
    assert loaded["image"].shape == (1, 122, 101, 30) == (1, *reference.shape)
    np.testing.assert_allclose(loaded["image"].affine.numpy(), reference.affine, atol=1e-4)
    assert float(loaded["image"].min()) >= -1100 and (loaded["label"] == 5).sum() == 38634  # 5 = liver


def test_ct_dicom_series_jpeg2000(sample_data, tmp_path):
    series = _folder(sample_data, "totalseg-ct-mr-organs") / "example_ct_dicom"
    # The inference layout: one folder per case, one series folder per phase.
    (tmp_path / "case01").mkdir()
    (tmp_path / "case01" / "venous").symlink_to(series, target_is_directory=True)
    (item,) = dicom_series_datalist(tmp_path, phases=("venous",))
    image = LoadCased(keys="image")(item)["image"]
    assert image.shape == (1, 512, 512, 20)
    assert float(image.min()) == -1024 and float(image.max()) > 1000  # decoded HU, not zeros
    np.testing.assert_allclose(np.abs(np.diag(image.affine.numpy()))[:3], [0.9765625, 0.9765625, 2.0])
    # The series and its NIfTI label describe the same voxels, stored in another order: PydicomReader puts the
    # last slice first (z step -2 mm) and the label has y flipped, so they need Orientationd before pairing.
    label = nib.load(series.parent / "example_seg_dicom.nii.gz")
    corner = image.affine.numpy() @ [511, 511, 19, 1]
    np.testing.assert_allclose(corner, label.affine @ [511, 0, 0, 1], atol=1e-3)
