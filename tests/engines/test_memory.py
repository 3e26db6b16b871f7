"""The memory check before training and inference: its estimate, its refusal message, and that it leaves no trace."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from monai.data import DataLoader
from monai.handlers import StatsHandler

from medguide.engines import (
    MemoryCheck,
    ModalityBatch,
    Trainer,
    available_memory,
    estimate_peak_memory,
    memory,
    precision,
)
from medguide.losses import MAMLLoss
from medguide.networks import MAMLNet

MODALITIES = ["t1", "t2"]
KWARGS = {"modalities": MODALITIES}
linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is measured through /proc")


def tiny() -> MAMLNet:
    torch.manual_seed(0)
    return MAMLNet(modalities=MODALITIES, out_channels=2, spatial_dims=3, base_width=4, num_stages=3)


def estimate(net, patch: int, batch: int, **kwargs) -> int:
    return estimate_peak_memory(net, [patch] * 3, batch, 2, [16] * 3, KWARGS, **kwargs)


def trainer(net: MAMLNet, handlers: list, loss=None) -> Trainer:
    items = [
        {
            "image": torch.randn(2, 16, 16, 16),
            "label": torch.randint(0, 2, (1, 16, 16, 16)).float(),
            "modalities": MODALITIES,
        }
    ]
    return Trainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=DataLoader(items, batch_size=1),
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99),
        loss_function=loss or MAMLLoss(),
        prepare_batch=ModalityBatch(),
        train_handlers=handlers,
    )


class Engine:
    """The parts of an engine the check reads."""

    def __init__(self, network, precision="float32") -> None:
        self.network, self.precision, self.optimizer = network, precision, None
        self.state = type("State", (), {"device": torch.device("cpu")})()


@linux
def test_available_memory_is_known_on_linux_cpu_and_unknown_elsewhere():
    assert available_memory("cpu") > 0
    assert available_memory("meta") is None


@linux
def test_estimate_grows_with_patch_voxels_and_batch():
    net = tiny()
    estimate(net, 32, 1)  # the first probe of a process also loads the operators' code
    small = estimate(net, 32, 1, margin=0)
    # 8 and 16 times the voxels times batch; a probe this small measures to within a factor of about 2
    assert 0 < 2 * small < estimate(net, 64, 1, margin=0)
    assert 4 * small < estimate(net, 64, 2, margin=0)
    assert estimate(net, 64, 1, training=False) < estimate(net, 64, 1)


def test_estimate_scales_the_probe_linearly(monkeypatch):
    probe_peak = 10 * 2**20
    monkeypatch.setattr(memory, "_measure_peak", lambda fn, device: (fn(), probe_peak)[1])
    net = tiny()
    gradients = sum(p.numel() * p.element_size() for p in net.parameters())
    state = 2 * gradients  # gradients and the momentum buffer
    per_probe = probe_peak - gradients
    for patch, batch in ((32, 1), (64, 1), (64, 2)):
        scale = patch**3 * batch / 16**3
        assert estimate(net, patch, batch, safety=1.0, margin=0) == int(state + per_probe * scale)
    # a configuration smaller than the probe is measured as it is
    assert estimate(net, 8, 2, safety=1.0, margin=0) == int(state + per_probe)
    assert estimate(net, 64, 1, training=False, safety=1.0, margin=0) == int(probe_peak * 64)


@linux
def test_probe_leaves_network_gradients_and_random_state_unchanged():
    net = tiny().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    assert estimate(net, 32, 2) > 0
    assert not net.training
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
    # gradients a run already holds are kept as they are, not accumulated into
    grads = [torch.full_like(p, 0.5) for p in net.parameters()]
    for p, g in zip(net.parameters(), grads):
        p.grad = g
    estimate(net, 32, 1)
    assert all(p.grad is g and bool((g == 0.5).all()) for p, g in zip(net.parameters(), grads))


@linux
def test_check_stops_training_with_one_message(caplog):
    check = MemoryCheck([128] * 3, 2, 2, [16] * 3, KWARGS, limit=1e-6, hint="Lower patch_size or batch_size.")
    engine = trainer(tiny(), [check, StatsHandler(iteration_log=False)])
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as stop:
        engine.run()
    message = str(stop.value)
    assert message.startswith("medguide: training needs about ") and "GiB" in message
    assert "patch [128, 128, 128], batch 2, on cpu, float32" in message
    assert "but the limit set is 0.0 GiB." in message and message.endswith("Lower patch_size or batch_size.")
    assert engine.state.iteration == 0
    # the message is passed on as it is, without StatsHandler's traceback
    assert not [r for r in caplog.records if r.exc_info]


@linux
def test_check_lets_a_fitting_run_go_on_and_logs_the_estimate(caplog):
    check = MemoryCheck([16] * 3, 1, 2, [16] * 3, KWARGS, limit=1e6)
    engine = trainer(tiny(), [check])
    with caplog.at_level(logging.INFO, logger="medguide.engines"):
        engine.run()
    assert engine.state.iteration == 1
    assert any(
        "memory check: about" in r.getMessage() and "the limit set is 1000000.0 GiB" in r.getMessage()
        for r in caplog.records
    )


def test_check_does_not_swallow_other_errors():
    def broken(pred, target):
        raise ValueError("broken loss")

    engine = trainer(tiny(), [MemoryCheck([16] * 3, 1, 2, [16] * 3, KWARGS, limit=1e6)], loss=broken)
    with pytest.raises(ValueError, match="broken loss"):
        engine.run()


@linux
def test_check_estimates_in_the_engines_precision_and_for_inference(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_bfloat16", lambda: "amx")  # the setting resolves as on such a CPU
    engine = Engine(tiny(), precision="auto")
    with pytest.raises(SystemExit, match=r"training needs .* on cpu, bfloat16\), but"):
        MemoryCheck([64] * 3, 2, 2, [16] * 3, KWARGS, limit=1e-6)(engine)
    with pytest.raises(SystemExit, match=r"^medguide: inference needs .*measured step at 16x16x16:"):
        MemoryCheck([64] * 3, 1, 2, [16] * 3, KWARGS, training=False, limit=1e-6)(Engine(tiny()))


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit"):
        MemoryCheck([64] * 3, 1, 2, [16] * 3, limit=0)
