"""Weakly supervised localisation metrics: ChestX-ray8's IoBB protocol, the pointing game and the mask IoU.

The protocol of Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised
Classification and Localization of Common Thorax Diseases", CVPR 2017 (https://arxiv.org/abs/1705.02315), used to
evaluate report-guided pneumonia localisation (Bhalodia et al., MICCAI 2021, https://arxiv.org/abs/2110.03094;
``../shared/METHODS.md`` section 4). Boxes are ``[x0, y0, x1, y1]`` in image pixel corners, MONAI's ``StandardMode``
(:mod:`medguide.transforms.boxes`); ChestX-ray8's ``[x, y, w, h]`` converts with
``monai.data.box_utils.convert_box_mode(boxes, src_mode="xywh", dst_mode="xyxy")``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.data.box_utils import box_area, box_iou
from monai.utils import convert_to_tensor

from medguide.transforms.boxes import heat_map_image_size, threshold_heat_map

__all__ = [
    "THRESHOLDS",
    "LocalizationMetrics",
    "boxes_mask",
    "iobb",
    "iou",
    "map_mask_iou",
    "pointing_game_hit",
    "protocol_outcome",
]

THRESHOLDS = (0.1, 0.25, 0.5, 0.75, 0.9)
"""ChestX-ray8's IoBB thresholds ``T``."""


def _boxes(boxes: torch.Tensor | np.ndarray | Sequence, name: str) -> torch.Tensor:
    if isinstance(boxes, torch.Tensor):
        tensor = convert_to_tensor(boxes, track_meta=False).detach().to(device="cpu", dtype=torch.float64)
    else:
        tensor = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
    if tensor.numel() == 0:
        return tensor.reshape(0, 4)
    if tensor.ndim == 1:
        tensor = tensor[None]
    if tensor.ndim != 2 or tensor.shape[1] != 4:
        raise ValueError(f"{name} must be boxes [K, 4] (x0, y0, x1, y1) or one box [4], got {tuple(tensor.shape)}.")
    if not torch.isfinite(tensor).all() or (tensor[:, 2:] < tensor[:, :2]).any():
        raise ValueError(f"{name}: a box is not finite or has x1 < x0 or y1 < y0 (boxes are [x0, y0, x1, y1]).")
    return tensor


