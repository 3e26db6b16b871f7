"""OCT-CoDA engine parts on a tiny synthetic MultiEYE set: the teacher trains with a plain Trainer into its checkpoint,
the student distils from it frozen, the gate switches distillation off and on, and the student is validated and
selected from fundus images alone."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines.utils import IterationEvents
from monai.handlers import CheckpointSaver, IgniteMetricHandler, StatsHandler, from_engine
from monai.transforms import Compose

from medguide.data import RandLabelPairedOCTd, make_multieye_dataset, multieye_datalist
from medguide.engines import (
    DISTILLATION_TERMS,
    Evaluator,
    OCTCoDAIteration,
    PartsLoader,
    Trainer,
    distillation_terms,
    engine_precision,
)
from medguide.engines import precision as precision_module
from medguide.engines import workflows as workflows_module
from medguide.losses import OCTCoDALoss
from medguide.losses import concepts as concepts_module
from medguide.metrics import TaskMetric
from medguide.networks import ConceptClassifier
from medguide.transforms import LoadPhotod
from tests.networks.helpers import tiny_densenet

CLASSES = 9
LOAD_FUNDUS = LoadPhotod(keys="image", expect="rgb")
LOAD_OCT = LoadPhotod(keys="image", mode="L", expect="grey")


def concept_classifier(in_channels: int, seed: int) -> ConceptClassifier:
    encoder = tiny_densenet(spatial_dims=2, in_channels=in_channels, latent=8, seed=seed)
    concepts = torch.randn(12, 6, generator=torch.Generator().manual_seed(0))
    return ConceptClassifier(encoder.module, encoder.latent_features, concepts, CLASSES)


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 27 images of a modality: 3 per class, one in each list, so every fundus training class has its OCT images
    return make_multieye_dataset(tmp_path_factory.mktemp("multieye"), num_cases=27, image_size=32, seed=0)


@pytest.fixture(scope="module")
def teacher_pt(data, tmp_path_factory) -> Path:
    """The teacher as its stage runs: a plain Trainer, MONAI's default prepare_batch, cross entropy, on OCT."""
    teacher = concept_classifier(in_channels=1, seed=0)
    untrained = state(teacher)
    loader = DataLoader(Dataset(multieye_datalist(data, "oct", "train"), LOAD_OCT), batch_size=4)
    ckpt_dir = tmp_path_factory.mktemp("teacher")
    Trainer(
        "cpu",
        max_epochs=2,
        train_data_loader=loader,
        network=teacher,
        optimizer=torch.optim.Adam(teacher.parameters(), 1e-2),
        loss_function=torch.nn.CrossEntropyLoss(),
        train_handlers=[CheckpointSaver(str(ckpt_dir), {"model": teacher}, save_final=True, final_filename="model.pt")],
    ).run()
    assert not same(untrained, state(teacher))
    return ckpt_dir / "model.pt"


@pytest.fixture(scope="module")
def paired_loader(data) -> DataLoader:
    """Fundus training images, each with a loaded OCT training image of its label under ``oct``."""
    fundus = multieye_datalist(data, "fundus", "train")
    pool = Dataset(multieye_datalist(data, "oct", "train"), LOAD_OCT)
    pairing = RandLabelPairedOCTd(pool, labels=[item["label"] for item in fundus]).set_random_state(seed=0)
    return DataLoader(Dataset(fundus, Compose([LOAD_FUNDUS, pairing])), batch_size=4)


def distil(loader, teacher_pt, loss=None, precision="float32", handlers=(), **kwargs) -> dict:
    """Two iterations of the student's stage, the teacher's checkpoint loaded by the first handler."""
    teacher, student = concept_classifier(in_channels=1, seed=1), concept_classifier(in_channels=3, seed=2)
    untrained = state(student)
    trainer = Trainer(
        "cpu",
        max_epochs=1,
        epoch_length=2,
        train_data_loader=loader,
        network=student,
        optimizer=torch.optim.Adam(student.parameters(), 1e-2),
        loss_function=loss or OCTCoDALoss(),
        iteration_update=OCTCoDAIteration(teacher),
        train_handlers=[PartsLoader(teacher, {"": teacher_pt}), *handlers],
        precision=precision,
        **kwargs,
    )
    outputs, losses = [], []
    trainer.add_event_handler(IterationEvents.LOSS_COMPLETED, lambda engine: losses.append(engine.state.output["loss"]))
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda engine: outputs.append(engine.state.output))
    trainer.run()
    return {
        "trainer": trainer,
        "teacher": teacher,
        "student": student,
        "untrained": untrained,
        "outputs": outputs,
        "losses": losses,
    }


def test_the_teacher_trains_into_its_checkpoint(teacher_pt):
    saved = torch.load(teacher_pt, map_location="cpu", weights_only=True)
    assert {key.split(".")[0] for key in saved} == {"encoder", "head"}
    assert saved["head.classifier.weight"].shape == (CLASSES, 12)


def test_the_student_distils_from_the_loaded_teacher_kept_frozen(paired_loader, teacher_pt):
    run = distil(paired_loader, teacher_pt)
    teacher, trainer = run["teacher"], run["trainer"]
    assert trainer.state.iteration == 2
    # the checkpoint's parameters and batch-norm statistics, unchanged by two training iterations, and no gradient
    saved = torch.load(teacher_pt, map_location="cpu", weights_only=True)
    assert any("running_mean" in key for key in saved)
    assert same(state(teacher), saved)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not same(run["untrained"], state(run["student"]))
    assert all(p.grad is not None for p in run["student"].parameters())


