"""Tiny seeded encoders for the DMG tests: small enough to train in a test, the same weights on every run."""

from __future__ import annotations

import torch

from medguide.networks import LatentEncoder, image_encoder

# DenseNet settings by pooled latent width: 4 + 4 features in one dense layer per block -> 8; 8 + 2 x 4 -> 16
TINY_DENSENET = {
    8: {"init_features": 4, "growth_rate": 4, "block_config": (1, 1)},
    16: {"init_features": 8, "growth_rate": 4, "block_config": (2, 2)},
}


def tiny_densenet(spatial_dims: int = 3, in_channels: int = 1, latent: int = 8, seed: int = 0) -> LatentEncoder:
    """A DenseNet :func:`~medguide.networks.image_encoder` of ``latent`` (8 or 16) features, seeded with ``seed``."""
    torch.manual_seed(seed)
    return image_encoder("densenet", spatial_dims, in_channels, **TINY_DENSENET[latent])
