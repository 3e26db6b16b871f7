"""Networks of the medguide methods (one architecture per file), built from the shared :mod:`.blocks`."""

from medguide.networks.baselines import ModalityUNet
from medguide.networks.blocks import (
    ConceptHead,
    ConceptOutputs,
    GatedAttentionMIL,
    MultiTaskHead,
    UNetSizeRule,
    unet_size_rule,
    unet_widths,
)
from medguide.networks.dmg import (
    FusionClassifier,
    GuidanceMLP,
    GuidedClassifier,
    GuidedHead,
    LatentClassifier,
    LatentEncoder,
    image_encoder,
    image_encoder_names,
    load_encoder_weights,
)
from medguide.networks.encoders import RegionEncoder, RegionFeatures, region_encoder, region_encoder_names
from medguide.networks.maml import MAMLNet, ModalityAwareFusion
from medguide.networks.octcoda import ConceptClassifier
from medguide.networks.reports import HuggingFaceReportEncoder, TransformerReportEncoder
from medguide.networks.unet import UNet
from medguide.networks.xattn import AttributeLocalizer, GuidanceOutputs, LocalizerOutputs, ReportGuidance

__all__ = [
    "RegionEncoder",
    "RegionFeatures",
    "region_encoder",
    "region_encoder_names",
    "HuggingFaceReportEncoder",
    "TransformerReportEncoder",
    "AttributeLocalizer",
    "GuidanceOutputs",
    "LocalizerOutputs",
    "ReportGuidance",
    "ConceptClassifier",
    "ConceptHead",
    "ConceptOutputs",
    "FusionClassifier",
    "GatedAttentionMIL",
    "GuidanceMLP",
    "GuidedClassifier",
    "GuidedHead",
    "LatentClassifier",
    "LatentEncoder",
    "MAMLNet",
    "ModalityAwareFusion",
    "ModalityUNet",
    "MultiTaskHead",
    "UNet",
    "UNetSizeRule",
    "image_encoder",
    "image_encoder_names",
    "load_encoder_weights",
    "unet_size_rule",
    "unet_widths",
]
