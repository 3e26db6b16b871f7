"""The nnU-Net style U-Net that every medguide segmentation method builds on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetOutBlock, UnetUpBlock
from torch import nn

from medguide.networks.branches import run_basic_blocks, run_up_blocks
from medguide.networks.norms import INSTANCE_NORM

__all__ = ["UNet", "decode_branches", "unet_widths"]

NORM = (INSTANCE_NORM, {"affine": True})
ACT = ("leakyrelu", {"inplace": True, "negative_slope": 0.01})


def unet_widths(base: int, num_stages: int, cap: int = 320) -> list[int]:
    """nnU-Net's feature widths: ``base`` doubled at every stage, never above ``cap``.

    Example:
        >>> unet_widths(16, 6)
        [16, 32, 64, 128, 256, 320]
    """
    return [min(base * 2**s, cap) for s in range(num_stages)]


class UNet(nn.Module):
    """Plain nnU-Net style U-Net with a logit head at every decoder level (deep supervision).

    Each stage is two conv-InstanceNorm-LeakyReLU(0.01) blocks (MONAI's ``UnetBasicBlock``), down-sampling is a
    stride-2 convolution and up-sampling a stride-2 transposed convolution (``UnetUpBlock``), as in nnU-Net
    (Isensee et al., Nature Methods 2021, https://doi.org/10.1038/s41592-020-01008-z).

    It is one modality branch of :class:`medguide.networks.MAMLNet` and, on its own, the single-modality and
    early-fusion baseline.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1 for a modality branch, M for early fusion).
        out_channels: number of classes, background included.
        base_width: width of the full-resolution stage.
        num_stages: number of resolution levels; there are ``num_stages - 1`` down-samplings and as many logit
            heads. The official MAML build on 128^3 patches uses 6 (5 down-samplings).
        max_width: cap on the width of the deep stages (nnU-Net: 320).
        deep_supervision: in training mode return every decoder level's logits, full resolution first; in eval
            mode only the full-resolution logits are returned either way.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        base_width: int = 16,
        num_stages: int = 5,
        max_width: int = 320,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        if num_stages < 2:
            raise ValueError(f"num_stages must be at least 2, got {num_stages}.")
        self.spatial_dims = spatial_dims
        self.widths = unet_widths(base_width, num_stages, max_width)
        self.deep_supervision = deep_supervision
        ins = [in_channels] + self.widths[:-1]
        self.encoder = nn.ModuleList(
            UnetBasicBlock(spatial_dims, i, o, kernel_size=3, stride=1 if s == 0 else 2, norm_name=NORM, act_name=ACT)
            for s, (i, o) in enumerate(zip(ins, self.widths))
        )
        # decoder[j] brings level j+1 up to level j; built deepest first so that features come out in that order
        self.decoder = nn.ModuleList(
            UnetUpBlock(
                spatial_dims,
                self.widths[j + 1],
                self.widths[j],
                kernel_size=3,
                stride=1,
                upsample_kernel_size=2,
                norm_name=NORM,
                act_name=ACT,
            )
            for j in reversed(range(num_stages - 1))
        )
        self.heads = nn.ModuleList(
            UnetOutBlock(spatial_dims, self.widths[j], out_channels) for j in reversed(range(num_stages - 1))
        )

    @property
    def feature_channels(self) -> int:
        """Channels of the last full-resolution decoder feature."""
        return self.widths[0]

    def decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder features at every level, full resolution first."""
        return decode_branches([self], [x])[0]

    def logits(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits at every decoder level, full resolution first, from :meth:`decode`'s features."""
        return [head(f) for head, f in zip(reversed(self.heads), features)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        if self.training and self.deep_supervision:
            return self.logits(self.decode(x))
        return self.heads[-1](self.decode(x)[0])


def decode_branches(unets: Sequence[UNet], xs: Sequence[torch.Tensor], group: bool = True) -> list[list[torch.Tensor]]:
    """Decoder features of several U-Nets of one shape, each on its own input, stage by stage.

    With ``group`` the branches' small stages run as one grouped convolution (see
    :mod:`medguide.networks.branches`); the result is the same as calling each U-Net's :meth:`UNet.decode`.

    Args:
        unets: the branches, all built with the same arguments.
        xs: one input per branch.
        group: allow grouping; ``False`` runs the branches one after another.

    Returns:
        for each branch, its decoder features at every level, full resolution first.
    """
    run_basic = run_basic_blocks if group else lambda blocks, ins: [b(i) for b, i in zip(blocks, ins)]
    run_up = run_up_blocks if group else lambda blocks, ins, sk: [b(i, s) for b, i, s in zip(blocks, ins, sk)]
    skips = []
    for stage in range(len(unets[0].encoder)):
        xs = run_basic([u.encoder[stage] for u in unets], xs)
        skips.append(xs)
    features = []
    for level, skip in enumerate(reversed(skips[:-1])):
        xs = run_up([u.decoder[level] for u in unets], xs, skip)
        features.append(xs)
    return [list(levels) for levels in zip(*features[::-1])]
