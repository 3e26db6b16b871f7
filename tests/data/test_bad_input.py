"""Bad cases fail with one InvalidCaseError naming the case and the file; ``skip_invalid`` logs and drops them."""

import logging
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medguide.data import (
    InvalidCaseError,
    brats_datalist,
    check_case,
    decathlon_datalist,
    make_brats_dataset,
    make_liver_dataset,
    validate_datalist,
)
from medguide.transforms import LoadCased

SHAPE = (24, 24, 24)
LIVER_LABELS = (0, 1, 2)


@pytest.fixture
def liver_items(tmp_path) -> list[dict]:
    return decathlon_datalist(make_liver_dataset(tmp_path, num_cases=2, shape=SHAPE, num_test=0))


def _rewrite(path: str, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    nib.save(nib.Nifti1Image(array, nib.load(path).affine if affine is None else affine), path)


def _assert_invalid(item: dict, file: str, reason: str, label_values=LIVER_LABELS) -> None:
    """Both the validator and the training loader reject the case, naming case, file and reason."""
    for load in (lambda: check_case(item, label_values), lambda: LoadCased(label_values=label_values)(item)):
        with pytest.raises(InvalidCaseError, match=reason) as caught:
            load()
        assert caught.value.case == item["case"] and caught.value.file == file
        assert item["case"] in str(caught.value) and Path(file).name in str(caught.value)


def test_truncated_nifti(liver_items):
    item = liver_items[0]
    file = item["image"][1]
    data = Path(file).read_bytes()
    Path(file).write_bytes(data[: len(data) // 2])
    _assert_invalid(item, file, "unreadable or corrupted")


def test_phase_with_another_shape(liver_items):
    item = liver_items[0]
    file = item["image"][1]
    _rewrite(file, np.zeros((24, 24, 20), np.int16))
    _assert_invalid(item, file, r"modality shape \(24, 24, 20\) differs")


def test_phase_with_another_affine(liver_items):
    item = liver_items[0]
    file = item["image"][1]
    _rewrite(file, np.asarray(nib.load(file).dataobj), np.diag([1.0, 1.0, 3.0, 1.0]))
    _assert_invalid(item, file, "modality affine differs")


def test_label_on_another_grid(liver_items):
    item = liver_items[0]
    _rewrite(item["label"], np.zeros((20, 24, 24), np.uint8))
    _assert_invalid(item, item["label"], "label shape")


def test_missing_file(liver_items):
    item = liver_items[0]
    Path(item["image"][0]).unlink()
    _assert_invalid(item, item["image"][0], "file not found")


def test_nan_voxels(liver_items):
    item = liver_items[0]
    file = item["image"][0]
    array = np.asarray(nib.load(file).dataobj).astype(np.float32)
    array[3, 4, 5] = np.nan
    _rewrite(file, array)
    _assert_invalid(item, file, "NaN or infinite")


def test_labels_outside_the_set(liver_items):
    item = liver_items[0]
    label = np.asarray(nib.load(item["label"]).dataobj).copy()
    label[0, 0, 0] = 7
    _rewrite(item["label"], label)
    _assert_invalid(item, item["label"], r"label values \[7\] outside the declared set \[0, 1, 2\]")


def test_brats_2023_labels_are_not_2021(tmp_path):
    (item,) = brats_datalist(make_brats_dataset(tmp_path, num_cases=1, shape=SHAPE, naming="2023"))
    _assert_invalid(item, item["label"], r"label values \[3\]", label_values=(0, 1, 2, 4))


def test_case_id_defaults_to_file_stem(liver_items):
    item = {"image": liver_items[0]["image"][:1] + ["/nowhere/liver_000_0001.nii.gz"]}
    with pytest.raises(InvalidCaseError, match="case 'liver_000_0000': file '/nowhere/liver_000_0001.nii.gz'"):
        check_case(item)


def test_error_survives_pickling():
    # DataLoader workers send exceptions to the main process by pickling them.
    error = pickle.loads(pickle.dumps(InvalidCaseError("c1", "/x.nii.gz", "file not found")))
    assert (error.case, error.file, str(error)) == ("c1", "/x.nii.gz", "case 'c1': file '/x.nii.gz': file not found")


def test_validate_datalist_raises_or_skips(liver_items, caplog):
    Path(liver_items[1]["image"][0]).unlink()
    with pytest.raises(InvalidCaseError, match="liver_001"):
        validate_datalist(liver_items, LIVER_LABELS)
    with caplog.at_level(logging.WARNING, logger="medguide.data"):
        valid = validate_datalist(liver_items, LIVER_LABELS, skip_invalid=True)
    assert [item["case"] for item in valid] == ["liver_000"]
    assert "liver_001" in caplog.text and "liver_001_0000.nii.gz" in caplog.text
    Path(liver_items[0]["label"]).unlink()
    with pytest.raises(ValueError, match="no valid case left out of 2"):
        validate_datalist(liver_items, LIVER_LABELS, skip_invalid=True)
