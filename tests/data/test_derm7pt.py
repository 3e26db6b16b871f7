"""Derm7pt: the real meta.csv read into the eight tasks, index files as 0-based rows, pairs without a clinical photo
left out, bad cases named; the synthetic set in the release's layout, seeded, the dermoscopic photo the clearer."""

import csv
import hashlib
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from medguide.data import (
    DERM7PT_TASKS,
    InputError,
    InvalidCaseError,
    MissingInputError,
    clinical_photo_datalist,
    dataset_dir_or_synthetic,
    derm7pt_datalist,
    make_derm7pt_dataset,
    photo_datalist,
)
from medguide.transforms import LoadPhotod, validate_loading

SECTIONS = ("train", "valid", "test")
# the class counts of the released meta.csv's 1,011 rows, grouped as DERM7PT_TASKS (counted once from the file)
REAL_COUNTS = {
    "diagnosis": {"BCC": 42, "NEV": 575, "MEL": 252, "MISC": 97, "SK": 45},
    "pigment_network": {"absent": 400, "typical": 381, "atypical": 230},
    "blue_whitish_veil": {"absent": 816, "present": 195},
    "vascular_structures": {"absent": 823, "regular": 117, "irregular": 71},
    "pigmentation": {"absent": 588, "regular": 118, "irregular": 305},
    "streaks": {"absent": 653, "regular": 107, "irregular": 251},
    "dots_and_globules": {"absent": 229, "regular": 334, "irregular": 448},
    "regression_structures": {"absent": 758, "present": 253},
}
# the nine rows whose clinic column names the dermoscopic photo, by section
WITHOUT_CLINIC = {"train": {"565", "833"}, "valid": {"800", "824", "839", "844", "851"}, "test": {"827", "834"}}


def _counts(items) -> dict:
    return {
        task: {name: sum(item["label"][task] == k for item in items) for k, name in enumerate(names)}
        for task, names in DERM7PT_TASKS.items()
    }


