"""The DMG brain tumour bundle's own cases: each of the three stages run alone by its id, in order, through
``python -m monai.bundle run``; inference from the MRI alone (no bag, no labels); a case without its MRI named; the
real TCGA-LGG FLAIR classified; a bad training case (bag, label or MRI) named, and left out with ``skip_invalid``.
What it shares with the other bundles is in ``test_config_workflow.py``."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

from tests.bundles.dmg_stages import check_stages_chained, stages_run_alone, train_in_two_processes
from tests.bundles.helpers import bundle, bundle_fails, configs, make_tiny_data, overrides, stage_workflow, tiny

NAME = "dmg_brain_tumor_mri_classification"
CONFIGS = configs(NAME)
# one sequence, so the same trained model also classifies the real TCGA-LGG FLAIR
TINY = {**tiny(NAME), "modalities": ["flair"]}


def infer(root: Path, data: Path, **values):
    return ["run", "--config_file", str(CONFIGS / "inference.json")] + overrides(
        {"bundle_root": str(root), "dataset_dir": str(data), **values}
    )


def probabilities(root: Path, name: str = "predictions") -> list[dict[str, str]]:
    with open(root / name / "probabilities.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> dict[str, Path]:
    """Tiny data and the three stages run one after the other, each alone by its run id."""
    return stages_run_alone(NAME, tmp_path_factory.mktemp("dmg"), TINY)


@pytest.mark.slow
def test_each_stage_runs_alone_by_its_id_and_leaves_its_checkpoint(staged):
    check_stages_chained(staged)
    root = staged["root"]
    settings = json.loads((root / "models/network.json").read_text(encoding="utf-8"))["settings"]
    assert settings["modalities"] == TINY["modalities"] and settings["classes"] == ["G", "A", "O"]


@pytest.mark.slow
def test_a_stage_run_before_the_one_it_needs_names_the_missing_checkpoint(staged, tmp_path):
    message = bundle_fails(
        "run",
        "train_guided_head",
        "--config_file",
        str(CONFIGS / "train.json"),
        *overrides({**TINY, "bundle_root": str(tmp_path / "fresh"), "dataset_dir": str(staged["data"])}),
    )
    assert "classifiers/inferior/model.pt" in message.splitlines()[-1]


def mri_only(data: Path, out: Path, cases: int = 3) -> list[str]:
    """The first ``cases`` case folders of ``data`` alone: no bags, no labels CSV."""
    folders = sorted(p for p in (data / "Radiology").iterdir() if p.is_dir())[:cases]
    for folder in folders:
        shutil.copytree(folder, out / folder.name)
    return [folder.name for folder in folders]


@pytest.mark.slow
def test_inference_needs_the_mri_only_and_writes_one_row_per_case(staged, tmp_path):
    cases = mri_only(staged["data"], tmp_path / "mri")
    bundle(*infer(staged["root"], tmp_path / "mri"))
    rows = probabilities(staged["root"])
    assert [row["case"] for row in rows] == cases
    assert list(rows[0]) == ["case", "G", "A", "O"]
    for row in rows:
        assert abs(sum(float(row[c]) for c in "GAO") - 1) < 1e-4


@pytest.mark.slow
def test_a_case_without_its_mri_is_named(staged, tmp_path):
    cases = mri_only(staged["data"], tmp_path / "mri")
    for file in (tmp_path / "mri" / cases[1]).iterdir():
        file.unlink()
    (tmp_path / "mri" / cases[1] / "notes.txt").write_text("no scan", encoding="utf-8")
    assert cases[1] in bundle_fails(*infer(staged["root"], tmp_path / "mri")).splitlines()[-1]
    # skip_invalid predicts the others, then still names the case and exits non-zero
    out = staged["root"] / "skipped_run"
    message = bundle_fails(*infer(staged["root"], tmp_path / "mri", skip_invalid=True, output_dir=str(out)))
    assert cases[1] in message
    with open(out / "probabilities.csv", newline="", encoding="utf-8") as f:
        assert [row["case"] for row in csv.DictReader(f)] == [cases[0], cases[2]]


@pytest.mark.slow
def test_the_real_tcga_lgg_flair_is_classified(staged, sample_data, tmp_path):
    flair = sorted((sample_data / "tcga-lgg-fg6692" / "mri-3d-brainles").glob("*FLAIR*.nii.gz"))
    if not flair:
        pytest.skip(f"no TCGA-LGG FLAIR in {sample_data / 'tcga-lgg-fg6692' / 'mri-3d-brainles'}")
    case = tmp_path / "real" / "TCGA-FG-6692"
    case.mkdir(parents=True)
    (case / "TCGA-FG-6692_flair.nii.gz").symlink_to(flair[0])
    bundle(*infer(staged["root"], tmp_path / "real", output_dir=str(tmp_path / "out")))
    rows = probabilities(tmp_path, "out")
    assert [row["case"] for row in rows] == ["TCGA-FG-6692"]
    assert abs(sum(float(rows[0][c]) for c in "GAO") - 1) < 1e-4


class BadInput(NamedTuple):
    """How to spoil one case of a tiny data set: ``spoil(data, case)`` returns the file the error must name."""

    spoil: Callable[[Path, str], Path]
    reason: str


def _bag(data: Path, case: str, bag) -> Path:
    torch.save(bag, data / "features" / f"{case}.pt")
    return data / "features" / f"{case}.pt"


def _nan_bag(data: Path, case: str) -> Path:
    bag = torch.load(data / "features" / f"{case}.pt", weights_only=True)
    bag[1, 3] = float("nan")
    return _bag(data, case, bag)


def _unknown_label(data: Path, case: str) -> Path:
    labels = data / "labels.csv"
    rows = [f"{case},X" if row.startswith(f"{case},") else row for row in labels.read_text("utf-8").splitlines()]
    labels.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return labels


def _garbage_mri(data: Path, case: str) -> Path:
    flair = data / "Radiology" / case / f"{case}_flair.nii.gz"  # TINY reads the FLAIR only
    flair.write_bytes(b"\x00not a NIfTI\xff" * 64)
    return flair


def _no_mri(data: Path, case: str) -> Path:
    shutil.rmtree(data / "Radiology" / case)
    return data / "Radiology" / case


BAD_INPUTS = {
    "empty bag": BadInput(lambda data, case: _bag(data, case, torch.zeros(0, TINY["feature_dim"])), "empty bag"),
    "ragged bag": BadInput(
        lambda data, case: _bag(data, case, [torch.zeros(TINY["feature_dim"]), torch.zeros(3)]), "ragged bag"
    ),
    "NaN in bag": BadInput(_nan_bag, "NaN or infinite values"),
    "unknown class": BadInput(_unknown_label, r"value \['X'\] outside the declared set \['G', 'A', 'O'\]"),
    "MRI does not decode": BadInput(_garbage_mri, "unreadable or corrupted"),
    "no MRI": BadInput(_no_mri, "missing MRI: labels.csv lists the case"),
}


class CleanData(NamedTuple):
    data: Path
    case: str  # the first training case of the split


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> CleanData:
    data = make_tiny_data(NAME, tmp_path_factory.mktemp("dmg_clean") / "data")
    workflow = stage_workflow(NAME, "train", **TINY, bundle_root=str(data.parent / "run"), dataset_dir=str(data))
    workflow.initialize()
    return CleanData(data, workflow.parser.get_parsed_content("split")[0][0]["case"])


def spoiled_run(clean: CleanData, bad: str, tmp: Path, **values):
    """The train workflow, initialized, on a copy of the clean data with ``bad`` done to the first training case;
    and the file that is wrong."""
    data = shutil.copytree(clean.data, tmp / "data")
    file = BAD_INPUTS[bad].spoil(data, clean.case)
    common = {**TINY, "max_epochs": 1, "bundle_root": str(tmp / "run"), "dataset_dir": str(data)}
    workflow = stage_workflow(NAME, "train", **common, **values)
    workflow.initialize()
    return workflow, file


@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_a_bad_training_case_stops_the_run_naming_the_case_and_the_file(clean, bad, tmp_path, capsys, monkeypatch):
    workflow, file = spoiled_run(clean, bad, tmp_path)
    with pytest.raises(RuntimeError) as failure:  # MONAI wraps it: "Failed to instantiate/evaluate ..."
        workflow.run()
    monkeypatch.delenv("MEDGUIDE_TRACEBACK", raising=False)
    capsys.readouterr()
    # what `python -m monai.bundle run` prints last: the config's initialize installed medguide's hook
    sys.excepthook(failure.type, failure.value, failure.tb)
    shown = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(shown) and shown[0].startswith("InvalidCaseError"), shown
    assert shown[-1].startswith(f"case {clean.case!r}: file {str(file)!r}: "), shown[-1]
    assert re.search(BAD_INPUTS[bad].reason, shown[-1]), shown[-1]


@pytest.mark.parametrize("bad", BAD_INPUTS)
def test_skip_invalid_trains_without_the_bad_case(clean, bad, tmp_path, capsys):
    workflow, file = spoiled_run(clean, bad, tmp_path, skip_invalid=True)
    parser = workflow.parser
    parser.get_parsed_content("classifiers#fusion#trainer").run()  # MRI and bag of every case, one epoch
    assert (tmp_path / "run" / "models" / "classifiers" / "fusion" / "model.pt").is_file()
    used = [item["case"] for key in ("train#datalist", "validate#datalist") for item in parser.get_parsed_content(key)]
    assert clean.case not in used and len(used) > 1
    # the bundle's logging.conf writes to stdout
    assert f"skipping invalid case {clean.case!r}: file {str(file)!r}" in capsys.readouterr().out


@pytest.mark.slow
def test_every_stage_trains_in_two_processes(tmp_path):
    """The multi-GPU overlay runs all three stages data-parallel (stage c's guided head too) with gloo on CPU."""
    result = train_in_two_processes(NAME, tmp_path, TINY)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp_path / "run" / "models" / "model.pt").is_file()
