"""The report-guided pneumonia localisation bundle's own cases: its two stages (text-guided, CAM baseline) run alone by
their run ids, each leaving exactly its checkpoints, ``models/model.pt`` a plain ``network_def`` state dict without
the report encoder; the two-row ChestX-ray8 table of evaluate.json; inference from films alone (a ChestX-ray8 folder,
a folder of PNG, JPEG, 16-bit PNG and DICOM films of different sizes, the real ChestX-ray8 PNGs) with boxes in each
film's own pixel grid; an empty report, a film that does not decode and a colour film named before training, and
left out with ``skip_invalid``; a grey film saved as RGB read; a box outside its film named by file and line. What it
shares with the other bundles is in ``test_config_workflow.py``; the real box list (984 boxes) is read in
``tests/data/test_chest_xray.py``.

Everything runs in process through ``ConfigWorkflow`` on the bundle's configs (a stage by its run id as
``python -m monai.bundle run <id>`` runs it), on one tiny data set made once."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from PIL import Image

from medguide.data import mimic_cxr_datalist
from medguide.engines import LOCALIZATION_COLUMNS
from tests.bundles.dmg_stages import train_in_two_processes
from tests.bundles.helpers import configs, make_tiny_data, run_stage, stage_workflow, tiny
from tests.bundles.test_octcoda_fundus_classification import shown_error
from tests.data.test_chest_xray import write_film_dicom

NAME = "xattn_pneumonia_cxr_localization"
CONFIGS = configs(NAME)
TINY = tiny(NAME)
STAGE_FILES = {
    "train_guided": {"models/model.pt", "models/report_guidance/model.pt", "models/network.json"},
    "train_baseline": {"models/baseline/model.pt", "models/baseline/network.json"},
}
ROWS = ["text-guided", "CAM baseline (no text)"]
ATTRIBUTES = ["opacity", "left", "right", "upper", "middle", "lower", "extensive"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def model_files(root: Path) -> dict[str, int]:
    """{path under ``root``: modification time} of every file under ``root/models``."""
    folder = root / "models"
    files = folder.rglob("*") if folder.is_dir() else ()
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in files if p.is_file()}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    """The tiny synthetic set (MIMIC-CXR with reports, ChestX-ray8 with boxes), made once; never written to."""
    return make_tiny_data(NAME, tmp_path_factory.mktemp("xattn_clean") / "data")


@pytest.fixture(scope="module")
def staged(clean, tmp_path_factory) -> dict:
    """The two stages run one after the other, each alone by its run id: the files each added under ``models``,
    and the files of the first stage as the second stage left them."""
    root = tmp_path_factory.mktemp("xattn") / "run"
    added, before = {}, {}
    for run_id in STAGE_FILES:
        before = model_files(root)
        run_stage(NAME, "train", run_id=run_id, **TINY, bundle_root=str(root), dataset_dir=str(clean))
        added[run_id] = set(model_files(root)) - set(before)
    return {"data": clean, "root": root, "added": added, "guided": before, "after": model_files(root)}


@pytest.mark.slow
def test_each_stage_runs_alone_by_its_id_and_leaves_exactly_its_checkpoints(staged):
    for run_id, files in STAGE_FILES.items():
        assert staged["added"][run_id] == files, run_id
    # the baseline stage leaves the text-guided model as it was
    assert {path: staged["after"][path] for path in staged["guided"]} == staged["guided"]


@pytest.mark.slow
def test_the_model_is_a_plain_network_def_state_dict_without_the_report_encoder(staged):
    """Inference needs no text: ``models/model.pt`` loads strictly into inference.json's ``network_def`` built from
    the trained settings, and holds nothing of the report side (which is in ``models/report_guidance``)."""
    root = staged["root"]
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.json"))
    parser.update({"bundle_root": str(root)})
    network = parser.get_parsed_content("network_def")
    state = torch.load(root / "models/model.pt", map_location="cpu", weights_only=True)
    assert all(isinstance(value, torch.Tensor) for value in state.values())
    network.load_state_dict(state, strict=True)
    guidance = torch.load(root / "models/report_guidance/model.pt", map_location="cpu", weights_only=True)
    assert any(key.startswith("report_encoder.") for key in guidance)
    assert not [key for key in state if any(word in key for word in ("report", "text", "token", "guidance"))]
    settings = json.loads((root / "models/network.json").read_text(encoding="utf-8"))["settings"]
    assert settings["image_size"] == TINY["image_size"] and settings["encoder"] == TINY["encoder"]
    assert settings["attributes"] == ATTRIBUTES
    baseline = torch.load(root / "models/baseline/model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(baseline, strict=True)  # the same network, trained without text


@pytest.mark.slow
def test_evaluate_writes_the_two_row_chestxray8_table(staged, tmp_path):
    out = tmp_path / "eval"
    values = {**TINY, "bundle_root": str(staged["root"]), "dataset_dir": str(staged["data"]), "output_dir": str(out)}
    run_stage(NAME, "evaluate", **values)
    rows = read_csv(out / "localization_table.csv")
    assert [row["model"] for row in rows] == ROWS
    assert all(row["seeds"] == "1" for row in rows)
    per_seed = read_csv(out / "localization_table_per_seed.csv")
    assert [(row["model"], row["seed"]) for row in per_seed] == [(row, "0") for row in ROWS]
    for row in [*rows, *per_seed]:
        assert set(LOCALIZATION_COLUMNS) <= set(row), row
        for column in LOCALIZATION_COLUMNS:
            value = float(row[column])
            if column.startswith("afp@"):
                assert value >= 0, (row["model"], column, value)
            else:  # accuracies, pointing game, mIoU and AUC
                assert math.isnan(value) or 0 <= value <= 1, (row["model"], column, value)
    for row in rows:  # a single seed: no spread
        assert all(row[f"{column} sd"] in ("", "nan") for column in LOCALIZATION_COLUMNS)
    markdown = (out / "localization_table.md").read_text(encoding="utf-8")
    assert all(f"| {row} |" in markdown for row in ROWS)
    assert all(column in markdown for column in LOCALIZATION_COLUMNS)


def test_the_demo_report_shows_the_table_test_films_under_each_model_and_the_real_films(staged, tmp_path):
    from medguide.visualize.localization import SHOWN_CASES, write_localization_report

    out = tmp_path / "demo"
    values = {**TINY, "bundle_root": str(staged["root"]), "dataset_dir": str(staged["data"])}
    values["output_dir"] = str(out / "eval")
    run_stage(NAME, "evaluate", **values)
    predictions = inference(staged["root"], staged["data"], out / "predictions", figures=True)
    real = {"command": "python -m monai.bundle run ...", "predictions": str(predictions), "sample": "films"}
    report = write_localization_report(NAME, CONFIGS, [], values, out, {"train": 1.0, "evaluate": 1.0}, real)
    text = report.read_text(encoding="utf-8")
    assert all(f"| {row} |" in text for row in ROWS)
    boxed = [line.split(",")[0] for line in (staged["data"] / "chestxray8" / "BBox_List_2017.csv").read_text(
        encoding="utf-8").splitlines()[1:]]  # fmt: skip
    figures = sorted(out.glob("test_*.png"))
    assert len(figures) == len(ROWS) * min(SHOWN_CASES, len(set(boxed)))
    assert all(f"]({p.name})" in text for p in figures)
    assert "## Inference on real films" in text and "](predictions/overlays/" in text


def inference(root: Path, data: Path, out: Path, **values) -> Path:
    """The inference workflow run in process, as Python users run it; its output folder."""
    common = {"bundle_root": str(root), "dataset_dir": str(data), "output_dir": str(out), "num_workers": 0}
    run_stage(NAME, "inference", **common, **values)
    return out


def check_films(out: Path, sizes: dict[str, tuple[int, int]]) -> None:
    """attributes.csv has one row per film, in order, probabilities in [0, 1]; boxes.json gives each film its
    ``image_size`` (the file's (W, H)) and boxes inside that grid; boxes.csv holds the same boxes."""
    attributes = read_csv(out / "attributes.csv")
    assert [row["case"] for row in attributes] == list(sizes)
    assert list(attributes[0]) == ["case", *ATTRIBUTES]
    for row in attributes:
        assert all(0 <= float(row[a]) <= 1 for a in ATTRIBUTES), row
    found = json.loads((out / "boxes.json").read_text(encoding="utf-8"))
    assert set(found) == set(sizes)
    listed = {}
    for row in read_csv(out / "boxes.csv"):
        listed.setdefault(row["case"], []).append([float(row[c]) for c in ("x0", "y0", "x1", "y1")])
    for case, (width, height) in sizes.items():
        assert found[case]["image_size"] == [width, height], case
        boxes = [box["box"] for box in found[case]["boxes"]]
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (case, (width, height), boxes)
        assert len(listed.get(case, [])) == len(boxes), case
        assert np.allclose(np.reshape(listed.get(case, []), (-1, 4)), np.reshape(boxes, (-1, 4)), atol=1e-4), case


def film_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


@pytest.mark.slow
def test_inference_on_a_chestxray8_folder_from_films_alone_with_overlays(staged, tmp_path):
    """``dataset_dir`` the data root, as the tiny set's: inference.json reads its ``chestxray8/`` folder (the
    Data_Entry order); no report and no MIMIC-CXR folder anywhere in it."""
    data = tmp_path / "films only"
    shutil.copytree(staged["data"] / "chestxray8", data / "chestxray8")
    assert not [p for p in data.rglob("*") if p.suffix == ".txt" or "mimic" in p.name.lower()]
    out = inference(staged["root"], data, tmp_path / "out", figures=True)
    names = [row["Image Index"] for row in read_csv(data / "chestxray8" / "Data_Entry_2017.csv")]
    sizes = {Path(name).stem: film_size(data / "chestxray8" / "images" / name) for name in names}
    check_films(out, sizes)
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(f"{case}.png" for case in sizes)


def _write_films(clean: Path, folder: Path) -> dict[str, tuple[int, int]]:
    """A folder of one's own films, each of another non-square size, from a tiny ChestX-ray8 film: an 8-bit PNG, a
    JPEG, a 16-bit PNG, a DICOM and a MONOCHROME1 DICOM (written with pydicom). Returns ``{case: (W, H)}``."""
    folder.mkdir(parents=True)
    source = sorted((clean / "chestxray8" / "images").glob("*.png"))[0]
    with Image.open(source) as image:
        grey = image.convert("L")

    def pixels(width: int, height: int) -> np.ndarray:
        return np.asarray(grey.resize((width, height)))  # height rows of width columns

    Image.fromarray(pixels(60, 40)).save(folder / "wide film.png")
    Image.fromarray(pixels(50, 70)).save(folder / "tall.jpg", quality=95)
    Image.fromarray(pixels(56, 48).astype(np.uint16) * 257).save(folder / "deep16.png")
    write_film_dicom(folder / "dx.dcm", pixels(44, 36).astype(np.uint16) * 16, PixelSpacing=[0.2, 0.2])
    write_film_dicom(folder / "inverted.dcm", (255 - pixels(36, 52)).astype(np.uint16) * 16, "MONOCHROME1")
    with Image.open(folder / "deep16.png") as deep:
        assert deep.mode.startswith("I")  # stored as 16 bits, read by the documented / 65535
    return {"deep16": (56, 48), "dx": (44, 36), "inverted": (36, 52), "tall": (50, 70), "wide film": (60, 40)}


@pytest.mark.slow
def test_inference_on_a_folder_of_png_jpeg_16bit_and_dicom_films_keeps_each_films_grid(staged, tmp_path):
    folder = tmp_path / "my films"
    sizes = _write_films(staged["data"], folder)
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    out = inference(staged["root"], folder, tmp_path / "out", figures=True)
    check_films(out, sizes)  # a folder is read in name order
    assert sorted(p.name for p in (out / "overlays").iterdir()) == sorted(f"{case}.png" for case in sizes)


@pytest.mark.slow
def test_the_real_chestxray8_films_are_predicted_one_row_each_in_their_1024_grid(staged, sample_data, tmp_path):
    folder = sample_data / "nih-chestxray14" / "images"
    films = sorted(folder.glob("*.png"))
    if not films:
        pytest.skip(f"no real ChestX-ray8 film (*.png) in {folder}")
    assert len(films) == 12
    out = inference(staged["root"], folder, tmp_path / "out")
    check_films(out, {p.stem: (1024, 1024) for p in films})
    assert not (out / "overlays").exists()  # figures only when asked


class Spoiled(NamedTuple):
    case: str  # the case the message must name
    file: Path  # the file it must name


class BadInput(NamedTuple):
    """How to spoil the first MIMIC-CXR training film of a tiny set: ``spoil(item)`` (the film's datalist item)
    returns the file it spoiled; ``reason`` is in the message."""

    spoil: Callable[[dict], Path]
    reason: str  # a regular expression


def _empty_report(item: dict) -> Path:
    Path(item["report"]).write_bytes(b"")
    return Path(item["report"])


def _blank_report(item: dict) -> Path:
    Path(item["report"]).write_text(" \n\t\n  \n", encoding="utf-8")
    return Path(item["report"])


def _garbage(item: dict) -> Path:
    Path(item["image"]).write_bytes(b"this is not a JPEG \x00\xff" * 20)
    return Path(item["image"])


def _colour(item: dict) -> Path:
    """A true-colour image in place of the film (its channels differ everywhere)."""
    with Image.open(item["image"]) as image:
        grey = np.asarray(image.convert("L"))
    Image.fromarray(np.stack([grey, 255 - grey, np.zeros_like(grey)], -1)).save(item["image"], quality=95)
    return Path(item["image"])


def _grey_as_rgb(item: dict) -> Path:
    with Image.open(item["image"]) as image:
        image.convert("RGB").save(item["image"], quality=95)
    return Path(item["image"])


BAD_INPUTS = {
    "empty report": BadInput(_empty_report, "report (is empty|has no text)"),
    "whitespace-only report": BadInput(_blank_report, "report (is empty|has no text)"),
    "film does not decode": BadInput(_garbage, "does not decode as an image"),
    "true-colour film": BadInput(_colour, r"is a colour image \(RGB, its channels differ\)"),
}


def first_training_film(data: Path) -> dict:
    return dict(mimic_cxr_datalist(data / "mimic-cxr", split="train")[0])


def spoiled_run(clean: Path, spoil: Callable[[dict], Path], tmp: Path, **values):
    """The text-guided stage's workflow, initialized, for one epoch on a copy of the clean data spoiled by ``spoil``;
    and what was spoiled."""
    data = shutil.copytree(clean, tmp / "data")
    item = first_training_film(data)
    spoiled = Spoiled(item["case"], spoil(item))
    common = {**TINY, "max_epochs": 1, "bundle_root": str(tmp / "run"), "dataset_dir": str(data)}
    workflow = stage_workflow(NAME, "train", run_id="train_guided", **common, **values)
    workflow.initialize()
    return workflow, spoiled


@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_a_bad_report_or_film_stops_the_run_before_training_naming_it(clean, bad, tmp_path, capsys, monkeypatch):
    """Met while the trainer is built (its data, vocabulary and report encoder), before any epoch: the message names
    the case and the file, and no checkpoint is left."""
    workflow, spoiled = spoiled_run(clean, BAD_INPUTS[bad].spoil, tmp_path)
    with pytest.raises(RuntimeError) as failure:  # MONAI wraps it: "Failed to instantiate/evaluate ..."
        workflow.parser.get_parsed_content("train#trainer")
    shown = shown_error(failure, capsys, monkeypatch)
    assert shown.startswith(f"case {spoiled.case!r}: file {str(spoiled.file)!r}: "), shown
    assert re.search(BAD_INPUTS[bad].reason, shown), shown
    with pytest.raises(RuntimeError):  # and the run as a user starts it stops there too
        workflow.run()
    assert not list((tmp_path / "run").rglob("model.pt"))


@pytest.mark.slow
@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_skip_invalid_trains_past_the_bad_report_or_film(clean, bad, tmp_path, capsys):
    workflow, spoiled = spoiled_run(clean, BAD_INPUTS[bad].spoil, tmp_path, skip_invalid="True")
    workflow.run()
    parser = workflow.parser
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    trained = [item["case"] for item in parser.get_parsed_content("train#datalist")]
    clean_cases = [item["case"] for item in mimic_cxr_datalist(clean / "mimic-cxr", split="train")]
    assert trained == [case for case in clean_cases if case != spoiled.case]
    # the bundle's logging.conf writes to stdout
    assert f"skipping invalid case {spoiled.case!r}: file {str(spoiled.file)!r}" in capsys.readouterr().out


@pytest.mark.slow
def test_a_grey_film_saved_as_rgb_is_read_as_grey_and_logged(clean, tmp_path, capsys):
    workflow, spoiled = spoiled_run(clean, _grey_as_rgb, tmp_path)
    workflow.run()
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
    assert spoiled.case in [item["case"] for item in workflow.parser.get_parsed_content("train#datalist")]
    assert f"'{spoiled.file}': a grey film stored as RGB" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize(
    "box",
    [
        pytest.param("1000.0,10.0,100.0,20.0", id="beyond the 1024 grid"),
        pytest.param("40.0,10.0,20.0,20.0", id="beyond its 48-px film"),
    ],
)
def test_evaluation_names_the_box_list_line_of_a_box_outside_its_film(staged, box, tmp_path, capsys, monkeypatch):
    """Line 3 of the box list given a box past the right edge of its 48 x 48 film: past the 1024-px grid of the real
    release, or only past the film itself (a copy of ChestX-ray8 whose films are not 1024 px)."""
    data = shutil.copytree(staged["data"], tmp_path / "data")
    box_list = data / "chestxray8" / "BBox_List_2017.csv"
    lines = box_list.read_text(encoding="utf-8").splitlines()
    image = lines[2].split(",")[0]
    assert film_size(data / "chestxray8" / "images" / image) == (48, 48)
    lines[2] = f"{image},Pneumonia,{box}"
    box_list.write_text("\n".join(lines) + "\n", encoding="utf-8")
    values = {**TINY, "bundle_root": str(staged["root"]), "dataset_dir": str(data), "output_dir": str(tmp_path / "e")}
    workflow = stage_workflow(NAME, "evaluate", **values)
    workflow.initialize()
    with pytest.raises(RuntimeError) as failure:
        workflow.run()
    monkeypatch.delenv("MEDGUIDE_TRACEBACK", raising=False)
    capsys.readouterr()
    sys.excepthook(failure.type, failure.value, failure.tb)
    shown = capsys.readouterr().err.strip()
    assert "Traceback" not in shown, shown
    shown = shown.splitlines()[-1]
    assert f"'{box_list}', line 3" in shown and "outside" in shown, shown
    assert not (tmp_path / "e" / "localization_table.csv").exists()


@pytest.mark.slow
def test_both_models_train_in_two_processes(tmp_path):
    """The multi-GPU overlay trains the text-guided localiser (its report guidance in DDP too) and the baseline
    data-parallel with gloo on CPU, and rank 0 leaves every checkpoint."""
    result = train_in_two_processes(NAME, tmp_path, TINY)
    assert result.returncode == 0, result.stderr[-4000:]
    assert set(model_files(tmp_path / "run")) >= {"models/model.pt", "models/report_guidance/model.pt",
                                                   "models/baseline/model.pt"}  # fmt: skip
