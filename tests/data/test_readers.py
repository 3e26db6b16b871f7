"""Readers of the real layouts: BraTS (both namings and older variants), Decathlon dataset.json, DICOM series."""

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import torch
from monai.transforms import Compose, EnsureChannelFirstd, Invertd, LoadImaged, Orientationd, SaveImaged, Spacingd

from medguide.data import (
    InvalidCaseError,
    brats_datalist,
    brats_label_map,
    brats_label_values,
    brats_output_labels,
    decathlon_datalist,
    dicom_series_datalist,
    make_brats_dataset,
    make_liver_dataset,
)
from medguide.transforms import LoadCased
from tests.dicom import write_dicom_series

SHAPE = (24, 24, 24)


@pytest.fixture(scope="module")
def brats(tmp_path_factory) -> Path:
    return make_brats_dataset(tmp_path_factory.mktemp("brats"), num_cases=2, shape=SHAPE, naming="2023")


@pytest.fixture(scope="module")
def liver(tmp_path_factory) -> Path:
    return make_liver_dataset(tmp_path_factory.mktemp("liver"), num_cases=2, shape=SHAPE, num_test=1)


def test_brats_2023_naming(brats):
    items = brats_datalist(brats)
    assert [item["case"] for item in items] == ["BraTS-GLI-00000-000", "BraTS-GLI-00001-000"]
    assert items[0]["modalities"] == ["t1", "t1ce", "t2", "flair"]
    assert [Path(f).name for f in items[0]["image"]] == [
        "BraTS-GLI-00000-000-t1n.nii.gz",
        "BraTS-GLI-00000-000-t1c.nii.gz",
        "BraTS-GLI-00000-000-t2w.nii.gz",
        "BraTS-GLI-00000-000-t2f.nii.gz",
    ]
    assert Path(items[0]["label"]).name == "BraTS-GLI-00000-000-seg.nii.gz"
    loaded = LoadCased(label_values=brats_label_values("2023"))(items[0])
    assert loaded["image"].shape == (4, *SHAPE) and loaded["label"].shape == (1, *SHAPE)


def test_brats_labels_follow_the_release(brats, tmp_path):
    items_2023 = brats_datalist(brats)
    items_2021 = brats_datalist(make_brats_dataset(tmp_path, num_cases=1, shape=SHAPE, naming="2021"))
    # file label values, and medguide's class (background, NCR, ED, ET) of each
    assert brats_label_map(items_2023) == ([0, 1, 2, 3], [0, 1, 2, 3])
    label_map = brats_label_map(items_2021)  # the configs read the two by name
    assert label_map.file_values == [0, 1, 2, 4] and label_map.classes == [0, 1, 2, 3]
    assert brats_label_map([{"case": "brats_2013_pat0001_1", "naming": "2015"}]) == ([0, 1, 2, 3, 4], [0, 1, 2, 1, 3])
    assert brats_output_labels(items_2023) == [0, 1, 2, 3] and brats_output_labels(items_2021) == [0, 1, 2, 4]
    # values given by hand are taken as they are
    assert brats_label_map(items_2023, [0, 1, 2, 4]) == ([0, 1, 2, 4], [0, 1, 2, 3])
    assert brats_output_labels(items_2023, [0, 1, 2, 4]) == [0, 1, 2, 4]
    # one folder mixing releases cannot have one label set: refused, naming a case of each
    with pytest.raises(ValueError, match=r"2021 \(e.g. BraTS2021_00000\), 2023 \(e.g. BraTS-GLI-00000-000\)"):
        brats_label_map(items_2023 + items_2021)


def test_brats_subset_order_and_aliases(brats):
    items = brats_datalist(brats, modalities=("t2f", "t1c"))
    assert items[0]["modalities"] == ["flair", "t1ce"]
    assert Path(items[0]["image"][0]).name.endswith("-t2f.nii.gz")
    with pytest.raises(ValueError, match="BraTS modalities must be .* unknown \\['dwi'\\]"):
        brats_datalist(brats, modalities=("flair", "dwi"))
    with pytest.raises(ValueError, match="repeated \\['flair'\\]"):
        brats_datalist(brats, modalities=("flair", "t2f"))  # two names of one sequence