@pytest.fixture(scope="module")
def real_derm7pt(sample_data, tmp_path_factory) -> Path:
    """The real meta/ files in the release's layout, with an empty stand-in for every photo they name."""
    source = sample_data / "derm7pt-meta"
    if not (source / "meta.csv").is_file():
        pytest.skip(f"the real Derm7pt meta.csv is not in {source}")
    root = tmp_path_factory.mktemp("derm7pt")
    (root / "meta").mkdir()
    for name in ("meta.csv", *(f"{s}_indexes.csv" for s in SECTIONS)):
        (root / "meta" / name).symlink_to(source / name)
    with open(source / "meta.csv", encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            for key in ("clinic", "derm"):
                (root / "images" / row[key]).parent.mkdir(parents=True, exist_ok=True)
                (root / "images" / row[key]).touch()
    return root


def test_real_meta_csv_counts(real_derm7pt):
    every = [item for s in SECTIONS for item in derm7pt_datalist(real_derm7pt, s, require_clinic=False)]
    assert len(every) == 1011 and len({item["case"] for item in every}) == 1011
    assert _counts(every) == REAL_COUNTS
    sizes = {s: len(derm7pt_datalist(real_derm7pt, s, require_clinic=False)) for s in SECTIONS}
    assert sizes == {"train": 413, "valid": 203, "test": 395}


def test_real_index_files_are_row_positions(real_derm7pt):
    train = derm7pt_datalist(real_derm7pt, "train")
    # train_indexes.csv starts with 16: row 16 is case_num 17 (a case_num join would take case 16, a row earlier)
    assert (real_derm7pt / "meta" / "train_indexes.csv").read_text(encoding="utf-8").split()[:2] == ["indexes", "16"]
    assert train[0]["case"] == "17"
    assert "1" in {item["case"] for item in train}  # row 0: a case_num join finds no case_num 0
    assert "1011" in {item["case"] for item in derm7pt_datalist(real_derm7pt, "test")}  # row 1010, the last
    first = next(item for item in train if item["case"] == "1")
    assert Path(first["clinic"]).relative_to(real_derm7pt / "images") == Path("NEL/NEL025.JPG")
    assert Path(first["derm"]).relative_to(real_derm7pt / "images") == Path("NEL/Nel026.jpg")
    assert first["label"]["diagnosis"] == DERM7PT_TASKS["diagnosis"].index("BCC")
    assert first["label"]["vascular_structures"] == DERM7PT_TASKS["vascular_structures"].index("regular")  # arborizing


def test_real_cases_without_clinical_photo_left_out(real_derm7pt, caplog):
    for section, sizes in (("train", 411), ("valid", 198), ("test", 393)):
        with caplog.at_level(logging.INFO, logger="medguide.data"):
            items = derm7pt_datalist(real_derm7pt, section)
        assert len(items) == sizes and not items.skipped
        assert not WITHOUT_CLINIC[section] & {item["case"] for item in items}
        assert f"left out {len(WITHOUT_CLINIC[section])} cases without a clinical photo" in caplog.text
    kept = derm7pt_datalist(real_derm7pt, "valid", require_clinic=False)
    assert all("clinic" not in item for item in kept if item["case"] in WITHOUT_CLINIC["valid"])


def test_real_meta_csv_beside_images(sample_data, real_derm7pt, tmp_path):
    # meta.csv and the index files directly in the data folder, as the shared sample keeps them
    for name in ("meta.csv", *(f"{s}_indexes.csv" for s in SECTIONS)):
        (tmp_path / name).symlink_to(real_derm7pt / "meta" / name)
    (tmp_path / "images").symlink_to(real_derm7pt / "images")
    assert len(derm7pt_datalist(tmp_path, "test")) == 393


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_derm7pt_dataset(tmp_path_factory.mktemp("derm7pt-synthetic"), num_cases=40, image_size=32, seed=3)


def test_synthetic_columns_are_the_releases(synthetic, sample_data):
    with open(sample_data / "derm7pt-meta" / "meta.csv", encoding="utf-8") as f:
        real_header = f.readline().strip()
    assert (synthetic / "meta" / "meta.csv").read_text(encoding="utf-8").splitlines()[0] == real_header


def test_synthetic_layout(synthetic):
    meta = synthetic / "meta" / "meta.csv"
    sections = {s: derm7pt_datalist(synthetic, s) for s in SECTIONS}
    with open(meta, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    positions = {
        s: [int(n) for n in (synthetic / "meta" / f"{s}_indexes.csv").read_text().split()[1:]] for s in SECTIONS
    }
    assert sorted(sum(positions.values(), [])) == list(range(40))  # 0-based rows, each in one section
    without_clinic = [row["case_num"] for row in rows if row["clinic"] == row["derm"]]
    assert len(without_clinic) == 1 and not any(without_clinic[0] == i["case"] for s in sections.values() for i in s)
    assert sum(len(items) for items in sections.values()) == 39
    for section, items in sections.items():
        assert {item["label"]["diagnosis"] for item in items} == set(range(5)), section
        for item in items:
            row = rows[int(item["case"]) - 1]
            assert Path(item["derm"]).name == Path(row["derm"]).name
            assert Image.open(item["clinic"]).size == Image.open(item["derm"]).size == (32, 32)
    loaded = LoadPhotod(keys=("clinic", "derm"))(sections["train"][0])
    assert loaded["clinic"].shape == loaded["derm"].shape == (3, 32, 32)
    assert loaded["derm"].meta["case"] == sections["train"][0]["case"]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_synthetic_is_seeded(tmp_path):
    first = _digest(make_derm7pt_dataset(tmp_path / "a", num_cases=12, image_size=16, seed=5))
    assert first == _digest(make_derm7pt_dataset(tmp_path / "b", num_cases=12, image_size=16, seed=5))
    assert first != _digest(make_derm7pt_dataset(tmp_path / "c", num_cases=12, image_size=16, seed=6))


def test_synthetic_shape_as_the_cli_and_configs_pass_it(tmp_path):
    out = dataset_dir_or_synthetic(
        "", "medguide.data.make_derm7pt_dataset", root=tmp_path, num_cases=6, shape=[24, 24, 3]
    )
    assert Image.open(next((out / "images").rglob("*.jpg"))).size == (24, 24)
    with pytest.raises(ValueError, match="square RGB"):
        make_derm7pt_dataset(tmp_path / "x", num_cases=2, shape=(24, 32, 3))


def _probe_features(path: str) -> np.ndarray:
    image = np.asarray(Image.open(path), float) / 255
    grey = image.mean(2)
    detail = np.abs(grey - ndimage.gaussian_filter(grey, 1.5))
    lesion = grey < np.percentile(grey, 60)
    small = np.asarray(Image.open(path).resize((8, 8), Image.BILINEAR), float).ravel() / 255
    stats = [*image[lesion].mean(0), *image[lesion].std(0), detail[lesion].mean(), np.percentile(detail, 95)]
    return np.concatenate([stats, small])


def test_synthetic_dermoscopy_carries_the_diagnosis_more_clearly(tmp_path):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    out = make_derm7pt_dataset(tmp_path, num_cases=120, seed=0)
    items = [item for s in SECTIONS for item in derm7pt_datalist(out, s)]
    diagnosis = np.array([item["label"]["diagnosis"] for item in items])
    accuracy = {}
    for photo in ("clinic", "derm"):
        features = np.stack([_probe_features(item[photo]) for item in items])
        features = (features - features.mean(0)) / (features.std(0) + 1e-8)
        probe = LogisticRegression(C=0.3, max_iter=3000, class_weight="balanced")
        predicted = cross_val_predict(probe, features, diagnosis, cv=StratifiedKFold(4, shuffle=True, random_state=0))
        accuracy[photo] = balanced_accuracy_score(diagnosis, predicted)
    assert accuracy["derm"] > accuracy["clinic"] + 0.1, accuracy  # the superior photo is clearer
    assert accuracy["clinic"] > 0.2 + 0.1, accuracy  # and the inferior one still above chance (5 classes)


def _rewrite_meta(root: Path, case: str, column: str, value: str) -> None:
    meta = root / "meta" / "meta.csv"
    with open(meta, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    header = list(rows[0])
    next(row for row in rows if row["case_num"] == case)[column] = value
    with open(meta, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, header, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


@pytest.fixture
def editable(tmp_path) -> Path:
    return make_derm7pt_dataset(tmp_path, num_cases=20, image_size=16, seed=1)


def test_missing_photo_of_a_pair(editable):
    item = derm7pt_datalist(editable, "train")[0]
    Path(item["clinic"]).unlink()
    with pytest.raises(InvalidCaseError, match="missing clinical photo") as caught:
        derm7pt_datalist(editable, "train")
    assert caught.value.case == item["case"] and caught.value.file == item["clinic"]
    kept = derm7pt_datalist(editable, "train", skip_invalid=True)
    assert item["case"] not in {i["case"] for i in kept} and [e.case for e in kept.skipped] == [item["case"]]


def test_unknown_class_value(editable):
    case = derm7pt_datalist(editable, "train")[1]["case"]
    _rewrite_meta(editable, case, "diagnosis", "nevus of unknown kind")
    with pytest.raises(InvalidCaseError, match=r"column 'diagnosis' value \['nevus of unknown kind'\]") as caught:
        derm7pt_datalist(editable, "train")
    assert caught.value.case == case and caught.value.file == str(editable / "meta" / "meta.csv")
    kept = derm7pt_datalist(editable, "train", skip_invalid=True)
    assert case not in {i["case"] for i in kept} and [e.case for e in kept.skipped] == [case]


def test_photo_that_does_not_decode(editable):
    items = derm7pt_datalist(editable, "train")
    bad = items[2]
    Path(bad["derm"]).write_bytes(Path(bad["derm"]).read_bytes()[:60])
    load = LoadPhotod(keys=("clinic", "derm"))
    with pytest.raises(InvalidCaseError, match="unreadable or corrupted image") as caught:
        load(bad)
    assert caught.value.case == bad["case"] and caught.value.file == bad["derm"]
    kept = validate_loading(items, load, skip_invalid=True)
    assert len(kept) == len(items) - 1 and [e.file for e in kept.skipped] == [bad["derm"]]


def test_bad_index_files_and_sections(editable):
    index = editable / "meta" / "valid_indexes.csv"
    index.write_text("indexes\n0\n20\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"row 3: '20' is not a row position in meta.csv \(0 to 19"):
        derm7pt_datalist(editable, "valid")
    index.write_text("indexes\n3\n3\n", encoding="utf-8")
    with pytest.raises(InputError, match="lists row 3 twice"):
        derm7pt_datalist(editable, "valid")
    index.write_text("3\n4\n", encoding="utf-8")  # no header: pandas would take the first row for one
    with pytest.raises(InputError, match="no column 'indexes'"):
        derm7pt_datalist(editable, "valid")
    with pytest.raises(InputError, match="section must be one of"):
        derm7pt_datalist(editable, "validation")
    (editable / "meta" / "test_indexes.csv").unlink()
    with pytest.raises(MissingInputError, match="test_indexes.csv"):
        derm7pt_datalist(editable, "test")


def test_inference_reads_the_clinical_photo_alone(editable):
    """A missing dermoscopic photo or an unknown criterion value does not stop inference from the clinical photo."""
    items = derm7pt_datalist(editable, "test")
    Path(items[0]["derm"]).unlink()
    _rewrite_meta(editable, items[1]["case"], "streaks", "wavy")
    cases = clinical_photo_datalist(editable, "test")
    assert [(c["case"], c["clinic"]) for c in cases] == [(i["case"], i["clinic"]) for i in items]
    assert all(set(c) == {"case", "clinic"} for c in cases)
    Path(items[2]["clinic"]).unlink()  # but a missing clinical photo is named
    with pytest.raises(InvalidCaseError, match="missing clinical photo") as caught:
        clinical_photo_datalist(editable, "test")
    assert caught.value.case == items[2]["case"] and caught.value.file == items[2]["clinic"]


def test_a_folder_of_ones_own_photos(tmp_path):
    folder = tmp_path / "my photos"
    folder.mkdir()
    for name in ("b lesion.JPG", "a.png", "._a.png", ".DS_Store", "notes.txt"):
        (folder / name).write_bytes(b"x")
    (folder / "sub.jpg").mkdir()
    assert clinical_photo_datalist(folder) == [
        {"case": "a", "clinic": str(folder / "a.png")},
        {"case": "b lesion", "clinic": str(folder / "b lesion.JPG")},
    ]
    (folder / "a.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="would both be case 'a'"):
        photo_datalist(folder)
    with pytest.raises(MissingInputError, match="no photograph"):
        photo_datalist(tmp_path)  # holds only the folder
    with pytest.raises(MissingInputError, match="not found"):
        photo_datalist(tmp_path / "nowhere")
