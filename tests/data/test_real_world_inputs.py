"""Inputs users of bundle tools meet in the wild: each gets the right answer or one clear error, never a silent guess.

Every test builds its input from synthetic data (issue 6: several volumes in one file, DICOM series with a gap or
two series in a folder, one-slice volumes, float label maps, macOS ``._`` files, stray folders, output folders
inside the data, file modes).
"""

from __future__ import annotations

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
from monai.data import MetaTensor
from monai.transforms import SaveImage

from medguide.data import (
    AtomicNibabelWriter,
    InputError,
    InvalidCaseError,
    atomic_write_text,
    brats_datalist,
    check_case,
    check_output_dir,
    decathlon_datalist,
    dicom_series_datalist,
    make_brats_dataset,
    make_liver_dataset,
    validate_datalist,
)
from medguide.transforms import LoadCased
from medguide.visualize import label_overlay_figure
from tests.dicom import write_dicom_series

SHAPE = (24, 24, 24)


@pytest.fixture
def brats(tmp_path) -> Path:
    return make_brats_dataset(tmp_path / "brats", num_cases=2, shape=SHAPE)


@pytest.fixture
def volume() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 100, (12, 10, 8)).astype(np.int16)


def _replace(path: str | Path, array: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(array, nib.load(path).affine), str(path))


# -- several volumes where one is expected --------------------------------------------------------------------


def test_a_modality_file_with_two_volumes_is_refused_naming_case_file_and_shape(brats):
    item = brats_datalist(brats)[0]
    t1 = item["image"][0]
    data = np.asarray(nib.load(t1).dataobj)
    _replace(t1, np.stack([data, data], axis=-1))
    for load in (lambda: check_case(item), lambda: LoadCased(keys="image")(item)):
        with pytest.raises(InvalidCaseError, match=r"holds 2 volumes \(shape \(24, 24, 24, 2\)\) where one t1") as e:
            load()
        assert e.value.case == item["case"] and e.value.file == t1


def test_an_x_y_z_1_file_is_one_volume(brats):
    item = brats_datalist(brats)[0]
    t1 = item["image"][0]
    _replace(t1, np.asarray(nib.load(t1).dataobj)[..., None])
    assert LoadCased(keys="image")(item)["image"].shape == (4, *SHAPE)


def test_one_4d_file_may_hold_every_phase(tmp_path):
    data = make_liver_dataset(tmp_path, num_cases=1, shape=SHAPE, num_test=0)
    item = decathlon_datalist(data)[0]
    phases = [np.asarray(nib.load(f).dataobj) for f in item["image"]]
    nib.save(nib.Nifti1Image(np.stack(phases, -1), nib.load(item["image"][0]).affine), tmp_path / "both.nii.gz")
    loaded = LoadCased(keys="image")({**item, "image": [str(tmp_path / "both.nii.gz")]})["image"]
    assert loaded.shape == (2, *SHAPE)
    with pytest.raises(InvalidCaseError, match=r"holds 2 volumes .* where the 3 volumes of \['a', 'b', 'c'\]"):
        LoadCased(keys="image")({"case": "c", "image": [str(tmp_path / "both.nii.gz")], "modalities": ["a", "b", "c"]})


def test_a_label_with_two_volumes_is_refused(brats):
    item = brats_datalist(brats)[0]
    label = np.asarray(nib.load(item["label"]).dataobj)
    _replace(item["label"], np.stack([label, label], -1))
    with pytest.raises(InvalidCaseError, match="holds 2 volumes .* where one label map is expected"):
        check_case(item, (0, 1, 2, 4))


# -- float label maps ----------------------------------------------------------------------------------------


def test_float_labels_near_an_allowed_value_are_rounded_and_counted(brats, caplog):
    item = brats_datalist(brats)[0]
    label = np.asarray(nib.load(item["label"]).dataobj).astype(np.float32)
    label[label == 2] = 1.9998
    label[label == 4] = 4.0001
    _replace(item["label"], label)
    with caplog.at_level("INFO", logger="medguide.data"):
        loaded = LoadCased(label_values=(0, 1, 2, 4))(item)["label"]
    assert set(torch.unique(loaded).tolist()) <= {0.0, 1.0, 2.0, 4.0}
    assert int((loaded == 2).sum()) == int((np.abs(label - 1.9998) < 1e-6).sum()) > 0
    assert "rounded" in caplog.text and item["case"] in caplog.text


