"""Batch preparation shared by medguide's trainers and evaluators: a batch of tasks (:class:`TaskBatch`) and
random augmentation of the prepared batch on the training device (:class:`AugmentedBatch`).

A MONAI engine calls its ``prepare_batch`` with the collated batch, the device and ``non_blocking``; it returns
``(input, target)`` or ``(input, target, args, kwargs)`` for ``inferer(input, network, *args, **kwargs)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from monai.engines.utils import PrepareBatch, PrepareBatchDefault

__all__ = ["AugmentedBatch", "TaskBatch"]


def _to(value, device, non_blocking: bool = False, **kwargs):
    return value.to(device=device, non_blocking=non_blocking, **kwargs) if isinstance(value, torch.Tensor) else value


class TaskBatch(PrepareBatch):
    """``prepare_batch`` of a DMG classifier: the network's input, its keyword inputs, and targets ``[B, T]``.

    Returns ``(batch[image_key], targets, (), {argument: batch[key]})``, so MONAI's engines call
    ``inferer(x, network, **kwargs)``: ``{"mask": "bag_mask"}`` hands a :class:`medguide.networks.LatentClassifier`
    on bags the padding mask of :class:`BagCollate`; ``{"superior": "bag", "superior_mask": "bag_mask"}`` feeds a
    :class:`medguide.networks.FusionClassifier` both modalities. A keyword whose key the batch lacks is left out
    (a batch of one bag ``[1, N, D]`` needs no mask).

    Targets are class indices ``[B, T]`` (int64) from a label that is an integer per case (collated ``[B]``, one
    task) or ``{task: integer}`` (collated ``{task: [B]}``, Derm7pt's eight tasks), columns in the order of
    ``tasks``; a batch without a label gives ``None``.

    Example::

        TaskBatch(image_key="bag", kwargs_keys={"mask": "bag_mask"})            # C_S on padded bags, one task
        TaskBatch(image_key="clinic", tasks=["diagnosis", "streaks", ...])      # C_I on photos, eight tasks

    Args:
        image_key: key of the network's input.
        label_key: key of the label.
        tasks: the task names of a ``{task: class}`` label, in the order of the logits (a ``{task: classes}``
            mapping gives its keys); ``None`` for an integer label.
        kwargs_keys: {network keyword: batch key} of further network inputs.

    Raises:
        ValueError: (when called) a ``{task: class}`` label without ``tasks``, or lacking one of them.
    """

    def __init__(
        self,
        image_key: str = "image",
        label_key: str = "label",
        tasks: Sequence[str] | Mapping[str, int] | None = None,
        kwargs_keys: Mapping[str, str] | None = None,
    ) -> None:
        self.image_key, self.label_key = image_key, label_key
        self.tasks = None if tasks is None else list(tasks)
        self.kwargs_keys = dict(kwargs_keys or {})

    def inputs(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs) -> tuple:
        """The network's input and keyword inputs on ``device``, without the label (for inference)."""
        x = _to(batchdata[self.image_key], device, non_blocking, **kwargs)
        extra = {
            name: _to(batchdata[key], device, non_blocking, **kwargs)
            for name, key in self.kwargs_keys.items()
            if key in batchdata
        }
        return x, extra

    def targets(self, batchdata: Mapping) -> torch.Tensor | None:
        """The label as class indices ``[B, T]`` (int64, on the CPU), or ``None`` when the batch has none."""
        label = batchdata.get(self.label_key)
        if label is None:
            return None
        if isinstance(label, Mapping):
            if self.tasks is None:
                raise ValueError(
                    f"the label '{self.label_key}' holds tasks {sorted(label)}: give TaskBatch the tasks in the order "
                    "of the logits."
                )
            missing = [task for task in self.tasks if task not in label]
            if missing:
                raise ValueError(f"the label '{self.label_key}' lacks the tasks {missing} (it has {sorted(label)}).")
            return torch.stack([torch.as_tensor(label[task]).reshape(-1) for task in self.tasks], dim=1).long()
        label = torch.as_tensor(label)
        return (label.reshape(-1, 1) if label.ndim <= 1 else label).long()

    def __call__(self, batchdata: Mapping, device=None, non_blocking: bool = False, **kwargs):
        x, extra = self.inputs(batchdata, device, non_blocking, **kwargs)
        return x, _to(self.targets(batchdata), device, non_blocking, **kwargs), (), extra


class AugmentedBatch(PrepareBatch):
    """A trainer's ``prepare_batch`` that augments the prepared input on the device, batch-wise.

    Calls ``prepare_batch`` (MONAI's default, ``(batch["image"], batch["label"])``, unless given), then replaces the
    network input it returned (the first element) by ``augment(input)``; targets, ``args`` and ``kwargs`` pass
    unchanged. For augmentation that keeps labels (class labels, not segmentations): with
    :class:`medguide.transforms.RandBatchAugment` the data set caches its preprocessed images and does no random
    work per image, so the loader stays light however small the network. Give it to trainers only: an evaluator
    must see the images as they are.

    Attributes of the wrapped ``prepare_batch`` are read through (``AugmentedBatch(TaskBatch("oct")).image_key`` is
    ``"oct"``), so code that asks a ``TaskBatch`` for its keys takes either.

    Example::

        "augmentation": {"_target_": "medguide.transforms.RandBatchAugment", "flip_prob": 0.5, ...},
        "trainer": {"_target_": "medguide.engines.Trainer", ...,
                    "prepare_batch": {"_target_": "medguide.engines.AugmentedBatch", "augment": "@augmentation"}}

    Args:
        augment: called with the prepared input tensor (on the engine's device); returns the augmented one.
        prepare_batch: the batch preparation it wraps (default ``monai.engines.PrepareBatchDefault()``).
    """

    def __init__(self, augment: Callable[[torch.Tensor], torch.Tensor], prepare_batch: PrepareBatch | None = None):
        self.augment = augment
        self.prepare_batch = PrepareBatchDefault() if prepare_batch is None else prepare_batch

    def __getattr__(self, name: str):
        if name in ("augment", "prepare_batch"):  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.prepare_batch, name)

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs):
        prepared = self.prepare_batch(batchdata, device, non_blocking, **kwargs)
        return (self.augment(prepared[0]), *prepared[1:])
