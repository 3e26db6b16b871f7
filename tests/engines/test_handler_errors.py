"""A handler that stops a run on purpose passes its own error on alone, and never swallows anybody else's."""

from __future__ import annotations

import logging

import pytest
import torch
from ignite.engine import Engine
from monai.handlers import StatsHandler

from medguide.data import InputError
from medguide.engines import CheckpointLoader


def _engine(fail_with: BaseException | None = None) -> Engine:
    def step(engine, batch):
        if fail_with is not None:
            raise fail_with
        return {"loss": torch.tensor(0.0)}

    return Engine(step)


def test_a_missing_model_stops_at_start_with_one_message_and_no_stats_traceback(tmp_path, caplog):
    engine = _engine()
    CheckpointLoader(
        load_path=str(tmp_path / "models" / "model.pt"), load_dict={"model": torch.nn.Linear(2, 2)}
    ).attach(engine)
    StatsHandler(name="stats").attach(engine)
    with caplog.at_level(logging.INFO), pytest.raises(InputError, match="no trained model at"):
        engine.run([0, 1], max_epochs=1)
    assert "Exception:" not in caplog.text  # StatsHandler's traceback log


@pytest.mark.parametrize("with_stats", [False, True])
def test_other_errors_still_end_the_run(tmp_path, with_stats):
    network = torch.nn.Linear(2, 2)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    engine = _engine(fail_with=KeyError("boom"))
    CheckpointLoader(load_path=str(tmp_path / "model.pt"), load_dict={"model": network}).attach(engine)
    if with_stats:
        StatsHandler(name="stats").attach(engine)
    with pytest.raises(KeyError, match="boom"):
        engine.run([0, 1], max_epochs=1)


def test_a_checkpoint_of_another_network_says_which_setting_differs(tmp_path):
    from medguide.engines import save_network_settings

    torch.save(torch.nn.Linear(2, 3).state_dict(), tmp_path / "model.pt")
    save_network_settings(tmp_path, "b", {"num_classes": 3, "patch_size": [8, 8]})
    loader = CheckpointLoader(
        load_path=str(tmp_path / "model.pt"),
        load_dict={"model": torch.nn.Linear(2, 4)},
        settings={"num_classes": 4, "patch_size": [16, 16]},
    )
    with pytest.raises(InputError, match=r"was trained with num_classes 3 .* this network has num_classes 4: drop"):
        loader.check()
    save_network_settings(tmp_path, "b", {})
    with pytest.raises(InputError, match=r"does not fit this network: 2 tensors differ in shape, 0 are missing"):
        loader.check()


def test_modalities_in_another_order_are_refused_though_every_shape_fits(tmp_path):
    from medguide.engines import save_network_settings

    network = torch.nn.Linear(2, 2)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    save_network_settings(tmp_path, "b", {"modalities": ["t1", "flair"]})
    loader = CheckpointLoader(
        load_path=str(tmp_path / "model.pt"), load_dict={"model": network}, settings={"modalities": ["flair", "t1"]}
    )
    with pytest.raises(InputError, match=r"trained with modalities \['t1', 'flair'\]"):
        loader.check()


def test_a_model_of_another_bundle_is_named_with_both_bundles(tmp_path):
    """A user points one bundle's inference at a folder another bundle trained: one line naming both, not a
    traceback from settings of another shape (skin inference on a brain model failed in a dict comprehension)."""
    from medguide.data import InputError
    from medguide.engines import save_network_settings, trained_settings

    save_network_settings(tmp_path, "dmg_brain_tumor_mri_classification", {"classes": ["G", "A", "O"]})
    assert trained_settings(tmp_path, bundle="dmg_brain_tumor_mri_classification") == {"classes": ["G", "A", "O"]}
    assert trained_settings(tmp_path) == {"classes": ["G", "A", "O"]}
    with pytest.raises(InputError, match="trained by the dmg_brain_tumor_mri_classification bundle, not by dmg_skin"):
        trained_settings(tmp_path, bundle="dmg_skin_lesion_classification")
    assert trained_settings(tmp_path / "untrained", bundle="dmg_skin_lesion_classification") == {}


def test_settings_that_only_change_how_the_network_runs_may_differ(tmp_path):
    from medguide.engines import save_network_settings

    network = torch.nn.Linear(2, 2)
    torch.save(network.state_dict(), tmp_path / "model.pt")
    save_network_settings(tmp_path, "b", {"patch_size": [8, 8], "single_modality": "fused"})
    loader = CheckpointLoader(
        load_path=str(tmp_path / "model.pt"),
        load_dict={"model": network},
        settings={"patch_size": [16, 16], "single_modality": "branch"},
    )
    loader.check()  # a model trained for the fused route can be run along each branch, on other patches
