"""The OCT-CoDA fundus bundle's own cases: each of its stages (teacher, baselines, student) run alone by its id
through ``python -m monai.bundle run``, the student refusing to start without a teacher and leaving the teacher's
checkpoint as it was; the three-row MultiEYE table of evaluate.json; inference from fundus photographs alone (a
MultiEYE layout with no OCT at all, a folder of photos, the real IDRiD JPEGs) with its probabilities, top concepts
and figures; a bad MultiEYE file or list line named, and left out with ``skip_invalid``. What it shares with the
other bundles is in ``test_config_workflow.py``.

Only the stages start a new Python (each start costs seconds of imports); evaluation, inference and the bad inputs
go through ``ConfigWorkflow`` in process, on the same configs."""

from __future__ import annotations

import csv
import json
import math
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from PIL import Image

from medguide.data import MULTIEYE_CLASSES
from tests.bundles.dmg_stages import run_stage as run_by_id
from tests.bundles.dmg_stages import train_in_two_processes
from tests.bundles.helpers import bundle_fails, configs, make_tiny_data, overrides, run_stage, stage_workflow, tiny

NAME = "octcoda_fundus_classification"
CONFIGS = configs(NAME)
TINY = tiny(NAME)
CLASSES = list(MULTIEYE_CLASSES)
STAGE_OUTPUTS = {
    "train_teacher": ["models/teacher/model.pt"],
    "train_baselines": ["models/baselines/fundus_only/model.pt", "models/baselines/concept_head/model.pt"],
    "train_student": ["models/model.pt"],
}
TEACHER = "models/teacher/model.pt"
ROWS = ["fundus only", "fundus + concept head", "OCT-CoDA"]
METRICS = ["precision", "recall", "F1", "specificity", "accuracy", "kappa", "AUC", "mAP"]
FUNDUS_IMAGES = Path("assemble/train/ImageData/cfp-clahe-224x224")
OCT_IMAGES = Path("assemble_oct/train/ImageData/oct-filter-448x448")


def concept_names() -> list[str]:
    """The concepts of the bundle's own list, ``concepts/concepts.csv``, in its order."""
    with open(CONFIGS.parent / "concepts" / "concepts.csv", newline="", encoding="utf-8") as f:
        return [row["concept"] for row in csv.DictReader(f)]


def list_lines(data: Path, modality: str, section: str) -> list[tuple[str, int]]:
    """(image id, label) of every line of a MultiEYE list, read here from the file itself."""
    folder = "assemble" if modality == "fundus" else "assemble_oct"
    text = (data / folder / section / "large9cls.txt").read_text(encoding="utf-8")
    return [(line.split()[0], int(line.split()[1])) for line in text.splitlines() if line.strip()]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def model_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / "models").rglob("model.pt")}


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> dict:
    """Tiny data and the three stages run one after the other, each alone by its run id: the checkpoints each stage
    added, and the teacher's bytes just before the student stage."""
    tmp = tmp_path_factory.mktemp("octcoda")
    data = make_tiny_data(NAME, tmp / "data")
    root = tmp / "run"
    added, teacher = {}, None
    for run_id in STAGE_OUTPUTS:
        before = model_files(root) if root.is_dir() else set()
        if run_id == "train_student":
            teacher = ((root / TEACHER).read_bytes(), (root / TEACHER).stat().st_mtime_ns)
        run_by_id(NAME, run_id, root, data, TINY)
        added[run_id] = model_files(root) - before
    return {"data": data, "root": root, "added": added, "teacher": teacher}


@pytest.mark.slow
def test_each_stage_runs_alone_by_its_id_and_leaves_its_checkpoint(staged):
    for run_id, outputs in STAGE_OUTPUTS.items():
        assert staged["added"][run_id] == set(outputs), run_id
    root = staged["root"]
    student = torch.load(root / "models/model.pt", map_location="cpu", weights_only=True)
    teacher = torch.load(root / TEACHER, map_location="cpu", weights_only=True)
    # the same concept classifier, on 3-channel photographs and on 1-channel B-scans, with the bundle's concepts
    assert set(student) == set(teacher)
    first = next(key for key, value in student.items() if value.ndim == 4)
    assert student[first].shape[1] == 3 and teacher[first].shape[1] == 1
    assert student["head.concepts"].shape[0] == len(concept_names())
    assert torch.equal(student["head.concepts"], teacher["head.concepts"])
    settings = json.loads((root / "models/network.json").read_text(encoding="utf-8"))["settings"]
    assert settings["classes"] == CLASSES and settings["concepts"] == concept_names()
    assert settings["image_size"] == TINY["image_size"] and settings["encoder"] == TINY["encoder"]


