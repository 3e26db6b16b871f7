"""A network's size and cost, and the early-fusion width that matches MAML's parameters (fair baselines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from medguide.networks.baselines import ModalityUNet

__all__ = ["NetworkComplexity", "complexity", "equal_parameter_width", "parameter_count"]


class NetworkComplexity(NamedTuple):
    """Parameters and floating-point operations of one forward pass on one patch; made by :func:`complexity`."""

    parameters: int
    flops: int


def parameter_count(network: nn.Module) -> int:
    """Number of parameters of ``network``, trainable or not."""
    return sum(p.numel() for p in network.parameters())


def complexity(network: nn.Module, input_shape: Sequence[int], **forward_kwargs) -> NetworkComplexity:
    """Parameter count and FLOPs of an eval-mode forward pass on one patch, as in the comparison tables of MAML.

    FLOPs are counted by PyTorch's :class:`torch.utils.flop_counter.FlopCounterMode`, which counts convolutions
    and matrix products (a multiply-add is 2 FLOPs) and nothing else: normalisation, activations and the
    element-wise products of the fusion gates add little and are left out. The pass runs on zeros, with gradients
    off, on the network's device, in eval mode (what inference costs per sliding-window patch); the network's mode
    is restored afterwards.

    Example:
        ``complexity(MAMLNet(["t1", "t1ce", "t2", "flair"], 4), (4, 128, 128, 128))`` gives the official build's
        66.5 M parameters and its FLOPs per 128^3 patch.

    Args:
        network: any module whose forward takes ``[1, *input_shape]``.
        input_shape: ``(channels, *spatial)`` of one patch, without the batch dimension.
        forward_kwargs: passed to the forward, e.g. ``modalities=["flair"]``.

    Returns:
        ``NetworkComplexity(parameters, flops)``.
    """
    reference = next(network.parameters())
    x = torch.zeros(1, *input_shape, device=reference.device, dtype=reference.dtype)
    training = network.training
    counter = FlopCounterMode(display=False)
    try:
        network.eval()
        with torch.no_grad(), counter:
            network(x, **forward_kwargs)
    finally:
        network.train(training)
    return NetworkComplexity(parameter_count(network), counter.get_total_flops())


def equal_parameter_width(
    reference: nn.Module | int, modalities: Sequence[str], out_channels: int, **unet_kwargs
) -> int:
    """The ``base_width`` of an early-fusion :class:`ModalityUNet` whose parameter count is closest to ``reference``.

    The "equal parameters" baseline beside MAML (the other fair one is one branch's width, ``base_width`` = MAML's).
    A U-Net's parameter count grows with its base width, so the width is found by bisection over networks built on
    PyTorch's meta device (no memory, no initialisation cost); on a tie the smaller width is returned.

    The width cap ``max_width`` is kept as given. With nnU-Net's 320 the deep stages cannot grow, so the official
    4-modality MAMLNet (66.5 M parameters) is matched at ``base_width=172`` ([172, 320, 320, ...], most of the
    parameters at full resolution); ``max_width=4 * 320`` scales every stage instead and gives 27. Below the cap
    (the CPU-scale recipes) the parameters grow with the square of the width: ``base_width=8``, ``num_stages=4``,
    four modalities gives 16.

    Example:
        ``equal_parameter_width(maml, maml.modalities, 4, num_stages=4)`` for ``maml = MAMLNet(["t1", "t1ce",
        "t2", "flair"], 4, base_width=8, num_stages=4)`` returns 16.

    Args:
        reference: a network (e.g. :class:`medguide.networks.MAMLNet`) whose parameters are counted, or the count.
        modalities: the early-fusion network's input modalities.
        out_channels: number of classes.
        unet_kwargs: the other :class:`ModalityUNet` arguments (``spatial_dims``, ``num_stages``, ``max_width``),
            as the compared MAML network has them.

    Returns:
        the base width, at least 1.

    Raises:
        ValueError: ``reference`` has fewer than 1 parameter, or ``unet_kwargs`` holds ``base_width``.
    """
    target = parameter_count(reference) if isinstance(reference, nn.Module) else int(reference)
    if target < 1:
        raise ValueError(f"the reference must have at least one parameter, got {target}.")
    if "base_width" in unet_kwargs:
        raise ValueError("equal_parameter_width chooses base_width; do not pass it.")

    def count(width: int) -> int:
        with torch.device("meta"):
            return parameter_count(ModalityUNet(modalities, out_channels, base_width=width, **unet_kwargs))

    high = 1
    while count(high) < target:
        high *= 2
    low = high // 2  # count(low) < target <= count(high), or high == 1
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if count(middle) < target else (low, middle)
    if low < 1:
        return high
    return low if target - count(low) <= count(high) - target else high