def test_brats_2021_naming(tmp_path):
    items = brats_datalist(make_brats_dataset(tmp_path, num_cases=1, shape=SHAPE, naming="2021"))
    assert items[0]["case"] == "BraTS2021_00000" and items[0]["naming"] == "2021"
    assert [Path(f).name for f in items[0]["image"]][1] == "BraTS2021_00000_t1ce.nii.gz"
    assert brats_label_values(items[0]["naming"]) == (0, 1, 2, 4)


def test_brats_loose_files_and_older_names(tmp_path, brats):
    # Files lying directly in the data folder (as in some tutorials) are grouped by case prefix.
    flat = tmp_path / "flat"
    shutil.copytree(brats / "BraTS-GLI-00000-000", flat)
    assert brats_datalist(flat)[0]["case"] == "BraTS-GLI-00000-000"
    # BRATS 2015 as DeepMedic ships it: FLAIR + T1c only, other names.
    case = tmp_path / "old" / "brats_2013_pat0001_1"
    case.mkdir(parents=True)
    source = brats / "BraTS-GLI-00000-000"
    shutil.copy(source / "BraTS-GLI-00000-000-t2f.nii.gz", case / "Flair_subtrMeanDivStd.nii.gz")
    shutil.copy(source / "BraTS-GLI-00000-000-t1c.nii.gz", case / "T1c_subtrMeanDivStd.nii.gz")
    shutil.copy(source / "BraTS-GLI-00000-000-seg.nii.gz", case / "OTMultiClass.nii.gz")
    shutil.copy(source / "BraTS-GLI-00000-000-seg.nii.gz", case / "brainmask.nii.gz")
    (item,) = brats_datalist(tmp_path / "old", require_all=False)
    assert item["modalities"] == ["t1ce", "flair"] and item["naming"] == "2015"
    assert Path(item["label"]).name == "OTMultiClass.nii.gz"
    with pytest.raises(InvalidCaseError, match="brats_2013_pat0001_1.*missing t1 file"):
        brats_datalist(tmp_path / "old")


def test_brats_errors(tmp_path, brats):
    with pytest.raises(FileNotFoundError, match="no BraTS case found"):
        brats_datalist(tmp_path)
    copy = tmp_path / "copy"
    shutil.copytree(brats, copy)
    (copy / "BraTS-GLI-00001-000" / "BraTS-GLI-00001-000-seg.nii.gz").unlink()
    with pytest.raises(InvalidCaseError, match="BraTS-GLI-00001-000-seg.nii.gz"):
        brats_datalist(copy)
    assert "label" not in brats_datalist(copy, require_label=False)[1]


def test_decathlon(liver):
    items = decathlon_datalist(liver)
    assert items[0]["case"] == "liver_000" and items[0]["modalities"] == ["arterial", "venous"]
    assert items[0]["label"] == str(liver / "labelsTr" / "liver_000.nii.gz")
    venous_only = decathlon_datalist(liver, phases=["venous"])
    assert venous_only[0]["image"] == [str(liver / "imagesTr" / "liver_000_0001.nii.gz")]
    (test_item,) = decathlon_datalist(liver, "test")
    assert test_item["case"] == "liver_002" and "label" not in test_item
    with pytest.raises(ValueError, match="phases of .*dataset.json must be .* unknown \\['portal'\\]"):
        decathlon_datalist(liver, phases=["portal"])


def test_decathlon_single_file_and_dict_entries(tmp_path, liver):
    shutil.copytree(liver / "imagesTr", tmp_path / "imagesTr")
    spec = {
        "modality": {"0": "CT"},
        "training": [{"image": "./imagesTr/liver_000_0000.nii.gz", "label": "./imagesTr/liver_000_0001.nii.gz"}],
        "test": [{"image": "imagesTr/liver_001_0000.nii.gz"}],
    }
    (tmp_path / "dataset.json").write_text(json.dumps(spec))
    assert decathlon_datalist(tmp_path)[0]["modalities"] == ["CT"]
    assert decathlon_datalist(tmp_path, "test")[0]["case"] == "liver_001"