def test_float_labels_far_from_the_set_get_a_short_message(brats):
    item = brats_datalist(brats)[0]
    label = np.asarray(nib.load(item["label"]).dataobj).astype(np.float32)
    label += np.random.default_rng(0).uniform(0.1, 0.4, label.shape).astype(np.float32) * (label > 0)
    _replace(item["label"], label)
    with pytest.raises(InvalidCaseError) as e:
        check_case(item, (0, 1, 2, 4))
    message = str(e.value)
    assert len(message) < 400, message
    assert item["label"] in message and "outside the declared set [0, 1, 2, 4]" in message
    assert message.count(",") < 12  # at most five values are listed
    assert f"in {int((label > 0).sum())} voxels" in message


# -- DICOM series ----------------------------------------------------------------------------------------------


def test_a_dicom_series_with_a_missing_slice_is_refused_naming_the_gap(tmp_path, volume):
    files = write_dicom_series(volume, tmp_path / "ct")
    files[4].unlink()
    with pytest.raises(InvalidCaseError, match=r"not evenly spaced: 5.000 mm .* 2.500 mm apart") as e:
        check_case({"case": "c1", "image": [str(tmp_path / "ct")]})
    assert e.value.file == str(tmp_path / "ct") and "slice003.dcm" in str(e.value)


def test_slices_whose_instance_numbers_disagree_with_their_positions_are_refused(tmp_path, volume):
    """MONAI's reader stacks by InstanceNumber: shuffled numbers would scramble the volume with exit code 0."""
    import pydicom

    files = write_dicom_series(volume, tmp_path / "ct")
    for file, number in zip(files, [3, 1, 2, 8, 5, 6, 7, 4], strict=True):
        header = pydicom.dcmread(file)
        header.InstanceNumber = number
        header.save_as(file)
    with pytest.raises(InvalidCaseError, match="InstanceNumbers do not run in the order of their positions"):
        check_case({"case": "c1", "image": [str(tmp_path / "ct")]})
    header = pydicom.dcmread(files[2])
    del header.InstanceNumber
    header.save_as(files[2])
    with pytest.raises(InvalidCaseError, match="slice002.dcm has no InstanceNumber"):
        check_case({"case": "c1", "image": [str(tmp_path / "ct")]})


def test_a_truncated_slice_is_named_not_taken_for_a_second_series(tmp_path, volume):
    files = write_dicom_series(volume, tmp_path / "ct")
    files[3].write_bytes(files[3].read_bytes()[:150])
    with pytest.raises(InvalidCaseError) as e:
        check_case({"case": "c1", "image": [str(tmp_path / "ct")]})
    assert e.value.file == str(files[3]) and "series" not in e.value.reason.split(":")[0]


def test_an_evenly_spaced_series_reads_with_its_spacing(tmp_path, volume):
    write_dicom_series(volume, tmp_path / "ct")
    (tmp_path / "ct" / "._slice000.dcm").write_bytes(b"\0" * 64)  # a macOS resource fork is not a slice
    (tmp_path / "ct" / ".DS_Store").write_bytes(b"Bud1")
    image = LoadCased(keys="image")({"case": "c1", "image": [str(tmp_path / "ct")]})["image"]
    assert image.shape == (1, 12, 10, 8)
    np.testing.assert_allclose(np.abs(np.diag(image.affine.numpy()))[:3], [0.8, 0.8, 2.5], atol=1e-4)


def test_two_series_in_one_folder_are_refused_and_one_can_be_chosen(tmp_path, volume):
    folder = tmp_path / "case1" / "venous"
    write_dicom_series(volume, folder, series_uid="1.2.3.1", description="Venous 2.5mm", prefix="a")
    write_dicom_series(volume + 500, folder, series_uid="1.2.3.2", description="Venous 1mm recon", prefix="b")
    item = {"case": "case1", "image": [str(folder)], "modalities": ["venous"]}
    with pytest.raises(InvalidCaseError, match="holds 2 DICOM series") as e:
        check_case(item)
    assert all(s in str(e.value) for s in ("1.2.3.1", "'Venous 2.5mm'", "1.2.3.2", "'Venous 1mm recon'"))
    by_uid = LoadCased(keys="image")({**item, "series": "1.2.3.2"})["image"]
    by_description = LoadCased(keys="image")({**item, "series": {"venous": "venous 2.5MM"}})["image"]
    assert by_uid.shape == by_description.shape == (1, 12, 10, 8)
    assert float(by_uid.min()) >= 500 > float(by_description.max())
    # the datalist setting applies to every case
    (chosen,) = dicom_series_datalist(tmp_path, phases=("venous",), series="Venous 1mm recon")
    assert LoadCased(keys="image")(chosen)["image"].min() >= 500
    with pytest.raises(InvalidCaseError, match="series 'portal' matches no series"):
        check_case({**item, "series": "portal"})
    # or per case in a Decathlon-style dataset.json
    entry = {"image": ["./case1/venous"], "series": {"venous": "1.2.3.2"}}
    (tmp_path / "dataset.json").write_text(json.dumps({"modality": {"0": "venous"}, "test": [entry]}))
    (listed,) = decathlon_datalist(tmp_path, section="test")
    assert LoadCased(keys="image")(listed)["image"].min() >= 500


