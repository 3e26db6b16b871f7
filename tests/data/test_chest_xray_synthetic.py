"""The synthetic chest X-ray set: seeded bytes, the MIMIC-CXR-JPG and ChestX-ray8 layouts and headers, boxes that hold
their opacities on the patient's side, and reports whose wording matches the truth file."""

import csv
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medguide.data import make_cxr_dataset
from medguide.data.chest_xray import CHESTXRAY8_SIDE, CHEXPERT_LABELS, chestxray8_boxes
from medguide.data.chest_xray_synthetic import CXR_WORDINGS, _chest_film

SIZE = 64
SIDE_WORDS = {
    "right": r"\bright\b",
    "left": r"\bleft\b",
    "bilateral": r"\bbilateral\b|\bboth\b|\bbibasilar\b|\bbiapical\b",
}
ZONE_WORDS = {
    "upper": r"upper|apex|apical|apices",
    "middle": r"\bmid\b|perihilar",
    "lower": r"lower|bas(e|es|al|ilar)\b",
}
LARGE_WORDS = r"\b(extensive|large|dense|widespread)\b"
NEGATION = r"\bno\b|\bclear\b|without"
HEDGE = r"cannot exclude|cannot be excluded|possible|versus|could represent|questionable|may reflect"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_cxr_dataset(tmp_path_factory.mktemp("cxr"), num_cases=12, image_size=SIZE, num_test=6, seed=1)


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> Path:
    """A set large enough to hold every wording: 80 studies at the smallest size."""
    return make_cxr_dataset(tmp_path_factory.mktemp("cxr-reports"), num_cases=80, image_size=32, num_test=0, seed=2)


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _header(path: Path) -> str:
    with open(path, newline="", encoding="utf-8") as handle:
        return handle.readline().rstrip("\r\n")