@pytest.mark.slow
def test_the_student_stage_leaves_the_teacher_as_it_was(staged):
    data, stamp = staged["teacher"]
    file = staged["root"] / TEACHER
    assert file.read_bytes() == data and file.stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_the_frozen_teacher_keeps_its_checkpoints_weights_while_the_student_trains(staged, tmp_path):
    """In memory too: the teacher's parameters and batch-norm statistics after a student epoch are its checkpoint's
    (a teacher left in training mode would move its running means on every OCT batch)."""
    root = tmp_path / "run"
    shutil.copytree(staged["root"] / "models" / "teacher", root / "models" / "teacher")
    common = {**TINY, "max_epochs": 1, "bundle_root": str(root), "dataset_dir": str(staged["data"])}
    parser = run_stage(NAME, "train", run_id="train_student", **common)
    saved = torch.load(root / TEACHER, map_location="cpu", weights_only=True)
    held = parser.get_parsed_content("train#teacher").state_dict()
    assert any("running_mean" in key for key in saved)
    assert set(held) == set(saved)
    for key, value in saved.items():
        assert torch.equal(held[key].cpu(), value), key
    assert (root / "models/model.pt").is_file()


@pytest.mark.slow
def test_the_student_without_a_teacher_checkpoint_says_what_to_run(staged, tmp_path):
    root = tmp_path / "run"
    message = bundle_fails(
        "run",
        "train_student",
        "--config_file",
        str(CONFIGS / "train.json"),
        *overrides({**TINY, "bundle_root": str(root), "dataset_dir": str(staged["data"])}),
    )
    last = message.splitlines()[-1]
    assert "Traceback" not in message
    assert str(root / TEACHER) in last and "no checkpoint" in last and "--run_id train_teacher" in last, last
    assert not (root / "models/model.pt").exists()


@pytest.mark.slow
def test_evaluate_writes_the_three_row_multieye_table(staged, tmp_path):
    out = tmp_path / "eval"
    values = {**TINY, "bundle_root": str(staged["root"]), "dataset_dir": str(staged["data"]), "output_dir": str(out)}
    run_stage(NAME, "evaluate", **values)
    rows = read_csv(out / "octcoda_table.csv")
    assert [row["model"] for row in rows] == ROWS
    assert all(row["seeds"] == "1" for row in rows)
    for metric in METRICS:
        for row in rows:
            value = float(row[metric])  # a single seed: no spread
            assert math.isnan(value) or (-1 <= value <= 1 if metric == "kappa" else 0 <= value <= 1), (row, metric)
            assert row[f"{metric} sd"] in ("", "nan")
    # the OCT-CoDA row scores the student's own predictions of the test list (inference on the same list)
    predictions = inference(staged["root"], staged["data"], tmp_path / "predictions")
    labels = dict(list_lines(staged["data"], "fundus", "test"))
    predicted = [CLASSES.index(row["predicted"]) for row in read_csv(predictions / "concepts.csv")]
    assert len(predicted) == len(labels)
    accuracy = sum(p == y for p, y in zip(predicted, labels.values(), strict=True)) / len(labels)
    assert float(rows[ROWS.index("OCT-CoDA")]["accuracy"]) == pytest.approx(accuracy, abs=1e-6)
    per_class = read_csv(out / "octcoda_table_per_class.csv")
    assert [(row["model"], row["class"]) for row in per_class] == [(m, c) for m in ROWS for c in CLASSES]
    support = {row["class"]: float(row["support"]) for row in per_class if row["model"] == "OCT-CoDA"}
    assert support == {c: float(list(labels.values()).count(i)) for i, c in enumerate(CLASSES)}
    markdown = (out / "octcoda_table.md").read_text(encoding="utf-8")
    assert all(f"| {row} |" in markdown for row in ROWS)


