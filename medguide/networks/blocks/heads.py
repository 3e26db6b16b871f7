"""A classification head with one linear layer per task, its logits concatenated into one tensor."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

__all__ = ["MultiTaskHead"]


class MultiTaskHead(nn.Module):
    """Logits of several classification tasks from one feature vector, concatenated in task order.

    One ``Linear(in_features, classes)`` per task after a shared dropout. Derm7pt (Kawahara et al., IEEE JBHI 2019)
    has eight: ``{"diagnosis": 5, "pigment_network": 3, "blue_whitish_veil": 2, "vascular_structures": 3,
    "pigmentation": 3, "streaks": 3, "dots_and_globules": 3, "regression_structures": 2}``; a single-task problem
    is one entry (``{"class": 3}`` for the brain tumour types).

    Forward contract, the same in training and eval mode: one tensor ``[B, num_outputs]`` of logits, the tasks'
    columns side by side in the order of ``tasks``. A single tensor is what MONAI's engines, inferers,
    ``verify_net_in_out`` and ``ckpt_export`` pass around; the loss, the metrics and the probability CSV take it
    apart with :meth:`split` (logits per task) or :meth:`probabilities` (softmax per task).

    Args:
        in_features: width of the input feature vector.
        tasks: task name -> number of classes (at least 2 each), in output order. The task's layer is
            ``layers.<i>`` in that order (not named by the task: a name such as ``class`` cannot be a TorchScript
            attribute).
        dropout: dropout on the input feature vector in training mode.

    Example:
        >>> head = MultiTaskHead(16, {"diagnosis": 5, "streaks": 3})
        >>> logits = head(torch.randn(2, 16))
        >>> logits.shape, {task: t.shape[1] for task, t in head.split(logits).items()}
        (torch.Size([2, 8]), {'diagnosis': 5, 'streaks': 3})
    """

    def __init__(self, in_features: int, tasks: Mapping[str, int], dropout: float = 0.0) -> None:
        super().__init__()
        if in_features < 1:
            raise ValueError(f"MultiTaskHead: in_features must be positive, got {in_features}.")
        if not tasks:
            raise ValueError("MultiTaskHead needs at least one task (name -> number of classes), got none.")
        for name, classes in tasks.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"MultiTaskHead: task name {name!r} must be a non-empty string.")
            if int(classes) != classes or classes < 2:
                raise ValueError(f"MultiTaskHead: task {name!r} needs at least 2 classes, got {classes!r}.")
        self.in_features = in_features
        self.dropout = nn.Dropout(dropout)
        self.names = tuple(tasks)
        self.layers = nn.ModuleList(nn.Linear(in_features, int(classes)) for classes in tasks.values())

    @property
    def tasks(self) -> dict[str, int]:
        """Task name -> number of classes, in output order."""
        return {name: layer.out_features for name, layer in zip(self.names, self.layers)}

    @property
    def num_outputs(self) -> int:
        """Width of the concatenated logits (the sum of the tasks' classes)."""
        return sum(self.tasks.values())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated logits.

        Args:
            x: ``[B, in_features]``.

        Returns:
            ``[B, num_outputs]``: each task's logits in the order of ``tasks``, in training and eval mode alike.

        Raises:
            ValueError: if ``x`` is not ``[B, in_features]``.
        """
        # a traced graph holds the traced input's shapes anyway; checking them there only warns
        if not torch.jit.is_tracing() and (x.ndim != 2 or x.shape[1] != self.in_features):
            raise ValueError(f"MultiTaskHead expects features [B, {self.in_features}], got {tuple(x.shape)}.")
        x = self.dropout(x)
        return torch.cat([layer(x) for layer in self.layers], dim=1)

    def split(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Task name -> that task's columns ``[B, classes]`` of :meth:`forward`'s output (or of its probabilities).

        Raises:
            ValueError: if the last axis of ``logits`` is not ``num_outputs`` wide.
        """
        if logits.shape[-1] != self.num_outputs:
            raise ValueError(
                f"MultiTaskHead.split expects {self.num_outputs} columns ({self.tasks}), got shape "
                f"{tuple(logits.shape)}."
            )
        return dict(zip(self.tasks, torch.split(logits, list(self.tasks.values()), dim=-1)))

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Softmax within each task, concatenated as :meth:`forward`'s logits (each task's columns sum to 1)."""
        return torch.cat([torch.softmax(part, dim=-1) for part in self.split(logits).values()], dim=-1)
