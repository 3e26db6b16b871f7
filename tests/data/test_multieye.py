"""MultiEYE: the lists read by MultiEYE's own path rule, bad lines and images named, images of the wrong kind refused,
fundus items paired with OCT images of their own class at random each epoch, and the synthetic set seeded, in the
layout, its OCT the clearer modality; real fundus photographs through the fundus reader and loader."""

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from monai.data import DataLoader, Dataset
from monai.transforms import Compose
from monai.utils import set_determinism
from PIL import Image

from medguide.data import (
    MULTIEYE_CLASSES,
    InputError,
    InvalidCaseError,
    MissingInputError,
    RandLabelPairedOCTd,
    dataset_dir_or_synthetic,
    make_multieye_dataset,
    multieye_datalist,
)
from medguide.transforms import LoadPhotod, validate_loading

SECTIONS = ("train", "dev", "test")
FUNDUS_IMAGES = Path("assemble/train/ImageData/cfp-clahe-224x224")
OCT_IMAGES = Path("assemble_oct/train/ImageData/oct-filter-448x448")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> Path:
    return make_multieye_dataset(tmp_path_factory.mktemp("multieye"), num_fundus=90, num_oct=72, image_size=32, seed=2)


def test_classes_are_multieyes():
    assert list(MULTIEYE_CLASSES) == ["NOR", "dAMD", "CSC", "DR", "GLC", "MEM", "MYO", "RVO", "wAMD"]
    assert MULTIEYE_CLASSES["MYO"] == "myopia" and MULTIEYE_CLASSES["wAMD"] == "wet age-related macular degeneration"


def test_reader_on_the_synthetic_set(synthetic):
    for modality, total, images in (("fundus", 90, FUNDUS_IMAGES), ("oct", 72, OCT_IMAGES)):
        sections = {s: multieye_datalist(synthetic, modality, s) for s in SECTIONS}
        assert sum(len(items) for items in sections.values()) == total
        # about 60 : 20 : 20, stratified: the rare classes' few images keep one in each section
        assert all(abs(len(sections[s]) - share * total) <= 4 for s, share in zip(SECTIONS, (0.6, 0.2, 0.2)))
        cases = [item["case"] for items in sections.values() for item in items]
        assert len(set(cases)) == total
        for section, items in sections.items():
            assert {item["label"] for item in items} == set(range(9)), (modality, section)
            list_file = synthetic / images.parts[0] / section / "large9cls.txt"
            listed = [line.split() for line in list_file.read_text().splitlines()]
            assert [[item["case"], str(item["label"])] for item in items] == listed
            for item in items:  # every section's images under train/ImageData, <id>.png
                assert Path(item["image"]) == synthetic / images / f"{item['case']}.png"
                assert item["label_file"] == str(list_file) and not items.skipped


def test_synthetic_class_shares(synthetic):
    fundus = Counter(i["label"] for s in SECTIONS for i in multieye_datalist(synthetic, "fundus", s))
    oct_ = Counter(i["label"] for s in SECTIONS for i in multieye_datalist(synthetic, "oct", s))
    # MultiEYE's fundus set is mostly normal and DR; every class keeps at least 4.5 % (3 images) here
    assert fundus[0] > fundus[3] > max(fundus[k] for k in (1, 2, 4, 5, 6, 7, 8))
    assert min(fundus.values()) >= 4 and min(oct_.values()) >= 3
    assert oct_[0] == max(oct_.values())


def _write_list(root: Path, lines: str, modality: str = "fundus", section: str = "train") -> Path:
    folder = "assemble" if modality == "fundus" else "assemble_oct"
    path = root / folder / section / "large9cls.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(lines, encoding="utf-8")
    return path


