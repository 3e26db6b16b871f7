"""Baselines beside MAML: one U-Net over stacked modalities (early fusion) or over a single modality."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medguide.data.modalities import check_modalities, distinct_modalities
from medguide.networks.unet import UNet

__all__ = ["ModalityUNet"]


class ModalityUNet(UNet):
    """A :class:`UNet` whose input channels are named modalities: early fusion, or a single-modality model.

    Early fusion stacks the modalities as channels of one U-Net. Two fair sizes beside MAML: one branch's width
    (``base_width`` = MAML's, 16 in the paper; what the official code's baseline trainer ``nnUNetLightTrainerV2``
    builds, with about 1/M of MAML's parameters), and equal parameters (the ``base_width`` that
    :func:`medguide.networks.equal_parameter_width` finds); :func:`medguide.networks.complexity` gives both
    parameter counts and FLOPs per patch. Its convolutions start He-normal and its heads have no bias, as
    :class:`UNet`'s. A missing modality is given as a channel of
    zeros (the images are z-scored, so zero is the mean intensity), the usual way to run early fusion on
    incomplete cases; training with :class:`medguide.engines.ModalityBatch`'s ``modality_dropout`` teaches it
    that. With one modality it is the single-modality baseline.

    The forward takes ``modalities`` like :class:`medguide.networks.MAMLNet` and, in training mode, returns
    ``{"branches": [logits per level]}`` so that :class:`medguide.losses.MAMLLoss` trains it with the same deep
    supervision; in eval mode, the full-resolution logits. Input sizes follow :class:`UNet`'s rule (each spatial
    size a multiple of 2^(num_stages - 1), one at least 2^num_stages), checked before running.

    Args:
        modalities: distinct names of the input channels, in order.
        out_channels: number of classes.
        kwargs: passed to :class:`UNet` (``spatial_dims``, ``base_width``, ``num_stages``, ``max_width``).

    Raises:
        ValueError: ``modalities`` is empty or repeats a name.
    """

    def __init__(self, modalities: Sequence[str], out_channels: int, **kwargs) -> None:
        modalities = distinct_modalities(modalities, "ModalityUNet's modalities")
        super().__init__(in_channels=len(modalities), out_channels=out_channels, **kwargs)
        self.modalities = modalities

    def forward(
        self, x: torch.Tensor, modalities: Sequence[str] | str | None = None
    ) -> torch.Tensor | dict[str, list[torch.Tensor]]:
        """Segmentation logits from the given modalities, the others filled with zeros.

        Args:
            x: ``[B, k, *spatial]``, one channel per given modality in the order of ``modalities``; the spatial
                sizes fitting :func:`medguide.networks.unet_size_rule` for ``num_stages`` (see :class:`UNet`).
            modalities: names of the ``k`` given modalities, a non-empty subset of the network's without repeats;
                ``None`` means all of them, in the network's order.

        Returns:
            in training mode, ``{"branches": [[B, out_channels, *spatial / 2^j] for the num_stages - 1 levels j,
            full resolution first]}`` (one branch, as :class:`medguide.networks.MAMLNet` gives); in eval mode, the
            logits ``[B, out_channels, *spatial]``.

        Raises:
            ValueError: if the modalities are not a subset of the network's, the channels do not match them, or a
                spatial size does not fit the U-Net.
        """
        names = list(self.modalities) if modalities is None else check_modalities(modalities, self.modalities)
        if len(names) != x.shape[1]:
            raise ValueError(
                f"input has {x.shape[1]} channels but {len(names)} modalities are named ({names}); "
                "give one channel per present modality."
            )
        if names != list(self.modalities):
            full = x.new_zeros(x.shape[0], len(self.modalities), *x.shape[2:])
            full[:, [self.modalities.index(m) for m in names]] = x
            x = full
        out = super().forward(x)
        return {"branches": [out]} if self.training else out
