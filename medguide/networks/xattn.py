"""Report-guided pneumonia localisation: an image-only attribute localiser and the report guidance that trains it.

After Bhalodia et al., "Improving Pneumonia Localization via Cross-Attention on Medical Images and Reports",
MICCAI 2021, https://arxiv.org/abs/2110.03094 (``../shared/METHODS.md`` section 4). The paper gives the idea, not the
architecture; this one is ours (the bundle's ``docs/README.md`` gives the reasons):

- :class:`AttributeLocalizer` (what inference runs, the image alone): a MONAI encoder's last feature map, projected
  to ``dim``, gives region features ``[B, N, dim]``; one learned query per report attribute
  (:data:`medguide.data.REPORT_ATTRIBUTES`: opacity, left, right, upper, middle, lower, extensive) attends over the
  regions (:class:`medguide.networks.blocks.CrossAttention`), giving a map per attribute ``[B, A, w, h]`` and, from
  the attended features, the attribute logits ``[B, A]``. The opacity query's map is the localisation map.
- :class:`ReportGuidance` (training only): the report's tokens (any report encoder,
  :mod:`medguide.networks.reports`) attend over the same regions; a learned relevance per token weighs the token
  maps into one text-guided map ``[B, w, h]``, which pools the regions into a feature that classifies the attributes
  too. The localiser's opacity map is trained toward this map (stop-gradient), so at test time it looks where a
  report would have pointed.

Trained without :class:`ReportGuidance` (attribute labels only), the same localiser is the CAM-style baseline the
method must beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from medguide.networks.blocks.cross_attention import CrossAttention, flatten_regions

__all__ = ["AttributeLocalizer", "GuidanceOutputs", "LocalizerOutputs", "ReportGuidance"]


class LocalizerOutputs(NamedTuple):
    """What :class:`AttributeLocalizer` gives with ``with_maps=True``.

    ``logits`` ``[B, A]``; ``maps`` ``[B, A, w, h]``, each map summing to 1 over the grid; ``regions`` ``[B, N, dim]``
    (``N = w * h``; region ``n`` is grid cell ``(n // h, n % h)``, x first as in MONAI's layout), which
    :class:`ReportGuidance` attends over.
    """

    logits: torch.Tensor
    maps: torch.Tensor
    regions: torch.Tensor


class GuidanceOutputs(NamedTuple):
    """What :class:`ReportGuidance` gives: attribute ``logits`` ``[B, A]`` from the text-guided feature, the
    text-guided ``map`` ``[B, w, h]`` (sums to 1), and the token ``weights`` ``[B, L]`` (sum to 1 over real tokens)."""

    logits: torch.Tensor
    map: torch.Tensor
    weights: torch.Tensor


class AttributeLocalizer(nn.Module):
    """Image-only attribute classification and one attention map per attribute.

    Example::

        encoder = medguide.networks.region_encoder("resnet50", 1, conv1_t_stride=2)
        net = AttributeLocalizer(encoder.module, encoder.channels, REPORT_ATTRIBUTES, dim=256)
        logits = net(films)                          # [B, 1, 512, 512] -> [B, 7], unbounded (sigmoid: probability)
        out = net(films, with_maps=True)             # out.maps [B, 7, 16, 16] (x first)

    Args:
        encoder: a module mapping ``[B, C, W, H]`` to region features ``[B, channels, w, h]``
            (:func:`medguide.networks.region_encoder`).
        channels: the encoder's output channels.
        attributes: the attribute names, in the order of the logits (the first is the one localised, ``opacity``).
        dim: width of the region features after a 1x1 projection, and of the queries.
        num_heads: attention heads of the attribute queries.
        dropout: dropout on the attended features (training only).

    Raises:
        ValueError: no attributes, or ``dim`` not divisible by ``num_heads``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        channels: int,
        attributes: Sequence[str],
        dim: int = 256,
        num_heads: int = 4,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.attributes = tuple(attributes)
        if not self.attributes:
            raise ValueError("AttributeLocalizer needs at least one attribute.")
        self.encoder = encoder
        self.projection = nn.Conv2d(channels, dim, kernel_size=1)
        self.queries = nn.Parameter(torch.randn(len(self.attributes), dim) * dim**-0.5)
        self.attention = CrossAttention(dim, num_heads, dropout=dropout)
        # one linear classifier per attribute, on that attribute's attended feature
        self.weight = nn.Parameter(torch.zeros(len(self.attributes), dim))
        self.bias = nn.Parameter(torch.zeros(len(self.attributes)))
        nn.init.normal_(self.weight, std=dim**-0.5)
        self.dim = dim

    def forward(self, image: torch.Tensor, with_maps: bool = False) -> torch.Tensor | LocalizerOutputs:
        """Attribute logits ``[B, A]``, or :class:`LocalizerOutputs` with ``with_maps``.

        Args:
            image: ``[B, C, W, H]`` films (grey, normalised as the bundle's transforms do).
            with_maps: also return the maps and the region features.
        """
        features = self.projection(self.encoder(image))
        grid = features.shape[2:]
        regions = flatten_regions(features)
        queries = self.queries.unsqueeze(0).expand(len(image), -1, -1)
        attended, maps = self.attention(queries, regions)
        logits = (attended * self.weight).sum(-1) + self.bias
        if not with_maps:
            return logits
        return LocalizerOutputs(logits, maps.reshape(len(image), len(self.attributes), *grid), regions)


class ReportGuidance(nn.Module):
    """The text side of training: report tokens attend over the localiser's regions, giving a text-guided map.

    Each token's map comes from :class:`medguide.networks.blocks.CrossAttention`; a linear score per token, softmax
    over the real tokens, weighs them into one map ``[B, w, h]`` (so words such as "right lower lobe consolidation"
    can dominate "heart size is normal"); the regions pooled by that map give a feature whose linear classifier
    predicts the report's attributes, which is what trains the map to point at the finding.

    Args:
        report_encoder: ``forward(texts) -> (features [B, L, text_dim], mask [B, L])``
            (:class:`medguide.networks.TransformerReportEncoder`, :class:`medguide.networks.HuggingFaceReportEncoder`).
        text_dim: the report encoder's feature width.
        dim: the localiser's region width (:class:`AttributeLocalizer`'s ``dim``).
        num_attributes: ``A``.
        num_heads: attention heads.

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``.
    """

    def __init__(
        self, report_encoder: nn.Module, text_dim: int, dim: int, num_attributes: int, num_heads: int = 4
    ) -> None:
        super().__init__()
        self.report_encoder = report_encoder
        self.projection = nn.Linear(text_dim, dim)
        self.attention = CrossAttention(dim, num_heads)
        self.relevance = nn.Linear(dim, 1)
        self.classifier = nn.Linear(dim, num_attributes)

    def forward(self, texts: Sequence[str], regions: torch.Tensor, grid: Sequence[int]) -> GuidanceOutputs:
        """The text-guided map and attribute logits.

        Args:
            texts: ``B`` report texts.
            regions: ``[B, N, dim]``, :class:`LocalizerOutputs`'s ``regions``.
            grid: ``(w, h)`` with ``w * h = N``.
        """
        tokens, mask = self.report_encoder(list(texts))
        tokens = self.projection(tokens)
        _, token_maps = self.attention(tokens, regions)
        scores = self.relevance(tokens).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        text_map = torch.einsum("bl,bln->bn", weights, token_maps)
        feature = torch.einsum("bn,bnd->bd", text_map, regions)
        return GuidanceOutputs(self.classifier(feature), text_map.reshape(len(regions), *grid), weights)
