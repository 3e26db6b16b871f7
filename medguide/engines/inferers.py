"""Inferers medguide adds to MONAI's."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence

import torch
from monai.inferers import Inferer

__all__ = ["MirroredInferer"]


class MirroredInferer(Inferer):
    """Mirror test-time augmentation around another inferer, as nnU-Net does.

    The input is flipped along every combination of ``axes`` (8 passes for three axes), each result flipped
    back, and the logits averaged. A network may return a tensor or, as MONAI's inferers allow, a dict or tuple of
    tensors (e.g. :meth:`medguide.networks.MAMLNet.subset_logits`); each is mirrored and averaged alike.

    Args:
        inferer: the inferer to wrap, e.g. ``SlidingWindowInferer``.
        axes: spatial axes to mirror (0 is the first spatial axis); ``None`` or empty disables mirroring.
    """

    def __init__(self, inferer: Inferer, axes: Sequence[int] | None = (0, 1, 2)) -> None:
        super().__init__()
        self.inferer = inferer
        self.axes = tuple(axes or ())

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs):
        combos = [c for k in range(len(self.axes) + 1) for c in itertools.combinations(self.axes, k)]
        if len(combos) == 1:  # no mirroring: the wrapped inferer's output as it is, no copy
            return self.inferer(inputs, network, *args, **kwargs)
        total = None
        # the unflipped pass last: the sum starts from a flipped output, always a new tensor, so adding in place
        # never writes into what the network returned (which may be its input or a buffer it keeps)
        for combo in combos[1:] + combos[:1]:
            dims = [a + 2 for a in combo]
            flipped = torch.flip(inputs, dims) if dims else inputs
            out = self.inferer(flipped, network, *args, **kwargs)
            out = _each(out, functools.partial(torch.flip, dims=dims)) if dims else out
            # in place: one sum held beside each pass's output (a dict output holds one tensor per key)
            total = out if total is None else _each(total, torch.Tensor.add_, out)
        return _each(total, lambda t: t.div_(len(combos)))


def _each(out, fn: Callable, other=None):
    """``fn`` on a tensor, or on each tensor of a dict or tuple output (paired with ``other``'s where given)."""
    if isinstance(out, Mapping):
        return {k: _each(v, fn, None if other is None else other[k]) for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        return type(out)(_each(v, fn, None if other is None else o) for v, o in zip(out, other or [None] * len(out)))
    return fn(out) if other is None else fn(out, other)
