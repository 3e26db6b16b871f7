"""The nnU-Net style U-Net that every medguide segmentation method builds on."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers.factories import Conv
from monai.networks.nets.dynunet import DynUNet
from torch import nn

from medguide.networks.blocks import UNetDecoder, UNetEncoder, UNetSizeRule, unet_widths

__all__ = ["UNet"]


class UNet(nn.Module):
    """Plain nnU-Net style U-Net with a logit head at every decoder level (deep supervision).

    Isensee et al., "nnU-Net: a self-configuring method for deep learning-based biomedical image segmentation",
    Nature Methods 2021, https://doi.org/10.1038/s41592-020-01008-z. Built from
    :class:`medguide.networks.blocks.UNetEncoder` (two conv-InstanceNorm-LeakyReLU(0.01) blocks per stage,
    down-sampling by stride-2 convolutions) and :class:`medguide.networks.blocks.UNetDecoder` (stride-2 transposed
    convolutions), with a bias-free 1x1 convolution as logit head at every decoder level (nnU-Net's
    ``seg_output_use_bias=False``).

    Every convolution, transposed convolution and head starts from nnU-Net's He-normal initialisation
    (``InitWeights_He(1e-2)``: Kaiming normal for a leaky ReLU of slope 0.01, fan-in mode, so the weights have
    standard deviation ``sqrt(2 / ((1 + 0.01^2) fan_in))``; zero biases, though none of these has one), applied with
    MONAI's :meth:`monai.networks.nets.DynUNet.initialize_weights`, the same function. PyTorch's default would
    start the weights about 2.4 times smaller.

    It is one modality branch of :class:`medguide.networks.MAMLNet` and, on its own, the single-modality and
    early-fusion baseline (:class:`medguide.networks.ModalityUNet`), initialised alike, as in the official MAML
    code and nnU-Net's trainers.

    Input sizes: the ``num_stages - 1`` down-samplings halve every spatial size, so each must be a multiple of
    2^(num_stages - 1), and the bottleneck must hold more than one voxel (instance normalisation fails on a single
    one), so at least one size must be 2^num_stages or more (:func:`medguide.networks.unet_size_rule`). For example,
    with the default ``num_stages=6`` (five down-samplings) sizes must be multiples of 32: a 128x128x128 input has a
    4x4x4 bottleneck and a 160x160x64 one a 5x5x2 bottleneck, while 32x32x32 (a 1x1x1 bottleneck) and 100x100x100
    are refused; the smallest cube is 64x64x64. :meth:`forward` checks this and raises ``ValueError`` before running.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1 for a modality branch, M for early fusion).
        out_channels: number of classes, background included.
        base_width: width of the full-resolution stage.
        num_stages: number of resolution levels, at least 2; there are ``num_stages - 1`` down-samplings and as many
            logit heads. The default 6 is the official MAML build for 128^3 patches (nnU-Net's plan: five 2x2x2
            poolings to a 4x4x4 bottleneck, five deep-supervision outputs; 16.6 M parameters at ``base_width=16``).
        max_width: cap on the width of the deep stages (nnU-Net: 320).
        deep_supervision: in training mode return every decoder level's logits, full resolution first; in eval
            mode only the full-resolution logits are returned either way.

    Raises:
        ValueError: ``num_stages`` is below 2.
    """

    def __init__(
        self,
        spatial_dims: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        base_width: int = 16,
        num_stages: int = 6,
        max_width: int = 320,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        if num_stages < 2:
            raise ValueError(f"num_stages must be at least 2, got {num_stages}.")
        self.spatial_dims = spatial_dims
        self.deep_supervision = deep_supervision
        self.encoder = UNetEncoder(spatial_dims, in_channels, unet_widths(base_width, num_stages, max_width))
        self.decoder = UNetDecoder(self.encoder)
        # deepest first, as the decoder's blocks
        self.heads = nn.ModuleList(
            Conv[Conv.CONV, spatial_dims](w, out_channels, kernel_size=1, bias=False)
            for w in reversed(self.decoder.widths)
        )
        self.apply(DynUNet.initialize_weights)

    @property
    def num_stages(self) -> int:
        """Resolution levels."""
        return len(self.encoder)

    @property
    def size_rule(self) -> UNetSizeRule:
        """The spatial input sizes the network takes: its encoder's."""
        return self.encoder.size_rule

    @property
    def feature_channels(self) -> int:
        """Channels of the last full-resolution decoder feature."""
        return self.decoder.widths[0]

    def decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder features at every level, full resolution first (see :meth:`UNetDecoder.forward`)."""
        return self.decoder(self.encoder(x))

    def logits(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits at every decoder level, full resolution first, from :meth:`decode`'s features."""
        return [head(f) for head, f in zip(reversed(self.heads), features)]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """Segmentation logits.

        Args:
            x: ``[B, in_channels, *spatial]``, the spatial sizes fitting :attr:`size_rule`.

        Returns:
            in training mode with ``deep_supervision``, a list of ``num_stages - 1`` logits
            ``[B, out_channels, *spatial / 2^j]``, full resolution (``j = 0``) first; otherwise the full-resolution
            logits ``[B, out_channels, *spatial]``.

        Raises:
            ValueError: if a spatial size does not fit :attr:`size_rule`.
        """
        self.size_rule.check(x.shape[2:])
        if self.training and self.deep_supervision:
            return self.logits(self.decode(x))
        return self.heads[-1](self.decode(x)[0])
