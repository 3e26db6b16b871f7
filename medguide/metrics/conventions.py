"""Dice and HD95 of a region that is empty in the reference or the prediction: the BraTS challenge convention.

The BraTS challenge scores every case and region, empty ones included, so that a mean is always defined and a
false positive on a case without the region costs as much as a missed region. The rule, as nnU-Net re-implements
the BraTS 2018-2020 evaluation (``compute_BraTS_dice`` and ``compute_BraTS_HD95`` in
https://github.com/MIC-DKFZ/nnUNet/blob/nnunetv1/nnunet/dataset_conversion/Task082_BraTS_2020.py):

- reference and prediction both empty: Dice 1, HD95 0;
- exactly one of them empty: Dice 0, HD95 the worst value, the diagonal of the evaluated grid (BraTS: 373.13 mm,
  the diagonal of its 240 x 240 x 155 grid of 1 mm voxels).

HD95 is in millimetres when the voxel spacing is given (:func:`medguide.data.geometry.spacing_of` reads it from an
affine), and in voxels of the evaluated grid when it is not.

MONAI's ``DiceMetric(ignore_empty=False)`` already scores Dice this way, so the bundles' ``val_mean_dice`` (training
log, checkpoint selection, ``metrics.csv``) and :class:`medguide.metrics.SubsetTable` agree.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from monai.metrics import compute_dice, compute_hausdorff_distance

__all__ = ["EMPTY_REGION_CONVENTION", "dice", "grid_diagonal", "hd95"]

EMPTY_REGION_CONVENTION = (
    "Empty regions follow the BraTS challenge convention: a region empty in both reference and prediction scores "
    "Dice 1 and HD95 0; one empty in exactly one of them scores Dice 0 and HD95 the diagonal of the evaluated grid"
)


def grid_diagonal(spatial_shape: Sequence[int], spacing: Sequence[float] | None = None) -> float:
    """The diagonal of a grid of ``spatial_shape`` voxels: ``sqrt(sum((n * s) ** 2))``.

    In millimetres with the voxel ``spacing`` (mm per axis), in voxels without it.

    Example:
        >>> round(grid_diagonal([240, 240, 155]), 2)  # BraTS, 1 mm voxels
        373.13
        >>> grid_diagonal([3, 4], spacing=[2.0, 1.5])  # 6 mm by 6 mm
        8.48528137423857
    """
    spacing = [1.0] * len(spatial_shape) if spacing is None else [float(s) for s in spacing]
    if len(spacing) != len(spatial_shape):
        raise ValueError(f"spacing {spacing} does not have one value per axis of the grid {tuple(spatial_shape)}.")
    return math.sqrt(sum((n * s) ** 2 for n, s in zip(spatial_shape, spacing)))


def dice(y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Dice per case and region under the BraTS convention, in [0, 1].

    Args:
        y_pred: binary one-hot prediction, [B, regions, *spatial].
        y: binary one-hot reference, same shape as ``y_pred``.

    Returns:
        [B, regions] float tensor; 1 where both are empty, 0 where only one is.

    Raises:
        ValueError: when ``y_pred`` and ``y`` differ in shape.
    """
    _check_shapes(y_pred, y)
    return compute_dice(y_pred, y, include_background=True, ignore_empty=False)


def hd95(
    y_pred: torch.Tensor, y: torch.Tensor, spacing: Sequence[float] | Sequence[Sequence[float]] | None = None
) -> torch.Tensor:
    """Symmetric 95th-percentile Hausdorff distance per case and region under the BraTS convention.

    MONAI computes it where both masks are non-empty (``compute_hausdorff_distance`` with the voxel spacing);
    elsewhere it would give nan or inf (and warn), so the convention decides: 0 where both are empty,
    :func:`grid_diagonal` of the case's grid where only one is.

    Args:
        y_pred: binary one-hot prediction, [B, regions, *spatial].
        y: binary one-hot reference, same shape as ``y_pred``.
        spacing: voxel spacing in mm, one value per spatial axis, for every case or per case ([B, spatial dims],
            e.g. from :func:`medguide.data.geometry.spacing_of`); distances are then in mm. ``None`` measures in
            voxels.

    Returns:
        [B, regions] float tensor in [0, grid diagonal], in mm with ``spacing``, in voxels without.

    Raises:
        ValueError: when ``y_pred`` and ``y`` differ in shape, or ``spacing`` does not fit them or is not positive.
    """
    _check_shapes(y_pred, y)
    batch, spatial = y.shape[0], y.shape[2:]
    per_case = _per_case_spacing(spacing, batch, len(spatial))
    pred_any, ref_any = y_pred.flatten(2).any(-1), y.flatten(2).any(-1)
    worst = torch.tensor([[grid_diagonal(spatial, s)] for s in per_case])
    distances = torch.where(pred_any == ref_any, 0.0, worst).float()
    for b, c in (pred_any & ref_any).nonzero().tolist():
        distances[b, c] = compute_hausdorff_distance(
            y_pred[b : b + 1, c : c + 1],
            y[b : b + 1, c : c + 1],
            include_background=True,
            percentile=95,
            spacing=per_case[b],
        )[0, 0]
    return distances


def _per_case_spacing(
    spacing: Sequence[float] | Sequence[Sequence[float]] | None, batch: int, dims: int
) -> list[list[float]]:
    if spacing is None:
        return [[1.0] * dims] * batch
    values = torch.as_tensor(spacing, dtype=torch.float64)
    if values.ndim == 1:
        values = values.expand(batch, -1)
    if values.shape != (batch, dims):
        raise ValueError(f"spacing must be {dims} values, or [{batch} cases, {dims}], got {tuple(values.shape)}.")
    if not (values > 0).all():
        raise ValueError(f"spacing must be positive, got {values.tolist()}.")
    return values.tolist()


def _check_shapes(y_pred: torch.Tensor, y: torch.Tensor) -> None:
    if y_pred.shape != y.shape or y.ndim < 3:
        raise ValueError(
            f"y_pred and y must both be [B, regions, *spatial] of one shape, got {tuple(y_pred.shape)} and "
            f"{tuple(y.shape)}."
        )
