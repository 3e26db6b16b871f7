"""Engine parts of OCT-CoDA: the student's distillation iteration, which runs the frozen OCT teacher beside it.

Wang et al., "MultiEYE: Dataset and Benchmark for OCT-Enhanced Retinal Disease Recognition from Fundus Images",
IEEE TMI 2025, https://arxiv.org/abs/2412.09402 (code: https://github.com/xmed-lab/MultiEYE;
``../shared/METHODS.md`` section 3). Teacher and student are both :class:`medguide.networks.ConceptClassifier`; each
stage is a :class:`medguide.engines.Trainer` with its own section in ``train.json`` and its own run id, and this
module holds only what a config cannot say: the student's iteration.

**Teacher** (OCT B-scans, cross entropy): nothing new. A MultiEYE item is ``{"image": ..., "label": int}``; the
collated label is an int64 ``[B]`` tensor, which MONAI's default ``prepare_batch`` hands to
``torch.nn.CrossEntropyLoss`` as it is (no :class:`medguide.engines.TaskBatch` needed)::

    "teacher": {
        "encoder": "$medguide.networks.image_encoder('resnet50', 2, 1)",
        "network": "$medguide.networks.ConceptClassifier(@teacher#encoder.module, 2048, @concepts, 9).to(@device)",
        "transforms": [{"_target_": "medguide.transforms.LoadPhotod", "keys": "image", "mode": "L", "expect": "grey"},
                       ...],
        "trainer": {"_target_": "medguide.engines.Trainer", "device": "@device", "precision": "@precision",
                    "max_epochs": 100, "train_data_loader": "@teacher#dataloader", "network": "@teacher#network",
                    "optimizer": "@teacher#optimizer", "loss_function": "$torch.nn.CrossEntropyLoss()",
                    "train_handlers": "@teacher#handlers"}},
    "train_teacher": ["$@teacher#trainer.run()"]

with ``CheckpointSaver`` writing ``models/teacher/model.pt`` (the best epoch by the teacher's own validation macro-F1,
declared as below).

**Student** (fundus photographs, distilled): :class:`OCTCoDAIteration` is the trainer's ``iteration_update``; the
training transforms pair each fundus item with an OCT image of its label
(:class:`medguide.data.RandLabelPairedOCTd`, then ``LoadPhotod(keys="oct", mode="L", expect="grey")`` unless the
pool is a data set of loaded images); the loss is :class:`medguide.losses.OCTCoDALoss`; the teacher's checkpoint is
loaded when the trainer starts by :class:`medguide.engines.PartsLoader`, its first handler::

    "train": {
        "teacher": "$medguide.networks.ConceptClassifier(..., 9).to(@device)",   # built as @teacher#network
        "trainer": {"_target_": "medguide.engines.Trainer", "device": "@device", "precision": "@precision",
                    "max_epochs": 100, "train_data_loader": "@train#dataloader", "network": "@network",
                    "optimizer": "@optimizer",
                    "loss_function": {"_target_": "medguide.losses.OCTCoDALoss", "alpha": 0.6, "beta": 0.05},
                    "iteration_update": {"_target_": "medguide.engines.OCTCoDAIteration",
                                         "teacher": "@train#teacher"},
                    "train_handlers": "@train#handlers"},
        "handlers": [{"_target_": "medguide.engines.PartsLoader", "network": "@train#teacher",
                      "parts": {"": "$@teacher#ckpt_dir + '/model.pt'"}, "map_location": "@device"},
                     ...,   # MemoryCheck, EpochProgress (the epoch mean of loss), ValidationHandler
                     {"_target_": "StatsHandler", "iteration_log": "$lambda engine, i: i % 50 == 0",
                      "epoch_log": false, "output_transform": "$medguide.engines.distillation_terms"}]},
    "train_student": ["$@train#trainer.run()"],
    "run": ["$@teacher#trainer.run()", "$@train#trainer.run()"]

**Selection** by validation macro-F1 (MultiEYE keeps the epoch with the best dev macro-F1): the validation evaluator
is a plain :class:`medguide.engines.Evaluator` on fundus images alone (the student's ``forward`` needs no OCT), its
key metric :class:`medguide.metrics.TaskMetric` with ``metric="f1"`` through MONAI's ``IgniteMetricHandler``, and
``CheckpointSaver(save_key_metric=True, key_metric_filename="model.pt")`` keeps that epoch::

    "key_metric": {"val_f1": {"_target_": "IgniteMetricHandler",
                              "metric_fn": {"_target_": "medguide.metrics.TaskMetric", "tasks": {"class": 9},
                                            "metric": "f1"},
                              "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
                              "save_details": false}}
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.utils import CommonKeys as Keys
from torch import nn

from medguide.engines.batches import AugmentedBatch, TaskBatch
from medguide.engines.iterations import TrainingIteration
from medguide.networks.blocks.concept_head import ConceptOutputs
from medguide.networks.blocks.frozen import Frozen

__all__ = ["DISTILLATION_TERMS", "OCTCoDAIteration", "distillation_terms"]

DISTILLATION_TERMS = ("loss", "ce", "local", "global", "gate")
"""The scalars :class:`OCTCoDAIteration` puts in ``engine.state.output`` (those of ``OCTCoDALoss.terms``)."""


def distillation_terms(output: Mapping | Sequence[Mapping]) -> dict[str, float]:
    """The loss terms of one distillation iteration as ``{name: float}``, from MONAI's decollated output (a list of
    per-case dicts, each holding the batch's scalars) or a batched dict alike: the ``output_transform`` of a
    ``StatsHandler`` that logs them all (it logs a dict's entries by name)."""
    first = output if isinstance(output, Mapping) else output[0]
    return {name: float(first[name]) for name in DISTILLATION_TERMS}


def _float(outputs: ConceptOutputs) -> ConceptOutputs:
    # the CPU autocast wraps only the forward, so the loss would otherwise run in bfloat16 there (CUDA's autocast
    # computes cross entropy in float32 itself)
    return ConceptOutputs(*(value.float() for value in outputs))


class OCTCoDAIteration(TrainingIteration):
    """One OCT-CoDA distillation step, as a MONAI trainer's ``iteration_update``: the student on the fundus image,
    the frozen teacher on its label-paired OCT image, :meth:`medguide.losses.OCTCoDALoss.terms`, one backward.

    A :class:`medguide.engines.iterations.TrainingIteration` (``SupervisedTrainer._iteration`` step for step, with
    this forward and loss): the batch comes through the trainer's
    ``prepare_batch`` (the fundus image and its label) and through ``teacher_batch`` (the OCT image under ``oct``
    and its label under ``oct_label``, as :class:`medguide.data.RandLabelPairedOCTd` adds them); both networks run
    through the trainer's ``inferer`` with ``with_concepts=True`` (so medguide's CPU autocast applies to both), under
    MONAI's CUDA autocast and GradScaler when the trainer's ``precision`` sets ``amp`` (the GradScaler scales only for
    float16: :class:`medguide.engines.Trainer` disables it for bfloat16); the events MONAI's iteration fires are
    fired here too, so gradient clipping, decollation and post-processing work as in any medguide trainer. The
    trainer's ``loss_function`` must be an :class:`medguide.losses.OCTCoDALoss` (its ``terms`` are called).

    ``engine.state.output`` holds ``image``, ``label``, ``pred`` (the student's logits, so training metrics work)
    and the scalars of :data:`DISTILLATION_TERMS`: ``loss`` (the one backpropagated), ``ce``, ``local``, ``global``
    and ``gate`` (1. where the SwitOKD gate let the batch distil, else 0. and ``loss == ce``), the last four
    detached; :func:`distillation_terms` gives them to a ``StatsHandler``.

    The teacher is wrapped in :class:`medguide.networks.blocks.Frozen` (unless it already is): no gradient reaches it
    and it stays in eval mode, so its parameters and batch-norm statistics are those of its checkpoint. It is not
    the trainer's network, so no optimizer or ``CheckpointSaver`` sees it. Its checkpoint is loaded by a handler
    (:class:`medguide.engines.PartsLoader` with ``{"": path}``, the trainer's first), into the module given here or
    its ``Frozen`` wrapper alike; it must already be on the trainer's device.

    Example::

        trainer = Trainer("cpu", max_epochs=1, train_data_loader=loader, network=student, optimizer=optimizer,
                          loss_function=OCTCoDALoss(), iteration_update=OCTCoDAIteration(teacher),
                          train_handlers=[PartsLoader(teacher, {"": "models/teacher/model.pt"})])

    Args:
        teacher: the trained OCT :class:`medguide.networks.ConceptClassifier` (wrapped in ``Frozen`` here, in place).
        teacher_batch: takes the teacher's input, keywords and targets from the batch (default
            ``TaskBatch(image_key="oct", label_key="oct_label")``; an :class:`medguide.engines.AugmentedBatch` around
            one augments the OCT images on the device, as the bundle does); without its label the student's is used.

    Raises:
        ValueError: (per iteration) a batch without the teacher's image; ``accumulation_steps`` above 1 (the
            contrastive and prototype terms are over the batch, so accumulated small batches are another loss).
        TypeError: (per iteration) a ``loss_function`` without ``terms``.
    """

    def __init__(self, teacher: nn.Module, teacher_batch: TaskBatch | AugmentedBatch | None = None) -> None:
        self.teacher = teacher if isinstance(teacher, Frozen) else Frozen(teacher)
        self.teacher_batch = TaskBatch("oct", "oct_label") if teacher_batch is None else teacher_batch

    def check(self, engine: Any, batchdata: Mapping) -> None:
        if not hasattr(engine.loss_function, "terms"):
            raise TypeError(
                f"OCTCoDAIteration needs the trainer's loss_function to be medguide.losses.OCTCoDALoss (it calls its "
                f"terms()), got {type(engine.loss_function).__name__}."
            )
        key = self.teacher_batch.image_key
        if not isinstance(batchdata, Mapping) or key not in batchdata:
            raise ValueError(
                f"the training batch has no teacher image '{key}': put medguide.data.RandLabelPairedOCTd (and the "
                f"loading of '{key}') in the student's training transforms."
            )

    def forward(self, engine: Any, batchdata: Mapping) -> tuple:
        where = (engine.state.device, engine.non_blocking)
        batch = engine.prepare_batch(batchdata, *where, **engine.to_kwargs)
        inputs, targets, args, kwargs = batch if len(batch) == 4 else (*batch, (), {})
        oct_image, oct_targets, _, oct_kwargs = self.teacher_batch(batchdata, *where, **engine.to_kwargs)
        student = engine.inferer(inputs, engine.network, *args, with_concepts=True, **kwargs)
        teacher = engine.inferer(oct_image, self.teacher, with_concepts=True, **oct_kwargs)
        engine.state.output.update({Keys.IMAGE: inputs, Keys.LABEL: targets, Keys.PRED: student.logits})
        return _float(student), _float(teacher), targets, oct_targets

    def loss(self, engine: Any, forwarded: tuple) -> dict[str, torch.Tensor]:
        student, teacher, targets, oct_targets = forwarded
        return engine.loss_function.terms(
            student.logits, student.levels, teacher.logits, teacher.levels, targets, oct_targets
        )
