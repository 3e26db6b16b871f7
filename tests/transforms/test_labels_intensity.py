"""Region and windowing transforms."""

from __future__ import annotations

import pytest
import torch

from medguide.transforms import LabelsToRegionsd, WindowByModalityd


def test_brats_regions_from_labels():
    label = torch.tensor([0, 1, 2, 3]).view(1, 4, 1, 1)
    out = LabelsToRegionsd("label", [[1, 3], [1, 2, 3], [3]])({"label": label})["label"]
    assert out[:, :, 0, 0].tolist() == [[0, 1, 0, 1], [0, 1, 1, 1], [0, 0, 0, 1]]


def test_windows_follow_the_phase_names_when_a_phase_is_missing():
    t = WindowByModalityd("image", {"arterial": (-100, 300), "venous": (0, 200)})
    out = t({"image": torch.tensor([[[[100.0, 500.0]]]]), "modalities": ["venous"]})["image"]
    assert out.flatten().tolist() == [0.5, 1.0]
    with pytest.raises(ValueError, match="no intensity window"):
        t({"image": torch.zeros(1, 1, 1, 1), "modalities": ["delayed"]})