def test_both_phases_flat_in_one_case_folder_are_refused(tmp_path, volume):
    write_dicom_series(volume, tmp_path / "case1", series_uid="1.2.3.1", description="arterial", prefix="a")
    write_dicom_series(volume, tmp_path / "case1", series_uid="1.2.3.2", description="venous", prefix="v")
    (item,) = dicom_series_datalist(tmp_path, phases=("venous",))
    with pytest.raises(InvalidCaseError, match="holds 2 DICOM series"):
        check_case(item)


def test_a_folder_with_one_2d_image_says_a_series_needs_slices(tmp_path, volume):
    write_dicom_series(volume[..., :1], tmp_path / "ct")
    with pytest.raises(InvalidCaseError, match="single 2D DICOM image; a series needs several slices"):
        check_case({"case": "c1", "image": [str(tmp_path / "ct")]})


# -- hidden files and folders that are not cases ----------------------------------------------------------------


def test_macos_resource_forks_are_not_images(brats):
    for case in brats.iterdir():
        for file in list(case.iterdir()):
            (case / f"._{file.name}").write_bytes(b"\0\5\26\7" + b"\0" * 60)
    (brats / ".DS_Store").write_bytes(b"Bud1")
    (brats / "._BraTS2021_00000").mkdir()
    items = brats_datalist(brats)
    assert [item["case"] for item in items] == ["BraTS2021_00000", "BraTS2021_00001"]
    assert all(not Path(f).name.startswith(".") for item in items for f in [*item["image"], item["label"]])


def test_hidden_phase_files_in_dicom_case_folders_are_passed_over(tmp_path, volume):
    write_dicom_series(volume, tmp_path / "case1" / "venous")
    (tmp_path / "case1" / "._venous.nii.gz").write_bytes(b"\0" * 64)
    (tmp_path / ".Trashes").mkdir()
    (item,) = dicom_series_datalist(tmp_path, phases=("venous",))
    assert item["image"] == [str(tmp_path / "case1" / "venous")]


def test_a_folder_that_is_not_a_case_is_named_and_skipped_or_refused(tmp_path, volume):
    write_dicom_series(volume, tmp_path / "case1")
    (tmp_path / "notes").mkdir()
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "notes" / "brain.nii.gz")
    items = dicom_series_datalist(tmp_path, phases=("venous",))
    with pytest.raises(InvalidCaseError, match=r"case 'notes'.*not a DICOM series folder.*brain.nii.gz"):
        validate_datalist(items)
    valid = validate_datalist(items, skip_invalid=True)
    assert [item["case"] for item in valid] == ["case1"] and [e.case for e in valid.skipped] == ["notes"]


def test_a_folder_among_brats_cases_that_is_not_a_case_is_named(brats):
    (brats / "dicom_export").mkdir()
    (brats / "dicom_export" / "IM0001").write_bytes(b"\0" * 200)
    with pytest.raises(InvalidCaseError, match=r"case 'dicom_export'.*not a BraTS case folder.*IM0001"):
        brats_datalist(brats)
    items = brats_datalist(brats, skip_invalid=True)
    assert len(items) == 2 and [e.case for e in items.skipped] == ["dicom_export"]
    with pytest.raises(InputError, match="skip_invalid must be true or false"):
        brats_datalist(brats, skip_invalid="maybe")
    assert len(brats_datalist(brats, skip_invalid="True")) == 2


# -- outputs -------------------------------------------------------------------------------------------------------


