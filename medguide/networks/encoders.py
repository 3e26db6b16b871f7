"""Image encoders that keep the spatial grid: region features ``[B, C, w, h]`` (x first) for attention over regions.

:func:`medguide.networks.image_encoder` gives MONAI's DenseNet and ResNet pooled to one vector; a localiser needs the
map before the pooling. :func:`region_encoder` builds the same MONAI network (same state-dict keys, so the same
local weights file loads) and returns its last feature map instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import torch
from monai.networks.nets import DenseNet
from monai.networks.nets.resnet import ResNet
from torch import nn

from medguide.networks.dmg import image_encoder

__all__ = ["RegionEncoder", "RegionFeatures", "region_encoder", "region_encoder_names"]

_REGION_ENCODERS = ("densenet", "densenet121", "resnet18", "resnet50")


class RegionFeatures(nn.Module):
    """The last feature map of a MONAI ``DenseNet`` (after its final norm and ReLU) or ``ResNet`` (after
    ``layer4``), without the pooling and classifier that follow.

    The wrapped network keeps its own state-dict keys under ``net.``. The grid is the input's size divided by the
    network's stride: for MONAI's ResNet 16 (its first convolution has ``conv1_t_stride=1`` by default), 32 with
    ``conv1_t_stride=2`` (torchvision's layout), half that with ``no_max_pool``; for DenseNet 4 times 2 per
    transition (e.g. a ``block_config`` of 2 blocks: stride 8).

    Args:
        net: a MONAI ``DenseNet`` or ``ResNet`` (as :func:`medguide.networks.image_encoder` builds them).

    Raises:
        TypeError: for any other network.
    """

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        if not isinstance(net, DenseNet | ResNet):
            raise TypeError(f"RegionFeatures takes a MONAI DenseNet or ResNet, got {type(net).__name__}.")
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_channels, W, H]`` -> ``[B, C, W / stride, H / stride]``."""
        net = self.net
        if isinstance(net, DenseNet):
            return torch.relu(net.features(x))
        x = net.act(net.bn1(net.conv1(x)))
        if not net.no_max_pool:
            x = net.maxpool(x)
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))


class RegionEncoder(NamedTuple):
    """An encoder returning region features ``[B, channels, w, h]``, and ``channels``."""

    module: RegionFeatures
    channels: int


def region_encoder_names() -> list[str]:
    """The names :func:`region_encoder` takes."""
    return list(_REGION_ENCODERS)


def region_encoder(
    name: str, in_channels: int, weights: str | Path | None = None, spatial_dims: int = 2, **kwargs: Any
) -> RegionEncoder:
    """A MONAI image encoder, from scratch unless ``weights`` is given, returning its last feature map.

    Example::

        encoder = region_encoder("resnet50", 1, conv1_t_stride=2)   # films [B, 1, 512, 512] -> [B, 2048, 16, 16]
        encoder = region_encoder("densenet", 1, init_features=8, growth_rate=8, block_config=(2, 2))   # CPU scale

    Args:
        name: one of :func:`region_encoder_names` (as for :func:`medguide.networks.image_encoder`).
        in_channels: input channels (1 for a chest film).
        weights: optional local state-dict file of the MONAI network (as ``image_encoder`` loads it); nothing is
            downloaded.
        spatial_dims: 2 (films, photographs) or 3.
        kwargs: passed to the MONAI network.

    Raises:
        ValueError: an unknown ``name``.
        MissingInputError, InputError: as :func:`medguide.networks.image_encoder` for ``weights``.
    """
    if name not in _REGION_ENCODERS:
        raise ValueError(f"unknown region encoder {name!r}; choose one of {', '.join(_REGION_ENCODERS)}.")
    latent = image_encoder(name, spatial_dims, in_channels, weights=weights, **kwargs)
    # the pooled width is the last feature map's channel count for both families
    return RegionEncoder(RegionFeatures(latent.module), latent.latent_features)
