"""The BraTS convention for regions empty in the reference or the prediction."""

import warnings

import pytest
import torch
from monai.data import MetaTensor

from medguide.data.geometry import spacing_of
from medguide.metrics.conventions import dice, grid_diagonal, hd95


def test_brats_grid_diagonal():
    assert grid_diagonal([240, 240, 155]) == pytest.approx(373.13, abs=5e-3)


def test_scores_per_case_and_region_without_empty_class_warnings():
    y = torch.zeros(1, 4, 8, 8, 8)
    y[:, :2, 2:6, 2:6, 2:6] = 1  # regions 0 and 1 present, 2 and 3 absent
    pred = torch.zeros_like(y)
    pred[:, 0, 2:6, 2:6, 2:6] = 1  # exact
    pred[:, 2, 2:6, 2:6, 2:6] = 1  # false positive; region 1 missed, region 3 empty in both
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert dice(pred, y).tolist() == [[1.0, 0.0, 0.0, 1.0]]
        diagonal = grid_diagonal([8, 8, 8])
        assert hd95(pred, y).tolist() == [pytest.approx([0.0, diagonal, diagonal, 0.0])]
    assert not [w for w in caught if "is all 0" in str(w.message)]


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="one shape"):
        hd95(torch.zeros(1, 2, 8, 8, 8), torch.zeros(1, 3, 8, 8, 8))


def test_hd95_in_millimetres_per_case_spacing():
    y = torch.zeros(2, 2, 8, 8, 8)
    y[:, 0, 2:6, 2:6, 2:6] = 1  # region 1 absent in the reference
    pred = y.clone()
    pred[:, 0, 2:6, 2:6, 6] = 1  # one slice too deep along the third axis
    pred[:, 1, 0, 0, 0] = 1  # false positive: the worst value, the grid diagonal in mm
    spacing = [[1.0, 1.0, 1.0], [0.5, 0.5, 2.5]]
    assert hd95(pred, y, spacing=spacing).tolist() == [
        pytest.approx([1.0, grid_diagonal([8, 8, 8])]),
        pytest.approx([2.5, grid_diagonal([8, 8, 8], [0.5, 0.5, 2.5])]),
    ]
    assert hd95(pred, y, spacing=[1.0, 1.0, 3.0])[:, 0].tolist() == pytest.approx([3.0, 3.0])
    with pytest.raises(ValueError, match="spacing"):
        hd95(pred, y, spacing=[1.0, 1.0])


def test_spacing_from_the_affine_columns():
    affine = torch.tensor([[0.0, 0.0, -3.0, 10.0], [0.8, 0.0, 0.0, -5.0], [0.0, 0.8, 0.0, 2.0], [0, 0, 0, 1]])
    label = MetaTensor(torch.zeros(1, 1, 4, 4, 4), affine=affine)  # axes permuted and flipped: spacing stays
    assert spacing_of(label).tolist() == [pytest.approx([0.8, 0.8, 3.0])]
    assert spacing_of(torch.zeros(1, 1, 4, 4, 4)) is None
