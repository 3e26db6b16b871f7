"""Building blocks that medguide's networks are made of, apart from the architectures that combine them.

As dynamic-network-architectures keeps ``building_blocks/`` apart from ``architectures/``: a stage here is written
once and every method's network (``medguide/networks/<method>.py``) reuses it.
"""

from medguide.networks.blocks.attention_mil import GatedAttentionMIL
from medguide.networks.blocks.concept_head import ConceptHead, ConceptOutputs, check_concepts
from medguide.networks.blocks.cross_attention import CrossAttention, flatten_regions
from medguide.networks.blocks.frozen import Frozen
from medguide.networks.blocks.heads import MultiTaskHead
from medguide.networks.blocks.norms import InstanceNorm2d, InstanceNorm3d, instance_norm, instance_norm_factory_name
from medguide.networks.blocks.unet_decoder import UNetDecoder
from medguide.networks.blocks.unet_encoder import UNetEncoder, UNetSizeRule, unet_size_rule, unet_widths

__all__ = [
    "ConceptHead",
    "ConceptOutputs",
    "check_concepts",
    "CrossAttention",
    "Frozen",
    "GatedAttentionMIL",
    "InstanceNorm2d",
    "InstanceNorm3d",
    "MultiTaskHead",
    "UNetDecoder",
    "UNetEncoder",
    "UNetSizeRule",
    "instance_norm",
    "flatten_regions",
    "instance_norm_factory_name",
    "unet_size_rule",
    "unet_widths",
]