@pytest.mark.slow
def test_the_demo_report_compares_distillation_case_by_case_and_shows_concepts(staged, tmp_path):
    from medguide.visualize.classification import SHOWN_CASES, write_classification_report

    out = tmp_path / "demo"
    values = {**TINY, "bundle_root": str(staged["root"]), "dataset_dir": str(staged["data"])}
    values["output_dir"] = str(out / "eval")
    run_stage(NAME, "evaluate", **values)
    report = write_classification_report(NAME, CONFIGS, [], values, out, {"train": 1.0, "evaluate": 1.0})
    text = report.read_text(encoding="utf-8")
    assert all(f"| {row} |" in text for row in ROWS)
    # the case-by-case section compares the concept head without and with distillation, in the bundle's words
    assert "## Cases where distillation changed the prediction" in text and "guid" not in text.lower().replace(
        "medguide", ""
    )
    assert "| case | task | true | fundus + concept head | OCT-CoDA | |" in text or "changed no test" in text
    tested = [case for case, _ in list_lines(staged["data"], "fundus", "test")]
    figures = sorted(out.glob("concepts_*.png"))
    assert {p.name for p in figures} == {f"concepts_{case}.png" for case in tested[:SHOWN_CASES]}
    assert all(f"]({p.name})" in text for p in figures)


def inference(root: Path, data: Path, out: Path, **values) -> Path:
    """The inference workflow run in process, as Python users run it; its output folder."""
    common = {"bundle_root": str(root), "dataset_dir": str(data), "output_dir": str(out), "num_workers": 0}
    run_stage(NAME, "inference", **common, **values)
    return out


def check_predictions(out: Path, cases: list[str]) -> None:
    """probabilities.csv and concepts.csv hold one row per case, in order: probabilities over the 9 classes summing to
    one, the predicted class their argmax, and the top concepts of the bundle's list, strongest first."""
    names = concept_names()
    probabilities = read_csv(out / "probabilities.csv")
    assert list(probabilities[0]) == ["case", *CLASSES]
    assert [row["case"] for row in probabilities] == cases
    for row in probabilities:
        values = [float(row[c]) for c in CLASSES]
        assert all(0 <= v <= 1 for v in values) and abs(sum(values) - 1) < 1e-4, row
    explained = read_csv(out / "concepts.csv")
    ranks = [f"top{i}_{part}" for i in range(1, 6) for part in ("concept", "similarity")]
    assert list(explained[0]) == ["case", "predicted", *CLASSES, *ranks]
    for row, same in zip(explained, probabilities, strict=True):
        assert row["case"] == same["case"]
        assert [float(row[c]) for c in CLASSES] == pytest.approx([float(same[c]) for c in CLASSES], abs=1e-6)
        assert row["predicted"] == max(CLASSES, key=lambda c: float(row[c]))
        top = [row[f"top{i}_concept"] for i in range(1, 6)]
        assert set(top) <= set(names) and len(set(top)) == 5, top
        similarity = [float(row[f"top{i}_similarity"]) for i in range(1, 6)]
        assert similarity == sorted(similarity, reverse=True) and all(-1 <= s <= 1 for s in similarity)


def without_oct(data: Path, out: Path) -> Path:
    """The fundus half of a MultiEYE folder: no OCT list and no OCT image anywhere in it."""
    shutil.copytree(data / "assemble", out / "assemble")
    assert not any("oct" in p.name for p in out.rglob("*"))
    return out


@pytest.mark.slow
def test_inference_from_fundus_photographs_alone_writes_probabilities_concepts_and_figures(staged, tmp_path):
    data = without_oct(staged["data"], tmp_path / "fundus_only")
    out = inference(staged["root"], data, tmp_path / "out", figures=True)
    cases = [case for case, _ in list_lines(data, "fundus", "test")]
    check_predictions(out, cases)
    figures = sorted((out / "concept_figures").iterdir())
    assert [p.name for p in figures] == sorted(f"{case}.png" for case in cases)
    for figure in figures:
        with Image.open(figure) as image:
            assert image.format == "PNG" and min(image.size) > 100


