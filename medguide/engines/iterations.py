"""The step every custom training iteration shares: MONAI's ``SupervisedTrainer._iteration`` with the forward and
the loss left to the method.

A method whose loss needs more than ``loss_function(pred, label)`` (a frozen teacher beside the student, the report
beside the image) subclasses :class:`TrainingIteration` and gives it to the stock :class:`medguide.engines.Trainer`
as ``iteration_update``; the precision handling, the events MONAI fires (so gradient clipping, decollation and
post-processing work as in any medguide trainer) and the optimizer step stay here, once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from monai.engines.utils import IterationEvents
from monai.utils import CommonKeys as Keys

__all__ = ["TrainingIteration"]


class TrainingIteration:
    """One training step as a MONAI trainer's ``iteration_update``; subclasses give :meth:`forward` and :meth:`loss`.

    The step: :meth:`check`, the trainer's network (and :meth:`modules`) to training mode, ``zero_grad``, then under
    MONAI's CUDA autocast when the trainer's ``precision`` sets ``amp`` (medguide's CPU autocast sits in the
    inferer) :meth:`forward` (``FORWARD_COMPLETED``) and :meth:`loss` (``LOSS_COMPLETED``), the backward through
    the trainer's GradScaler when it has one (``BACKWARD_COMPLETED``: clipping), the optimizer step
    (``MODEL_COMPLETED``). ``engine.state.output`` holds what :meth:`forward` put there (``image``, ``label``,
    ``pred``), ``loss`` and the other loss terms detached.

    Raises:
        ValueError: (per iteration) no batch; ``accumulation_steps`` above 1 unless :attr:`accumulates`.
    """

    accumulates = False
    """Whether the loss may be accumulated over smaller batches (False where a term is computed over the batch)."""

    def modules(self) -> list[torch.nn.Module]:
        """Further modules trained in this step besides the trainer's network (set to training mode each step)."""
        return []

    def check(self, engine: Any, batchdata: Mapping) -> None:
        """Refuse what this iteration cannot train on (called before each step); raise ``ValueError``/``TypeError``."""

    def forward(self, engine: Any, batchdata: Mapping) -> Any:
        """Run the networks on the batch; put ``image``, ``label`` and ``pred`` into ``engine.state.output``; return
        what :meth:`loss` needs."""
        raise NotImplementedError

    def loss(self, engine: Any, forwarded: Any) -> dict[str, torch.Tensor]:
        """The loss terms from :meth:`forward`'s result: ``{"loss": the one backpropagated, other terms...}``."""
        raise NotImplementedError

    def __call__(self, engine: Any, batchdata: Mapping) -> dict:
        """Run one training step on ``engine`` (a :class:`medguide.engines.Trainer`); returns its output."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        if getattr(engine, "accumulation_steps", 1) > 1 and not self.accumulates:
            raise ValueError(
                f"{type(self).__name__} takes no accumulation_steps: a term of its loss is computed over the whole "
                "batch, so gradients accumulated over smaller batches would train another loss."
            )
        self.check(engine, batchdata)
        engine.state.output = {}
        engine.network.train()
        for module in self.modules():
            module.train()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        scaled = engine.amp and engine.scaler is not None
        with torch.autocast("cuda", **engine.amp_kwargs) if scaled else contextlib.nullcontext():
            forwarded = self.forward(engine, batchdata)
            engine.fire_event(IterationEvents.FORWARD_COMPLETED)
            terms = self.loss(engine, forwarded)
            loss = terms.pop("loss")
            engine.state.output[Keys.LOSS] = loss
            engine.state.output.update({name: value.detach() for name, value in terms.items()})
            engine.fire_event(IterationEvents.LOSS_COMPLETED)
        (engine.scaler.scale(loss) if scaled else loss).backward()
        engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
        if scaled:
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            engine.optimizer.step()
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output
