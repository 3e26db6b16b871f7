"""MONAI engines with medguide's precision setting and gradient clipping."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents

from medguide.engines.precision import AutocastCall, autocast, resolve_precision

__all__ = ["Evaluator", "Trainer", "trained_network"]


def _set_precision(engine, precision: str) -> None:
    """CUDA reduced precision goes through the engine's own ``amp``; CPU through autocast around the forward."""
    dtype = resolve_precision(precision, engine.state.device)
    engine.cpu_dtype = None
    if dtype is not None and torch.device(engine.state.device).type == "cuda":
        engine.amp = True
        engine.amp_kwargs = {**engine.amp_kwargs, "dtype": dtype}
        if hasattr(engine, "scaler") and engine.scaler is None:
            engine.scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    elif dtype is not None:
        engine.cpu_dtype = dtype


class Trainer(SupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` plus gradient-norm clipping and a precision setting.

    Args:
        precision: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (see
            :func:`medguide.engines.precision.resolve_precision`). On CUDA it sets the engine's ``amp`` and its
            dtype; on CPU it runs the forward under ``torch.autocast``. With ``amp=True`` and the
            default ``"float32"``, CUDA uses float16 AMP as MONAI does.
        grad_clip: clip the gradients' global L2 norm to this value after the backward (None: no clipping).
        args, kwargs: as for ``SupervisedTrainer``.
    """

    def __init__(self, *args, precision: str = "float32", grad_clip: float | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _set_precision(self, precision)
        self.grad_clip = grad_clip
        if grad_clip is not None:
            self.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._clip)
        if self.cpu_dtype is not None:
            # only the forward runs under autocast: the loss casts to float32 and the backward follows the forward
            self.inferer = AutocastCall(self.inferer, self.cpu_dtype, self.state.device)

    def _clip(self, engine: Trainer) -> None:
        if engine.scaler is not None and engine.amp:
            engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), engine.grad_clip)


class Evaluator(SupervisedEvaluator):
    """MONAI's ``SupervisedEvaluator`` plus a precision setting (see :class:`Trainer`).

    Args:
        precision: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``.
        args, kwargs: as for ``SupervisedEvaluator``.
    """

    def __init__(self, *args, precision: str = "float32", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        _set_precision(self, precision)

    def precision_context(self) -> contextlib.AbstractContextManager:
        """The autocast context of this evaluator's precision, for forwards run outside ``_iteration``."""
        if self.amp:
            return torch.autocast("cuda", **self.amp_kwargs)
        return autocast(self.cpu_dtype, self.state.device)

    def _iteration(self, engine: Evaluator, batchdata: dict) -> dict:
        # CUDA reduced precision is the parent's amp; only CPU autocast needs wrapping here
        with autocast(engine.cpu_dtype, engine.state.device):
            return super()._iteration(engine, batchdata)


def trained_network(config_files: Sequence[str | Path], workflow_type: str = "train", **overrides):
    """Parse a bundle's configs and load its trained ``model.pt`` (from ``ckpt_dir``) into ``network``, in eval mode.

    For scripts that use a trained bundle outside its engines (reports, benchmarks). The checkpoint loads with
    ``map_location`` set to the config's ``device`` and ``weights_only=True``.

    Args:
        config_files: the bundle's config files, overlays last.
        workflow_type: MONAI workflow type the configs describe.
        overrides: config overrides, e.g. ``bundle_root``.

    Returns:
        the initialised ``ConfigParser``, the network and its device.
    """
    from monai.bundle import ConfigWorkflow

    workflow = ConfigWorkflow(config_file=[str(f) for f in config_files], workflow_type=workflow_type, **overrides)
    workflow.initialize()
    parser = workflow.parser
    device = parser.get_parsed_content("device")
    network = parser.get_parsed_content("network")
    checkpoint = Path(parser.get_parsed_content("ckpt_dir")) / "model.pt"
    network.load_state_dict(torch.load(checkpoint, map_location=device, weights_only=True))
    network.eval()
    return parser, network, device