def _digest(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def _finding_text(report: str) -> str:
    """The FINDINGS and IMPRESSION sections, on one line and in lower case."""
    return " ".join(
        report[report.find(" FINDINGS:") if " FINDINGS:" in report else report.find(" IMPRESSION:") :].split()
    ).lower()


def test_seeded(tmp_path):
    settings = {"num_cases": 4, "image_size": 32, "num_test": 2}
    first = _digest(make_cxr_dataset(tmp_path / "a", seed=3, **settings))
    assert first == _digest(make_cxr_dataset(tmp_path / "b", seed=3, **settings))
    other = _digest(make_cxr_dataset(tmp_path / "c", seed=4, **settings))
    assert first["truth.csv"] != other["truth.csv"]
    assert any(name.endswith(".png") and first[name] != other.get(name) for name in first)


def test_mimic_layout(tiny):
    mimic = tiny / "mimic-cxr"
    split = _rows(mimic / "mimic-cxr-2.0.0-split.csv")
    assert _header(mimic / "mimic-cxr-2.0.0-split.csv") == "dicom_id,study_id,subject_id,split"
    assert len(split) == 12 and {row["split"] for row in split} == {"train", "validate"}
    subjects = {}
    for row in split:  # a subject's studies are all in one part
        assert subjects.setdefault(row["subject_id"], row["split"]) == row["split"]
        assert re.fullmatch(r"10\d{6}", row["subject_id"]) and re.fullmatch(r"5\d{7}", row["study_id"])
        study = mimic / "files" / "p10" / f"p{row['subject_id']}" / f"s{row['study_id']}"
        assert [path.name for path in study.iterdir()] == [f"{row['dicom_id']}.jpg"]
        assert study.with_suffix(".txt").read_text(encoding="utf-8").lstrip().startswith("FINAL REPORT")
        with Image.open(study / f"{row['dicom_id']}.jpg") as image:
            assert (image.format, image.mode, image.size) == ("JPEG", "L", (SIZE, SIZE))
    chexpert = _rows(mimic / "mimic-cxr-2.0.0-chexpert.csv")
    assert list(chexpert[0]) == ["subject_id", "study_id", *CHEXPERT_LABELS]
    assert [(row["subject_id"], row["study_id"]) for row in chexpert] == [
        (row["subject_id"], row["study_id"]) for row in split
    ]
    assert {row[column] for row in chexpert for column in CHEXPERT_LABELS} <= {"", "1.0", "0.0", "-1.0"}
    metadata = _rows(mimic / "mimic-cxr-2.0.0-metadata.csv")
    assert [row["dicom_id"] for row in metadata] == [row["dicom_id"] for row in split]
    assert {row["ViewPosition"] for row in metadata} <= {"PA", "AP"}
    assert {(row["Rows"], row["Columns"]) for row in metadata} == {(str(SIZE), str(SIZE))}


def test_chestxray8_layout(tiny):
    root = tiny / "chestxray8"
    assert _header(root / "Data_Entry_2017.csv") == (
        "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
        "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
    )
    real = Path(__file__).parents[3] / "shared" / "data" / "nih-chestxray14" / "BBox_List_2017.csv"
    expected = _header(real) if real.is_file() else "Image Index,Finding Label,Bbox [x,y,w,h]"
    assert _header(root / "BBox_List_2017.csv") == expected
    with open(root / "Data_Entry_2017.csv", newline="", encoding="utf-8") as handle:
        entries = list(csv.reader(handle))[1:]
    assert len(entries) == 6 and all(len(entry) == 11 for entry in entries)
    assert {entry[1] for entry in entries} == {"Pneumonia", "No Finding"}
    names = sorted(path.name for path in (root / "images").iterdir())
    assert names == sorted(entry[0] for entry in entries)
    for entry in entries:
        assert re.fullmatch(r"\d{8}_\d{3}\.png", entry[0]) and entry[0].endswith(f"_{int(entry[2]):03d}.png")
        with Image.open(root / "images" / entry[0]) as image:
            assert (image.format, image.mode, image.size) == ("PNG", "L", (SIZE, SIZE))
    with open(root / "BBox_List_2017.csv", newline="", encoding="utf-8") as handle:
        boxes = list(csv.reader(handle))[1:]
    pneumonia = {entry[0] for entry in entries if entry[1] == "Pneumonia"}
    assert {box[0] for box in boxes} == pneumonia and {box[1] for box in boxes} == {"Pneumonia"}
    truth = {Path(row["image"]).name: row for row in _rows(tiny / "truth.csv") if row["split"] == "test"}
    for name, _, *xywh in boxes:
        x, y, w, h = map(float, xywh)
        assert 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= SIZE and y + h <= SIZE
        assert " ".join(str(int(v)) for v in (x, y, w, h)) in truth[name]["boxes"].split(";")


def test_truth_file(tiny):
    truth = _rows(tiny / "truth.csv")
    assert list(truth[0]) == [
        "image", "split", "report", "view", "opacity", "side", "zone", "extensive", "faint", "boxes", "wording",
        "report_side", "report_zone",
    ]  # fmt: skip
    assert len(truth) == 18 and {row["split"] for row in truth} == {"train", "validate", "test"}
    for row in truth:
        assert (tiny / row["image"]).is_file()
        assert bool(row["report"]) == (row["split"] != "test")
        boxes = row["boxes"].split(";") if row["boxes"] else []
        assert len(boxes) == {"": 0, "right": 1, "left": 1, "bilateral": 2}[row["side"]]
        assert (row["opacity"] == "1") == bool(row["side"]) == bool(row["zone"])


@pytest.mark.parametrize("side", ["right", "left", "bilateral"])
@pytest.mark.parametrize("zone", ["upper", "middle", "lower"])
def test_boxes_hold_the_opacity_on_the_patients_side(side, zone):
    for seed in range(3):
        film = _chest_film(np.random.default_rng(seed), SIZE, side, zone, extensive=seed == 1)
        assert film.image.shape == film.added.shape == (SIZE, SIZE)
        assert 0 <= film.image.min() and film.image.max() <= 1
        assert len(film.boxes) == (2 if side == "bilateral" else 1)
        halves = (film.added[:, : SIZE // 2], film.added[:, SIZE // 2 :])
        for (x, y, w, h), lung in zip(film.boxes, ("right", "left") if side == "bilateral" else (side,), strict=True):
            assert 0 <= x and 0 <= y and x + w <= SIZE and y + h <= SIZE
            # the patient's right lung is on the image's left
            assert (x + w / 2 < SIZE / 2) == (lung == "right")
            half = halves[0] if lung == "right" else halves[1]
            row, col = np.unravel_index(np.argmax(half), half.shape)
            col += 0 if lung == "right" else SIZE // 2
            assert x <= col < x + w and y <= row < y + h
            inside = np.zeros((SIZE, SIZE), bool)
            inside[y : y + h, x : x + w] = True
            lung_half = np.zeros((SIZE, SIZE), bool)
            lung_half[:, : SIZE // 2] = lung == "right"
            lung_half[:, SIZE // 2 :] = lung != "right"
            strong = (film.added > 0.5 * film.added[lung_half].max()) & lung_half
            assert inside[strong].all()
    assert not _chest_film(np.random.default_rng(0), SIZE).added.any()


# ChestX-ray8's 120 pneumonia boxes (BBox_List_2017.csv, 1024 px films): median width and height as shares of the
# film, and their 10th percentiles
REAL_PNEUMONIA_BOX = {"median": (0.223, 0.269), "p10": (0.164, 0.158)}


def test_opacities_are_the_size_of_chestxray8_pneumonia_boxes():
    """The boxes of drawn opacities (the generator's sizes, not the films' pixels) are about the size of real
    pneumonia boxes: their medians within 0.75-1.25 of the release's, their 10th percentile above half of its
    (the first generator drew boxes a median 0.09 of the film, under half the real size)."""
    widths, heights = [], []
    for index in range(36):
        side, zone = ("right", "left", "bilateral")[index % 3], ("upper", "middle", "lower")[index // 3 % 3]
        film = _chest_film(np.random.default_rng(index), 96, side, zone, extensive=index % 10 < 3)
        widths += [w / 96 for _, _, w, _ in film.boxes]
        heights += [h / 96 for _, _, _, h in film.boxes]
    for ours, median, p10 in zip((widths, heights), *REAL_PNEUMONIA_BOX.values(), strict=True):
        assert 0.75 * median <= np.median(ours) <= 1.25 * median
        assert np.percentile(ours, 10) >= 0.5 * p10


def test_real_pneumonia_boxes_measure_what_the_synthetic_check_assumes(sample_data):
    path = sample_data / "nih-chestxray14" / "BBox_List_2017.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    listed = chestxray8_boxes(path, finding="Pneumonia", image_size=CHESTXRAY8_SIDE)
    corners = np.array([entry["box"] for entries in listed.values() for entry in entries])
    assert len(corners) == 120
    shares = (corners[:, 2:] - corners[:, :2]) / CHESTXRAY8_SIDE
    assert np.allclose(np.median(shares, 0), REAL_PNEUMONIA_BOX["median"], atol=0.001)
    assert np.allclose(np.percentile(shares, 10, axis=0), REAL_PNEUMONIA_BOX["p10"], atol=0.001)


def test_reports_match_the_truth(reports):
    truth = [row for row in _rows(reports / "truth.csv") if row["split"] != "test"]
    chexpert = {row["study_id"]: row for row in _rows(reports / "mimic-cxr" / "mimic-cxr-2.0.0-chexpert.csv")}
    assert {row["wording"] for row in truth} == set(CXR_WORDINGS)
    for row in truth:
        text = _finding_text((reports / row["report"]).read_text(encoding="utf-8"))
        labels = {
            chexpert[Path(row["report"]).stem[1:]][column] for column in ("Pneumonia", "Lung Opacity", "Consolidation")
        }
        wording = row["wording"]
        if wording in ("stated", "hedged"):
            assert row["report_side"] or row["report_zone"]
            if row["opacity"] == "1":
                assert row["report_side"] in ("", row["side"]) and row["report_zone"] in ("", row["zone"])
            if row["report_side"]:
                assert re.search(SIDE_WORDS[row["report_side"]], text), (row, text)
            if row["report_zone"]:
                assert re.search(ZONE_WORDS[row["report_zone"]], text), (row, text)
            assert bool(re.search(LARGE_WORDS, text)) == (row["extensive"] == "1"), (row, text)
        if wording == "stated":
            assert row["opacity"] == "1" and labels - {""} == {"1.0"} and not re.search(HEDGE, text)
        elif wording == "hedged":
            assert re.search(HEDGE, text) and labels - {""} == {"-1.0"}
            assert row["opacity"] == "0" or (row["faint"] == "1" and row["extensive"] == "0")
        elif wording == "negated":
            assert row["opacity"] == "0" and re.search(NEGATION, text) and labels - {""} == {"0.0"}
        else:
            assert labels == {""} and not re.search(r"pneumonia|consolidation|opacit", text)
    # films with an opacity are mostly stated, those without mostly negated
    positives = [row["wording"] for row in truth if row["opacity"] == "1"]
    negatives = [row["wording"] for row in truth if row["opacity"] == "0"]
    assert positives.count("stated") > len(positives) / 2 and negatives.count("negated") > len(negatives) / 2


def test_refuses_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="num_cases"):
        make_cxr_dataset(tmp_path, num_cases=0)
    with pytest.raises(ValueError, match="32 pixels"):
        make_cxr_dataset(tmp_path, image_size=16)
    with pytest.raises(ValueError, match="square and grey"):
        make_cxr_dataset(tmp_path, shape=(64, 64, 3))
    with pytest.raises(ValueError, match="prevalence"):
        make_cxr_dataset(tmp_path, prevalence=1.5)
