"""MONAI engines with medguide's precision setting and gradient clipping."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import torch
from ignite.engine import Events
from monai.engines import SupervisedEvaluator, SupervisedTrainer
from monai.engines.utils import IterationEvents
from monai.inferers import SimpleInferer

from medguide.engines.precision import PRECISIONS, AutocastCall, engine_precision

__all__ = ["Evaluator", "Trainer", "trained_network"]


def _engine_arguments(engine: str, precision: str, device: str | torch.device, inferer, kwargs: dict) -> dict:
    """MONAI's ``amp``, ``amp_kwargs`` and ``inferer`` arguments for ``precision`` on ``device``.

    MONAI's engines autocast only CUDA, so off CUDA the inferer is wrapped in :class:`AutocastCall`: only the
    forward runs in reduced precision, the loss casts to float32 and the backward follows the forward.

    Raises:
        TypeError: ``kwargs`` holds ``amp`` or ``amp_kwargs``, which ``precision`` sets.
    """
    for name in ("amp", "amp_kwargs"):
        if name in kwargs:
            raise TypeError(
                f"medguide's {engine} takes precision (one of {PRECISIONS}), not {name!r}, and sets MONAI's amp from "
                f"it: replace {name!r} with 'precision' in the config ('auto' is float16 AMP on CUDA)."
            )
    setting = engine_precision(precision, device)
    inferer = SimpleInferer() if inferer is None else inferer
    if setting.cpu_dtype is not None:
        inferer = AutocastCall(inferer, setting.cpu_dtype, device)
    return {"amp": setting.amp, "amp_kwargs": setting.amp_kwargs, "inferer": inferer}


class Trainer(SupervisedTrainer):
    """MONAI's ``SupervisedTrainer`` plus gradient-norm clipping, one precision setting and a stop at non-finite
    gradients.

    ``precision`` is handed to MONAI through its own ``amp`` and ``amp_kwargs`` arguments on CUDA (float16 with
    loss scaling by a GradScaler, bfloat16 without) and runs the forward under ``torch.autocast`` on the CPU;
    ``"float32"`` is exact float32 everywhere. The arguments after ``device`` are keywords, as a config gives them.

    A step whose gradients hold a NaN or an infinity (in any parameter the optimizer steps) is not taken: the run
    stops with ``FloatingPointError`` naming the epoch, the iteration and the parameters, before the step could
    spoil the weights that later checkpoints save (float16 with loss scaling is exempt: its GradScaler skips such
    steps by design).

    Example::

        Trainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=net,
                optimizer=optimizer, loss_function=loss, precision="auto", grad_clip=12.0)

    Args:
        device: the device the engine runs on.
        precision: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``, as
            :func:`medguide.engines.precision.resolve_precision` resolves it on ``device``.
        grad_clip: clip the gradients' global L2 norm to this value after the backward (None: no clipping).
        check_finite: stop at non-finite gradients (above); one max-norm over the gradients per step (one
            device synchronisation on CUDA).
        inferer: as for ``SupervisedTrainer`` (default ``SimpleInferer``).
        kwargs: as for ``SupervisedTrainer``, without ``amp`` and ``amp_kwargs``.

    Raises:
        TypeError: for ``amp`` or ``amp_kwargs``: ``precision`` sets them.
        ValueError: for a ``precision`` not listed above.
        FloatingPointError: while running, at a step with non-finite gradients (``check_finite``).
    """

    def __init__(
        self,
        device: str | torch.device,
        *,
        precision: str = "float32",
        grad_clip: float | None = None,
        check_finite: bool = True,
        inferer=None,
        **kwargs,
    ) -> None:
        super().__init__(device=device, **_engine_arguments("Trainer", precision, device, inferer, kwargs), **kwargs)
        self.precision = precision
        self.grad_clip = grad_clip
        if check_finite:  # before the clipping, which would spread one non-finite gradient to all
            self.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._check_finite)
        if grad_clip is not None:
            self.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self._clip)
        if self.amp and self.amp_kwargs["dtype"] != torch.float16:
            self.add_event_handler(Events.STARTED, self._no_loss_scaling)

    def _no_loss_scaling(self, engine: Trainer) -> None:
        # MONAI's run() makes a float16 GradScaler whenever amp is on, and autocasts only while it has a scaler;
        # bfloat16 keeps float32's exponent range, so it gets a scaler that passes the loss and the step through
        engine.scaler = torch.amp.GradScaler("cuda", enabled=False)

    def _check_finite(self, engine: Trainer) -> None:
        if engine.amp and engine.amp_kwargs["dtype"] == torch.float16:
            return  # float16: the GradScaler skips steps with inf/NaN gradients and lowers its scale
        # every parameter the optimizer steps: the network's and any trained beside it (xattn's report guidance)
        stepped = [p for group in engine.optimizer.param_groups for p in group["params"] if p.grad is not None]
        # the largest |gradient| is finite exactly when every gradient is (an L2 norm can overflow on finite ones)
        if not stepped or torch.isfinite(torch.nn.utils.get_total_norm([p.grad for p in stepped], float("inf"))):
            return
        names = {id(p): name for name, p in engine.network.named_parameters()}
        bad = [
            names.get(id(p), f"a parameter outside the network, shape {list(p.shape)}")
            for p in stepped
            if not p.grad.isfinite().all()
        ]
        dtype = engine.amp_kwargs["dtype"] if engine.amp else getattr(engine.inferer, "dtype", None)
        hints = (["precision 'float32'"] if dtype is not None else []) + ["a lower learning rate"]
        hints += ["gradient clipping (grad_clip)"] if engine.grad_clip is None else []
        raise FloatingPointError(
            f"non-finite gradients at epoch {engine.state.epoch}, iteration {engine.state.iteration} of the run "
            f"(forward in {dtype or torch.float32}) in {len(bad)} parameter(s), first {bad[:3]}; the step was not "
            f"taken, so the weights are those of the step before. Try {' or '.join(hints)}; check_finite=False "
            "lets such steps through."
        )

    def _clip(self, engine: Trainer) -> None:
        if engine.scaler is not None and engine.amp:
            engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.network.parameters(), engine.grad_clip)


class Evaluator(SupervisedEvaluator):
    """MONAI's ``SupervisedEvaluator`` plus one precision setting (see :class:`Trainer`).

    Args:
        device: the device the engine runs on.
        precision: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``.
        inferer: as for ``SupervisedEvaluator`` (default ``SimpleInferer``); off CUDA it is wrapped so that it
            runs in ``precision``.
        kwargs: as for ``SupervisedEvaluator``, without ``amp`` and ``amp_kwargs``.

    Raises:
        TypeError: for ``amp`` or ``amp_kwargs``: ``precision`` sets them.
        ValueError: for a ``precision`` not listed above.
    """

    def __init__(self, device: str | torch.device, *, precision: str = "float32", inferer=None, **kwargs) -> None:
        super().__init__(device=device, **_engine_arguments("Evaluator", precision, device, inferer, kwargs), **kwargs)
        self.precision = precision

    def amp_context(self) -> contextlib.AbstractContextManager:
        """MONAI's CUDA autocast of this evaluator, for forwards run outside ``_iteration`` with ``self.inferer``
        (which holds the autocast off CUDA); a no-op without ``amp``."""
        if self.amp:
            return torch.autocast("cuda", **self.amp_kwargs)
        return contextlib.nullcontext()


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
