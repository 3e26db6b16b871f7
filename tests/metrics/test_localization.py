"""Localisation metrics on cases worked out by hand: IoBB and IoU, ChestX-ray8's protocol (false positives, images
without predictions or without ground truth), the pointing game and the mask IoU."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from medguide.metrics import (
    LocalizationMetrics,
    boxes_mask,
    iobb,
    iou,
    map_mask_iou,
    pointing_game_hit,
    protocol_outcome,
)


def test_iobb_and_iou_by_hand():
    """[0,0,4,4] (area 16) and [2,2,6,6] overlap on [2,2,4,4] (area 4): IoBB 4/16, IoU 4/(16+16-4) = 1/7.
    A box inside a larger one has IoBB 1 whatever its size, and IoU its share of the larger area."""
    pred = torch.tensor([[0, 0, 4, 4], [1, 1, 2, 2]])
    gt = torch.tensor([[2, 2, 6, 6], [0, 0, 10, 10], [20, 20, 30, 30]])
    assert iobb(pred, gt).tolist() == [[0.25, 1.0, 0.0], [0.0, 1.0, 0.0]]
    assert iou(pred, gt).numpy() == pytest.approx(np.array([[1 / 7, 0.16, 0.0], [0.0, 0.01, 0.0]]))
    # one box [4] is one row; numpy is taken too; the order matters for IoBB only
    assert iobb(np.array([2, 2, 6, 6]), np.array([0, 0, 4, 4])).tolist() == [[0.25]]
    assert iou([2.0, 2.0, 6.0, 6.0], [0.0, 0.0, 4.0, 4.0]).item() == pytest.approx(1 / 7)


def test_empty_and_degenerate_boxes():
    assert iobb(torch.zeros(0, 4), torch.tensor([[0, 0, 1, 1]])).shape == (0, 1)
    assert iou(torch.zeros(0, 4), torch.tensor([[0, 0, 1, 1]])).shape == (0, 1)
    assert iobb(torch.tensor([[1, 1, 1, 5]]), torch.tensor([[0, 0, 4, 4]])).tolist() == [[0.0]]  # zero area
    with pytest.raises(ValueError, match="x1 < x0"):
        iobb(torch.tensor([[4, 0, 0, 4]]), torch.tensor([[0, 0, 4, 4]]))
    with pytest.raises(ValueError, match=r"\[K, 4\]"):
        iou(torch.zeros(2, 6), torch.zeros(1, 4))


def test_protocol_outcome_is_strict_and_counts_unmatched_predictions():
    """gt [0,0,10,10]; predictions with IoBB 1, 0.25 and 0 (outside)."""
    gt = torch.tensor([[0, 0, 10, 10]])
    pred = torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]])
    assert protocol_outcome(pred, gt, 0.1) == (True, 1)
    assert protocol_outcome(pred, gt, 0.25) == (True, 2)  # 0.25 is not > 0.25
    assert protocol_outcome(pred[1:], gt, 0.25) == (False, 2)
    assert protocol_outcome(torch.zeros(0, 4), gt, 0.1) == (False, 0)
    with pytest.raises(ValueError, match="ground-truth"):
        protocol_outcome(pred, torch.zeros(0, 4), 0.1)


def test_the_protocol_over_images():
    """Image 1: predictions at IoBB 1, 0.25, 0 with its box. Image 2: two boxes, one prediction with IoBB
    20/100 = 0.2 with the first. Image 3: nothing predicted. Image 4: no ground truth (skipped).

    T = 0.1: correct 1, 2 (not 3): 2/3; false positives 1 + 0 + 0: 1/3.
    T = 0.25 (and 0.5, 0.75): correct 1 only: 1/3; false positives 2 + 1 + 0: 1.
    T = 0.9: image 1's exact box still counts: 1/3, and 1.
    """
    metrics = LocalizationMetrics()
    metrics.update(torch.tensor([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]]), torch.tensor([[0, 0, 10, 10]]))
    metrics.update(torch.tensor([[8, 0, 18, 10]]), torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60]]))
    metrics.update(torch.zeros(0, 4), torch.tensor([[0, 0, 10, 10]]))
    metrics.update(torch.tensor([[0, 0, 5, 5]]), torch.zeros(0, 4))
    result = metrics.aggregate()
    assert set(result) == {
        *(f"{name}@{t}" for name in ("accuracy", "afp") for t in ("0.1", "0.25", "0.5", "0.75", "0.9")),
        "pointing_game",
        "miou",
        "images",
        "skipped",
    }
    assert result["accuracy@0.1"] == pytest.approx(2 / 3) and result["afp@0.1"] == pytest.approx(1 / 3)
    for t in ("0.25", "0.5", "0.75", "0.9"):
        assert result[f"accuracy@{t}"] == pytest.approx(1 / 3) and result[f"afp@{t}"] == pytest.approx(1.0)
    assert (result["images"], result["skipped"]) == (3.0, 1.0)
    assert math.isnan(result["pointing_game"]) and math.isnan(result["miou"])  # no heat map given
    metrics.reset()
    assert math.isnan(metrics.aggregate()["accuracy@0.1"]) and metrics.aggregate()["images"] == 0


def test_pointing_game():
    """A 4 x 2 map on a 40 x 20 image: cells of 10 x 10; the maximum at cell (2, 1) points at (25, 15)."""
    heat = torch.zeros(1, 4, 2)
    heat[0, 2, 1] = 1.0
    assert pointing_game_hit(heat, torch.tensor([[20, 10, 30, 20]]), (40, 20))
    assert not pointing_game_hit(heat, torch.tensor([[0, 0, 20, 20]]), (40, 20))
    assert pointing_game_hit(heat, torch.tensor([[0, 0, 1, 1], [25, 15, 40, 20]]), (40, 20))  # edges count
    tie = torch.zeros(4, 2)
    tie[0, 0] = tie[3, 1] = 1.0  # the first maximum, (0, 0), points at (5, 5)
    assert pointing_game_hit(tie, torch.tensor([[0, 0, 10, 10]]), (40, 20))
    assert not pointing_game_hit(tie, torch.tensor([[30, 10, 40, 20]]), (40, 20))
    assert pointing_game_hit(MetaTensor(heat, meta={"spatial_shape": (40, 20)}), torch.tensor([[20, 10, 30, 20]]))


def test_mask_iou_and_the_box_mask():
    """An 8 x 8 map at the image's size, on over x 0..3, y 0..1 (8 pixels); the box [2,0,6,2] covers 8 pixels,
    4 of them shared: IoU 4 / 12. An empty map scores 0."""
    heat = torch.zeros(8, 8)
    heat[0:4, 0:2] = 1.0
    box = torch.tensor([[2, 0, 6, 2]])
    assert map_mask_iou(heat, box, (8, 8)) == pytest.approx(1 / 3)
    assert map_mask_iou(torch.zeros(8, 8), box, (8, 8)) == 0.0
    # a pixel is in a box when its centre is: centres 1.5 and 2.5 are in [1.4, 2.6], neither in [1.6, 2.4]
    assert boxes_mask(torch.tensor([[1.4, 0.0, 2.6, 1.0]]), (4, 4)).nonzero().tolist() == [[1, 0], [2, 0]]
    assert not boxes_mask(torch.tensor([[1.6, 0.0, 2.4, 1.0]]), (4, 4)).any()


def test_metrics_with_heat_maps_average_over_the_images_that_have_one():
    heat = torch.zeros(8, 8)
    heat[0:4, 0:2] = 1.0  # its maximum (first: pixel (0, 0)) is outside the box below
    box = torch.tensor([[2, 0, 6, 2]])
    metrics = LocalizationMetrics(thresholds=(0.5,))
    metrics.update(box, box, heat_map=heat, image_size=(8, 8))
    metrics.update(box, box, heat_map=MetaTensor(heat[None], meta={"spatial_shape": (8, 8)}))
    shifted = torch.zeros(8, 8)
    shifted[2:6, 0:2] = 1.0  # exactly the box: IoU 1, its first maximum (2, 0) inside
    metrics.update(box, box, heat_map=shifted, image_size=(8, 8))
    metrics.update(box, box)  # no map: counts for the protocol only
    result = metrics.aggregate()
    assert result["pointing_game"] == pytest.approx(1 / 3)
    assert result["miou"] == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)
    assert result["accuracy@0.5"] == 1.0 and result["afp@0.5"] == 0.0 and result["images"] == 4.0
    with pytest.raises(ValueError, match="spatial"):
        metrics.update(box, box, heat_map=heat)
    with pytest.raises(ValueError, match="thresholds"):
        LocalizationMetrics(thresholds=(1.5,))
