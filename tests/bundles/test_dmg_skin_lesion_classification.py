"""The DMG skin lesion bundle's own cases: each of the three stages run alone by its id, in order, through
``python -m monai.bundle run``; inference from the clinical photo alone (Derm7pt layout without a dermoscopic photo,
or a plain folder of photos); a case without its clinical photo named, and left out with ``--skip_invalid True``; a
bad training case (photo or label) named, and left out with ``skip_invalid``; a grey photo trained on as RGB; the real
Derm7pt meta.csv split as the paper splits it. What it shares with the other bundles is in ``test_config_workflow.py``.

Only the stages and the ``--skip_invalid`` inference start a new Python (each start costs seconds of imports); the
other inference runs go through ``ConfigWorkflow`` in process, on the same configs."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import torch
from PIL import Image

from medguide.data import DERM7PT_TASKS
from tests.bundles.dmg_stages import check_stages_chained, stages_run_alone, train_in_two_processes
from tests.bundles.helpers import bundle_fails, configs, make_tiny_data, overrides, stage_workflow, tiny

NAME = "dmg_skin_lesion_classification"
CONFIGS = configs(NAME)
TINY = tiny(NAME)
COLUMNS = [f"{task}:{name}" for task, names in DERM7PT_TASKS.items() for name in names]


def probabilities(out: Path) -> list[dict[str, str]]:
    with open(out / "probabilities.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def meta_rows(data: Path) -> list[dict[str, str]]:
    with open(data / "meta" / "meta.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def section_cases(data: Path, section: str) -> list[str]:
    """The ``case_num`` of each row the section's index file lists that has a clinical photo, read here from the
    files themselves (0-based row positions, a clinical photo naming the dermoscopic one counts as none)."""
    rows = meta_rows(data)
    positions = (data / "meta" / f"{section}_indexes.csv").read_text(encoding="utf-8").split()[1:]
    return [rows[int(p)]["case_num"] for p in positions if rows[int(p)]["clinic"] != rows[int(p)]["derm"]]


def photo(data: Path, case: str, key: str) -> Path:
    row = next(row for row in meta_rows(data) if row["case_num"] == case)
    return data / "images" / row[key]


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> dict[str, Path]:
    """Tiny data and the three stages run one after the other, each alone by its run id."""
    return stages_run_alone(NAME, tmp_path_factory.mktemp("dmg_skin"), TINY)


@pytest.mark.slow
def test_each_stage_runs_alone_by_its_id_and_leaves_its_checkpoint(staged):
    check_stages_chained(staged)
    root = staged["root"]
    settings = json.loads((root / "models/network.json").read_text(encoding="utf-8"))["settings"]
    assert settings["classes"] == {task: list(names) for task, names in DERM7PT_TASKS.items()}
    assert settings["image_size"] == TINY["image_size"]


def without_derm(data: Path, out: Path) -> Path:
    """A copy of the Derm7pt folder ``data`` with every dermoscopic photo deleted."""
    shutil.copytree(data, out)
    for row in meta_rows(out):
        if row["derm"] != row["clinic"]:
            (out / "images" / row["derm"]).unlink()
    return out


def assert_probabilities(rows: list[dict[str, str]]) -> None:
    assert list(rows[0]) == ["case", *COLUMNS]
    for row in rows:
        for task, names in DERM7PT_TASKS.items():
            assert abs(sum(float(row[f"{task}:{name}"]) for name in names) - 1) < 1e-4, (row["case"], task)


def inference(root: Path, data: Path, out: Path, **values):
    """The inference workflow, initialized, as Python users run it (in process: no start-up of a new Python)."""
    common = {"bundle_root": str(root), "dataset_dir": str(data), "output_dir": str(out), "num_workers": 0}
    workflow = stage_workflow(NAME, "inference", **common, **values)
    workflow.initialize()
    return workflow


def shown_error(failure: pytest.ExceptionInfo, capsys, monkeypatch) -> list[str]:
    """What ``python -m monai.bundle run`` prints for ``failure``: the config's initialize installed medguide's
    hook."""
    monkeypatch.delenv("MEDGUIDE_TRACEBACK", raising=False)
    capsys.readouterr()
    sys.excepthook(failure.type, failure.value, failure.tb)
    shown = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(shown) and shown[0].startswith("InvalidCaseError"), shown
    return shown


@pytest.mark.slow
def test_inference_needs_the_clinical_photo_only(staged, tmp_path):
    data = without_derm(staged["data"], tmp_path / "clinic_only")
    workflow = inference(staged["root"], data, tmp_path / "out")
    workflow.run()
    workflow.finalize()
    rows = probabilities(tmp_path / "out")
    assert [row["case"] for row in rows] == section_cases(data, "test")
    assert_probabilities(rows)


@pytest.mark.slow
def test_inference_on_a_folder_of_photos(staged, tmp_path):
    folder = tmp_path / "my photos"
    folder.mkdir()
    cases = section_cases(staged["data"], "test")[:3]
    names = [f"lesion_{i}" for i in range(len(cases))]
    for name, case in zip(names, cases, strict=True):
        shutil.copy(photo(staged["data"], case, "clinic"), folder / f"{name}.JPG")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "notes.txt").write_text("three lesions", encoding="utf-8")
    workflow = inference(staged["root"], folder, tmp_path / "out")
    workflow.run()
    workflow.finalize()
    rows = probabilities(tmp_path / "out")
    assert [row["case"] for row in rows] == names
    assert_probabilities(rows)


@pytest.mark.slow
def test_a_case_without_its_clinical_photo_is_named(staged, tmp_path, capsys, monkeypatch):
    data = without_derm(staged["data"], tmp_path / "clinic_only")
    cases = section_cases(data, "test")
    lost = photo(data, cases[1], "clinic")
    lost.unlink()
    with pytest.raises(RuntimeError) as failure:
        inference(staged["root"], data, tmp_path / "a").run()
    named = f"case {cases[1]!r}: file {str(lost)!r}: missing clinical photo"
    assert shown_error(failure, capsys, monkeypatch)[-1].startswith(named)
    # from the command line, skip_invalid predicts the others, then still names the case and exits non-zero
    message = bundle_fails(
        "run",
        "--config_file",
        str(CONFIGS / "inference.json"),
        *overrides({"bundle_root": str(staged["root"]), "dataset_dir": str(data), "output_dir": str(tmp_path / "b")}),
        "--skip_invalid",
        "True",
    )
    assert "1 of" in message and named in message
    rows = probabilities(tmp_path / "b")
    assert [row["case"] for row in rows] == cases[:1] + cases[2:]
    assert_probabilities(rows)


class BadInput(NamedTuple):
    """How to spoil one case of a tiny data set: ``spoil(data, case)`` returns the file the error must name."""

    spoil: Callable[[Path, str], Path]
    reason: str


def _delete(data: Path, case: str, key: str) -> Path:
    file = photo(data, case, key)
    file.unlink()
    return file


def _truncated(data: Path, case: str) -> Path:
    file = photo(data, case, "clinic")
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return file


def _unknown_diagnosis(data: Path, case: str) -> Path:
    meta = data / "meta" / "meta.csv"
    rows = meta_rows(data)
    for row in rows:
        if row["case_num"] == case:
            row["diagnosis"] = "freckle"
    with open(meta, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return meta


BAD_INPUTS = {
    "no clinical photo": BadInput(lambda data, case: _delete(data, case, "clinic"), "missing clinical photo"),
    "no dermoscopic photo": BadInput(lambda data, case: _delete(data, case, "derm"), "missing dermoscopic photo"),
    "photo does not decode": BadInput(_truncated, "unreadable or corrupted"),
    "unknown diagnosis": BadInput(_unknown_diagnosis, r"value \['freckle'\] outside the declared set"),
}


class CleanData(NamedTuple):
    data: Path
    case: str  # the first training case


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> CleanData:
    data = make_tiny_data(NAME, tmp_path_factory.mktemp("dmg_skin_clean") / "data")
    workflow = stage_workflow(NAME, "train", **TINY, bundle_root=str(data.parent / "run"), dataset_dir=str(data))
    workflow.initialize()
    return CleanData(data, workflow.parser.get_parsed_content("train#datalist")[0]["case"])


def spoiled_run(clean: CleanData, spoil: Callable[[Path, str], Path], tmp: Path, **values):
    """The train workflow, initialized, on a copy of the clean data with ``spoil`` done to the first training case;
    and the file that is wrong."""
    data = shutil.copytree(clean.data, tmp / "data")
    file = spoil(data, clean.case)
    common = {**TINY, "max_epochs": 1, "bundle_root": str(tmp / "run"), "dataset_dir": str(data)}
    workflow = stage_workflow(NAME, "train", **common, **values)
    workflow.initialize()
    return workflow, file


def train_fusion_one_epoch(workflow) -> list[str]:
    """Stage a's fusion classifier (both photos of every case) trained for one epoch; the training and validation
    cases it used."""
    parser = workflow.parser
    parser.get_parsed_content("classifiers#fusion#trainer").run()
    assert (Path(parser.get_parsed_content("ckpt_dir")) / "classifiers" / "fusion" / "model.pt").is_file()
    return [item["case"] for key in ("train#datalist", "validate#datalist") for item in parser.get_parsed_content(key)]


@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_a_bad_training_case_stops_the_run_naming_the_case_and_the_file(clean, bad, tmp_path, capsys, monkeypatch):
    workflow, file = spoiled_run(clean, BAD_INPUTS[bad].spoil, tmp_path)
    with pytest.raises(RuntimeError) as failure:  # MONAI wraps it: "Failed to instantiate/evaluate ..."
        workflow.run()
    shown = shown_error(failure, capsys, monkeypatch)
    assert shown[-1].startswith(f"case {clean.case!r}: file {str(file)!r}: "), shown[-1]
    assert re.search(BAD_INPUTS[bad].reason, shown[-1]), shown[-1]


@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_skip_invalid_trains_without_the_bad_case(clean, bad, tmp_path, capsys):
    workflow, file = spoiled_run(clean, BAD_INPUTS[bad].spoil, tmp_path, skip_invalid=True)
    used = train_fusion_one_epoch(workflow)
    assert clean.case not in used and len(used) > 1
    # the bundle's logging.conf writes to stdout
    assert f"skipping invalid case {clean.case!r}: file {str(file)!r}" in capsys.readouterr().out


def _grey(data: Path, case: str) -> Path:
    file = photo(data, case, "clinic")
    Image.open(file).convert("L").save(file, format="JPEG")
    return file


def test_a_grey_photo_is_read_as_rgb_and_trains(clean, tmp_path):
    # LoadPhotod converts every photo to RGB (its documented ``mode``): a grey clinical photo is a valid case
    workflow, file = spoiled_run(clean, _grey, tmp_path)
    assert Image.open(file).mode == "L"
    loaded = workflow.parser.get_parsed_content("load_photos")({"case": clean.case, "clinic": str(file)})
    grey = loaded["clinic"]
    assert grey.shape[0] == 3 and torch.equal(grey[0], grey[1]) and torch.equal(grey[0], grey[2])
    assert clean.case in train_fusion_one_epoch(workflow)


@pytest.fixture(scope="module")
def real_derm7pt(sample_data, tmp_path_factory) -> Path:
    """The real meta/ files in the release's layout, with an empty stand-in for every photo they name (the sample
    holds no photos; the datalists check that each photo exists, not what it holds)."""
    source = sample_data / "derm7pt-meta"
    if not (source / "meta.csv").is_file():
        pytest.skip(f"the real Derm7pt meta.csv is not in {source}")
    root = tmp_path_factory.mktemp("derm7pt_real") / "derm7pt"
    (root / "meta").mkdir(parents=True)
    for name in ("meta.csv", "train_indexes.csv", "valid_indexes.csv", "test_indexes.csv"):
        shutil.copy(source / name, root / "meta" / name)
    for row in meta_rows(root):
        for key in ("clinic", "derm"):
            (root / "images" / row[key]).parent.mkdir(parents=True, exist_ok=True)
            (root / "images" / row[key]).touch()
    return root


def test_the_real_meta_csv_splits_as_the_paper(real_derm7pt, tmp_path):
    values = {"bundle_root": str(tmp_path / "run"), "dataset_dir": str(real_derm7pt)}
    train = stage_workflow(NAME, "train", **TINY, **values)
    train.initialize()
    sections = {
        "train": train.parser.get_parsed_content("train#datalist"),
        "valid": train.parser.get_parsed_content("validate#datalist"),
    }
    inference = stage_workflow(NAME, "inference", **values)
    inference.initialize()
    sections["test"] = inference.parser.get_parsed_content("cases")
    # DMG's 413 / 203 / 395 less the nine pairs without a clinical photo
    assert {section: len(items) for section, items in sections.items()} == {"train": 411, "valid": 198, "test": 393}
    for section, items in sections.items():
        assert [item["case"] for item in items] == section_cases(real_derm7pt, section), section
    assert sections["train"][0]["case"] == "17"  # train_indexes.csv starts with row 16, which is case_num 17
    first = next(item for item in sections["train"] if item["case"] == "1")
    assert Path(first["clinic"]).relative_to(real_derm7pt / "images") == Path("NEL/NEL025.JPG")
    assert Path(first["derm"]).relative_to(real_derm7pt / "images") == Path("NEL/Nel026.jpg")
    assert first["label"]["diagnosis"] == DERM7PT_TASKS["diagnosis"].index("BCC")
    labels = np.array([[item["label"][task] for task in DERM7PT_TASKS] for item in sections["train"]])
    assert labels.shape == (411, 8) and (labels >= 0).all()
    assert (labels.max(0) < [len(names) for names in DERM7PT_TASKS.values()]).all()
    assert all(set(item) == {"case", "clinic"} for item in sections["test"])


@pytest.mark.slow
def test_every_stage_trains_in_two_processes(tmp_path):
    """The multi-GPU overlay runs all three stages data-parallel (stage c's guided head too) with gloo on CPU."""
    result = train_in_two_processes(NAME, tmp_path, TINY)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "run" / "models" / "model.pt").is_file()


def test_class_balanced_sampling_replaces_the_diagnosis_weights(tmp_path):
    """Sampling the diagnoses balanced and weighting them in the loss would count the imbalance twice: with the
    sampler on, the diagnosis loses its class weights and the seven criteria, which the sampler does not balance,
    keep theirs."""
    data = make_tiny_data(NAME, tmp_path / "data")
    common = {**TINY, "bundle_root": str(tmp_path / "run"), "dataset_dir": str(data)}
    weighted = stage_workflow(NAME, "train", **common).parser.get_parsed_content("class_weights")
    parser = stage_workflow(NAME, "train", **common, class_balanced_sampling=True).parser
    balanced = parser.get_parsed_content("class_weights")
    assert set(weighted) == set(DERM7PT_TASKS) and set(balanced) == set(DERM7PT_TASKS) - {"diagnosis"}
    assert isinstance(parser.get_parsed_content("train#dataloader").sampler, torch.utils.data.WeightedRandomSampler)
