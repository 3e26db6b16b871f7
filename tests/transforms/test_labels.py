"""Evaluation regions from a label map."""

from __future__ import annotations

import torch

from medguide.transforms import LabelsToRegionsd


def test_brats_regions_from_labels():
    label = torch.tensor([0, 1, 2, 3]).view(1, 4, 1, 1)
    out = LabelsToRegionsd("label", [[1, 3], [1, 2, 3], [3]])({"label": label})["label"]
    assert out[:, :, 0, 0].tolist() == [[0, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]]
