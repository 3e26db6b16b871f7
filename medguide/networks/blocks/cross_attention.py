"""Cross-attention of queries over image regions, returning the attention maps with their gradient.

Written once for report-guided localisation (Bhalodia et al., "Improving Pneumonia Localization via Cross-Attention
on Medical Images and Reports", MICCAI 2021, https://arxiv.org/abs/2110.03094; ``../shared/METHODS.md`` section 4)
and reused there twice: report tokens attending over the regions (the text-guided map) and learned attribute queries
attending over the same regions (the image-only map).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CrossAttention", "flatten_regions"]


def flatten_regions(features: torch.Tensor) -> torch.Tensor:
    """Region features ``[B, D, *spatial]`` (a feature map) as a sequence ``[B, N, D]``, ``N = prod(spatial)``.

    The regions are in the feature map's row-major order, so a map ``[B, Q, N]`` from :class:`CrossAttention` goes
    back to the grid with ``maps.reshape(B, Q, *spatial)``. In medguide's MONAI layout a 2D feature map is
    ``[B, D, w, h]`` (spatial axes x, y), and so is the grid the map goes back to.

    Raises:
        ValueError: if ``features`` has fewer than 3 dimensions.
    """
    if features.ndim < 3:
        raise ValueError(f"flatten_regions expects features [B, D, *spatial], got shape {tuple(features.shape)}.")
    return features.flatten(2).transpose(1, 2)


class CrossAttention(nn.Module):
    """Queries ``[B, Q, D]`` attend over regions ``[B, N, D]``; gives the attended features and one map per query.

    Multi-head scaled dot-product attention (``torch.nn.MultiheadAttention``, queries projected from the queries,
    keys and values from the regions, an output projection). The map of a query is its attention weights over the
    N regions averaged over the heads: ``[B, Q, N]``, non-negative, each row summing to 1 over the regions, 0 at
    masked regions. The maps keep their gradient, so a loss on them (e.g.
    :class:`medguide.losses.MapAlignmentLoss`) trains the block.

    Why not MONAI's ``CrossAttentionBlock``: it takes no key padding mask, and its ``save_attn`` keeps a detached
    copy of the weights as module state, so no loss could train through the map and a wrapped (DDP) or traced
    network could not return it from ``forward``. ``nn.MultiheadAttention`` has the mask and returns the
    head-averaged weights with their gradient. Its own dropout is left at 0 because the weights it returns are taken
    after that dropout (they would no longer sum to 1 in training); ``dropout`` here acts on the attended features.

    Args:
        dim: ``D``, the width of the queries, and of the attended features returned.
        num_heads: attention heads (``dim`` must be divisible by it).
        region_dim: width of the region features when it is not ``dim`` (keys and values are projected from it).
        dropout: dropout on the attended features (training only).
        bias: biases in the input and output projections.

    Raises:
        ValueError: if ``dim``, ``num_heads`` or ``region_dim`` is not a positive integer, ``dim`` is not divisible
            by ``num_heads``, or ``dropout`` is not in ``[0, 1)``.

    Example:
        >>> block = CrossAttention(32, num_heads=4)
        >>> regions = flatten_regions(torch.randn(2, 32, 7, 7))  # [2, 49, 32]
        >>> attended, maps = block(torch.randn(2, 5, 32), regions)
        >>> tuple(attended.shape), tuple(maps.shape), bool(torch.allclose(maps.sum(-1), torch.ones(2, 5)))
        ((2, 5, 32), (2, 5, 49), True)
    """

    def __init__(
        self, dim: int, num_heads: int = 8, region_dim: int | None = None, dropout: float = 0.0, bias: bool = True
    ) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_heads", num_heads), ("region_dim", region_dim or dim)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"CrossAttention: {name} must be a positive integer, got {value!r}.")
        if dim % num_heads:
            raise ValueError(f"CrossAttention: dim {dim} is not divisible by num_heads {num_heads}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"CrossAttention: dropout must be in [0, 1), got {dropout!r}.")
        self.dim = int(dim)
        self.region_dim = int(region_dim or dim)
        self.attention = nn.MultiheadAttention(
            self.dim,
            int(num_heads),
            dropout=0.0,
            bias=bias,
            kdim=self.region_dim,
            vdim=self.region_dim,
            batch_first=True,
        )
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, queries: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Attended features and attention maps.

        Args:
            queries: ``[B, Q, dim]`` (report tokens, or learned queries expanded over the batch).
            regions: ``[B, N, region_dim]``, or a feature map ``[B, region_dim, *spatial]`` (flattened with
                :func:`flatten_regions`).
            mask: ``[B, N]`` (or ``[B, *spatial]``) boolean, ``True`` for a region to attend to; ``None``: all.

        Returns:
            ``(attended, maps)``: ``attended`` ``[B, Q, dim]``; ``maps`` ``[B, Q, N]`` in ``[0, 1]``, each row summing
            to 1 over the regions, 0 at masked regions.

        Raises:
            ValueError: if the shapes do not match each other or the block's widths, ``mask`` is not boolean, or a
                sample's mask has no ``True`` (nothing to attend to), naming the sample.
        """
        if regions.ndim > 3:
            regions = flatten_regions(regions)
        if mask is not None and mask.ndim > 2:
            mask = mask.flatten(1)
        # a traced graph holds the traced input's shapes anyway; checking them there only warns
        if not torch.jit.is_tracing():
            self._check(queries, regions, mask)
        attended, maps = self.attention(
            queries,
            regions,
            regions,
            key_padding_mask=None if mask is None else ~mask,
            need_weights=True,
            average_attn_weights=True,
        )
        return self.dropout(attended), maps

    def _check(self, queries: torch.Tensor, regions: torch.Tensor, mask: torch.Tensor | None) -> None:
        if queries.ndim != 3 or queries.shape[-1] != self.dim:
            raise ValueError(f"CrossAttention expects queries [B, Q, {self.dim}], got {tuple(queries.shape)}.")
        if regions.ndim != 3 or regions.shape[-1] != self.region_dim:
            raise ValueError(
                f"CrossAttention expects regions [B, N, {self.region_dim}] or [B, {self.region_dim}, *spatial], "
                f"got {tuple(regions.shape)}."
            )
        if regions.shape[0] != queries.shape[0] or regions.shape[1] == 0:
            raise ValueError(
                f"CrossAttention: queries {tuple(queries.shape)} and regions {tuple(regions.shape)} need the same "
                "batch size and at least one region."
            )
        if mask is None:
            return
        if mask.dtype != torch.bool:
            raise ValueError(
                f"CrossAttention: mask must be boolean (True for a region to attend to), got {mask.dtype}."
            )
        if tuple(mask.shape) != tuple(regions.shape[:2]):
            raise ValueError(
                f"CrossAttention: mask shape {tuple(mask.shape)} does not match the regions' [B, N] = "
                f"{tuple(regions.shape[:2])}."
            )
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"CrossAttention: no region to attend to (mask has no True) at batch index {empty}.")
