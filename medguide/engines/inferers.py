"""Inferers medguide adds to MONAI's."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import torch
from monai.inferers import Inferer

__all__ = ["MirroredInferer"]


class MirroredInferer(Inferer):
    """Mirror test-time augmentation around another inferer, as nnU-Net does.

    The input is flipped along every combination of ``axes`` (8 passes for three axes), each result flipped
    back, and the logits averaged.

    Args:
        inferer: the inferer to wrap, e.g. ``SlidingWindowInferer``.
        axes: spatial axes to mirror (0 is the first spatial axis); ``None`` or empty disables mirroring.
    """

    def __init__(self, inferer: Inferer, axes: Sequence[int] | None = (0, 1, 2)) -> None:
        super().__init__()
        self.inferer = inferer
        self.axes = tuple(axes or ())

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        combos = [c for k in range(len(self.axes) + 1) for c in itertools.combinations(self.axes, k)]
        total = None
        for combo in combos:
            dims = [a + 2 for a in combo]
            flipped = torch.flip(inputs, dims) if dims else inputs
            out = self.inferer(flipped, network, *args, **kwargs)
            out = torch.flip(out, dims) if dims else out
            total = out if total is None else total + out
        return total / len(combos)