@pytest.mark.slow
def test_inference_on_a_folder_of_photos(staged, tmp_path):
    folder = tmp_path / "my photos"
    folder.mkdir()
    cases = [case for case, _ in list_lines(staged["data"], "fundus", "test")][:3]
    names = ["eye, left", 'eye "2"', "eye_3"][: len(cases)]  # a comma and quotes: the CSVs quote them
    for name, case in zip(names, cases, strict=True):
        shutil.copy(staged["data"] / FUNDUS_IMAGES / f"{case}.png", folder / f"{name}.PNG")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (folder / "notes.txt").write_text("three eyes", encoding="utf-8")
    out = inference(staged["root"], folder, tmp_path / "out")
    check_predictions(out, sorted(names))  # a folder is read in name order
    assert not (out / "concept_figures").exists()  # figures only when asked


@pytest.mark.slow
def test_the_real_idrid_fundus_photographs_are_predicted_one_row_each(staged, sample_data, tmp_path):
    folder = sample_data / "fundus-idrid-codras" / "images"
    photos = sorted(folder.glob("*.jpg"))
    if not photos:
        pytest.skip(f"no real IDRiD fundus photograph (*.jpg) in {folder}")
    out = inference(staged["root"], folder, tmp_path / "out")  # the folder also holds YOLO box .txt files
    check_predictions(out, [p.stem for p in photos])


def shown_error(failure: pytest.ExceptionInfo, capsys, monkeypatch) -> str:
    """The last line ``python -m monai.bundle run`` prints for ``failure``: the config's initialize installed
    medguide's hook."""
    monkeypatch.delenv("MEDGUIDE_TRACEBACK", raising=False)
    capsys.readouterr()
    sys.excepthook(failure.type, failure.value, failure.tb)
    shown = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(shown) and shown[0].startswith("InvalidCaseError"), shown
    return shown[-1]


class Spoiled(NamedTuple):
    case: str  # the image id of the spoiled line
    file: Path  # the file the message must name
    line: int | None  # the list line it must name, if any


class BadInput(NamedTuple):
    """How to spoil a tiny MultiEYE set: ``spoil(data)`` returns what was spoiled; ``reason`` is in the message;
    ``stage`` is the run id that reads it first."""

    spoil: Callable[[Path], Spoiled]
    reason: str
    stage: str


def _garbage(data: Path) -> Spoiled:
    case = list_lines(data, "fundus", "train")[0][0]
    file = data / FUNDUS_IMAGES / f"{case}.png"
    file.write_bytes(b"this is not a PNG \x00\xff" * 20)
    return Spoiled(case, file, None)


def _rewrite_line(data: Path, number: int, label: str) -> Spoiled:
    """Line ``number`` (1-based) of the fundus training list given another label."""
    file = data / "assemble" / "train" / "large9cls.txt"
    lines = file.read_text(encoding="utf-8").splitlines()
    case = lines[number - 1].split()[0]
    lines[number - 1] = f"{case} {label}"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Spoiled(case, file, number)


def _missing(data: Path) -> Spoiled:
    case = list_lines(data, "fundus", "train")[2][0]
    file = data / FUNDUS_IMAGES / f"{case}.png"
    file.unlink()
    return Spoiled(case, file, 3)


def _grey_fundus(data: Path) -> Spoiled:
    case = list_lines(data, "fundus", "train")[0][0]
    file = data / FUNDUS_IMAGES / f"{case}.png"
    Image.open(file).convert("L").save(file)
    return Spoiled(case, file, None)


def _rgb_oct(data: Path) -> Spoiled:
    """The first OCT training image replaced by a colour fundus photograph of the same size."""
    case = list_lines(data, "oct", "train")[0][0]
    file = data / OCT_IMAGES / f"{case}.png"
    fundus = list_lines(data, "fundus", "train")[0][0]
    shutil.copy(data / FUNDUS_IMAGES / f"{fundus}.png", file)
    return Spoiled(case, file, None)


BAD_INPUTS = {
    "fundus photo does not decode": BadInput(_garbage, "unreadable or corrupted image", "train_baselines"),
    "unknown class in a list line": BadInput(
        lambda data: _rewrite_line(data, 2, "9"), r"label [9] outside the declared set", "train_baselines"
    ),
    "listed photo missing": BadInput(_missing, "image not found (listed in line 3 of", "train_baselines"),
    "grey fundus photo": BadInput(
        _grey_fundus, "grey image (its channels are equal) where a colour (RGB) image is expected", "train_baselines"
    ),
    "colour image in the OCT list": BadInput(
        _rgb_oct, "is a colour image where a grey image is expected", "train_teacher"
    ),
}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return make_tiny_data(NAME, tmp_path_factory.mktemp("octcoda_clean") / "data")


