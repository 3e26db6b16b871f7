"""Batches that name their modalities, modality dropout, precision, gradient clipping and mirroring."""

from __future__ import annotations

import warnings

import pytest
import torch
from monai.data import DataLoader
from monai.engines.utils import IterationEvents
from monai.inferers import SimpleInferer

from medguide.engines import MirroredInferer, ModalityBatch, Trainer, batch_modalities, resolve_precision
from medguide.engines.precision import _cpu_has_fast_bfloat16
from medguide.losses import MAMLLoss
from medguide.networks import MAMLNet

MODALITIES = ["t1", "t1ce", "t2", "flair"]


def batch(n: int = 2) -> dict:
    items = [
        {
            "image": torch.randn(4, 16, 16, 16),
            "label": torch.randint(0, 4, (1, 16, 16, 16)).float(),
            "modalities": MODALITIES,
        }
        for _ in range(n)
    ]
    return next(iter(DataLoader(items, batch_size=n)))


def test_collated_modalities_read_back():
    assert batch_modalities(batch()["modalities"]) == MODALITIES
    assert batch_modalities(["t1", "t2"]) == ["t1", "t2"]
    with pytest.raises(ValueError, match="different modalities"):
        batch_modalities([("t1", "t2")])


def test_modality_batch_passes_names_and_selects_channels():
    data = batch()
    image, label, args, kwargs = ModalityBatch(modalities=["flair", "t1ce"])(data)
    assert kwargs == {"modalities": ["flair", "t1ce"]} and args == ()
    torch.testing.assert_close(image, data["image"][:, [3, 1]])
    assert label.shape == (2, 1, 16, 16, 16)
    with pytest.raises(ValueError, match="asked for"):
        ModalityBatch(modalities=["dwi"])(data)


def test_modality_dropout_trains_every_subset_and_no_dropout_keeps_all():
    data = batch(1)
    seen = {tuple(ModalityBatch(modality_dropout=1.0, seed=s)(data)[3]["modalities"]) for s in range(300)}
    assert len(seen) == 15
    assert all(ModalityBatch()(data)[3]["modalities"] == MODALITIES for _ in range(5))
    with pytest.raises(ValueError):
        ModalityBatch(modality_dropout=1.5)


def test_precision_resolution():
    assert resolve_precision("float32", "cpu") is None
    with pytest.warns(UserWarning, match="float32"):
        assert resolve_precision("float16", "cpu") is None
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", "cpu")
    if _cpu_has_fast_bfloat16():
        assert resolve_precision("bfloat16", "cpu") is torch.bfloat16
        assert resolve_precision("auto", "cpu") is torch.bfloat16
    else:
        with pytest.warns(UserWarning):
            assert resolve_precision("bfloat16", "cpu") is None


def run_trainer(precision: str, grad_clip: float | None) -> tuple[Trainer, list]:
    torch.manual_seed(0)
    net = MAMLNet(MODALITIES, 4, base_width=4, num_stages=3)
    data = [batch(1) for _ in range(2)]
    norms = []
    trainer = Trainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1e-2),
        loss_function=MAMLLoss(),
        inferer=SimpleInferer(),
        prepare_batch=ModalityBatch(),
        precision=precision,
        grad_clip=grad_clip,
        decollate=False,
    )

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def record(engine):
        norms.append(torch.norm(torch.stack([p.grad.norm() for p in net.parameters() if p.grad is not None])).item())

    trainer.run()
    return trainer, norms


def test_gradient_clipping_bounds_the_update():
    _, unclipped = run_trainer("float32", None)
    trainer, clipped = run_trainer("float32", 1e-3)
    assert max(unclipped) > 1e-3
    # handlers run in registration order: the clip is registered first, so the recorded norms are clipped
    assert max(clipped) <= 1e-3 * 1.001
    assert trainer.state.output["loss"].dtype == torch.float32


@pytest.mark.skipif(not _cpu_has_fast_bfloat16(), reason="this CPU has no native bfloat16")
def test_bfloat16_training_runs_the_forward_in_bfloat16():
    trainer, _ = run_trainer("bfloat16", 12.0)
    assert trainer.cpu_dtype is torch.bfloat16
    assert trainer.state.output["pred"]["fused"].dtype == torch.bfloat16
    assert torch.isfinite(trainer.state.output["loss"])


def test_mirroring_averages_flipped_predictions():
    def network(x):  # not flip-invariant: depends on position along the first spatial axis
        return x * torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1)

    x = torch.randn(1, 1, 4, 3, 2)
    mirrored = MirroredInferer(SimpleInferer(), axes=[0])(x, network)
    expected = (network(x) + torch.flip(network(torch.flip(x, [2])), [2])) / 2
    torch.testing.assert_close(mirrored, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(MirroredInferer(SimpleInferer(), axes=[])(x, network), network(x))
