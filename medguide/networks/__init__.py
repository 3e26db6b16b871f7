"""Networks of the medguide methods, built from shared blocks."""

from medguide.networks.baselines import ModalityUNet
from medguide.networks.maml import MAMLNet, ModalityAwareFusion
from medguide.networks.unet import UNet, decode_branches, unet_widths

__all__ = ["MAMLNet", "ModalityAwareFusion", "ModalityUNet", "UNet", "decode_branches", "unet_widths"]
