"""OCT-CoDA's network: an image encoder ending in a concept head; the OCT teacher and the fundus student are two
instances of it.

Wang et al., "MultiEYE: Dataset and Benchmark for OCT-Enhanced Retinal Disease Recognition from Fundus Images",
IEEE TMI 2025, https://arxiv.org/abs/2412.09402 (code: https://github.com/xmed-lab/MultiEYE;
``../shared/METHODS.md`` section 3). The teacher is trained on OCT B-scans with cross entropy, then frozen; the
student learns from fundus photographs with cross entropy plus the concept distillation losses of
:mod:`medguide.losses.concepts`, and alone is used at test time.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medguide.networks.blocks.concept_head import ConceptHead, ConceptOutputs

__all__ = ["ConceptClassifier"]


class ConceptClassifier(nn.Module):
    """``head(encoder(x))``: a pooled image encoder, then a :class:`~medguide.networks.blocks.ConceptHead`.

    MultiEYE's encoder is a ResNet-50 (2048 pooled features) initialised from FLAIR; ours is any
    :func:`~medguide.networks.image_encoder` (MONAI's ``resnet50``, ``densenet121``, ``efficientnet-*``...), from
    scratch unless the encoder was built with a local ``weights`` file, e.g. in a config::

        "encoder": "$medguide.networks.image_encoder('resnet50', 2, 3, weights=@encoder_weights)",
        "network": "$medguide.networks.ConceptClassifier(@encoder.module, @encoder.latent_features, @concepts, 9)"

    State-dict keys are ``encoder.*`` (the MONAI encoder's own) and ``head.*`` (``head.concepts`` is ``T``).

    Forward contract, the same in training and eval mode: ``x`` ``[B, in_channels, H, W]`` -> logits
    ``[B, num_classes]``, so the network is a plain MONAI classifier to MONAI's engines, inferers,
    ``verify_net_in_out``, ``torch.jit.trace`` and ``ckpt_export``; ``with_concepts=True`` returns a
    :class:`~medguide.networks.blocks.ConceptOutputs` (logits, ``similarity`` ``[B, K]`` in ``[-1, 1]``,
    ``second_level`` ``[B, K]``; ``.levels`` ``[B, 2, K]``) for the distillation iteration and for explanations.

    Args:
        encoder: returns pooled features ``[B, latent_features]`` (e.g. ``image_encoder(...).module``).
        latent_features: width of the encoder's output.
        concepts: ``T``, ``[K, d]`` text embeddings of the concepts (rows normalised here, kept fixed).
        num_classes: number of classes (at least 2; 9 in MultiEYE).

    Raises:
        ValueError: as :class:`~medguide.networks.blocks.ConceptHead` (``latent_features``, ``num_classes`` or
            ``concepts`` unusable).
    """

    def __init__(
        self, encoder: nn.Module, latent_features: int, concepts: torch.Tensor | np.ndarray, num_classes: int
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ConceptHead(latent_features, concepts, num_classes)

    @property
    def num_concepts(self) -> int:
        """``K``."""
        return self.head.num_concepts

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return self.head.num_classes

    def forward(self, x: torch.Tensor, with_concepts: bool = False) -> torch.Tensor | ConceptOutputs:
        """Logits ``[B, num_classes]``, or with ``with_concepts`` a :class:`ConceptOutputs`.

        Args:
            x: the image ``[B, in_channels, H, W]`` (fundus photograph for the student, OCT B-scan for the teacher).
            with_concepts: also return both concept-similarity levels.
        """
        return self.head(self.encoder(x), with_concepts=with_concepts)
