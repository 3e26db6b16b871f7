"""Heat map -> boxes: the boxes of known maps, upsampling to a non-square image, thresholds, filters, no boxes."""

from __future__ import annotations

import pytest
import torch
from monai.data import MetaTensor

from medguide.transforms import MapToBoxes, MapToBoxesd, map_to_boxes, threshold_heat_map


def two_blobs() -> torch.Tensor:
    """An 8 x 6 map (x, y): blob A over x 1..2, y 1..3 at 1.0; blob B over x 5..6, y 4 at 0.8."""
    heat = torch.zeros(1, 8, 6)
    heat[0, 1:3, 1:4] = 1.0
    heat[0, 5:7, 4] = 0.8
    return heat


def test_pixel_corner_convention():
    """A component over x = 3..5 inclusive and y = 2 gives x0 = 3, x1 = 6, y0 = 2, y1 = 3."""
    heat = torch.zeros(8, 8)
    heat[3:6, 2] = 1.0
    boxes, scores = map_to_boxes(heat, spatial_size=(8, 8))
    assert boxes.tolist() == [[3.0, 2.0, 6.0, 3.0]] and scores.tolist() == [1.0]


def test_known_map_gives_its_boxes_best_first():
    boxes, scores = MapToBoxes(spatial_size=(8, 6))(two_blobs())
    assert boxes.tolist() == [[1.0, 1.0, 3.0, 4.0], [5.0, 4.0, 7.0, 5.0]]
    assert scores.tolist() == pytest.approx([1.0, 0.8])
    assert boxes.dtype == scores.dtype == torch.float32


def test_thresholds_relative_and_absolute():
    heat = two_blobs()
    assert len(map_to_boxes(heat, (8, 6), threshold=0.9)[0]) == 1  # 0.8 < 0.9 * max
    assert len(map_to_boxes(heat, (8, 6), threshold=0.5, relative=False)[0]) == 2
    assert len(map_to_boxes(heat, (8, 6), threshold=0.9, relative=False)[0]) == 1
    # relative to the maximum: the same map scaled down keeps its boxes, an absolute threshold loses them
    assert len(map_to_boxes(heat / 10, (8, 6), threshold=0.7)[0]) == 2
    assert len(map_to_boxes(heat / 10, (8, 6), threshold=0.7, relative=False)[0]) == 0


def test_upsampling_to_a_non_square_image():
    """A 2 x 3 map to a 20 x 30 image (10 pixels a cell). Bilinear, half-pixel centres: image pixel i samples the
    map at s = (i + 0.5) / 10 - 0.5, clamped at the edges.

    Hot column x = 1: the value along x is clamp(s, 0, 1) = clamp(i / 10 - 0.45, 0, 1); >= 0.7 from i = 12 (0.75;
    i = 11 gives 0.65), to the edge: x 12..19, every y. Hot row y = 0: 1 - clamp(j / 10 - 0.45, 0, 1) >= 0.7 up to
    j = 7 (0.75; j = 8 gives 0.65): y 0..7, every x.
    """
    column = torch.zeros(1, 2, 3)
    column[0, 1, :] = 1.0
    boxes, scores = map_to_boxes(column, spatial_size=(20, 30))
    assert boxes.tolist() == [[12.0, 0.0, 20.0, 30.0]] and scores.tolist() == pytest.approx([1.0])
    row = torch.zeros(1, 2, 3)
    row[0, :, 0] = 1.0
    assert map_to_boxes(row, spatial_size=(20, 30))[0].tolist() == [[0.0, 0.0, 20.0, 8.0]]
    values, mask = threshold_heat_map(row, (20, 30))
    assert values.shape == mask.shape == (20, 30) and int(mask.sum()) == 20 * 8


def test_image_size_from_the_meta_or_the_call():
    column = torch.zeros(1, 2, 3)
    column[0, 1, :] = 1.0
    expected = [[12.0, 0.0, 20.0, 30.0]]
    assert MapToBoxes()(MetaTensor(column, meta={"spatial_shape": torch.tensor([20, 30])}))[0].tolist() == expected
    assert MapToBoxes()(column, spatial_size=(20, 30))[0].tolist() == expected
    with pytest.raises(ValueError, match="spatial_size"):
        MapToBoxes()(column)
    with pytest.raises(ValueError, match="two positive integers"):
        MapToBoxes(spatial_size=(20, 0))(column)


@pytest.mark.parametrize("heat", [torch.zeros(1, 4, 4), -torch.ones(4, 4)])
def test_a_map_with_nothing_gives_no_boxes(heat):
    boxes, scores = map_to_boxes(heat, spatial_size=(16, 16))
    assert boxes.shape == (0, 4) and scores.shape == (0,)


def test_mean_score_min_area_max_boxes_and_connectivity():
    heat = torch.zeros(10, 10)
    heat[0, 0] = 1.0  # area 1, the best peak
    heat[4:6, 0] = torch.tensor([0.9, 0.7])  # area 2: max 0.9, mean 0.8
    heat[8:10, 8:10] = 0.75  # area 4
    boxes, scores = map_to_boxes(heat, (10, 10), threshold=0.5)
    assert scores.tolist() == pytest.approx([1.0, 0.9, 0.75])
    _, means = map_to_boxes(heat, (10, 10), threshold=0.5, score="mean")
    assert means.tolist() == pytest.approx([1.0, 0.8, 0.75])
    boxes, _ = map_to_boxes(heat, (10, 10), threshold=0.5, min_area=2, max_boxes=1)
    assert boxes.tolist() == [[4.0, 0.0, 6.0, 1.0]]
    diagonal = torch.eye(3)
    assert len(map_to_boxes(diagonal, (3, 3))[0]) == 3
    assert map_to_boxes(diagonal, (3, 3), connectivity=2)[0].tolist() == [[0.0, 0.0, 3.0, 3.0]]


def test_bad_options_are_refused_before_anything_runs():
    with pytest.raises(ValueError, match="score"):
        MapToBoxes(score="median")
    with pytest.raises(ValueError, match="connectivity"):
        MapToBoxes(connectivity=3)
    with pytest.raises(ValueError, match="min_area"):
        MapToBoxes(min_area=0)
    with pytest.raises(ValueError, match="relative threshold"):
        MapToBoxes(threshold=1.5)
    with pytest.raises(ValueError, match=r"\[1, w, h\]"):
        map_to_boxes(torch.zeros(2, 4, 4), (4, 4))
    with pytest.raises(ValueError, match="not finite"):
        map_to_boxes(torch.full((4, 4), float("nan")), (4, 4))


def test_dictionary_version_writes_boxes_and_scores_next_to_the_map():
    post = MapToBoxesd("heat", size_key="size")
    out = post({"heat": two_blobs(), "size": torch.tensor([8, 6])})
    assert out["heat_boxes"].tolist() == [[1.0, 1.0, 3.0, 4.0], [5.0, 4.0, 7.0, 5.0]]
    assert out["heat_scores"].tolist() == pytest.approx([1.0, 0.8])
    assert torch.equal(out["heat"], two_blobs())
    renamed = MapToBoxesd("heat", spatial_size=(8, 6), box_postfix="box", max_boxes=1)({"heat": two_blobs()})
    assert renamed["heat_box"].tolist() == [[1.0, 1.0, 3.0, 4.0]]
