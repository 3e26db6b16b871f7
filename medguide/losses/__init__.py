"""Losses of the medguide methods."""

from medguide.losses.maml import MAMLLoss, nnunet_deep_supervision_weights

__all__ = ["MAMLLoss", "nnunet_deep_supervision_weights"]
