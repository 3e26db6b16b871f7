"""What the two DMG bundles' tests share: the three stages run alone by their ids, in order, and the check that they
chained through their checkpoint files (stage c holds stage a's ``E_I`` and stage b's ``G`` unchanged)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from tests.bundles.helpers import bundle, bundle_in_two_processes, config_list, configs, make_tiny_data, overrides

STAGE_OUTPUTS = {
    "train_classifiers": [
        "models/classifiers/inferior/model.pt",
        "models/classifiers/superior/model.pt",
        "models/classifiers/fusion/model.pt",
    ],
    "train_guidance": [
        "models/guidance/model.pt",
        "models/guidance/latents.pt",
        "models/guidance/latents_validation.pt",
    ],
    "train_guided_head": ["models/model.pt", "models/network.json"],
}


def run_stage(name: str, run_id: str, root: Path, data: Path, values: dict):
    """``python -m monai.bundle run <run_id>`` of the bundle's train.json on ``data`` into ``root``."""
    train = str(configs(name) / "train.json")
    return bundle(
        "run",
        run_id,
        "--config_file",
        train,
        *overrides({**values, "bundle_root": str(root), "dataset_dir": str(data)}),
    )


def stages_run_alone(name: str, tmp: Path, values: dict) -> dict:
    """Tiny data and the three stages run one after the other, each alone by its run id; the stamps of what each
    stage wrote, as it wrote it."""
    data = make_tiny_data(name, tmp / "data")
    root = tmp / "run"
    stamps = {}
    for run_id, outputs in STAGE_OUTPUTS.items():
        run_stage(name, run_id, root, data, values)
        stamps[run_id] = {path: (root / path).stat().st_mtime_ns for path in outputs}
    return {"data": data, "root": root, "stamps": stamps}


def check_stages_chained(staged: dict) -> dict[str, torch.Tensor]:
    """Every stage left its files; a later stage did not rewrite stage a's; stage c's model holds stage a's ``E_I``
    and stage b's ``G`` unchanged, and a head. Returns stage c's state dict."""
    root = staged["root"]
    for run_id, outputs in STAGE_OUTPUTS.items():
        missing = [path for path in outputs if not (root / path).is_file()]
        assert not missing, f"{run_id} left no {missing}"
    for path, stamp in staged["stamps"]["train_classifiers"].items():
        assert (root / path).stat().st_mtime_ns == stamp
    guided = torch.load(root / "models/model.pt", map_location="cpu", weights_only=True)
    inferior = torch.load(root / "models/classifiers/inferior/model.pt", map_location="cpu", weights_only=True)
    guidance = torch.load(root / "models/guidance/model.pt", map_location="cpu", weights_only=True)
    encoder = {key: value for key, value in inferior.items() if key.startswith("encoder.")}
    assert encoder
    for key, value in encoder.items():
        assert torch.equal(guided[key], value), key
    for key, value in guidance.items():
        assert torch.equal(guided[f"guidance.{key}"], value), key
    assert any(key.startswith("head.") for key in guided)
    return guided


def train_in_two_processes(name: str, tmp: Path, values: dict) -> subprocess.CompletedProcess:
    """The multi-GPU overlay on CPU: every stage through torchrun with two processes and the gloo backend."""
    data = make_tiny_data(name, tmp / "data")
    files = config_list(configs(name) / "train.json", configs(name) / "multi_gpu_train.json")
    args = [
        "--config_file",
        files,
        *overrides({**values, "max_epochs": 1, "guidance_epochs": 1, "bundle_root": str(tmp / "run")}),
        *overrides({"dataset_dir": str(data)}),
    ]
    return bundle_in_two_processes("run", *args)
