"""Instance normalisation that keeps PyTorch's channels-last layout, and its name in MONAI's ``Norm`` factory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Norm
from torch import nn

__all__ = ["InstanceNorm2d", "InstanceNorm3d", "instance_norm", "instance_norm_factory_name"]

_FACTORY_NAME = "MEDGUIDE_INSTANCE"


def instance_norm(
    x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float = 1e-5
) -> torch.Tensor:
    """Instance normalisation (per sample and channel, over space) with an optional affine.

    For a single sample this is batch normalisation with batch statistics, which PyTorch computes in the
    input's own memory layout; its instance norm reshapes to ``[1, B * C, ...]`` and so copies channels-last
    inputs. Batches of several samples use the ordinary instance norm.
    """
    if x.shape[0] == 1:
        return F.batch_norm(x, None, None, weight, bias, training=True, momentum=0.0, eps=eps)
    return F.instance_norm(x, weight=weight, bias=bias, eps=eps)


class _LayoutKeepingInstanceNorm:
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_running_stats:
            return super().forward(x)
        return instance_norm(x, self.weight, self.bias, self.eps)


class InstanceNorm2d(_LayoutKeepingInstanceNorm, nn.InstanceNorm2d):
    """``nn.InstanceNorm2d`` that keeps channels-last inputs channels-last (same parameters and result)."""


class InstanceNorm3d(_LayoutKeepingInstanceNorm, nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` that keeps channels-last inputs channels-last (same parameters and result)."""


def instance_norm_factory_name() -> str:
    """Name of :class:`InstanceNorm2d` / :class:`InstanceNorm3d` in MONAI's ``Norm`` factory, registered on first call.

    Registering when a network asks for the name, not when this module is imported, leaves MONAI's global factory
    as it was for a program that imports medguide without building its networks.

    Example:
        >>> from monai.networks.layers.factories import Norm
        >>> Norm[instance_norm_factory_name(), 3]
        <class 'medguide.networks.blocks.norms.InstanceNorm3d'>
    """
    if _FACTORY_NAME not in Norm.names:
        Norm.add_factory_callable(
            _FACTORY_NAME,
            lambda dim: {2: InstanceNorm2d, 3: InstanceNorm3d}[dim],
            "instance normalisation that keeps the channels-last layout",
        )
    return _FACTORY_NAME
