"""Brain MRI + histology bags: the layouts read, every bad case named, the real TCGA-LGG MRI, and a synthetic set whose
histology carries the class clearly and whose MRI carries it weakly."""

import hashlib
import shutil
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image
from scipy import ndimage

from medguide.data import (
    CPM_RADPATH_CLASSES,
    InvalidCaseError,
    MissingInputError,
    cpm_radpath_datalist,
    dataset_dir_or_synthetic,
    make_cpm_radpath_dataset,
    stratified_split,
)
from medguide.transforms import LoadBagd, LoadCased, validate_loading

SHAPE = (16, 16, 16)
# the TCGA-LGG series of patient TCGA-FG-6692 (raw, not co-registered): the BraTS name each gets in a case folder,
# and how its file name ends
TCGA_SERIES = {"t1": "_t1.nii.gz", "t1ce": "_t1c.nii.gz", "t2": "_t2.nii.gz", "flair": "_fla.nii.gz"}


def _load():
    return Compose([LoadCased(keys=("image", "label"), label_values=[0, 1, 2]), LoadBagd("bag")])


@pytest.fixture
def small(tmp_path) -> Path:
    return make_cpm_radpath_dataset(tmp_path / "set", num_cases=6, shape=SHAPE, seed=2, feature_dim=8)


def test_synthetic_layout_and_items(small):
    assert (small / "labels.csv").read_text(encoding="utf-8").splitlines()[0] == "case_id,class"
    items = cpm_radpath_datalist(small)
    assert len(items) == 6 and not items.skipped
    case = items[0]["case"]
    assert items[0] == {
        "case": case,
        "image": [str(small / "Radiology" / case / f"{case}_{m}.nii.gz") for m in ("t1", "t1ce", "t2", "flair")],
        "modalities": ["t1", "t1ce", "t2", "flair"],
        "bag": str(small / "features" / f"{case}.pt"),
        "label": items[0]["label"],
        "label_file": str(small / "labels.csv"),
    }
    assert sorted({item["label"] for item in items}) == [0, 1, 2]
    loaded = _load()(items[0])
    assert loaded["image"].shape == (4, *SHAPE) and loaded["bag"].dtype == torch.float32
    assert loaded["bag"].shape[1] == 8 and 8 <= loaded["bag"].shape[0] <= 32
    two = cpm_radpath_datalist(small, modalities=("t1c", "flair"))  # BraTS 2023 aliases too
    assert two[0]["modalities"] == ["t1ce", "flair"]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_synthetic_is_seeded(tmp_path, small):
    first = _digest(small)
    again = make_cpm_radpath_dataset(tmp_path / "again", num_cases=6, shape=SHAPE, seed=2, feature_dim=8)
    assert _digest(again) == first
    other = make_cpm_radpath_dataset(tmp_path / "other", num_cases=6, shape=SHAPE, seed=3, feature_dim=8)
    assert _digest(other) != first


def test_synthetic_through_dataset_dir_or_synthetic(tmp_path):
    out = dataset_dir_or_synthetic(
        "", "medguide.data.make_cpm_radpath_dataset", root=tmp_path, num_cases=3, shape=[12, 12, 12], seed=0
    )
    assert [item["label"] for item in cpm_radpath_datalist(out)] != []
    assert nib.load(next(out.rglob("*_flair.nii.gz"))).shape == (12, 12, 12)


