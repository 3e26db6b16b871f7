"""Progress a person can read in a log: where a run is, out of how many, and about how long it has left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ignite.engine import Engine, Events
from monai.handlers.utils import from_engine

__all__ = ["EpochProgress", "format_duration"]

logger = logging.getLogger("medguide.engines")


def format_duration(seconds: float) -> str:
    """A duration as a person says it: ``"40 s"``, ``"3 min 27 s"``, ``"2 h 05 min"``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class EpochProgress:
    """Logs a run's progress with its total and the time left, one INFO line per epoch (or every N iterations).

    MONAI's ``StatsHandler`` logs every iteration's loss with no time left, and Ignite's ``ProgressBar`` (tqdm)
    writes a bar that is unreadable in a log file or CI. With ``per="epoch"`` (for a trainer) this handler logs,
    at the end of each epoch, the mean of ``output_transform`` over the epoch's iterations, the mean wall time of
    an epoch so far in this run and that time multiplied by the epochs still to run, for example::

        epoch 3/20: train_loss 0.5320 (epoch mean), 12.4 s/epoch, about 3 min 31 s left
        epoch 20/20: train_loss 0.2104 (epoch mean), 12.1 s/epoch, done in 4 min 2 s

    The wall time includes what other handlers do at the end of an epoch, so attach it after MONAI's
    ``ValidationHandler`` and the estimate counts validation too. With ``per="iteration"`` (for an evaluator, whose
    one epoch is the whole data set) it logs every ``every`` iterations and after the last one::

        case 2/3, 20.1 s/case, about 20 s left

    Nothing is logged per iteration unless ``per="iteration"`` is asked for.

    Example::

        trainer = ignite.engine.Engine(lambda engine, batch: {"loss": torch.tensor(0.5)})
        EpochProgress().attach(trainer)  # logs 20 lines, the first "epoch 1/20: train_loss 0.5000 (epoch mean), ..."
        trainer.run(range(25), max_epochs=20)

    Args:
        per: ``"epoch"`` (one line per epoch) or ``"iteration"`` (one line every ``every`` iterations of an epoch).
        every: with ``per="iteration"``, log every this many iterations (the last iteration is always logged).
        output_transform: with ``per="epoch"``, turns ``engine.state.output`` into the scalar whose epoch mean is
            logged; the default reads ``loss`` from MONAI's decollated output. ``None`` logs no value.
        tag_name: the name the value is logged under.
        unit: with ``per="iteration"``, what one iteration is called in the line (``"case"``, ``"batch"``).
    """

    def __init__(
        self,
        per: str = "epoch",
        every: int = 1,
        output_transform: Callable | None = from_engine(["loss"], first=True),
        tag_name: str = "train_loss",
        unit: str = "case",
    ) -> None:
        if per not in ("epoch", "iteration"):
            raise ValueError(f"per must be 'epoch' or 'iteration', got {per!r}.")
        if every < 1:
            raise ValueError(f"every must be at least 1, got {every}.")
        self.per = per
        self.every = every
        self.output_transform = output_transform
        self.tag_name = tag_name
        self.unit = unit
        self._run_start: float | None = None
        self._first_epoch = 0
        self._epoch_start = 0.0
        self._values: list[float] = []

    def attach(self, engine: Engine) -> None:
        """Register the timing and the logging on ``engine``'s events."""
        if engine.has_event_handler(self._epoch_started, Events.EPOCH_STARTED):
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        if self.per == "epoch":
            if self.output_transform is not None:
                engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._log_epoch)
        else:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._log_iteration)

    def _started(self, engine: Engine) -> None:
        self._run_start = None

    def _epoch_started(self, engine: Engine) -> None:
        # the clock starts at the first epoch, not at STARTED, so one-off checks before it (MemoryCheck) do not count
        self._epoch_start = time.perf_counter()
        if self._run_start is None:
            self._run_start = self._epoch_start
            self._first_epoch = engine.state.epoch
        self._values = []

    def _collect(self, engine: Engine) -> None:
        value = self.output_transform(engine.state.output)
        if isinstance(value, tuple | list) and len(value) == 1:
            value = value[0]  # from_engine gives a 1-tuple for an output that was not decollated
        if value is not None:
            self._values.append(float(value))

    def _log_epoch(self, engine: Engine) -> None:
        epoch, max_epochs = engine.state.epoch, engine.state.max_epochs
        elapsed = time.perf_counter() - self._run_start
        per_epoch = elapsed / (epoch - self._first_epoch + 1)
        parts = []
        if self._values:
            parts.append(f"{self.tag_name} {sum(self._values) / len(self._values):.4f} (epoch mean)")
        parts.append(f"{per_epoch:.1f} s/epoch")
        if epoch < max_epochs:
            parts.append(f"about {format_duration(per_epoch * (max_epochs - epoch))} left")
        else:
            parts.append(f"done in {format_duration(elapsed)}")
        logger.info("epoch %d/%d: %s", epoch, max_epochs, ", ".join(parts))

    def _log_iteration(self, engine: Engine) -> None:
        length = engine.state.epoch_length  # None for data of unknown length, until its first epoch ends
        done = engine.state.iteration if length is None else (engine.state.iteration - 1) % length + 1
        if done % self.every and done != length:
            return
        per_iteration = (time.perf_counter() - self._epoch_start) / done
        if length is None:
            left = "total not known yet"
        elif done < length:
            left = f"about {format_duration(per_iteration * (length - done))} left"
        else:
            left = "done"
        total = "?" if length is None else length
        logger.info("%s %d/%s, %.1f s/%s, %s", self.unit, done, total, per_iteration, self.unit, left)
