"""Instance normalisation that keeps PyTorch's channels-last layout."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Norm
from torch import nn

__all__ = ["INSTANCE_NORM", "InstanceNorm2d", "InstanceNorm3d", "instance_norm"]


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


INSTANCE_NORM = "MEDGUIDE_INSTANCE"
"""Name of these norms in MONAI's ``Norm`` factory, for ``norm_name=("medguide_instance", {...})``."""

if INSTANCE_NORM not in Norm.names:
    Norm.add_factory_callable(
        INSTANCE_NORM,
        lambda dim: {2: InstanceNorm2d, 3: InstanceNorm3d}[dim],
        "instance normalisation that keeps the channels-last layout",
    )
