"""Running bundle commands in tests: ``python -m monai.bundle ...`` in a subprocess, as a user would."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
BUNDLES = ("maml_brats_mri_segmentation", "maml_liver_tumor_ct_segmentation")

# tiny networks and windows, so a bundle trains and infers in seconds on a CPU
TINY = {"patch_size": [32, 32, 32], "num_stages": 3, "base_width": 4, "num_workers": 0}
TRAIN = {**TINY, "iterations_per_epoch": 2, "max_epochs": 2, "val_interval": 1, "batch_size": 1}


def configs(bundle: str) -> Path:
    return REPO / "bundles" / bundle / "configs"


def overrides(values: dict) -> list[str]:
    """Command-line overrides for ``monai.bundle``: each value as JSON, so lists and numbers keep their type."""
    args = []
    for key, value in values.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def _run(args: tuple[str, ...], timeout: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MEDGUIDE_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def bundle(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle <args>`` from the repository root; fail with its output when it fails."""
    result = _run(args, timeout)
    assert result.returncode == 0, f"monai.bundle {args[0]} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return result


def bundle_fails(*args: str, timeout: int = 600) -> str:
    """Run ``python -m monai.bundle <args>``, which must exit non-zero; the last lines of its stderr, stripped."""
    result = _run(args, timeout)
    assert result.returncode != 0, (
        f"monai.bundle {args[0]} succeeded:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result.stderr.strip()


def train_tiny(data: Path, root: Path, configs_dir: Path) -> dict:
    """Train a bundle for a few iterations on ``data`` into ``root``; the overrides that point a run there."""
    common = {"bundle_root": str(root), "dataset_dir": str(data)}
    bundle("run", "--config_file", str(configs_dir / "train.json"), *overrides({**TRAIN, **common}))
    return common


def evaluate_table(configs_dir: Path, common: dict) -> list[dict]:
    """Run a bundle's evaluate overlay; the rows of the missing-modality table it writes (CSV = markdown)."""
    bundle(
        "run",
        "--config_file",
        config_list(configs_dir / "train.json", configs_dir / "evaluate.json"),
        *overrides({**TINY, **common}),
    )
    eval_dir = Path(common["bundle_root"]) / "eval"
    with open(eval_dir / "missing_modality_table.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    table = [
        line
        for line in (eval_dir / "missing_modality_table.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("|")
    ]
    assert len(table) == len(rows) + 2  # header, rule
    return rows


def config_list(*paths: Path) -> str:
    return "[" + ",".join(f"'{p}'" for p in paths) + "]"


def verify_network(configs_dir: Path, small: dict) -> None:
    """``verify_net_in_out`` of the inference config's ``network_def`` (at a small width, same metadata)."""
    bundle(
        "verify_net_in_out",
        "network_def",
        "--meta_file",
        str(configs_dir / "metadata.json"),
        "--config_file",
        str(configs_dir / "inference.json"),
        *overrides(small),
    )


def export_matches_network(configs_dir: Path, checkpoint: Path, channels: int, small: dict, exported: Path) -> None:
    """``ckpt_export`` (traced) of ``checkpoint``; the TorchScript model gives the network's output."""
    import torch
    from monai.bundle import ConfigWorkflow

    shape = [1, channels, 32, 32, 32]
    bundle(
        "ckpt_export",
        "network_def",
        "--filepath",
        str(exported),
        "--ckpt_file",
        str(checkpoint),
        "--meta_file",
        str(configs_dir / "metadata.json"),
        "--config_file",
        str(configs_dir / "inference.json"),
        "--use_trace",
        "True",
        "--input_shape",
        json.dumps(shape),
        *overrides(small),
    )
    workflow = ConfigWorkflow(config_file=str(configs_dir / "inference.json"), workflow_type="infer", **small)
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    network.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = network(x)
        torch.testing.assert_close(torch.jit.load(str(exported), map_location="cpu")(x), expected, atol=1e-4, rtol=1e-4)
