"""Networks of the medguide methods, built from shared blocks."""

from medguide.networks.maml import MAMLNet, ModalityAwareFusion
from medguide.networks.unet import UNet, unet_widths

__all__ = ["MAMLNet", "ModalityAwareFusion", "UNet", "unet_widths"]
