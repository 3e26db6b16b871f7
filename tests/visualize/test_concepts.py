"""concept_figure: the image beside its strongest concepts, written as a PNG; images in MONAI's layout shown upright."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medguide.visualize import concept_figure, display_image


def test_figure_is_a_png(tmp_path):
    image = torch.rand(3, 40, 30)  # [C, W, H] as LoadPhotod loads a photograph
    names, values = ["drusen", "cupping", "oedema"], [0.4, 0.1, -0.2]
    path = concept_figure(image, names, values, tmp_path / "f" / "c1.png", title="c1: predicted AMD")
    assert path == tmp_path / "f" / "c1.png" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["c1.png"]  # no temporary file left


def test_display_image_layouts():
    image = np.zeros((3, 8, 5))  # 8 wide, 5 high
    image[0, 7, 0] = 2.0  # red, top right
    shown = display_image(image)
    assert shown.shape == (5, 8, 3) and shown[0, 7, 0] == 1.0 and shown.max() == 1.0
    assert display_image(torch.ones(1, 8, 5)).shape == (5, 8)  # grey, constant: all zero
    with pytest.raises(ValueError, match=r"got shape \(4, 8, 5\)"):
        display_image(np.zeros((4, 8, 5)))


def test_names_and_values_must_pair(tmp_path):
    with pytest.raises(ValueError, match="2 concept names for 1 similarities"):
        concept_figure(np.zeros((3, 4, 4)), ["a", "b"], [0.5], tmp_path / "x.png")
