"""nnU-Net's encoder, its feature widths and the input sizes it takes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock
from torch import nn

from medguide.networks.blocks.norms import instance_norm_factory_name

__all__ = ["UNetEncoder", "UNetSizeRule", "unet_size_rule", "unet_widths"]


def unet_widths(base: int, num_stages: int, cap: int = 320) -> list[int]:
    """nnU-Net's feature widths: ``base`` doubled at every stage, never above ``cap``.

    Example:
        >>> unet_widths(16, 6)
        [16, 32, 64, 128, 256, 320]
    """
    return [min(base * 2**s, cap) for s in range(num_stages)]


class UNetSizeRule(NamedTuple):
    """The spatial input sizes a U-Net with ``num_stages`` stages takes; made by :func:`unet_size_rule`.

    Every spatial size must be a multiple of ``multiple`` = 2^(num_stages - 1), the total down-sampling: a stride-2
    convolution rounds an odd size up and the transposed convolution then no longer meets its skip. The bottleneck
    (the input divided by ``multiple``) must hold more than one voxel, since instance normalisation has nothing to
    normalise over a single one (PyTorch: "Expected more than 1 value per channel"), in training and in eval mode
    alike: at least one size must be ``minimum`` = 2^num_stages or more. ``minimum`` is also the smallest cube.
    """

    num_stages: int
    multiple: int
    minimum: int

    def check(self, spatial_shape: Sequence[int]) -> None:
        """Raise ``ValueError`` naming the offending size and the nearest valid ones if ``spatial_shape`` does not fit.

        Example:
            ``unet_size_rule(6).check((96, 40, 64))`` raises "... every size must be a multiple of 2^(6 - 1) = 32,
            and size 40 (spatial axis 1) is not; the nearest valid sizes are 32 and 64."
        """
        shape = tuple(int(s) for s in spatial_shape)
        for axis, size in enumerate(shape):
            if size % self.multiple:
                below = size // self.multiple * self.multiple
                nearest = f"{below} and {below + self.multiple}" if below else f"{self.multiple}"
                raise ValueError(
                    f"input spatial shape {shape} does not fit a U-Net with {self.num_stages} stages: every size "
                    f"must be a multiple of 2^({self.num_stages} - 1) = {self.multiple}, and size {size} (spatial "
                    f"axis {axis}) is not; the nearest valid sizes are {nearest}."
                )
        if math.prod(shape) == self.multiple ** len(shape):
            raise ValueError(
                f"input spatial shape {shape} gives a U-Net with {self.num_stages} stages a bottleneck of a single "
                f"voxel, on which instance normalisation fails: at least one size must be 2^{self.num_stages} = "
                f"{self.minimum} or more, e.g. {(self.minimum, *shape[1:])}."
            )


def unet_size_rule(num_stages: int) -> UNetSizeRule:
    """The input sizes a U-Net with ``num_stages`` resolution levels takes (see :class:`UNetSizeRule`).

    Example:
        >>> unet_size_rule(6)
        UNetSizeRule(num_stages=6, multiple=32, minimum=64)
    """
    return UNetSizeRule(num_stages, 2 ** (num_stages - 1), 2**num_stages)


class UNetEncoder(nn.ModuleList):
    """nnU-Net's encoder: one stage per resolution level, full resolution first.

    Each stage is two conv-InstanceNorm-LeakyReLU(0.01) blocks with 3-wide kernels (MONAI's ``UnetBasicBlock``);
    every stage after the first down-samples by 2 with the stride of its first convolution (Isensee et al., Nature
    Methods 2021, https://doi.org/10.1038/s41592-020-01008-z). The stages are the list's items, so a network
    holding the encoder as ``encoder`` has the checkpoint keys ``encoder.<stage>.conv1.conv.weight`` and so on.
    The instance norm keeps the channels-last layout (:mod:`medguide.networks.blocks.norms`).

    The spatial sizes it takes are those of :func:`unet_size_rule` for ``len(widths)`` stages.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        widths: output channels of every stage, full resolution first (e.g. :func:`unet_widths`); at least two.

    Attributes:
        widths: as given; a decoder reads its channels from them.
        block_options: kernel size, norm and activation of the stages, for a decoder to build its blocks alike.
    """

    def __init__(self, spatial_dims: int, in_channels: int, widths: Sequence[int]) -> None:
        if len(widths) < 2:
            raise ValueError(f"a U-Net encoder needs at least 2 stages, got widths {list(widths)}.")
        block_options = {
            "kernel_size": 3,
            "norm_name": (instance_norm_factory_name(), {"affine": True}),
            "act_name": ("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        }
        ins = [in_channels, *widths[:-1]]
        super().__init__(
            UnetBasicBlock(spatial_dims, i, o, stride=1 if s == 0 else 2, **block_options)
            for s, (i, o) in enumerate(zip(ins, widths))
        )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.widths = list(widths)
        self.block_options: dict[str, Any] = block_options

    @property
    def size_rule(self) -> UNetSizeRule:
        """The spatial input sizes this encoder takes."""
        return unet_size_rule(len(self))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage's output, full resolution first.

        Args:
            x: ``[B, in_channels, *spatial]``, each spatial size fitting :attr:`size_rule` (not checked here).

        Returns:
            ``[B, widths[s], *spatial / 2^s]`` for every stage ``s``.
        """
        features = []
        for stage in self:
            x = stage(x)
            features.append(x)
        return features