@pytest.mark.parametrize("gate", [False, True])
def test_the_gate_switches_distillation(paired_loader, teacher_pt, monkeypatch, gate):
    monkeypatch.setattr(concepts_module, "switokd_gate", lambda *args, **kwargs: torch.tensor(gate))
    run = distil(paired_loader, teacher_pt)
    for output in run["outputs"]:
        terms = distillation_terms(output)  # MONAI's decollated output: one dict per case
        assert set(terms) == set(DISTILLATION_TERMS) and all(math.isfinite(v) for v in terms.values())
        assert terms["gate"] == float(gate) and terms["local"] > 0
        if gate:
            expected = terms["ce"] + 0.6 * terms["local"] + 0.05 * terms["global"]
            assert terms["loss"] == pytest.approx(expected, rel=1e-6)
        else:
            assert terms["loss"] == terms["ce"]
        assert output[0]["pred"].shape == (CLASSES,)
    # the second similarity level feeds the distillation terms alone: it learns only through an open gate
    assert bool(run["student"].head.second_projection.weight.grad.abs().sum() > 0) == gate


def test_the_terms_are_logged_by_a_stats_handler(paired_loader, teacher_pt):
    logged: list[str] = []
    collect = logging.Handler()
    collect.emit = lambda record: logged.append(record.getMessage())
    logger = logging.getLogger("octcoda_test")
    logger.addHandler(collect)
    try:
        handler = StatsHandler(name="octcoda_test", output_transform=distillation_terms, epoch_log=False)
        distil(paired_loader, teacher_pt, handlers=[handler])
    finally:
        logger.removeHandler(collect)
    assert len(logged) == 2 and all(f"{name}: " in line for line in logged for name in DISTILLATION_TERMS), logged


def test_the_student_is_validated_and_selected_from_fundus_alone(data, paired_loader, teacher_pt, tmp_path):
    student = distil(paired_loader, teacher_pt)["student"]
    dev = DataLoader(Dataset(multieye_datalist(data, "fundus", "dev"), LOAD_FUNDUS), batch_size=4)
    assert "oct" not in next(iter(dev))
    f1 = IgniteMetricHandler(
        TaskMetric({"class": CLASSES}, metric="f1"), output_transform=from_engine(["pred", "label"])
    )
    evaluator = Evaluator(
        "cpu",
        val_data_loader=dev,
        network=student,
        key_val_metric={"val_f1": f1},
        val_handlers=[
            CheckpointSaver(str(tmp_path), {"model": student}, save_key_metric=True, key_metric_filename="model.pt")
        ],
    )
    evaluator.run()
    assert 0.0 <= evaluator.state.metrics["val_f1"] <= 1.0
    assert evaluator.state.output[0]["pred"].shape == (CLASSES,)
    assert same(torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True), state(student))


def test_bfloat16_runs_on_the_cpu(paired_loader, teacher_pt, monkeypatch):
    monkeypatch.setattr(precision_module, "_cpu_bfloat16", lambda: "amx")
    run = distil(paired_loader, teacher_pt, OCTCoDALoss(gate=False), precision="bfloat16")
    for output in run["outputs"]:
        assert output[0]["pred"].dtype == torch.bfloat16  # the forwards autocast
    assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in run["losses"])
    assert same(state(run["teacher"]), torch.load(teacher_pt, map_location="cpu", weights_only=True))


def test_cuda_float16_goes_through_the_grad_scaler(paired_loader, teacher_pt, monkeypatch):
    """MONAI's CUDA AMP branch (float16 with loss scaling), run on the CPU: ``amp`` set as float16 on CUDA sets it and
    a GradScaler stand-in recording what goes through it (the autocast itself is CUDA's, a no-op here)."""
    monkeypatch.setattr(workflows_module, "engine_precision", lambda *args: engine_precision("auto", "cuda"))
    calls = []

    class Scaler:
        def scale(self, loss):
            calls.append(("scale", loss.dtype))
            return loss * 1024.0

        def step(self, optimizer):
            calls.append("step")
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad /= 1024.0
            optimizer.step()

        def update(self):
            calls.append("update")

    def use_scaler(engine):
        engine.scaler = Scaler()

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "User provided device_type of 'cuda'")
        warnings.filterwarnings("ignore", ".*CUDA is not available")
        run = distil(paired_loader, teacher_pt, handlers=[_OnStart(use_scaler)])
    assert run["trainer"].amp and calls == [("scale", torch.float32), "step", "update"] * 2
    assert same(state(run["teacher"]), torch.load(teacher_pt, map_location="cpu", weights_only=True))
    assert not same(run["untrained"], state(run["student"]))


class _OnStart:
    """A handler running ``fn(engine)`` when the engine starts (after MONAI's ``run`` made its GradScaler)."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.fn)


def test_what_the_iteration_refuses(data, paired_loader, teacher_pt):
    fundus_only = DataLoader(Dataset(multieye_datalist(data, "fundus", "train"), LOAD_FUNDUS), batch_size=4)
    with pytest.raises(ValueError, match="no teacher image 'oct'.*RandLabelPairedOCTd"):
        distil(fundus_only, teacher_pt)
    with pytest.raises(TypeError, match="OCTCoDALoss"):
        distil(paired_loader, teacher_pt, torch.nn.CrossEntropyLoss())
    with pytest.raises(ValueError, match="accumulation_steps"):
        distil(paired_loader, teacher_pt, accumulation_steps=2)
