"""The DMG brain tumour bundle's own cases: each of the three stages run alone by its id, in order, through
``python -m monai.bundle run``; inference from the MRI alone (no bag, no labels); a case without its MRI named; the
real TCGA-LGG FLAIR classified. What it shares with the other bundles is in ``test_config_workflow.py``."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.bundles.helpers import bundle, bundle_fails, configs, make_tiny_data, overrides, tiny

NAME = "dmg_brain_tumor_mri_classification"
CONFIGS = configs(NAME)
# one sequence, so the same trained model also classifies the real TCGA-LGG FLAIR
TINY = {**tiny(NAME), "modalities": ["flair"]}
STAGE_OUTPUTS = {
    "train_classifiers": [
        "models/classifiers/inferior/model.pt",
        "models/classifiers/superior/model.pt",
        "models/classifiers/fusion/model.pt",
    ],
    "train_guidance": ["models/guidance/model.pt", "models/guidance/latents.pt"],
    "train_guided_head": ["models/model.pt", "models/network.json"],
}


def stage(run_id: str, root: Path, data: Path):
    return bundle(
        "run",
        run_id,
        "--config_file",
        str(CONFIGS / "train.json"),
        *overrides({**TINY, "bundle_root": str(root), "dataset_dir": str(data)}),
    )


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
    tmp = tmp_path_factory.mktemp("dmg")
    data = make_tiny_data(NAME, tmp / "data")
    root = tmp / "run"
    stamps = {}
    for run_id, outputs in STAGE_OUTPUTS.items():
        stage(run_id, root, data)
        stamps[run_id] = {path: (root / path).stat().st_mtime_ns for path in outputs}
    return {"data": data, "root": root, "stamps": stamps}


@pytest.mark.slow
def test_each_stage_runs_alone_by_its_id_and_leaves_its_checkpoint(staged):
    root = staged["root"]
    for run_id, outputs in STAGE_OUTPUTS.items():
        missing = [path for path in outputs if not (root / path).is_file()]
        assert not missing, f"{run_id} left no {missing}"
    # a later stage did not retrain an earlier one: stage a's files are as stage a left them
    for path, stamp in staged["stamps"]["train_classifiers"].items():
        assert (root / path).stat().st_mtime_ns == stamp
    # stage c's model holds stage a's E_I and stage b's G unchanged (frozen), and a trained head
    guided = torch.load(root / "models/model.pt", map_location="cpu", weights_only=True)
    inferior = torch.load(root / "models/classifiers/inferior/model.pt", map_location="cpu", weights_only=True)
    guidance = torch.load(root / "models/guidance/model.pt", map_location="cpu", weights_only=True)
    for key, value in inferior.items():
        if key.startswith("encoder."):
            assert torch.equal(guided[key], value), key
    for key, value in guidance.items():
        assert torch.equal(guided[f"guidance.{key}"], value), key
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
