"""Report-guided pneumonia localisation: an image-only attribute localiser and the report guidance that trains it.

After Bhalodia et al., "Improving Pneumonia Localization via Cross-Attention on Medical Images and Reports",
MICCAI 2021, https://arxiv.org/abs/2110.03094 (``../shared/METHODS.md`` section 4). The paper gives the idea, not the
architecture; this one is ours (the bundle's ``docs/README.md`` gives the reasons):

- :class:`AttributeLocalizer` (what inference runs, the image alone): a MONAI encoder's last feature map, projected
  to ``dim`` (1x1 convolution and ReLU), gives region features ``[B, N, dim]``; one learned query per report attribute
  (:data:`medguide.data.REPORT_ATTRIBUTES`: opacity, left, right, upper, middle, lower, extensive) scores every region
  (scaled dot product, as an attention score). The score is the region's *evidence* for the attribute: the
  attribute's map is the softmax of its scores over the regions, and its logit the map-weighted mean of the scores
  (a soft maximum), so a film is called positive only through the regions its map points at. The opacity map is the
  localisation map.
- :class:`ReportGuidance` (training only): the report's tokens attend over the same regions, with their grid
  positions, through :class:`medguide.networks.blocks.CrossAttention`; a learned relevance per token weighs the
  token maps into a *location* map (where the report's words point). The text-guided map is the localiser's opacity
  evidence re-weighted by that location map, and pools every attribute's evidence into the text-path logits. The
  localiser's opacity map is trained toward this map (stop-gradient), so at test time it looks where a report would
  have pointed.

Trained without :class:`ReportGuidance` (attribute labels only), the same localiser is the CAM-style baseline the
method must beat.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from medguide.networks.blocks.cross_attention import CrossAttention, flatten_regions

__all__ = ["AttributeLocalizer", "GuidanceOutputs", "LocalizerOutputs", "ReportGuidance", "grid_positions"]


class LocalizerOutputs(NamedTuple):
    """What :class:`AttributeLocalizer` gives with ``with_maps=True``.

    ``logits`` ``[B, A]``; ``maps`` ``[B, A, w, h]``, each map summing to 1 over the grid; ``regions`` ``[B, N, dim]``
    (``N = w * h``; region ``n`` is grid cell ``(n // h, n % h)``, x first as in MONAI's layout) and ``evidence``
    ``[B, A, w, h]`` (each region's unbounded score per attribute, the maps' softmax input), which
    :class:`ReportGuidance` uses.
    """

    logits: torch.Tensor
    maps: torch.Tensor
    regions: torch.Tensor
    evidence: torch.Tensor


class GuidanceOutputs(NamedTuple):
    """What :class:`ReportGuidance` gives: attribute ``logits`` ``[B, A]`` (the evidence pooled by the text-guided
    map), the text-guided ``map`` ``[B, w, h]`` (sums to 1), the report's ``location`` map ``[B, w, h]`` (sums to 1)
    and the token ``weights`` ``[B, L]`` (sum to 1 over real tokens)."""

    logits: torch.Tensor
    map: torch.Tensor
    location: torch.Tensor
    weights: torch.Tensor


def _evidence_pooling(evidence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps and logits from region scores ``[B, A, N]``: ``maps = softmax(evidence)`` over ``N`` (sum to 1) and
    ``logits = sum(maps * evidence)`` ``[B, A]``, a soft maximum of the scores (between their mean and their max)."""
    maps = evidence.softmax(dim=-1)
    return (maps * evidence).sum(-1), maps


class AttributeLocalizer(nn.Module):
    """Image-only attribute classification and one evidence map per attribute.

    Example::

        encoder = medguide.networks.region_encoder("resnet50", 1, conv1_t_stride=2)
        net = AttributeLocalizer(encoder.module, encoder.channels, REPORT_ATTRIBUTES, dim=256)
        logits = net(films)                          # [B, 1, 512, 512] -> [B, 7], unbounded (sigmoid: probability)
        out = net(films, with_maps=True)             # out.maps [B, 7, 16, 16] (x first)

    Why evidence pooling rather than classifying an attention-pooled feature: deep region features see most of the
    film, so a classifier on a pooled feature is as right with a map on one corner as on the lesion, and such maps
    collapsed onto one or two cells outside the lungs in our runs (bundle docs, "Design"). Here the logit is made of
    the mapped regions' own scores, so a map off the lesion costs the classification.

    Args:
        encoder: a module mapping ``[B, C, W, H]`` to region features ``[B, channels, w, h]``
            (:func:`medguide.networks.region_encoder`).
        channels: the encoder's output channels.
        attributes: the attribute names, in the order of the logits (the first is the one localised, ``opacity``).
        dim: width of the region features after a 1x1 projection, and of the queries.
        dropout: dropout on the region features before scoring (training only).

    Raises:
        ValueError: no attributes, or ``dropout`` not in ``[0, 1)``.
    """

    def __init__(
        self, encoder: nn.Module, channels: int, attributes: Sequence[str], dim: int = 256, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.attributes = tuple(attributes)
        if not self.attributes:
            raise ValueError("AttributeLocalizer needs at least one attribute.")
        if not 0 <= dropout < 1:
            raise ValueError(f"AttributeLocalizer: dropout must be in [0, 1), got {dropout!r}.")
        self.encoder = encoder
        self.projection = nn.Conv2d(channels, dim, kernel_size=1)
        self.queries = nn.Parameter(torch.randn(len(self.attributes), dim) * dim**-0.5)
        self.bias = nn.Parameter(torch.zeros(len(self.attributes)))
        self.dropout = nn.Dropout(dropout)
        self.dim = dim

    def forward(self, image: torch.Tensor, with_maps: bool = False) -> torch.Tensor | LocalizerOutputs:
        """Attribute logits ``[B, A]``, or :class:`LocalizerOutputs` with ``with_maps``.

        Args:
            image: ``[B, C, W, H]`` films (grey, normalised as the bundle's transforms do).
            with_maps: also return the maps, the region features and the evidence.
        """
        features = torch.relu(self.projection(self.encoder(image)))
        grid = features.shape[2:]
        regions = flatten_regions(features)
        # scores and their softmax in float32 under autocast: in bfloat16 (8 bits of mantissa) the small differences
        # between regions' scores are lost, and the maps with them (the baseline's validation opacity AUC
        # 0.57-0.59 against 0.68-0.71 in float32 in our runs)
        with torch.autocast(image.device.type, enabled=False):
            evidence = torch.einsum("bnd,ad->ban", self.dropout(regions).float(), self.queries.float())
            evidence = evidence * self.dim**-0.5 + self.bias.float()[:, None]
            logits, maps = _evidence_pooling(evidence)
        if not with_maps:
            return logits
        shape = (len(image), len(self.attributes), *grid)
        return LocalizerOutputs(logits, maps.reshape(shape), regions, evidence.reshape(shape))


def grid_positions(grid: Sequence[int], device: torch.device | str | None = None) -> torch.Tensor:
    """Each cell's centre on a ``(w, h)`` grid as ``(x, y)`` in ``[-1, 1]``, ``[w * h, 2]`` float32 in region order
    (cell ``n`` is ``(n // h, n % h)``, :func:`medguide.networks.blocks.flatten_regions`), on ``device`` (default:
    the CPU)."""
    axes = [(torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2 - 1 for size in grid]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(grid))


class ReportGuidance(nn.Module):
    """The text side of training: report tokens attend over the localiser's regions, giving a text-guided map.

    Each token's map comes from :class:`medguide.networks.blocks.CrossAttention` over the regions plus a learned
    embedding of their grid position (so "right lower lobe" can point at a place, not only at a look); a linear
    score per token, softmax over the real tokens, weighs them into the report's location map ``g`` ``[B, N]``
    (so words such as "right lower lobe consolidation" can dominate "heart size is normal"). The text-guided map is
    ``softmax(opacity evidence + log g)``: the image's own evidence, kept where the report points. Pooling every
    attribute's evidence with it gives the text-path logits, which the report's attributes supervise.

    Args:
        report_encoder: ``forward(texts) -> (features [B, L, text_dim], mask [B, L])``
            (:class:`medguide.networks.TransformerReportEncoder`, :class:`medguide.networks.HuggingFaceReportEncoder`).
        text_dim: the report encoder's feature width.
        dim: the localiser's region width (:class:`AttributeLocalizer`'s ``dim``).
        num_heads: attention heads.
        opacity_index: the position of ``opacity`` among the attributes (its evidence is the one re-weighted).

    Raises:
        ValueError: ``dim`` not divisible by ``num_heads``.
    """

    def __init__(
        self, report_encoder: nn.Module, text_dim: int, dim: int, num_heads: int = 4, opacity_index: int = 0
    ) -> None:
        super().__init__()
        self.report_encoder = report_encoder
        self.projection = nn.Linear(text_dim, dim)
        self.position = nn.Sequential(nn.Linear(2, dim), nn.GELU(), nn.Linear(dim, dim))
        self.attention = CrossAttention(dim, num_heads)
        self.relevance = nn.Linear(dim, 1)
        self.opacity_index = opacity_index

    def forward(self, texts: Sequence[str], regions: torch.Tensor, evidence: torch.Tensor) -> GuidanceOutputs:
        """The text-guided map and attribute logits.

        Args:
            texts: ``B`` report texts.
            regions: ``[B, N, dim]``, :class:`LocalizerOutputs`'s ``regions``.
            evidence: ``[B, A, w, h]`` with ``w * h = N``, :class:`LocalizerOutputs`'s ``evidence``.
        """
        grid = evidence.shape[2:]
        tokens, mask = self.report_encoder(list(texts))
        tokens = self.projection(tokens)
        keys = regions + self.position(grid_positions(grid, regions.device)).to(regions.dtype)
        _, token_maps = self.attention(tokens, keys)
        scores = self.relevance(tokens).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = scores.softmax(dim=-1)
        location = torch.einsum("bl,bln->bn", weights, token_maps.to(weights.dtype))
        with torch.autocast(regions.device.type, enabled=False):  # in float32, as the localiser's evidence
            flat = evidence.flatten(2).float()
            text_map = (flat[:, self.opacity_index] + location.float().clamp_min(1e-6).log()).softmax(dim=-1)
            logits = torch.einsum("bn,ban->ba", text_map, flat)
        return GuidanceOutputs(logits, text_map.reshape(len(flat), *grid), location.reshape(len(flat), *grid), weights)
