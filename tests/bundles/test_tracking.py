"""``--tracking mlflow``, as the bundle docs give it: where the runs land, and what a training run records there."""

from __future__ import annotations

import math

import mlflow
import pytest
from monai.bundle import ConfigWorkflow
from monai.utils import path_to_sqlite_uri
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.bundles.helpers import bundle, configs, make_tiny_data, overrides, tiny

NAME = "maml_brats_mri_segmentation"
CONFIGS = configs(NAME)
TRAIN = tiny(NAME)


@pytest.fixture(autouse=True)
def no_tracking_uri_from_the_environment(monkeypatch):
    # MONAI's MLFlowHandler prefers MLFLOW_TRACKING_URI over the config, which would send runs elsewhere
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_default_store_is_the_bundle_eval_folder(tmp_path):
    workflow = ConfigWorkflow(
        config_file=str(CONFIGS / "train.json"), workflow_type="train", tracking="mlflow", bundle_root=str(tmp_path)
    )
    assert workflow.parser.get_parsed_content("tracking_uri") == path_to_sqlite_uri(tmp_path / "eval" / "mlruns.db")


@pytest.mark.slow
def test_tracked_training_logs_its_metrics_to_the_chosen_store(tmp_path):
    data = make_tiny_data(NAME, tmp_path / "brats")
    root = tmp_path / "bundle"
    store = path_to_sqlite_uri(tmp_path / "store" / "runs.db")
    chosen = {"tracking_uri": store, "experiment_name": "tiny_brats"}
    common = {"bundle_root": str(root), "dataset_dir": str(data)}
    bundle(
        "run",
        "--config_file",
        str(CONFIGS / "train.json"),
        *overrides({**TRAIN, **common, **chosen}),
        "--tracking",
        "mlflow",
    )

    assert not (root / "eval" / "mlruns.db").exists()
    client = mlflow.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tiny_brats")
    assert experiment is not None, "no experiment in the chosen store"
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["max_epochs"] == str(TRAIN["max_epochs"])

    iterations = TRAIN["iterations_per_epoch"] * TRAIN["max_epochs"]
    losses = client.get_metric_history(run.info.run_id, "train_loss")
    assert sorted(m.step for m in losses) == list(range(1, iterations + 1))
    assert all(math.isfinite(m.value) for m in losses)
    dice = client.get_metric_history(run.info.run_id, "val_mean_dice")
    validations = TRAIN["max_epochs"] // TRAIN["val_interval"]
    assert sorted(m.step for m in dice) == list(range(1, validations + 1))
    # the same numbers the run's own TensorBoard log holds: the store records this run's validations
    logged = {}
    for events in (root / "eval").glob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events)).Reload()
        if "val_mean_dice" in accumulator.Tags()["scalars"]:
            logged.update({e.step: e.value for e in accumulator.Scalars("val_mean_dice")})
    assert {m.step: m.value for m in dice} == pytest.approx(logged, abs=1e-6)
    # the executed config travels with the run, so a run can be repeated from the store alone
    assert [a.path for a in client.list_artifacts(run.info.run_id)][0].startswith("config_")
