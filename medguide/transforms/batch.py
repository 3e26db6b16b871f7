"""Random augmentation of a whole batch on the device it trains on.

MONAI's dictionary transforms augment one image at a time in the data loader. For a small network on a CPU (the
OCT-CoDA bundle at CPU scale: 2.2 ms of compute per fundus + OCT pair) that per-image work (about 4.6 ms a pair for
a flip, an affine and a contrast change of each image) made the loader the bottleneck. :class:`RandBatchAugment`
draws the same kinds of parameters per image but applies them to the collated batch in a few tensor operations
(MONAI's :class:`monai.networks.layers.AffineTransform` for the affine), after the batch reached the training
device, so a cached data set needs no random transform at all. :class:`medguide.engines.AugmentedBatch` applies it
in a trainer's ``prepare_batch``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.layers import AffineTransform

__all__ = ["RandBatchAugment"]


class RandBatchAugment:
    """Per-image random flip, rotation and scaling, and gamma contrast of a batch of 2D images ``[B, C, H, W]``.

    The parameters follow MONAI's ``RandFlipd``, ``RandAffined`` and ``RandAdjustContrastd`` with the same names,
    each drawn independently for every image of the batch:

    - flip along ``flip_axis`` (a spatial axis: 0 rows, 1 columns) with probability ``flip_prob``;
    - with probability ``affine_prob``, a rotation by an angle uniform in ``[-rotate_range, rotate_range]`` radians
      and a scaling by ``1 + u``, ``u`` uniform in ``[-scale_range, scale_range]``, about the image centre in pixel
      units (so a non-square image is rotated, not sheared), resampled bilinearly with ``padding_mode`` outside;
      as in MONAI, the matrix maps output to input pixels (a factor above 1 shows the image smaller);
    - with probability ``gamma_prob``, MONAI's ``AdjustContrast``: the image (all channels together) rescaled to
      ``[0, 1]`` by its minimum and maximum, raised to a power uniform in ``gamma``, and scaled back to its range,
      so a normalised image with negative values keeps its range.

    Parameters are drawn on the CPU from ``generator`` (torch's default generator unless :meth:`set_random_state`
    gave one), so a seeded run draws the same augmentation on any device; the images stay on theirs. The output
    has the input's dtype and device; a ``MetaTensor`` comes back as a plain tensor (a training batch needs no
    metadata).

    Example::

        augment = RandBatchAugment(flip_prob=0.5, affine_prob=0.5, rotate_range=0.26, scale_range=0.1,
                                   gamma_prob=0.3, gamma=(0.8, 1.25))
        images = augment(images)     # [16, 3, 224, 224] on cuda:0 -> [16, 3, 224, 224] on cuda:0

    Args:
        flip_prob: probability of the flip, in ``[0, 1]``.
        flip_axis: the spatial axis flipped (MONAI's ``spatial_axis``): 0 or 1.
        affine_prob: probability of the rotation and scaling, in ``[0, 1]``.
        rotate_range: the largest rotation in radians (non-negative).
        scale_range: the largest relative change of scale, in ``[0, 1)``.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"`` (``torch.nn.functional.grid_sample``'s).
        gamma_prob: probability of the contrast change, in ``[0, 1]``.
        gamma: the range of the exponent, two positive numbers ``(low, high)``.

    Raises:
        ValueError: a probability outside ``[0, 1]``, a negative range, a ``scale_range`` of 1 or more, a
            ``flip_axis`` other than 0 or 1, a ``gamma`` that is not two positive increasing numbers; (when called)
            an input that is not ``[B, C, H, W]``.
    """

    def __init__(
        self,
        flip_prob: float = 0.0,
        flip_axis: int = 1,
        affine_prob: float = 0.0,
        rotate_range: float = 0.0,
        scale_range: float = 0.0,
        padding_mode: str = "zeros",
        gamma_prob: float = 0.0,
        gamma: Sequence[float] = (0.5, 4.5),
    ) -> None:
        for name, value in (("flip_prob", flip_prob), ("affine_prob", affine_prob), ("gamma_prob", gamma_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"RandBatchAugment: {name} must be in [0, 1], got {value}.")
        if flip_axis not in (0, 1):
            raise ValueError(f"RandBatchAugment: flip_axis must be 0 (rows) or 1 (columns), got {flip_axis}.")
        if rotate_range < 0 or not 0 <= scale_range < 1:
            raise ValueError(
                f"RandBatchAugment: rotate_range must be >= 0 and scale_range in [0, 1), got {rotate_range} and "
                f"{scale_range}."
            )
        gamma = tuple(float(g) for g in gamma)
        if len(gamma) != 2 or not 0 < gamma[0] <= gamma[1]:
            raise ValueError(f"RandBatchAugment: gamma must be two positive numbers (low, high), got {gamma}.")
        self.flip_prob, self.flip_axis = flip_prob, flip_axis
        self.affine_prob, self.rotate_range, self.scale_range = affine_prob, rotate_range, scale_range
        self.gamma_prob, self.gamma = gamma_prob, gamma
        self.resample = AffineTransform(
            normalized=False, zero_centered=True, padding_mode=padding_mode, align_corners=False
        )
        self.generator: torch.Generator | None = None

    def set_random_state(self, seed: int | None = None) -> RandBatchAugment:
        """Draw from a generator of its own seeded with ``seed`` (``None``: back to torch's default generator)."""
        self.generator = None if seed is None else torch.Generator().manual_seed(int(seed))
        return self

    def _uniform(self, n: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=self.generator, dtype=torch.float64)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The batch, each image augmented with its own parameters.

        Args:
            images: ``[B, C, H, W]`` float images, any device.

        Raises:
            ValueError: ``images`` is not four-dimensional.
        """
        if images.ndim != 4:
            raise ValueError(f"RandBatchAugment takes 2D images [B, C, H, W], got shape {tuple(images.shape)}.")
        x = images.as_tensor() if hasattr(images, "as_tensor") else images
        n, device = x.shape[0], x.device
        flip = self._uniform(n) < self.flip_prob
        affine = self._uniform(n) < self.affine_prob
        angle = self._uniform(n, -self.rotate_range, self.rotate_range)
        scale = 1.0 + self._uniform(n, -self.scale_range, self.scale_range)
        contrast = self._uniform(n) < self.gamma_prob
        power = self._uniform(n, *self.gamma)

        if flip.any():
            chosen = flip.to(device).view(n, 1, 1, 1)
            x = torch.where(chosen, x.flip(2 + self.flip_axis), x)
        if affine.any():
            cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
            theta = torch.zeros(n, 3, 3, dtype=torch.float64)
            theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
            theta[:, 2, 2] = 1.0
            theta[~affine] = torch.eye(3, dtype=torch.float64)
            moved = self.resample(x.float(), theta.float().to(device)).to(x.dtype)
            x = torch.where(affine.to(device).view(n, 1, 1, 1), moved, x)
        if contrast.any():
            flat = x.reshape(n, -1)
            low = flat.amin(dim=1).view(n, 1, 1, 1)
            span = (flat.amax(dim=1).view(n, 1, 1, 1) - low).clamp_min(0)
            exponent = power.to(device=device, dtype=x.dtype).view(n, 1, 1, 1)
            adjusted = ((x - low) / (span + 1e-7)).clamp_min(0) ** exponent * span + low
            x = torch.where(contrast.to(device).view(n, 1, 1, 1), adjusted, x)
        return x

    def __repr__(self) -> str:
        return (
            f"RandBatchAugment(flip_prob={self.flip_prob}, flip_axis={self.flip_axis}, affine_prob={self.affine_prob}, "
            f"rotate_range={self.rotate_range}, scale_range={self.scale_range}, "
            f"padding_mode={self.resample.padding_mode!r}, gamma_prob={self.gamma_prob}, gamma={self.gamma})"
        )
