"""Intensity transforms that depend on which modality a channel holds."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["WindowByModalityd"]


class WindowByModalityd(MapTransform):
    """Clip each channel to its modality's intensity window and scale it to [0, 1].

    Multi-phase CT needs a window per phase: contrast raises the liver and tumour HU differently in the arterial
    and venous phases. Channels are matched to windows by the names in ``data[modality_key]``, so cases with a
    phase missing are windowed correctly.

    Example:
        >>> t = WindowByModalityd("image", {"arterial": (-100, 300), "venous": (-50, 350)})
        >>> image = torch.tensor([[[-200.0, 100.0]], [[150.0, 400.0]]])
        >>> t({"image": image, "modalities": ["arterial", "venous"]})["image"].tolist()
        [[[0.0, 0.5]], [[0.5, 1.0]]]

    Args:
        keys: keys of the channel-first images.
        windows: ``{modality: (low, high)}`` in the image's units (HU for CT).
        modality_key: key of the list naming each channel's modality.
        allow_missing_keys: don't raise for absent keys.
    """

    def __init__(
        self,
        keys: KeysCollection,
        windows: Mapping[str, Sequence[float]],
        modality_key: str = "modalities",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.windows = {name: (float(lo), float(hi)) for name, (lo, hi) in windows.items()}
        self.modality_key = modality_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        names = list(d[self.modality_key])
        unknown = [n for n in names if n not in self.windows]
        if unknown:
            raise ValueError(
                f"no intensity window for modalities {unknown}; windows are given for {list(self.windows)}."
            )
        for key in self.key_iterator(d):
            image = d[key]
            if image.shape[0] != len(names):
                raise ValueError(f"'{key}' has {image.shape[0]} channels but {len(names)} modalities {names}.")
            lows = torch.tensor([self.windows[n][0] for n in names], dtype=torch.float32)
            highs = torch.tensor([self.windows[n][1] for n in names], dtype=torch.float32)
            shape = (-1,) + (1,) * (image.ndim - 1)
            lows, highs = lows.view(shape), highs.view(shape)
            d[key] = (image.float().clamp(lows, highs) - lows) / (highs - lows)
        return d