def test_synthetic_histology_clear_mri_weak(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    items = cpm_radpath_datalist(make_cpm_radpath_dataset(tmp_path))  # the defaults a bundle gets
    classes = np.array([item["label"] for item in items])
    assert np.bincount(classes).tolist() == [36, 15, 9]  # G, A, O in about CPM-RadPath's shares

    def mri_features(item):  # how bright the enhancement, how large the lesion, how much of it is dark on T2
        t1ce, t2, flair = (nib.load(item["image"][k]).get_fdata() for k in (1, 2, 3))
        brain = t1ce > 0
        smooth = {
            name: ndimage.uniform_filter(v / np.median(v[brain]), 3) for name, v in (("t1ce", t1ce), ("flair", flair))
        }
        lesion = brain & (smooth["flair"] > 1.3)
        dark = lesion & (t2 / np.median(t2[brain]) < 0.9)
        return [np.percentile(smooth["t1ce"][brain], 99.5), lesion.mean(), dark.sum() / (lesion.sum() + 1)]

    features = {
        "histology": np.stack([torch.load(item["bag"], weights_only=True).mean(0).numpy() for item in items]),
        "mri": np.stack([mri_features(item) for item in items]),
    }
    accuracy = {}
    for name, x in features.items():
        x = (x - x.mean(0)) / (x.std(0) + 1e-8)
        probe = LogisticRegression(max_iter=2000, class_weight="balanced")
        predicted = cross_val_predict(probe, x, classes, cv=StratifiedKFold(5, shuffle=True, random_state=0))
        accuracy[name] = balanced_accuracy_score(classes, predicted)
    assert accuracy["histology"] > 0.9, accuracy
    assert 1 / 3 + 0.1 < accuracy["mri"] < accuracy["histology"] - 0.2, accuracy


def test_case_folders_in_data_dir_beside_clam_outputs(small, tmp_path):
    flat = tmp_path / "flat"
    shutil.copytree(small / "Radiology", flat)
    shutil.copy(small / "labels.csv", flat / "labels.csv")
    bags = sorted((small / "features").iterdir())
    (flat / "features" / "pt_files").mkdir(parents=True)
    (flat / "features" / "h5_files").mkdir()
    shutil.copy(bags[0], flat / "features" / "pt_files" / bags[0].name)
    for bag in bags[1:3]:
        with h5py.File(flat / "features" / "h5_files" / f"{bag.stem}.h5", "w") as f:
            f["features"] = torch.load(bag, weights_only=True).numpy()
            f["coords"] = np.zeros((len(f["features"]), 2), np.int64)
    patches = flat / "features" / bags[3].stem
    patches.mkdir()
    Image.new("RGB", (8, 8)).save(patches / "0.png")
    items = cpm_radpath_datalist(flat, skip_invalid=True)  # the features folder is not read as a case
    assert [Path(item["bag"]).relative_to(flat / "features").as_posix() for item in items] == [
        f"pt_files/{bags[0].name}",
        f"h5_files/{bags[1].stem}.h5",
        f"h5_files/{bags[2].stem}.h5",
        bags[3].stem,
    ]
    assert sorted(e.case for e in items.skipped) == [bags[4].stem, bags[5].stem]  # no bag
    assert all(e.reason.startswith("missing histology bag") for e in items.skipped)
    assert len(validate_loading(items, Compose([LoadBagd("bag")]))) == 4


def _assert_named(call, case: str, file: Path, reason: str) -> None:
    with pytest.raises(InvalidCaseError, match=reason) as caught:
        call()
    assert caught.value.case == case and caught.value.file == str(file)


def test_missing_mri_sequence(small):
    item = cpm_radpath_datalist(small)[1]
    Path(item["image"][2]).unlink()
    _assert_named(lambda: cpm_radpath_datalist(small), item["case"], item["image"][2], "missing t2 file")
    kept = cpm_radpath_datalist(small, skip_invalid=True)
    assert len(kept) == 5 and [e.case for e in kept.skipped] == [item["case"]]
    assert len(cpm_radpath_datalist(small, modalities=("t1", "flair"))) == 6


def test_case_listed_without_mri(small):
    case = cpm_radpath_datalist(small)[0]["case"]
    shutil.rmtree(small / "Radiology" / case)
    _assert_named(lambda: cpm_radpath_datalist(small), case, small / "Radiology" / case, "missing MRI: labels.csv")
    kept = cpm_radpath_datalist(small, skip_invalid=True)
    assert len(kept) == 5 and [e.case for e in kept.skipped] == [case]


def test_missing_bag(small):
    case = cpm_radpath_datalist(small)[3]["case"]
    (small / "features" / f"{case}.pt").unlink()
    _assert_named(lambda: cpm_radpath_datalist(small), case, small / "features" / f"{case}.pt", "missing histology")
    assert [e.case for e in cpm_radpath_datalist(small, skip_invalid=True).skipped] == [case]
    inference = cpm_radpath_datalist(small, require_bag=False, require_label=False)
    assert len(inference) == 6 and "bag" not in inference[3] and "label" not in inference[0]
    with pytest.raises(MissingInputError, match="bags folder not found"):
        cpm_radpath_datalist(small, bags_dir=small / "elsewhere")


def test_unknown_class_label(small):
    lines = (small / "labels.csv").read_text(encoding="utf-8").splitlines()
    case = lines[2].split(",")[0]
    lines[2] = f"{case},GBM"
    (small / "labels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    _assert_named(lambda: cpm_radpath_datalist(small), case, small / "labels.csv", r"\['GBM'\] outside .*'G', 'A', 'O'")
    kept = cpm_radpath_datalist(small, skip_invalid=True)
    assert len(kept) == 5 and [e.case for e in kept.skipped] == [case]
    assert CPM_RADPATH_CLASSES == ("G", "A", "O")


@pytest.mark.parametrize(
    "bag, reason",
    [
        (torch.zeros(0, 8), "empty bag"),
        ([torch.ones(8), torch.ones(5)], "ragged bag"),
        (torch.full((4, 8), float("nan")), "NaN or infinite values in 4 of 4 patches"),
    ],
)
def test_bad_bag_named_and_skipped(small, bag, reason):
    items = cpm_radpath_datalist(small)
    bad = items[4]
    torch.save(bag, bad["bag"])
    _assert_named(lambda: validate_loading(items, _load()), bad["case"], bad["bag"], reason)
    kept = validate_loading(items, _load(), skip_invalid=True)
    assert len(kept) == 5 and [e.case for e in kept.skipped] == [bad["case"]]


@pytest.fixture
def tcga_case(sample_data, tmp_path) -> Path:
    """The real TCGA-LGG MRI of TCGA-FG-6692, linked into a case folder with BraTS names."""
    source = sample_data / "tcga-lgg-fg6692" / "mri-3d-brainles"
    if not source.is_dir():
        pytest.skip(f"the real TCGA-LGG MRI is not in {source}")
    case = tmp_path / "Radiology" / "TCGA-FG-6692"
    case.mkdir(parents=True)
    for modality, ending in TCGA_SERIES.items():
        (series,) = [p for p in source.iterdir() if p.name.endswith(ending)]
        (case / f"TCGA-FG-6692_{modality}.nii.gz").symlink_to(series)
    return tmp_path


def test_real_tcga_lgg_mri(tcga_case):
    items = cpm_radpath_datalist(tcga_case, require_bag=False, require_label=False)
    assert [item["case"] for item in items] == ["TCGA-FG-6692"] and len(items[0]["image"]) == 4
    # T1 and T1c share one grid and load together; T2 and FLAIR were acquired on others (224 x 256, 208 x 256) and
    # are not co-registered: stacking them is refused, naming the first that differs, rather than resampled
    t2 = tcga_case / "Radiology" / "TCGA-FG-6692" / "TCGA-FG-6692_t2.nii.gz"
    reason = r"modality shape \(224, 256, 26\) differs from the first image's \(256, 224, 26\)"
    _assert_named(lambda: LoadCased(keys="image")(items[0]), "TCGA-FG-6692", t2, reason)
    pair = cpm_radpath_datalist(tcga_case, modalities=("t1", "t1ce"), require_bag=False, require_label=False)
    assert LoadCased(keys="image")(pair[0])["image"].shape == (2, 256, 224, 26)
    flair = cpm_radpath_datalist(tcga_case, modalities=("flair",), require_bag=False, require_label=False)
    image = LoadCased(keys="image")(flair[0])["image"]
    assert image.shape == (1, 208, 256, 26) and image.meta["case"] == "TCGA-FG-6692"


def test_stratified_split_of_a_synthetic_set(tmp_path):
    items = cpm_radpath_datalist(make_cpm_radpath_dataset(tmp_path, num_cases=20, shape=(8, 8, 8), feature_dim=4))
    for part in stratified_split(items, (0.6, 0.2, 0.2), seed=0):
        assert {item["label"] for item in part} == {0, 1, 2}
