"""Baselines beside MAML: one U-Net over stacked modalities (early fusion) or over a single modality."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from medguide.networks.unet import UNet

__all__ = ["ModalityUNet"]


class ModalityUNet(UNet):
    """A :class:`UNet` whose input channels are named modalities: early fusion, or a single-modality model.

    Early fusion stacks the modalities as channels of one U-Net; MAML's comparison gives it the same total
    width as MAML's branches together (``base_width = M * 16``). A missing modality is given as a channel of
    zeros (the images are z-scored, so zero is the mean intensity), the usual way to run early fusion on
    incomplete cases; training with :class:`medguide.engines.ModalityBatch`'s ``modality_dropout`` teaches it
    that. With one modality it is the single-modality baseline.

    The forward takes ``modalities`` like :class:`medguide.networks.MAMLNet` and, in training mode, returns
    ``{"branches": [logits per level]}`` so that :class:`medguide.losses.MAMLLoss` trains it with the same deep
    supervision; in eval mode, the full-resolution logits.

    Args:
        modalities: names of the input channels, in order.
        out_channels: number of classes.
        kwargs: passed to :class:`UNet` (``spatial_dims``, ``base_width``, ``num_stages``, ``max_width``).
    """

    def __init__(self, modalities: Sequence[str], out_channels: int, **kwargs) -> None:
        super().__init__(in_channels=len(modalities), out_channels=out_channels, **kwargs)
        self.modalities = tuple(modalities)

    def forward(self, x: torch.Tensor, modalities: Sequence[str] | None = None):
        names = list(self.modalities if modalities is None else modalities)
        unknown = [m for m in names if m not in self.modalities]
        if unknown or len(names) != x.shape[1]:
            raise ValueError(
                f"input channels {names} (shape {tuple(x.shape)}) do not fit modalities {self.modalities}."
            )
        if names != list(self.modalities):
            full = x.new_zeros(x.shape[0], len(self.modalities), *x.shape[2:])
            full[:, [self.modalities.index(m) for m in names]] = x
            x = full
        out = super().forward(x)
        return {"branches": [out]} if self.training else out
