"""Running bundles in tests, from what each bundle declares in its ``configs/demo.json``.

A bundle joins every shared check (``test_config_workflow.py``) by having a ``configs/demo.json`` with
``synthetic.maker`` (dotted path of its data maker), ``tiny`` (overrides for a run of seconds), ``tiny_data``
(the maker's arguments for tiny data) and ``outputs`` (globs under ``bundle_root`` that train, evaluate and
inference leave). Commands run as ``python -m monai.bundle ...`` in a subprocess, as a user runs them, or
in-process through ``ConfigWorkflow``, as Python users run them.
"""

from __future__ import annotations

import json
import os
import pydoc
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from monai.bundle import ConfigParser, ConfigWorkflow
from monai.bundle.scripts import _get_fake_input_shape
from monai.networks import one_hot
from monai.utils import CommonKeys

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"
BUNDLES = tuple(sorted(p.name for p in (REPO / "bundles").iterdir() if (p / "configs" / "demo.json").is_file()))
STAGES = ("train", "evaluate", "inference")


def configs(bundle: str) -> Path:
    return REPO / "bundles" / bundle / "configs"


def demo(bundle: str) -> dict:
    """The bundle's ``configs/demo.json``."""
    return json.loads((configs(bundle) / "demo.json").read_text(encoding="utf-8"))


def tiny(bundle: str) -> dict:
    """Overrides that make the bundle train, evaluate and infer in seconds on a CPU (``demo.json``'s ``tiny``)."""
    return demo(bundle)["tiny"]


def make_tiny_data(bundle: str, out_dir: Path, seed: int = 0, **kwargs) -> Path:
    """The bundle's synthetic data set at its declared tiny size, in the real public layout; ``kwargs`` go to the
    maker over ``tiny_data`` (e.g. ``num_cases``)."""
    declared = demo(bundle)
    maker = pydoc.locate(declared["synthetic"]["maker"])
    assert callable(maker), f"{bundle}: demo.json's synthetic.maker {declared['synthetic']['maker']!r} names nothing"
    return Path(maker(out_dir, **{**declared["tiny_data"], "seed": seed, **kwargs}))


def stage_configs(bundle: str, stage: str) -> list[Path]:
    """The config files of one stage; evaluate is an overlay on train.json."""
    folder = configs(bundle)
    files = {"train": ["train.json"], "evaluate": ["train.json", "evaluate.json"], "inference": ["inference.json"]}
    return [folder / name for name in files[stage]]


def declared_outputs(bundle: str, stage: str, root: Path) -> dict[str, list[Path]]:
    """What each of ``demo.json``'s output globs for ``stage`` matches under ``root``."""
    return {pattern: sorted(root.glob(pattern)) for pattern in demo(bundle)["outputs"][stage]}


def declared_input_shape(bundle: str) -> tuple[int, ...]:
    """The input MONAI's ``verify_net_in_out`` and ``ckpt_export`` build from ``metadata.json`` (batch 1, n = p = 1)."""
    parser = ConfigParser()
    parser.read_meta(str(configs(bundle) / "metadata.json"))
    return tuple(_get_fake_input_shape(parser))


@dataclass
class TinyRun:
    """A bundle trained, evaluated and run for inference on tiny data: where, on what, and the stages' parsers."""

    root: Path
    data: Path
    common: dict
    parsers: dict[str, ConfigParser]


def stage_workflow(bundle: str, stage: str, **values) -> ConfigWorkflow:
    """One stage's workflow with ``values`` over its configs, not yet initialized."""
    return ConfigWorkflow(
        config_file=[str(f) for f in stage_configs(bundle, stage)],
        workflow_type="infer" if stage == "inference" else "train",
        **values,
    )


def run_stage(bundle: str, stage: str, **values) -> ConfigParser:
    """Run one stage of ``bundle`` in process with ``values`` over its configs; its ``check_properties`` must come
    back empty. Returns the stage's parser."""
    workflow = stage_workflow(bundle, stage, **values)
    workflow.initialize()
    assert not workflow.check_properties(), f"{bundle} {stage}: missing required properties"
    workflow.run()
    workflow.finalize()
    return workflow.parser


def scored_regions(bundle: str, data: Path, tmp: Path) -> tuple[dict, dict[str, int]]:
    """What the metrics score as each region on the first case of ``data``: the case through ``train.json``'s
    validation preprocessing, then its post-processing with the reference given as the prediction. Returns the
    datalist item and the voxels of each region (``region_names``) in the scored reference."""
    workflow = stage_workflow(bundle, "train", **tiny(bundle), bundle_root=str(tmp / "run"), dataset_dir=str(data))
    workflow.initialize()
    parser = workflow.parser
    item = parser.get_parsed_content("datalist")[0]
    label = parser.get_parsed_content("validate#preprocessing")(item)[parser.get_parsed_content("label_key")]
    prediction = one_hot(label, parser.get_parsed_content("num_classes"), dim=0)
    out = parser.get_parsed_content("validate#postprocessing")({CommonKeys.PRED: prediction, CommonKeys.LABEL: label})
    voxels = out[CommonKeys.LABEL].flatten(1).sum(1).int().tolist()
    return item, dict(zip(parser.get_parsed_content("region_names"), voxels, strict=True))


def run_tiny(bundle: str, tmp: Path, stages=STAGES, seed: int = 3, **maker_kwargs) -> TinyRun:
    """Run ``stages`` of ``bundle`` in process, in turn, on its tiny data made in ``tmp``."""
    data = make_tiny_data(bundle, tmp / "data", seed=seed, **maker_kwargs)
    common = {"bundle_root": str(tmp / "run"), "dataset_dir": str(data)}
    parsers = {stage: run_stage(bundle, stage, **tiny(bundle), **common) for stage in stages}
    return TinyRun(tmp / "run", data, common, parsers)


def overrides(values: dict) -> list[str]:
    """Command-line overrides for ``monai.bundle``: each value as JSON, so lists and numbers keep their type."""
    args = []
    for key, value in values.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def _run(args: tuple[str, ...], timeout: int, launcher: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MEDGUIDE_TRACEBACK", None)
    return subprocess.run(
        [sys.executable, *launcher, "-m", "monai.bundle", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
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


def bundle_in_two_processes(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node=2 -m monai.bundle <args>`` from the repository root (a bundle's multi-GPU overlay
    on CPU, gloo); the finished process, to check as the caller needs."""
    return _run(args, timeout, launcher=("-m", "torch.distributed.run", "--nproc_per_node=2"))


def config_list(*paths: Path) -> str:
    return "[" + ",".join(f"'{p}'" for p in paths) + "]"


def network_args(bundle: str, **values) -> list[str]:
    """``--meta_file``, ``--config_file`` (inference.json) and overrides, as ``verify_net_in_out`` and ``ckpt_export``
    take them."""
    folder = configs(bundle)
    return [
        "--meta_file",
        str(folder / "metadata.json"),
        "--config_file",
        str(folder / "inference.json"),
        *overrides(values),
    ]