def test_dicom_series_and_nifti_phases(tmp_path, liver):
    volume = np.asarray(nib.load(liver / "imagesTr" / "liver_000_0000.nii.gz").dataobj)
    write_dicom_series(volume, tmp_path / "case1" / "arterial")
    write_dicom_series(volume + 40, tmp_path / "case1" / "Venous")
    write_dicom_series(volume, tmp_path / "case2")
    shutil.copy(liver / "imagesTr" / "liver_000_0000.nii.gz", tmp_path / "case3_arterial.nii.gz")
    (tmp_path / "case3").mkdir()
    shutil.copy(liver / "imagesTr" / "liver_000_0000.nii.gz", tmp_path / "case3" / "arterial.nii.gz")
    items = dicom_series_datalist(tmp_path, require_all=False)
    assert [(item["case"], item["modalities"]) for item in items] == [
        ("case1", ["arterial", "venous"]),
        ("case2", ["arterial"]),
        ("case3", ["arterial"]),
    ]
    loaded = LoadCased(keys="image")(items[0])["image"]
    assert loaded.shape == (2, *SHAPE)
    np.testing.assert_allclose(loaded[1] - loaded[0], 40)
    # The series' voxels match the volume it was written from, up to the reader's slice order.
    assert sorted(loaded[0].flatten().tolist()) == sorted(volume.astype(np.float32).flatten().tolist())
    with pytest.raises(InvalidCaseError, match="case3.*missing venous phase"):
        dicom_series_datalist(tmp_path)


def test_simpleitk_only_format(tmp_path):
    image = sitk.GetImageFromArray(np.arange(24 * 20 * 16, dtype=np.float32).reshape(16, 20, 24))
    image.SetSpacing((1.0, 2.0, 3.0))
    sitk.WriteImage(image, str(tmp_path / "scan.mha"))
    loaded = LoadCased(keys="image")({"image": [str(tmp_path / "scan.mha")]})["image"]
    assert loaded.shape == (1, 24, 20, 16)
    assert float(loaded[0, 1, 0, 0]) == 1.0  # x is the fastest axis in the file
    np.testing.assert_allclose(np.diag(loaded.affine.numpy()), [-1.0, -2.0, 3.0, 1.0])  # LPS -> RAS


def test_prediction_inverted_to_input_space(tmp_path, brats):
    item = brats_datalist(brats)[0]
    original = nib.load(item["image"][0])
    pre = Compose(
        [
            LoadCased(label_values=brats_label_values("2023")),
            Orientationd(keys=("image", "label"), axcodes="RAS"),
            Spacingd(keys=("image", "label"), pixdim=(1.5, 1.5, 1.5), mode=("bilinear", "nearest")),
        ]
    )
    data = pre(item)
    data["pred"] = (data["image"][:1] > 0).float()
    post = Compose(
        [
            Invertd(keys="pred", transform=pre, orig_keys="image", nearest_interp=True),
            SaveImaged(keys="pred", output_dir=tmp_path / "out", output_postfix="pred", separate_folder=False),
        ]
    )
    post(data)
    (saved,) = (tmp_path / "out").glob("*_pred.nii.gz")
    assert saved.name.startswith("BraTS-GLI-00000-000-t1n")
    written = nib.load(saved)
    assert written.shape[:3] == original.shape
    np.testing.assert_allclose(written.affine, original.affine, atol=1e-4)
    reloaded = Compose([LoadImaged(keys="x"), EnsureChannelFirstd(keys="x")])({"x": str(saved)})["x"]
    # The brain mask survives the round trip through the 1.5 mm grid in place (only its border is resampled).
    pred, brain = reloaded[0] > 0, torch.as_tensor(np.asarray(original.dataobj)) > 0
    assert 2 * (pred & brain).sum() / (pred.sum() + brain.sum()) > 0.9