def iou(pred_boxes: torch.Tensor | np.ndarray, gt_boxes: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Intersection over union of every predicted box with every ground-truth box (MONAI's ``box_iou``).

    Args:
        pred_boxes: ``[N, 4]`` (or one box ``[4]``), ``[x0, y0, x1, y1]``.
        gt_boxes: ``[M, 4]`` (or one box ``[4]``).

    Returns:
        float64 ``[N, M]`` in ``[0, 1]`` (MONAI computes it in float32).

    Raises:
        ValueError: if a box set is not ``[K, 4]``, or a box is not finite or has ``x1 < x0`` or ``y1 < y0``.

    Example:
        >>> round(iou(torch.tensor([0, 0, 2, 2]), torch.tensor([[1, 0, 3, 2]])).item(), 4)  # overlap 2, union 6
        0.3333
    """
    pred, gt = _boxes(pred_boxes, "pred_boxes"), _boxes(gt_boxes, "gt_boxes")
    if 0 in (len(pred), len(gt)):
        return torch.zeros(len(pred), len(gt), dtype=torch.float64)
    return box_iou(pred, gt)


def iobb(pred_boxes: torch.Tensor | np.ndarray, gt_boxes: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Intersection over the predicted box's area (ChestX-ray8's IoBB) of every predicted with every true box.

    IoBB is 1 for a predicted box inside a ground-truth box, however small: ChestX-ray8 uses it because a class
    activation map tends to cover only part of a lesion. A predicted box of zero area scores 0.

    Args:
        pred_boxes: ``[N, 4]`` (or one box ``[4]``), ``[x0, y0, x1, y1]``.
        gt_boxes: ``[M, 4]`` (or one box ``[4]``).

    Returns:
        float64 ``[N, M]`` in ``[0, 1]``.

    Raises:
        ValueError: as :func:`iou`.

    Example:
        >>> iobb(torch.tensor([0, 0, 2, 2]), torch.tensor([[1, 0, 3, 2]])).tolist()  # overlap 2, predicted area 4
        [[0.5]]
    """
    pred, gt = _boxes(pred_boxes, "pred_boxes"), _boxes(gt_boxes, "gt_boxes")
    low = torch.maximum(pred[:, None, :2], gt[None, :, :2])
    high = torch.minimum(pred[:, None, 2:], gt[None, :, 2:])
    intersection = (high - low).clamp(min=0).prod(dim=-1)
    area = box_area(pred)[:, None] if len(pred) else torch.zeros(0, 1, dtype=torch.float64)
    return torch.where(area > 0, intersection / area.clamp(min=torch.finfo(torch.float64).tiny), 0.0)


def protocol_outcome(
    pred_boxes: torch.Tensor | np.ndarray, gt_boxes: torch.Tensor | np.ndarray, threshold: float
) -> tuple[bool, int]:
    """One image under ChestX-ray8's protocol at one IoBB threshold ``T``: ``(correctly localised, false positives)``.

    The rule implemented follows Wang et al. CVPR 2017, where a predicted box counts as correct when its IoBB with a
    ground-truth box exceeds ``T``; their evaluation code is not public, so the per-image counting is ours:

    - the image is correctly localised when at least one predicted box has ``IoBB > T`` (strictly) with at least one
      of its ground-truth boxes;
    - its false positives are the predicted boxes that have ``IoBB > T`` with none of its ground-truth boxes.

    An image without predicted boxes is not correctly localised and has 0 false positives.

    Args:
        pred_boxes: ``[N, 4]`` predicted boxes (``N`` may be 0).
        gt_boxes: ``[M, 4]`` ground-truth boxes, ``M >= 1``.
        threshold: ``T``.

    Raises:
        ValueError: as :func:`iou`, and if there is no ground-truth box.
    """
    overlap = iobb(pred_boxes, gt_boxes)
    if overlap.shape[1] == 0:
        raise ValueError("protocol_outcome needs at least one ground-truth box.")
    matched = (overlap > threshold).any(dim=1)
    return bool(matched.any()), int((~matched).sum())


def pointing_game_hit(
    heat_map: torch.Tensor | np.ndarray,
    gt_boxes: torch.Tensor | np.ndarray,
    image_size: Sequence[int] | None = None,
    meta_key: str = "spatial_shape",
) -> bool:
    """Whether the heat map's maximum falls inside a ground-truth box (the pointing game, Zhang et al., ECCV 2016).

    The point is the centre of the map's largest cell (the first in row-major order on a tie) scaled to the image:
    ``((i + 0.5) W / w, (j + 0.5) H / h)``; a hit when it lies in a box, edges included. No tolerance margin.

    Args:
        heat_map: ``[1, w, h]`` or ``[w, h]``.
        gt_boxes: ``[M, 4]`` ground-truth boxes in image pixels.
        image_size: the image's ``(W, H)``; ``None``: the heat map's ``meta[meta_key]``.
        meta_key: see :func:`medguide.transforms.threshold_heat_map`.

    Raises:
        ValueError: if the heat map is not ``[1, w, h]`` or ``[w, h]``, the image size is unknown, or as :func:`iou`.
    """
    size = heat_map_image_size(heat_map, image_size, meta_key)
    values = convert_to_tensor(heat_map, track_meta=False).detach().cpu()
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"a heat map must be [1, w, h] or [w, h], got shape {tuple(heat_map.shape)}.")
    cell = divmod(int(values.argmax()), values.shape[1])
    point = torch.tensor([(c + 0.5) * s / n for c, s, n in zip(cell, size, values.shape, strict=True)])
    boxes = _boxes(gt_boxes, "gt_boxes")
    return bool(((boxes[:, :2] <= point) & (point <= boxes[:, 2:])).all(dim=1).any())


def boxes_mask(boxes: torch.Tensor | np.ndarray, image_size: Sequence[int]) -> torch.Tensor:
    """The union of boxes as a boolean ``[W, H]`` mask: the pixels whose centre lies in a box."""
    mask = torch.zeros(tuple(image_size), dtype=torch.bool)
    for box in _boxes(boxes, "boxes").tolist():
        x0, y0 = (max(0, int(np.ceil(c - 0.5))) for c in box[:2])
        x1, y1 = (int(np.floor(c - 0.5)) + 1 for c in box[2:])
        mask[x0:x1, y0:y1] = True
    return mask


def map_mask_iou(
    heat_map: torch.Tensor | np.ndarray,
    gt_boxes: torch.Tensor | np.ndarray,
    image_size: Sequence[int] | None = None,
    threshold: float = 0.7,
    relative: bool = True,
    meta_key: str = "spatial_shape",
) -> float:
    """IoU of the thresholded heat map's mask with the union of the ground-truth boxes, at the image's size.

    The map is upsampled and thresholded as for the boxes (:func:`medguide.transforms.threshold_heat_map`); a
    ground-truth pixel is one whose centre lies in a box. 0 when both masks are empty.

    Args:
        heat_map: ``[1, w, h]`` or ``[w, h]``.
        gt_boxes: ``[M, 4]`` ground-truth boxes in image pixels.
        image_size: the image's ``(W, H)``; ``None``: the heat map's ``meta[meta_key]``.
        threshold: the map's threshold (default: 0.7 of its maximum).
        relative: ``threshold`` relative to the map's maximum.
        meta_key: see :func:`medguide.transforms.threshold_heat_map`.

    Raises:
        ValueError: as :func:`medguide.transforms.threshold_heat_map` and :func:`iou`.
    """
    _, predicted = threshold_heat_map(heat_map, image_size, threshold, relative, meta_key)
    truth = boxes_mask(gt_boxes, predicted.shape)
    union = int((predicted | truth).sum())
    return int((predicted & truth).sum()) / union if union else 0.0


class LocalizationMetrics:
    """Accumulates ChestX-ray8's localisation accuracy and average false positives, the pointing game and mIoU.

    Per image with at least one ground-truth box, and for each IoBB threshold ``T`` (:func:`protocol_outcome` states
    the rule): ``accuracy@T`` is the fraction of images correctly localised, ``afp@T`` the mean number of false
    positive boxes per image (Wang et al. CVPR 2017; METHODS.md's anchor, the ResNet-50 CAM baseline on
    pneumonia: accuracy 0.750 / 0.558 / 0.383 / 0.258 / 0.242 at T = 0.1 / 0.25 / 0.5 / 0.75 / 0.9). Given heat maps,
    also ``pointing_game`` (hit rate, :func:`pointing_game_hit`) and ``miou`` (mean of :func:`map_mask_iou`) over the
    images that came with one.

    An image without ground-truth boxes counts in no metric (ChestX-ray8 evaluates only its images with boxes,
    one disease at a time): it is only counted in ``skipped``. Evaluating one finding (pneumonia) is the caller's
    choice of boxes.

    :meth:`aggregate` gives ``accuracy@T`` and ``afp@T`` for every ``T`` (``T`` written as ``f"{T:g}"``: ``0.1``,
    ``0.25``), ``pointing_game``, ``miou``, ``images`` (images evaluated) and ``skipped``; a metric with no image
    to average is ``nan``.

    Args:
        thresholds: the IoBB thresholds ``T`` (default ChestX-ray8's :data:`THRESHOLDS`).
        map_threshold: the heat map threshold for ``miou`` (as :func:`map_mask_iou`; default 0.7 of the maximum).
        relative: ``map_threshold`` relative to the map's maximum.
        meta_key: where a ``MetaTensor`` heat map holds the image's size (see
            :func:`medguide.transforms.threshold_heat_map`).

    Raises:
        ValueError: if ``thresholds`` is empty or holds a value outside ``[0, 1)``.

    Example:
        >>> metrics = LocalizationMetrics(thresholds=(0.5,))
        >>> metrics.update(torch.tensor([[0, 0, 2, 2], [8, 8, 9, 9]]), torch.tensor([[0, 0, 4, 4]]))
        >>> metrics.update(torch.zeros(0, 4), torch.tensor([[0, 0, 4, 4]]))  # nothing predicted: wrong, no FP
        >>> {k: v for k, v in metrics.aggregate().items() if k in ("accuracy@0.5", "afp@0.5")}
        {'accuracy@0.5': 0.5, 'afp@0.5': 0.5}
    """

    def __init__(
        self,
        thresholds: Sequence[float] = THRESHOLDS,
        map_threshold: float = 0.7,
        relative: bool = True,
        meta_key: str = "spatial_shape",
    ) -> None:
        self.thresholds = tuple(float(t) for t in thresholds)
        if not self.thresholds or not all(0 <= t < 1 for t in self.thresholds):
            raise ValueError(f"LocalizationMetrics: thresholds must be values in [0, 1), got {thresholds!r}.")
        self.map_threshold = map_threshold
        self.relative = relative
        self.meta_key = meta_key
        self.reset()

    def reset(self) -> None:
        """Forget every image."""
        self.images = 0
        self.skipped = 0
        self.correct = dict.fromkeys(self.thresholds, 0)
        self.false_positives = dict.fromkeys(self.thresholds, 0)
        self.hits: list[bool] = []
        self.ious: list[float] = []

    def update(
        self,
        pred_boxes: torch.Tensor | np.ndarray,
        gt_boxes: torch.Tensor | np.ndarray,
        heat_map: torch.Tensor | np.ndarray | None = None,
        image_size: Sequence[int] | None = None,
    ) -> None:
        """Add one image.

        Args:
            pred_boxes: ``[N, 4]`` predicted boxes in image pixels (``N`` may be 0), e.g. from
                :class:`medguide.transforms.MapToBoxes`.
            gt_boxes: ``[M, 4]`` ground-truth boxes; ``M = 0``: the image is only counted in ``skipped``.
            heat_map: the image's map ``[1, w, h]`` or ``[w, h]``, for the pointing game and mIoU; ``None``: neither.
            image_size: the image's ``(W, H)``, needed with ``heat_map`` unless its meta holds it.

        Raises:
            ValueError: as :func:`iou`, :func:`pointing_game_hit` and :func:`map_mask_iou`.
        """
        pred, gt = _boxes(pred_boxes, "pred_boxes"), _boxes(gt_boxes, "gt_boxes")
        if len(gt) == 0:
            self.skipped += 1
            return
        outcomes = {t: protocol_outcome(pred, gt, t) for t in self.thresholds}
        if heat_map is not None:
            self.hits.append(pointing_game_hit(heat_map, gt, image_size, self.meta_key))
            self.ious.append(map_mask_iou(heat_map, gt, image_size, self.map_threshold, self.relative, self.meta_key))
        self.images += 1
        for t, (correct, false_positives) in outcomes.items():
            self.correct[t] += correct
            self.false_positives[t] += false_positives

    def aggregate(self) -> dict[str, float]:
        """The metrics over the images added so far (see the class docstring for the names)."""
        result: dict[str, float] = {}
        for t in self.thresholds:
            result[f"accuracy@{t:g}"] = self.correct[t] / self.images if self.images else float("nan")
            result[f"afp@{t:g}"] = self.false_positives[t] / self.images if self.images else float("nan")
        result["pointing_game"] = float(np.mean(self.hits)) if self.hits else float("nan")
        result["miou"] = float(np.mean(self.ious)) if self.ious else float("nan")
        result["images"] = float(self.images)
        result["skipped"] = float(self.skipped)
        return result
