"""Networks of the medguide methods (one architecture per file), built from the shared :mod:`.blocks`."""

from medguide.networks.baselines import ModalityUNet
from medguide.networks.blocks import UNetSizeRule, unet_size_rule, unet_widths
from medguide.networks.maml import MAMLNet, ModalityAwareFusion
from medguide.networks.unet import UNet

__all__ = ["MAMLNet", "ModalityAwareFusion", "ModalityUNet", "UNet", "UNetSizeRule", "unet_size_rule", "unet_widths"]
