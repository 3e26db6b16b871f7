"""A concept-bottleneck head: image features compared with fixed text embeddings of concepts, then classified.

Wang et al., "MultiEYE: Dataset and Benchmark for OCT-Enhanced Retinal Disease Recognition from Fundus Images",
IEEE TMI 2025, https://arxiv.org/abs/2412.09402 (code: https://github.com/xmed-lab/MultiEYE). OCT-CoDA's teacher and
student both end in this head; the concept similarities are what the distillation losses compare and what a user
is shown as the explanation of a prediction.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConceptHead", "ConceptOutputs", "check_concepts"]


class ConceptOutputs(NamedTuple):
    """Everything a :class:`ConceptHead` computes for a batch.

    Attributes:
        logits: ``[B, num_classes]``, unbounded.
        similarity: ``[B, K]``, the cosine similarity of the image with each concept, in ``[-1, 1]``: the
            explanation, and the first level the distillation losses compare.
        second_level: ``[B, K]``, the second level ``Linear(x) T^T`` (unnormalised, unbounded).
    """

    logits: torch.Tensor
    similarity: torch.Tensor
    second_level: torch.Tensor

    @property
    def levels(self) -> torch.Tensor:
        """Both similarity levels stacked as the losses take them: ``[B, 2, K]`` (``similarity`` first)."""
        return torch.stack([self.similarity, self.second_level], dim=1)


def check_concepts(concepts: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The concept matrix ``T`` as a float32 tensor ``[K, d]`` with unit rows, checked.

    Args:
        concepts: ``[K, d]`` text embeddings of the K concepts (any row norm; each row is L2-normalised here, which
            leaves an already normalised matrix as it is).

    Raises:
        ValueError: if ``concepts`` is not two-dimensional with at least one row and one column, holds a value that
            is not finite, or has a row of zeros (no direction to compare with), naming the first such row.
    """
    matrix = torch.as_tensor(np.asarray(concepts) if not isinstance(concepts, torch.Tensor) else concepts)
    matrix = matrix.detach().to(device="cpu", dtype=torch.float32)
    if matrix.ndim != 2 or 0 in matrix.shape:
        raise ValueError(f"concepts must be a matrix [K concepts, d] with K, d >= 1, got shape {tuple(matrix.shape)}.")
    if not torch.isfinite(matrix).all():
        row = int((~torch.isfinite(matrix)).any(dim=1).nonzero()[0])
        raise ValueError(f"concepts: row {row} holds a value that is not finite.")
    norms = matrix.norm(dim=1)
    if (norms == 0).any():
        raise ValueError(f"concepts: row {int((norms == 0).nonzero()[0])} is all zeros and has no direction.")
    return matrix / norms[:, None]


class ConceptHead(nn.Module):
    """Pooled image features -> cosine similarity with K fixed concept embeddings -> class logits.

    With pooled backbone features ``x`` ``[B, F]`` and the concept matrix ``T`` ``[K, d]`` (rows of unit length):

    - ``v = normalize(projection(normalize(x)))`` ``[B, d]``, ``projection = Linear(F, d, bias=False)`` (FLAIR's
      vision projection head, which MultiEYE's model ends in);
    - ``similarity = v T^T`` ``[B, K]``, each entry a cosine similarity in ``[-1, 1]``;
    - ``logits = classifier(similarity)`` ``[B, num_classes]``, ``classifier = Linear(K, num_classes)``;
    - the second level ``second_level = second_projection(x) T^T`` ``[B, K]``, ``second_projection =
      Linear(F, d)`` (with bias) on the raw ``x``, neither side of the product normalised, as MultiEYE's
      ``project_4``. It feeds only the distillation losses: it is not classified.

    ``T`` is a buffer, not a parameter: no optimizer sees it and it never changes in training. It is saved in the
    state dict (key ``concepts``), so a checkpoint carries the concepts it was trained with.

    Forward contract: one tensor of logits unless ``with_concepts=True``, in training and eval mode alike, so MONAI's
    engines and inferers, ``verify_net_in_out`` and ``torch.jit.trace`` take the head (and a network ending in it)
    as it is. The similarities come from the same forward with ``with_concepts=True`` (a :class:`ConceptOutputs`),
    rather than from another method, so that a network wrapped in ``DistributedDataParallel`` still goes through
    its forward (a method called past the wrapper skips its gradient synchronisation).

    Args:
        in_features: ``F``, the width of the pooled features (2048 for a ResNet-50).
        concepts: ``T``, ``[K, d]`` text embeddings of the concepts (see :func:`check_concepts`); ``d`` is the
            projection width (512 in MultiEYE, K = 98).
        num_classes: number of classes (at least 2; 9 in MultiEYE).

    Raises:
        ValueError: if ``in_features`` is not positive, ``num_classes`` is below 2, or ``concepts`` is not a usable
            matrix (:func:`check_concepts`).

    Example:
        >>> head = ConceptHead(16, torch.randn(5, 8), num_classes=3)
        >>> out = head(torch.randn(2, 16), with_concepts=True)
        >>> tuple(out.logits.shape), tuple(out.similarity.shape), tuple(out.levels.shape)
        ((2, 3), (2, 5), (2, 2, 5))
    """

    concepts: torch.Tensor

    def __init__(self, in_features: int, concepts: torch.Tensor | np.ndarray, num_classes: int) -> None:
        super().__init__()
        if isinstance(in_features, bool) or int(in_features) != in_features or in_features < 1:
            raise ValueError(f"ConceptHead: in_features must be a positive integer, got {in_features!r}.")
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"ConceptHead: num_classes must be an integer >= 2, got {num_classes!r}.")
        matrix = check_concepts(concepts)
        self.in_features = int(in_features)
        self.register_buffer("concepts", matrix)
        width = matrix.shape[1]
        self.projection = nn.Linear(self.in_features, width, bias=False)
        self.second_projection = nn.Linear(self.in_features, width)
        self.classifier = nn.Linear(matrix.shape[0], int(num_classes))

    @property
    def num_concepts(self) -> int:
        """``K``."""
        return self.concepts.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes (width of the logits)."""
        return self.classifier.out_features

    def forward(self, x: torch.Tensor, with_concepts: bool = False) -> torch.Tensor | ConceptOutputs:
        """Class logits, and with ``with_concepts`` both similarity levels.

        Args:
            x: pooled features ``[B, in_features]``.
            with_concepts: return a :class:`ConceptOutputs` ``(logits, similarity, second_level)`` instead of the
                logits alone.

        Returns:
            logits ``[B, num_classes]``; or a :class:`ConceptOutputs` (``similarity`` ``[B, K]`` in ``[-1, 1]``,
            ``second_level`` ``[B, K]``).

        Raises:
            ValueError: if ``x`` is not ``[B, in_features]``.
        """
        # a traced graph holds the traced input's shapes anyway; checking them there only warns
        if not torch.jit.is_tracing() and (x.ndim != 2 or x.shape[1] != self.in_features):
            raise ValueError(f"ConceptHead expects features [B, {self.in_features}], got {tuple(x.shape)}.")
        embedding = F.normalize(self.projection(F.normalize(x, dim=1)), dim=1)
        similarity = embedding @ self.concepts.T
        logits = self.classifier(similarity)
        if not with_concepts:
            return logits
        return ConceptOutputs(logits, similarity, self.second_projection(x) @ self.concepts.T)