def test_an_output_folder_inside_the_data_is_refused_naming_both(brats):
    items = brats_datalist(brats)
    case_dir = brats / items[0]["case"]
    for output in (brats, case_dir, brats / "predictions"):
        with pytest.raises(InputError, match="inside the data set|would overwrite an input file") as e:
            check_output_dir(output, brats, items, "_seg.nii.gz")
        assert str(output.resolve()) in str(e.value) and str(brats.resolve()) in str(e.value)
    # asked for explicitly, a separate folder is fine, but an output never replaces an input file
    check_output_dir(brats / "predictions", brats, items, "_seg.nii.gz", allow_inside_data=True)
    with pytest.raises(InputError, match=f"would overwrite an input file of case '{items[0]['case']}'"):
        check_output_dir(case_dir, brats, items, "_seg.nii.gz", allow_inside_data=True)
    assert check_output_dir(brats.parent / "out", brats, items, "_seg.nii.gz") == (brats.parent / "out").resolve()
    # a case folder linked in from another disk is inside the data set too
    store = brats.parent / "store" / "case9"
    store.mkdir(parents=True)
    (brats / "case9").symlink_to(store, target_is_directory=True)
    with pytest.raises(InputError, match="inside the data set"):
        check_output_dir(brats / "case9", brats, items, "_seg.nii.gz")


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_written_files_get_the_mode_of_the_users_umask(tmp_path, umask):
    previous = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "table.md", "| a |\n")
        image = MetaTensor(torch.ones(1, 6, 6, 1), affine=torch.eye(4), meta={"filename_or_obj": "c1.nii.gz"})
        SaveImage(output_dir=tmp_path, writer=AtomicNibabelWriter, separate_folder=False, resample=False)(image)
        figure = label_overlay_figure(
            images=[np.zeros((6, 6))],
            image_titles=["t1"],
            labels=[np.zeros((6, 6), int)],
            label_titles=["ref"],
            colors={1: "#ff0000"},
            legend={1: "tumour"},
            path=tmp_path / "figure.png",
        )
        for path in (tmp_path / "table.md", tmp_path / "c1_trans.nii.gz", figure):
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
    finally:
        os.umask(previous)


@pytest.mark.parametrize("shape", [(40, 40, 1), (1, 9, 7), (9, 8, 7)])
def test_a_prediction_has_exactly_the_input_grid(tmp_path, shape):
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    pred = MetaTensor(torch.ones(1, *shape), affine=torch.as_tensor(affine), meta={"filename_or_obj": "c.nii.gz"})
    SaveImage(output_dir=tmp_path, writer=AtomicNibabelWriter, separate_folder=False, resample=False)(pred)
    written = nib.load(tmp_path / "c_trans.nii.gz")
    assert written.shape == shape
    np.testing.assert_allclose(written.affine, affine)
    shutil.rmtree(tmp_path)


def test_text_outputs_are_utf8_whatever_the_locale(tmp_path):
    """Tables hold '±' and paths may be non-ASCII: a C-locale shell (ASCII) must not fail writing or reading them."""
    code = (
        "import locale, sys\nfrom medguide.data import atomic_write_text\n"
        "print(locale.getpreferredencoding(False))\n"
        "atomic_write_text(sys.argv[1] + '/table.md', '| 0.812 \\u00b1 0.05 | M\\u00fcller |')\n"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONCOERCECLOCALE": "0", "PYTHONUTF8": "0"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[0].lower() in ("ascii", "ansi_x3.4-1968"), (
        "the C locale did not make ASCII the default"
    )
    assert (tmp_path / "table.md").read_text(encoding="utf-8") == "| 0.812 ± 0.05 | Müller |"


def test_an_empty_or_missing_data_folder_is_an_input_error(tmp_path):
    """What a first `medguide predict` on the wrong folder meets: a message, not MONAI's traceback."""
    from medguide.data import MissingInputError, plain_input_errors  # noqa: F401

    (tmp_path / "empty").mkdir()
    for call in (
        lambda: brats_datalist(tmp_path / "empty"),
        lambda: brats_datalist(tmp_path / "missing"),
        lambda: dicom_series_datalist(tmp_path / "empty"),
        lambda: decathlon_datalist(tmp_path / "empty"),
    ):
        with pytest.raises(InputError) as e:
            call()
        assert isinstance(e.value, FileNotFoundError) and str(tmp_path) in str(e.value)
