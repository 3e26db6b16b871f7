"""nnU-Net's decoder, built from the encoder it decodes."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks.dynunet_block import UnetUpBlock
from torch import nn

from medguide.networks.blocks.unet_encoder import UNetEncoder

__all__ = ["UNetDecoder"]


class UNetDecoder(nn.ModuleList):
    """nnU-Net's decoder: a stride-2 transposed convolution, then the skip feature concatenated and two
    conv-InstanceNorm-LeakyReLU blocks (MONAI's ``UnetUpBlock``), once per level above the bottleneck.

    Channels, spatial dims, kernel, norm and activation are read from ``encoder``, so the two cannot disagree.
    The encoder is not kept (its weights belong to the network that holds both). Item ``j`` brings level ``j + 1``
    up to level ``j``, deepest first, so a network holding the decoder as ``decoder`` has the checkpoint keys
    ``decoder.<j>.transp_conv.conv.weight``, ``decoder.<j>.conv_block.conv1.conv.weight`` and so on.

    Args:
        encoder: the encoder whose features this decoder takes.

    Attributes:
        widths: channels of the decoder's features, full resolution first (the encoder's widths but the deepest).
    """

    def __init__(self, encoder: UNetEncoder) -> None:
        widths = encoder.widths
        super().__init__(
            UnetUpBlock(
                encoder.spatial_dims,
                widths[j + 1],
                widths[j],
                stride=1,
                upsample_kernel_size=2,
                **encoder.block_options,
            )
            for j in reversed(range(len(widths) - 1))
        )
        self.widths = widths[:-1]

    def forward(self, skips: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Decoder features at every level, full resolution first.

        Args:
            skips: the encoder's output, ``[B, encoder.widths[s], *spatial / 2^s]`` for every stage ``s``.

        Returns:
            ``[B, widths[j], *spatial / 2^j]`` for every level ``j`` above the bottleneck.
        """
        x = skips[-1]
        features = []
        for block, skip in zip(self, reversed(skips[:-1])):
            x = block(x, skip)
            features.append(x)
        return features[::-1]
