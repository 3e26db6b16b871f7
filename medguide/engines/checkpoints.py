"""A trained bundle folder that describes itself: the network settings travel with the weights.

Training writes ``<ckpt_dir>/network.json`` beside ``model.pt``: the bundle's name and the settings that shape its
network (``modalities``, ``num_classes``, ``base_width``, ``num_stages``) and its training patch. Inference and
evaluation read them back (:func:`trained_settings`), so ``inference.json --bundle_root FOLDER`` builds the network
``FOLDER/models/model.pt`` was trained with, whatever overlay (``cpu_scale.json``, the demo's) trained it; and
:class:`CheckpointLoader` names in one line what differs when a checkpoint does not fit the network, instead of a
page of state-dict keys.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Events
from monai.handlers import CheckpointLoader as MonaiCheckpointLoader
from torch import nn

from medguide.data.errors import InputError
from medguide.data.files import atomic_write_text
from medguide.engines.handler_errors import pass_own_error, passes_own_error

__all__ = ["SETTINGS_FILE", "CheckpointLoader", "NetworkSettingsSaver", "save_network_settings", "trained_settings"]

SETTINGS_FILE = "network.json"

RUNTIME_SETTINGS = ("patch_size", "single_modality")
"""Saved settings a run may change without retraining (they change how the network is run, not its weights): a
different value is not a mismatch for :class:`CheckpointLoader`."""


def save_network_settings(ckpt_dir: str | os.PathLike, bundle: str, settings: Mapping) -> Path:
    """Write ``<ckpt_dir>/network.json``: ``{"bundle": bundle, "settings": settings}``, atomically.

    Args:
        ckpt_dir: the folder training saves ``model.pt`` into (created).
        bundle: the bundle's name, e.g. ``"maml_brats_mri_segmentation"``, so ``medguide predict`` finds its configs.
        settings: JSON-serialisable settings that shape the network (and ``patch_size``, the inference window).

    Returns:
        the file's path.
    """
    path = Path(ckpt_dir) / SETTINGS_FILE
    atomic_write_text(path, json.dumps({"bundle": bundle, "settings": dict(settings)}, indent=2) + "\n")
    return path


def _read(ckpt_dir: str | os.PathLike) -> dict:
    path = Path(ckpt_dir) / SETTINGS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(
            f"'{path}' is not a readable network settings file ({error}); train again or delete it."
        ) from error


def trained_settings(ckpt_dir: str | os.PathLike, bundle: str | None = None) -> dict:
    """The settings ``ckpt_dir``'s network was trained with (``{}`` when it holds no ``network.json``).

    Bundle configs read each setting as ``$@trained.get('base_width', 16)``: the trained value, else the config's
    default; a command-line override still wins, since it replaces the whole expression.

    Args:
        ckpt_dir: the folder of ``model.pt`` and ``network.json``.
        bundle: the bundle whose configs read the settings; a model trained by another bundle is refused in one
            line naming both, instead of failing later on settings of another shape.

    Raises:
        InputError: ``network.json`` exists but cannot be read, or was written by a bundle other than ``bundle``.
    """
    saved = _read(ckpt_dir)
    trained_by = saved.get("bundle")
    if bundle is not None and trained_by is not None and trained_by != bundle:
        raise InputError(
            f"'{Path(ckpt_dir)}' holds a model trained by the {trained_by} bundle, not by {bundle}: use "
            f"bundles/{trained_by}/configs, or `medguide predict`, which picks the bundle from the model folder."
        )
    return dict(saved.get("settings", {}))


class NetworkSettingsSaver:
    """Writes ``network.json`` beside the checkpoint after every validation, once ``model.pt`` is this run's.

    Attach it to the validation evaluator after ``CheckpointSaver``: the first validation of a run always saves
    ``model.pt`` (the best so far), so from then on the file and the settings describe one network. Written at
    the start of training instead, an aborted retrain with other settings would leave the settings of a network
    whose weights were never saved beside the previous run's ``model.pt``.

    Args:
        ckpt_dir: the folder of ``model.pt``.
        bundle: the bundle's name.
        settings: the settings that shape the network (see :func:`save_network_settings`).
    """

    def __init__(self, ckpt_dir: str | os.PathLike, bundle: str, settings: Mapping) -> None:
        self.ckpt_dir, self.bundle, self.settings = Path(ckpt_dir), bundle, dict(settings)

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine=None) -> None:
        if (self.ckpt_dir / "model.pt").is_file():
            save_network_settings(self.ckpt_dir, self.bundle, self.settings)


def _differences(state: Mapping[str, torch.Tensor], network: nn.Module) -> tuple[list[str], list[str], list[str]]:
    """(keys whose shapes differ, keys missing from the checkpoint, keys the network lacks)."""
    expected = network.state_dict()
    shapes = [k for k in state if k in expected and tuple(state[k].shape) != tuple(expected[k].shape)]
    return shapes, [k for k in expected if k not in state], [k for k in state if k not in expected]


class CheckpointLoader(MonaiCheckpointLoader):
    """MONAI's ``CheckpointLoader`` that first checks the checkpoint exists and fits the network, saying what differs.

    The check runs when the engine starts, just before MONAI's loading, and a missing or mismatched model ends the
    run with one message (see :func:`medguide.data.plain_input_errors`) rather than MONAI's traceback and its
    list of every missing key. When the checkpoint's folder holds ``network.json``, the message names the settings
    that differ from ``settings``, e.g.::

        '/out/models/model.pt' was trained with base_width 8, num_stages 4 (/out/models/network.json), but this
        network has base_width 16, num_stages 6: drop those overrides, or pass the trained folder as --bundle_root.

    Building the handler reads nothing, so ``ConfigWorkflow.check_properties()`` works on a bundle not trained yet.

    Args:
        load_path: the checkpoint, a state dict saved by ``CheckpointSaver`` (``model.pt``).
        load_dict: ``{"model": network}`` as for MONAI's loader; the ``"model"`` entry is checked.
        settings: the settings the network was built with, compared with the trained ones.
        train_hint: what to run to get a model, ending the message when there is none.
        kwargs: as for MONAI's ``CheckpointLoader`` (``map_location``, ``strict``, ...).

    Raises:
        InputError: when the engine starts, for no file at ``load_path`` or a checkpoint that does not fit.
    """

    def __init__(
        self,
        load_path: str,
        load_dict: dict,
        settings: Mapping | None = None,
        train_hint: str = "train the bundle first (its configs/train.json), or run medguide demo",
        **kwargs,
    ) -> None:
        super().__init__(load_path=load_path, load_dict=load_dict, **kwargs)
        self.settings = dict(settings or {})
        self.train_hint = train_hint
        self._error: InputError | None = None

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        engine.add_event_handler(Events.STARTED, self.check)
        super().attach(engine)

    @passes_own_error
    def exception_raised(self, engine, e: BaseException) -> None:
        """Re-raise this loader's own error as it is; leave other exceptions to the other handlers."""
        pass_own_error(engine, e, self._error)

    def check(self, engine=None) -> None:
        """Raise :class:`InputError` when there is no checkpoint or it does not fit ``load_dict["model"]``."""
        path = Path(self.load_path)
        if not path.is_file():
            self._error = InputError(
                f"no trained model at '{path}': {self.train_hint}, then pass that folder as --bundle_root."
            )
            raise self._error
        network = self.load_dict.get("model")
        if network is not None:
            try:
                self._compare(path, network)
            except InputError as error:
                self._error = error
                raise

    def _compare(self, path: Path, network: nn.Module) -> None:
        # settings first: branches are keyed by position, so the same modalities in another order load without a
        # shape error and send every sequence to the wrong branch
        trained = trained_settings(path.parent)
        differ = [
            k for k in self.settings if k in trained and trained[k] != self.settings[k] and k not in RUNTIME_SETTINGS
        ]
        if differ:
            was = ", ".join(f"{k} {trained[k]}" for k in differ)
            now = ", ".join(f"{k} {self.settings[k]}" for k in differ)
            raise InputError(
                f"'{path}' was trained with {was} ({path.parent / SETTINGS_FILE}), but this network has {now}: "
                "drop those overrides, or pass the trained folder as --bundle_root."
            )
        module = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
        state = torch.load(path, map_location="cpu", weights_only=True)
        shapes, missing, unexpected = _differences(state, module)
        if not (shapes or missing or unexpected):
            return
        first = (shapes or missing or unexpected)[0]
        raise InputError(
            f"'{path}' does not fit this network: {len(shapes)} tensors differ in shape, {len(missing)} are missing "
            f"and {len(unexpected)} unexpected (first: {first!r}); build the network with the settings it was trained "
            "with (modalities, num_classes, base_width, num_stages), or retrain: a model saved by an earlier version "
            "of the bundle may not fit its network (see the changelog in the bundle's configs/metadata.json)."
        )
