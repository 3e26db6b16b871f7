"""The BraTS convention for regions empty in the reference or the prediction."""

import warnings

import pytest
import torch

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