def spoiled_run(clean: Path, bad: BadInput, tmp: Path, **values):
    """The workflow of ``bad``'s stage, initialized, for one epoch on a copy of the clean data spoiled by ``bad``;
    and what was spoiled."""
    data = shutil.copytree(clean, tmp / "data")
    spoiled = bad.spoil(data)
    common = {**TINY, "max_epochs": 1, "bundle_root": str(tmp / "run"), "dataset_dir": str(data)}
    workflow = stage_workflow(NAME, "train", run_id=bad.stage, **common, **values)
    workflow.initialize()
    return workflow, spoiled


@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_a_bad_image_or_list_line_stops_the_run_naming_it(clean, bad, tmp_path, capsys, monkeypatch):
    # with the bundle's class-balanced sampler (drawn with replacement): the cached data sets read every image when
    # they are built, so a bad one is met before any checkpoint whatever the sampler draws
    workflow, spoiled = spoiled_run(clean, BAD_INPUTS[bad], tmp_path)
    with pytest.raises(RuntimeError) as failure:  # MONAI wraps it: "Failed to instantiate/evaluate ..."
        workflow.run()
    shown = shown_error(failure, capsys, monkeypatch)
    assert shown.startswith(f"case {spoiled.case!r}: file {str(spoiled.file)!r}: "), shown
    assert BAD_INPUTS[bad].reason in shown, shown
    if spoiled.line is not None:
        assert f"line {spoiled.line}" in shown, shown
    assert not list((tmp_path / "run").rglob("model.pt"))


IMAGE_KINDS = [name for name, bad in BAD_INPUTS.items() if bad.spoil in (_garbage, _grey_fundus, _rgb_oct)]


@pytest.mark.parametrize("bad", IMAGE_KINDS)
def test_a_bad_training_image_is_met_before_training_starts(clean, bad, tmp_path):
    """With the bundle's own settings (class-balanced sampling, drawn with replacement), the training data set reads
    every image when it is built, as the validation set does, so a bad one is named before any epoch."""
    workflow, spoiled = spoiled_run(clean, BAD_INPUTS[bad], tmp_path)
    dataset = "teacher#dataset" if BAD_INPUTS[bad].stage == "train_teacher" else "train#dataset"
    with pytest.raises(RuntimeError) as failure:
        workflow.parser.get_parsed_content(dataset)
    assert f"case {spoiled.case!r}" in str(failure.getrepr())


@pytest.mark.slow
@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_skip_invalid_trains_past_the_bad_line(clean, bad, tmp_path, capsys):
    workflow, spoiled = spoiled_run(clean, BAD_INPUTS[bad], tmp_path, skip_invalid="True")
    parser = workflow.parser
    if BAD_INPUTS[bad].stage == "train_teacher":
        stage, keys, listed = "teacher", ("teacher#datalist", "teacher#validate#datalist"), ("oct", "train")
    else:  # the fundus-only baseline: the first model on the fundus training list
        stage, keys, listed = "baselines#fundus_only", ("train#datalist", "validate#datalist"), ("fundus", "train")
    parser.get_parsed_content(f"{stage}#trainer").run()
    assert (Path(parser.get_parsed_content(f"{stage}#ckpt_dir")) / "model.pt").is_file()
    used = [item["case"] for key in keys for item in parser.get_parsed_content(key)]
    trained = [item["case"] for item in parser.get_parsed_content(keys[0])]
    assert spoiled.case not in used
    assert trained == [case for case, _ in list_lines(clean, *listed) if case != spoiled.case]
    # the bundle's logging.conf writes to stdout
    assert f"skipping invalid case {spoiled.case!r}: file {str(spoiled.file)!r}" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("balanced", [True, False])
def test_every_stage_trains_in_two_processes(tmp_path, balanced):
    """The multi-GPU overlay runs the teacher, both baselines and the student data-parallel with gloo on CPU, with
    class-balanced sampling on (replaced by the DistributedSampler) or off."""
    result = train_in_two_processes(NAME, tmp_path, {**TINY, "class_balanced_sampling": balanced})
    assert result.returncode == 0, result.stderr[-4000:]
    assert model_files(tmp_path / "run") == {p for paths in STAGE_OUTPUTS.values() for p in paths}