def _photo(path: Path, mode: str = "RGB", size: int = 16, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "RGB":
        pixels = np.stack([rng.integers(120, 256, (size, size)), rng.integers(30, 90, (size, size)),
                           rng.integers(0, 40, (size, size))], -1)  # fmt: skip
    else:
        pixels = rng.integers(0, 256, (size, size))
    Image.fromarray(pixels.astype(np.uint8)).convert(mode).save(path)
    return path


def test_path_rule(tmp_path):
    images = tmp_path / FUNDUS_IMAGES
    _photo(images / "1ffa9353-8d87-11e8-9daf-6045cb817f5b..png")  # an id ending with a dot, as MultiEYE's
    _photo(images / "IDRiD_001.JPG")  # one's own JPEG: the one photo of that id
    _write_list(tmp_path, "1ffa9353-8d87-11e8-9daf-6045cb817f5b. 3\n\n", section="test")
    _write_list(tmp_path, "IDRiD_001\t4\r\n", section="dev")  # tabs, Windows line ends
    (item,) = multieye_datalist(tmp_path, "fundus", "test")
    assert item == {
        "case": "1ffa9353-8d87-11e8-9daf-6045cb817f5b.",
        "image": str(images / "1ffa9353-8d87-11e8-9daf-6045cb817f5b..png"),
        "label": 3,
        "label_file": str(tmp_path / "assemble/test/large9cls.txt"),
    }
    assert multieye_datalist(tmp_path, "fundus", "dev")[0]["image"] == str(images / "IDRiD_001.JPG")
    _photo(images / "IDRiD_001.bmp")
    with pytest.raises(InvalidCaseError, match="several others of this id: IDRiD_001.JPG, IDRiD_001.bmp"):
        multieye_datalist(tmp_path, "fundus", "dev")
    other = tmp_path / "assemble/train/ImageData/raw"
    _photo(other / "IDRiD_001.png")
    assert multieye_datalist(tmp_path, "fundus", "dev", image_folder="raw")[0]["image"] == str(other / "IDRiD_001.png")


@pytest.fixture
def listed(tmp_path) -> Path:
    """A fundus train list of three photos, all present."""
    for name in ("a", "b", "c"):
        _photo(tmp_path / FUNDUS_IMAGES / f"{name}.png")
    _write_list(tmp_path, "a 0\nb 8\nc 5\n")
    return tmp_path


@pytest.mark.parametrize(
    ("line", "case", "reason"),
    [
        ("b", "b", r"line 2: expected '<image_id> <label>', got 'b'"),
        ("b 3 extra", "b", r"line 2: expected '<image_id> <label>', got 'b 3 extra'"),
        ("b 9", "b", r"label \[9\] outside the declared set \[0, 1, 2, 3, 4, 5, 6, 7, 8\], in line 2"),
        ("b -1", "b", r"label \[-1\] outside the declared set .*, in line 2"),
        ("b DR", "b", r"label \['DR'\] outside the declared set .*, in line 2"),
    ],
)
def test_bad_list_line_names_the_list_and_line(listed, line, case, reason):
    list_file = _write_list(listed, f"a 0\n{line}\nc 5\n")
    with pytest.raises(InvalidCaseError, match=reason) as caught:
        multieye_datalist(listed, "fundus", "train")
    assert caught.value.case == case and caught.value.file == str(list_file)
    kept = multieye_datalist(listed, "fundus", "train", skip_invalid=True)
    assert [i["case"] for i in kept] == ["a", "c"] and [e.case for e in kept.skipped] == [case]


def test_id_listed_twice(listed):
    list_file = _write_list(listed, "a 0\nb 8\na 0\nc 5\n")
    with pytest.raises(InvalidCaseError, match=r"listed in several lines: \[1, 3\]") as caught:
        multieye_datalist(listed, "fundus", "train")
    assert caught.value.case == "a" and caught.value.file == str(list_file)
    assert [i["case"] for i in multieye_datalist(listed, "fundus", "train", skip_invalid="true")] == ["b", "c"]


def test_listed_image_missing(listed):
    (listed / FUNDUS_IMAGES / "b.png").unlink()
    with pytest.raises(InvalidCaseError, match=r"image not found \(listed in line 2 of") as caught:
        multieye_datalist(listed, "fundus", "train")
    assert caught.value.case == "b" and caught.value.file == str(listed / FUNDUS_IMAGES / "b.png")
    kept = multieye_datalist(listed, "fundus", "train", skip_invalid=True)
    assert [i["case"] for i in kept] == ["a", "c"] and [e.file for e in kept.skipped] == [caught.value.file]
    _write_list(listed, "b 8\n")
    with pytest.raises(InputError, match="no valid case left"):
        multieye_datalist(listed, "fundus", "train", skip_invalid=True)


def test_hidden_files_never_taken(listed):
    _photo(listed / FUNDUS_IMAGES / "._a.png")  # a macOS resource fork beside a.png is not read
    assert len(multieye_datalist(listed, "fundus", "train")) == 3
    _write_list(listed, "a 0\n._a 0\n")
    with pytest.raises(InvalidCaseError, match="is a hidden file, not an image") as caught:
        multieye_datalist(listed, "fundus", "train")
    assert caught.value.case == "._a"


def test_missing_list_and_bad_arguments(listed):
    with pytest.raises(MissingInputError, match=r"MultiEYE oct list not found: '.*assemble_oct/train/large9cls.txt'"):
        multieye_datalist(listed, "oct", "train")
    with pytest.raises(MissingInputError, match="looks like the assemble/ folder itself: give its parent"):
        multieye_datalist(listed / "assemble", "fundus", "train")
    _write_list(listed, "\n\n", section="dev")
    with pytest.raises(MissingInputError, match="lists no image"):
        multieye_datalist(listed, "fundus", "dev")
    with pytest.raises(InputError, match="modality must be one of"):
        multieye_datalist(listed, "cfp", "train")
    with pytest.raises(InputError, match="section must be one of"):
        multieye_datalist(listed, "fundus", "val")


def test_wrong_modality_kind_named(synthetic, tmp_path):
    fundus = multieye_datalist(synthetic, "fundus", "dev")[:2]
    oct_items = multieye_datalist(synthetic, "oct", "dev")[:2]
    load_fundus = LoadPhotod(keys="image", expect="rgb")
    load_oct = LoadPhotod(keys="image", mode="L", expect="grey")
    assert load_fundus(fundus[0])["image"].shape == (3, 32, 32)
    assert load_oct(oct_items[0])["image"].shape == (1, 32, 32)
    # grey where a colour fundus photograph is expected: a grey PNG, and a grey image saved as RGB alike
    grey = _photo(tmp_path / "grey.png", mode="L")
    grey_rgb = tmp_path / "grey_rgb.png"
    Image.open(grey).convert("RGB").save(grey_rgb)
    for path in (grey, grey_rgb):
        with pytest.raises(
            InvalidCaseError, match="is a grey image .* where a colour .RGB. image is expected"
        ) as caught:
            load_fundus({"case": "f1", "image": str(path)})
        assert caught.value.case == "f1" and caught.value.file == str(path)
    # a colour photograph where a grey OCT B-scan is expected, whatever mode it is converted to
    with pytest.raises(InvalidCaseError, match="is a colour image where a grey image is expected") as caught:
        load_oct({"case": "o1", "image": fundus[0]["image"]})
    assert caught.value.case == "o1" and caught.value.file == fundus[0]["image"]
    kept = validate_loading([*oct_items, {**fundus[1], "case": "swapped"}], load_oct, skip_invalid=True)
    assert [i["case"] for i in kept] == [i["case"] for i in oct_items] and kept.skipped[0].case == "swapped"
    with pytest.raises(ValueError, match="expect must be one of"):
        LoadPhotod(keys="image", expect="colour")


def test_pairing_matches_labels_and_changes_every_epoch(synthetic):
    fundus = multieye_datalist(synthetic, "fundus", "train")
    oct_items = multieye_datalist(synthetic, "oct", "train")
    label_of = {item["case"]: item["label"] for item in oct_items}
    pair = RandLabelPairedOCTd(oct_items, labels=[item["label"] for item in fundus]).set_random_state(seed=0)
    epochs = [[pair(item) for item in fundus] for _ in range(3)]  # as a dataset calls it, epoch after epoch
    for epoch in epochs:
        for item, source in zip(epoch, fundus, strict=True):
            assert item["oct_label"] == item["label"] == label_of[item["oct_case"]] == source["label"]
            assert item["oct"] == next(o["image"] for o in oct_items if o["case"] == item["oct_case"])
            assert item["image"] == source["image"]  # the fundus item itself unchanged
    chosen = [[item["oct_case"] for item in epoch] for epoch in epochs]
    assert chosen[0] != chosen[1] != chosen[2]
    # each class's OCT images all come up over a few epochs
    assert {item["oct_case"] for epoch in epochs for item in epoch if item["label"] == 0} == {
        o["case"] for o in oct_items if o["label"] == 0
    }
    # seeded: the same seed draws the same OCT images, another seed others
    again = RandLabelPairedOCTd(oct_items).set_random_state(seed=0)
    assert [again(item)["oct_case"] for item in fundus] == chosen[0]
    other = RandLabelPairedOCTd(oct_items).set_random_state(seed=1)
    assert [other(item)["oct_case"] for item in fundus] != chosen[0]


def test_pairing_seeded_by_monai_and_a_loaded_pool(synthetic):
    """Seeded through MONAI's DataLoader and set_determinism, with a dataset of loaded OCT images as the pool."""
    fundus = multieye_datalist(synthetic, "fundus", "train")[:12]
    pool = Dataset(multieye_datalist(synthetic, "oct", "train"), transform=LoadPhotod(keys="image", expect="grey"))
    transform = Compose([LoadPhotod(keys="image", expect="rgb"), RandLabelPairedOCTd(pool)])

    def run() -> list[list[str]]:
        set_determinism(seed=7)
        loader = DataLoader(Dataset(fundus, transform=transform), batch_size=4, shuffle=True, num_workers=0)
        return [[case for batch in loader for case in batch["oct_case"]] for _ in range(2)]

    first = run()
    set_determinism(None)
    assert first == run() and first[0] != first[1]
    set_determinism(None)
    batch = next(iter(DataLoader(Dataset(fundus, transform=transform), batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["oct"].shape == (4, 3, 32, 32)
    assert batch["oct_label"].tolist() == batch["label"].tolist()


def test_pairing_refuses_a_class_without_oct(synthetic):
    oct_items = [item for item in multieye_datalist(synthetic, "oct", "train") if item["label"] != 5]
    fundus = multieye_datalist(synthetic, "fundus", "train")
    with pytest.raises(InputError, match=r"no OCT training image of class 5 \(MEM\) to pair with"):
        RandLabelPairedOCTd(oct_items, labels=[item["label"] for item in fundus])
    pair = RandLabelPairedOCTd(oct_items)
    membrane = next(item for item in fundus if item["label"] == 5)
    with pytest.raises(InputError, match=rf"case '{membrane['case']}': no OCT training image of class 5"):
        pair(membrane)
    with pytest.raises(InputError, match="holds no image"):
        RandLabelPairedOCTd([])


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def test_synthetic_is_seeded_and_in_the_layout(tmp_path):
    first = _digest(make_multieye_dataset(tmp_path / "a", num_fundus=18, num_oct=18, image_size=16, seed=5))
    assert first == _digest(make_multieye_dataset(tmp_path / "b", num_fundus=18, num_oct=18, image_size=16, seed=5))
    assert first != _digest(make_multieye_dataset(tmp_path / "c", num_fundus=18, num_oct=18, image_size=16, seed=6))
    lists = {f"{folder}/{s}/large9cls.txt" for folder in ("assemble", "assemble_oct") for s in SECTIONS}
    images = {name for name in first if name not in lists}
    assert lists <= set(first) and len(images) == 36
    assert all(name.endswith(".png") for name in images)
    assert {str(Path(name).parent) for name in images} == {str(FUNDUS_IMAGES), str(OCT_IMAGES)}
    fundus = Image.open(tmp_path / "a" / FUNDUS_IMAGES / "syn-cfp-0000.png")
    oct_ = Image.open(tmp_path / "a" / OCT_IMAGES / "syn-oct-0000.png")
    assert (fundus.mode, fundus.size, oct_.mode, oct_.size) == ("RGB", (16, 16), "L", (16, 16))


def test_synthetic_shape_as_the_cli_and_configs_pass_it(tmp_path):
    out = dataset_dir_or_synthetic(
        "", "medguide.data.make_multieye_dataset", root=tmp_path, num_fundus=9, num_oct=9, shape=[24, 24, 3]
    )
    assert Image.open(next((out / FUNDUS_IMAGES).glob("*.png"))).size == (24, 24)
    assert Image.open(next((out / OCT_IMAGES).glob("*.png"))).size == (24, 24)
    with pytest.raises(ValueError, match="square"):
        make_multieye_dataset(tmp_path / "x", num_fundus=9, num_oct=9, shape=(24, 32))
    with pytest.raises(ValueError, match="num_oct must be at least 5"):
        make_multieye_dataset(tmp_path / "y", num_fundus=9, num_oct=4)
    # medguide synthetic's call (its default --num_cases is 8): every list readable, the commonest classes in it
    for cases in (5, 8):
        small = make_multieye_dataset(tmp_path / f"cli{cases}", num_cases=cases, image_size=8, seed=0)
        for modality in ("fundus", "oct"):
            items = [item for s in SECTIONS for item in multieye_datalist(small, modality, s)]
            assert len(items) == cases and 0 in {item["label"] for item in items}


def _probe_accuracy(items: list[dict]) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    features = np.stack(
        [np.asarray(Image.open(i["image"]).resize((16, 16), Image.BILINEAR), float).ravel() for i in items]
    )
    features = (features - features.mean(0)) / (features.std(0) + 1e-8)
    labels = np.array([item["label"] for item in items])
    probe = LogisticRegression(C=0.05, max_iter=2000, class_weight="balanced")
    predicted = cross_val_predict(probe, features, labels, cv=StratifiedKFold(3, shuffle=True, random_state=0))
    return balanced_accuracy_score(labels, predicted)


def test_synthetic_oct_shows_the_class_more_clearly(tmp_path):
    out = make_multieye_dataset(tmp_path, num_fundus=180, num_oct=180, seed=0)
    accuracy = {
        m: _probe_accuracy([i for s in SECTIONS for i in multieye_datalist(out, m, s)]) for m in ("fundus", "oct")
    }
    assert accuracy["oct"] > accuracy["fundus"] + 0.15, accuracy  # the teacher's modality is clearer
    assert accuracy["fundus"] > 1 / 9 + 0.05, accuracy  # and the fundus still above chance (9 classes)


@pytest.fixture(scope="module")
def real_fundus(sample_data, tmp_path_factory) -> Path:
    """The shared IDRiD fundus photographs (4288 x 2848 JPEGs) in the MultiEYE layout, listed as DR."""
    source = sample_data / "fundus-idrid-codras" / "images"
    photos = sorted(source.glob("*.jpg"))
    if not photos:
        pytest.skip(f"the real fundus photographs are not in {source}")
    root = tmp_path_factory.mktemp("multieye-real")
    images = root / FUNDUS_IMAGES
    images.mkdir(parents=True)
    for photo in photos:
        (images / photo.name).symlink_to(photo)
    _write_list(root, "".join(f"{photo.stem} 3\n" for photo in photos), section="test")
    return root


def test_real_fundus_photographs_through_the_reader_and_loader(real_fundus):
    items = multieye_datalist(real_fundus, "fundus", "test")
    assert len(items) == 10 and {item["label"] for item in items} == {3}
    assert all(Path(item["image"]).suffix == ".jpg" for item in items)
    load = LoadPhotod(keys="image", expect="rgb")
    loaded = load(items[0])
    assert loaded["image"].shape == (3, 4288, 2848) and loaded["image"].meta["case"] == items[0]["case"]
    assert 0 <= float(loaded["image"].min()) and float(loaded["image"].max()) <= 255
    assert len(validate_loading(items[1:], load)) == 9
    with pytest.raises(InvalidCaseError, match="is a colour image where a grey image is expected") as caught:
        LoadPhotod(keys="image", expect="grey")(items[0])
    assert caught.value.case == items[0]["case"]
