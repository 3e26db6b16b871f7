"""EpochProgress: one line per epoch with the epoch-mean loss, the total and the time left."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Engine, Events

from medguide.engines import EpochProgress
from medguide.engines import progress as progress_module
from medguide.engines.progress import format_duration

SECONDS_PER_ITERATION = 2.0


@pytest.fixture
def clock(monkeypatch):
    """A clock that each iteration advances by SECONDS_PER_ITERATION, so times in the lines are exact."""
    now = [0.0]
    monkeypatch.setattr(progress_module, "time", SimpleNamespace(perf_counter=lambda: now[0]))
    return now


def engine_with_losses(losses, clock, decollated=False):
    """An engine whose iteration ``i`` (from 1) returns ``losses[i - 1]`` and takes SECONDS_PER_ITERATION."""

    def step(engine, batch):
        clock[0] += SECONDS_PER_ITERATION
        loss = torch.tensor(losses[engine.state.iteration - 1])
        return [{"loss": loss}, {"loss": loss}] if decollated else {"loss": loss}

    return Engine(step)


def lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "medguide.engines"]


@pytest.mark.parametrize("decollated", [False, True])
def test_one_line_per_epoch_with_mean_loss_and_time_left(caplog, clock, decollated):
    losses = [float(i) for i in range(1, 13)]  # 3 epochs of 4 iterations
    engine = engine_with_losses(losses, clock, decollated)
    EpochProgress().attach(engine)
    with caplog.at_level(logging.DEBUG):
        engine.run(range(4), max_epochs=3)
    assert lines(caplog) == [
        "epoch 1/3: train_loss 2.5000 (epoch mean), 8.0 s/epoch, about 16 s left",
        "epoch 2/3: train_loss 6.5000 (epoch mean), 8.0 s/epoch, about 8 s left",
        "epoch 3/3: train_loss 10.5000 (epoch mean), 8.0 s/epoch, done in 24 s",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "medguide.engines")


def test_long_training_logs_nothing_per_iteration(caplog, clock):
    engine = engine_with_losses([0.5] * 500, clock)
    EpochProgress().attach(engine)
    with caplog.at_level(logging.DEBUG):
        engine.run(range(25), max_epochs=20)
    messages = lines(caplog)
    assert len(messages) == 20
    assert messages[0] == "epoch 1/20: train_loss 0.5000 (epoch mean), 50.0 s/epoch, about 15 min 50 s left"
    assert messages[-1] == "epoch 20/20: train_loss 0.5000 (epoch mean), 50.0 s/epoch, done in 16 min 40 s"


def test_attach_twice_logs_once(caplog, clock):
    engine = engine_with_losses([1.0] * 2, clock)
    handler = EpochProgress()
    handler.attach(engine)
    handler.attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run(range(2), max_epochs=1)
    assert len(lines(caplog)) == 1


def test_time_left_counts_only_this_runs_epochs_after_resuming(caplog, clock):
    engine = engine_with_losses([1.0] * 20, clock)
    EpochProgress().attach(engine)
    engine.load_state_dict({"epoch": 2, "max_epochs": 5, "epoch_length": 4})
    with caplog.at_level(logging.INFO):
        engine.run(range(4))
    assert lines(caplog)[0] == "epoch 3/5: train_loss 1.0000 (epoch mean), 8.0 s/epoch, about 16 s left"


def test_time_of_other_end_of_epoch_handlers_counts(caplog, clock):
    """Validation attached before the progress handler runs at EPOCH_COMPLETED and belongs to the epoch's time."""
    engine = engine_with_losses([1.0] * 8, clock)

    @engine.on(Events.EPOCH_COMPLETED)
    def validate(engine):
        clock[0] += 4.0

    EpochProgress(output_transform=None).attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run(range(2), max_epochs=4)
    assert lines(caplog)[:2] == ["epoch 1/4: 8.0 s/epoch, about 24 s left", "epoch 2/4: 8.0 s/epoch, about 16 s left"]


def test_evaluator_logs_cases_with_time_left(caplog, clock):
    engine = engine_with_losses([0.0] * 5, clock)
    EpochProgress(per="iteration").attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run(range(3))
    assert lines(caplog) == [
        "case 1/3, 2.0 s/case, about 4 s left",
        "case 2/3, 2.0 s/case, about 2 s left",
        "case 3/3, 2.0 s/case, done",
    ]


def test_evaluator_every_n_cases_and_always_the_last(caplog, clock):
    engine = Engine(lambda engine, batch: clock.__setitem__(0, clock[0] + SECONDS_PER_ITERATION))
    EpochProgress(per="iteration", every=2, unit="batch").attach(engine)
    with caplog.at_level(logging.INFO):
        engine.run(range(5))
    assert lines(caplog) == [
        "batch 2/5, 2.0 s/batch, about 6 s left",
        "batch 4/5, 2.0 s/batch, about 2 s left",
        "batch 5/5, 2.0 s/batch, done",
    ]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0 s"), (40, "40 s"), (59.6, "1 min 0 s"), (207, "3 min 27 s"), (7500, "2 h 05 min")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("kwargs", "match"), [({"per": "batch"}, "per must be"), ({"every": 0}, "every must be")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EpochProgress(**kwargs)
