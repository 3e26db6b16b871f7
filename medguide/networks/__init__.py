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
from medguide.networks.complexity import NetworkComplexity, complexity, equal_parameter_width, parameter_count
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
from medguide.networks.maml import SINGLE_MODALITY_ROUTES, MAMLNet, ModalityAwareFusion
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
    "NetworkComplexity",
    "SINGLE_MODALITY_ROUTES",
    "UNet",
    "UNetSizeRule",
    "complexity",
    "equal_parameter_width",
    "image_encoder",
    "image_encoder_names",
    "load_encoder_weights",
    "parameter_count",
    "unet_size_rule",
    "unet_widths",
]
