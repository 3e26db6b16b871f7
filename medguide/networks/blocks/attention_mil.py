"""Gated attention pooling of a bag of instance features (attention-based multiple-instance learning)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GatedAttentionMIL"]


class GatedAttentionMIL(nn.Module):
    """Pools a bag of instance features (e.g. the patch features of a whole-slide image) into one vector.

    CLAM-SB's gated attention (Lu et al., "Data-efficient and weakly supervised computational pathology on
    whole-slide images", Nature Biomedical Engineering 2021, https://doi.org/10.1038/s41551-020-00682-w; after
    Ilse et al., "Attention-based deep multiple instance learning", ICML 2018, https://arxiv.org/abs/1802.04712):

    - ``h = Dropout(ReLU(Linear(in_features, hidden)(x)))`` per instance;
    - ``a = tanh(Linear(hidden, attention)(h))``, ``b = sigmoid(Linear(hidden, attention)(h))``, each followed by
      dropout as in CLAM, and the score ``s = Linear(attention, 1)(a * b)``;
    - attention weights ``softmax(s)`` over the instances of each bag, and the pooled vector ``sum(weights * h)``.

    Bags of different sizes are batched by padding them to one size and passing a boolean ``mask`` (``True`` for
    a real instance): padded instances get zero attention and add nothing to the pooled vector, whatever they hold.

    Args:
        in_features: width of an instance feature (CLAM's ResNet-50 patch features: 1024).
        hidden: width of the projected instances and of the pooled vector (CLAM-SB: 512).
        attention: width of the two gating branches (CLAM-SB: 256).
        dropout: dropout after the projection and in both gating branches (CLAM: 0.25).

    Example:
        >>> pool = GatedAttentionMIL(1024, 512, 256)
        >>> pool(torch.randn(300, 1024)).shape  # one bag of 300 patches
        torch.Size([1, 512])
        >>> pooled, weights = pool(torch.randn(2, 40, 1024), mask=torch.ones(2, 40, dtype=torch.bool),
        ...                        return_attention=True)
        >>> pooled.shape, weights.shape
        (torch.Size([2, 512]), torch.Size([2, 40]))
    """

    def __init__(self, in_features: int = 1024, hidden: int = 512, attention: int = 256, dropout: float = 0.25) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("hidden", hidden), ("attention", attention)):
            if value < 1:
                raise ValueError(f"GatedAttentionMIL: {name} must be positive, got {value}.")
        self.in_features = in_features
        self.hidden = hidden
        self.fc = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.attention_a = nn.Sequential(nn.Linear(hidden, attention), nn.Tanh(), nn.Dropout(dropout))
        self.attention_b = nn.Sequential(nn.Linear(hidden, attention), nn.Sigmoid(), nn.Dropout(dropout))
        self.attention_c = nn.Linear(attention, 1)

    @property
    def out_features(self) -> int:
        """Width of the pooled vector (``hidden``)."""
        return self.hidden

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None = None, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Pooled bag features, the same in training and eval mode (dropout aside).

        Args:
            x: one bag ``[N, in_features]`` or a batch of bags ``[B, N, in_features]`` (padded to one ``N``).
            mask: ``[B, N]`` (or ``[N]`` for one bag), ``True`` for a real instance; ``None``: all are real.
            return_attention: also return the attention weights.

        Returns:
            the pooled features ``[B, hidden]`` (``B = 1`` for one bag), and with ``return_attention`` also the
            attention weights ``[B, N]`` (each row sums to 1, zero at padded instances).

        Raises:
            ValueError: if ``x`` is not 2D or 3D, its feature width is not ``in_features``, ``mask`` does not match
                it, or a bag is empty (``N = 0``, or a mask row with no ``True``), naming the bag.
        """
        if x.ndim == 2:
            x = x.unsqueeze(0)
            mask = None if mask is None else mask.reshape(1, -1)
        # a traced graph holds the traced input's shapes anyway; checking them there only warns
        if not torch.jit.is_tracing():
            self._check(x, mask)
        h = self.fc(x)
        scores = self.attention_c(self.attention_a(h) * self.attention_b(h)).squeeze(-1)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
            # padding may hold anything (even NaN); zero weight times NaN would still be NaN
            h = h.masked_fill(~mask.unsqueeze(-1), 0.0)
        weights = torch.softmax(scores, dim=1)
        pooled = torch.einsum("bn,bnh->bh", weights, h)
        return (pooled, weights) if return_attention else pooled

    def _check(self, x: torch.Tensor, mask: torch.Tensor | None) -> None:
        if x.ndim != 3:
            raise ValueError(f"GatedAttentionMIL takes a bag [N, D] or bags [B, N, D], got shape {tuple(x.shape)}.")
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"GatedAttentionMIL expects instance features of width {self.in_features}, got {x.shape[-1]} "
                f"(input shape {tuple(x.shape)})."
            )
        if x.shape[1] == 0:
            raise ValueError(f"GatedAttentionMIL: empty bag (no instance), input shape {tuple(x.shape)}.")
        if mask is None:
            return
        if mask.dtype != torch.bool:
            raise ValueError(f"GatedAttentionMIL: mask must be boolean (True for a real instance), got {mask.dtype}.")
        if tuple(mask.shape) != tuple(x.shape[:2]):
            raise ValueError(
                f"GatedAttentionMIL: mask shape {tuple(mask.shape)} does not match the bags' [B, N] = "
                f"{tuple(x.shape[:2])}."
            )
        empty = (~mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"GatedAttentionMIL: empty bag (mask has no True) at batch index {empty}.")
