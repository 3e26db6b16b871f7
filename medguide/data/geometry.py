"""Geometry of loaded images: what their affines say about the voxel grid."""

from __future__ import annotations

import torch
from monai.data.utils import affine_to_spacing

__all__ = ["spacing_of"]


def spacing_of(image: torch.Tensor) -> torch.Tensor | None:
    """Voxel spacing (mm per spatial axis) of each case of a batch, from its affine; ``None`` without one.

    The spacing is the column norms of ``affine[:3, :3]`` (MONAI's ``affine_to_spacing``), so it survives the
    crops and pads that only move the affine's origin.

    Example:
        >>> from monai.data import MetaTensor
        >>> spacing_of(MetaTensor(torch.zeros(1, 1, 4, 4, 4), affine=torch.diag(torch.tensor([0.8, 0.8, 3.0, 1.0]))))
        tensor([[0.8000, 0.8000, 3.0000]], dtype=torch.float64)

    Args:
        image: a batched channel-first image or label, [B, C, *spatial]; a MONAI ``MetaTensor`` carries the
            affine (batched [B, d+1, d+1], or one [d+1, d+1] for a batch that was never collated).

    Returns:
        [B, spatial dims] float64 tensor, or ``None`` where ``image`` has no affine (a plain tensor).
    """
    affine = getattr(image, "affine", None)
    if affine is None:
        return None
    spatial = image.ndim - 2
    affine = torch.as_tensor(affine, dtype=torch.float64)
    affines = affine.reshape(-1, *affine.shape[-2:])
    if len(affines) == 1:
        affines = affines.expand(image.shape[0], -1, -1)
    return torch.stack([affine_to_spacing(a, r=spatial, dtype=torch.float64) for a in affines])
