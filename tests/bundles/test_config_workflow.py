"""What every bundle meets, read from its ``configs/demo.json``: required workflow properties, valid metadata, a
network as configured that takes the input its metadata declares, train -> evaluate -> infer in process on tiny
data leaving every declared output, and a TorchScript export that gives the network's output."""

from __future__ import annotations

import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.transforms import Compose, RandomizableTrait, Transform

from tests.bundles.helpers import (
    BUNDLES,
    REPO,
    SCHEMA,
    STAGES,
    bundle,
    configs,
    declared_input_shape,
    declared_outputs,
    network_args,
    tiny,
)


def test_every_bundle_folder_declares_its_demo():
    folders = sorted(p.parent.name for p in (REPO / "bundles").glob("*/configs"))
    assert list(BUNDLES) == folders, "a bundle without configs/demo.json is left out of every shared check"


@pytest.mark.parametrize("name", BUNDLES)
@pytest.mark.parametrize("config, kind", [("train.json", "train"), ("inference.json", "infer")])
def test_workflow_properties(tmp_path, name, config, kind):
    workflow = ConfigWorkflow(config_file=str(configs(name) / config), workflow_type=kind, bundle_root=str(tmp_path))
    workflow.initialize()
    assert not workflow.check_properties(), f"{config} is missing required properties"


@pytest.mark.skipif(not SCHEMA.is_file(), reason=f"MONAI metadata schema not found at {SCHEMA}")
@pytest.mark.parametrize("name", BUNDLES)
def test_metadata_is_valid(name):
    bundle("verify_metadata", "--meta_file", str(configs(name) / "metadata.json"), "--filepath", str(SCHEMA))


@pytest.mark.parametrize("name", BUNDLES)
def test_network_as_configured_takes_the_input_its_metadata_declares(tmp_path, name):
    # an empty bundle_root: no trained settings from a models/ folder change the network
    bundle("verify_net_in_out", "network_def", *network_args(name, bundle_root=str(tmp_path)))


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_train_evaluate_infer_leave_every_declared_output(tiny_run, name):
    run = tiny_run(name)
    for stage in STAGES:
        missing = [pattern for pattern, found in declared_outputs(name, stage, run.root).items() if not found]
        assert not missing, f"{name} {stage} left nothing matching {missing} under {run.root}"


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_torchscript_export_gives_the_same_output(tiny_run, tmp_path, name):
    run = tiny_run(name)
    checkpoint, exported = run.root / "models" / "model.pt", tmp_path / "model.ts"
    shape = declared_input_shape(name)
    values = {**tiny(name), "bundle_root": str(run.root)}
    bundle(
        "ckpt_export",
        "network_def",
        "--filepath",
        str(exported),
        "--ckpt_file",
        str(checkpoint),
        "--use_trace",
        "True",
        "--input_shape",
        str(list(shape)),
        *network_args(name, **values),
    )
    workflow = ConfigWorkflow(config_file=str(configs(name) / "inference.json"), workflow_type="infer", **values)
    workflow.initialize()
    network = workflow.parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    network.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = network(x)
        torch.testing.assert_close(torch.jit.load(str(exported), map_location="cpu")(x), expected, atol=1e-4, rtol=1e-4)


def _ids_of(config, wanted, prefix=""):
    """The config ids (``a#b#0``) of every dict in ``config`` that ``wanted`` accepts."""
    items = config.items() if isinstance(config, dict) else enumerate(config) if isinstance(config, list) else ()
    for key, value in items:
        path = f"{prefix}#{key}" if prefix else str(key)
        if isinstance(value, dict) and wanted(value):
            yield path
        yield from _ids_of(value, wanted, path)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_cached_datasets_cache_what_comes_before_the_first_random_transform(tiny_run, name):
    # CacheDataset caches up to its first random transform, and a nested Compose counts as random whatever it holds:
    # Compose([@preprocessing, @augmentation]) caches nothing and reads every image from disk every epoch
    parser = tiny_run(name).parsers["train"]
    cached = list(_ids_of(parser.get(), lambda v: str(v.get("_target_", "")).endswith("CacheDataset")))
    assert cached, f"{name}: train.json declares no CacheDataset"
    for config_id in cached:
        transform = parser.get_parsed_content(config_id).transform
        first = transform.get_index_of_first(lambda t: isinstance(t, RandomizableTrait) or not isinstance(t, Transform))
        if first is not None:
            stop = transform.transforms[first]
            assert not isinstance(stop, Compose), (
                f"{name}: {config_id} stops caching at a nested Compose (transform {first}); flatten it "
                "(monai.transforms.Compose([...]).flatten()) so that its deterministic transforms are cached"
            )
