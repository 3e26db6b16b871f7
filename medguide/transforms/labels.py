"""Label transforms: overlapping evaluation regions from a label map."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform

__all__ = ["LabelsToRegions", "LabelsToRegionsd"]


class LabelsToRegions(Transform):
    """One binary channel per region, each region a union of labels (e.g. BraTS TC = NCR + ET).

    Example:
        >>> brats = LabelsToRegions([[1, 3], [1, 2, 3], [3]])  # TC, WT, ET of labels 0 bg, 1 NCR, 2 ED, 3 ET
        >>> brats(torch.tensor([[[0, 1, 2, 3]]])).int().tolist()
        [[[0, 1, 0, 1]], [[0, 1, 1, 1]], [[0, 0, 0, 1]]]

    Args:
        regions: for each output channel, the label values it contains.
    """

    def __init__(self, regions: Sequence[Sequence[int]]) -> None:
        self.regions = [list(r) for r in regions]

    def __call__(self, label: torch.Tensor) -> torch.Tensor:
        """``label`` is a channel-first label map with one channel."""
        if label.shape[0] != 1:
            raise ValueError(f"expected a label map with one channel, got shape {tuple(label.shape)}.")
        values = label[0]
        out = torch.stack([torch.isin(values, torch.as_tensor(r, device=values.device)) for r in self.regions])
        return out.float()


class LabelsToRegionsd(MapTransform):
    """Dictionary version of :class:`LabelsToRegions`.

    Args:
        keys: keys of the label maps to convert.
        regions: for each output channel, the label values it contains.
        allow_missing_keys: don't raise for absent keys.
    """

    def __init__(self, keys: KeysCollection, regions: Sequence[Sequence[int]], allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.converter = LabelsToRegions(regions)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.converter(d[key])
        return d
