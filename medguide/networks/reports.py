"""Report encoders: radiology report text -> token features ``[B, L, D]`` and their mask, for training only.

Pluggable: any module whose ``forward(texts)`` takes a list of ``B`` strings and returns ``(features [B, L, D],
mask [B, L])`` (mask ``True`` on real tokens) can guide a localiser (:class:`medguide.networks.ReportGuidance`).
:class:`TransformerReportEncoder` is the default, a small Transformer trained from scratch on a vocabulary built
from the training reports (:class:`medguide.data.ReportVocabulary`), so nothing is downloaded;
:class:`HuggingFaceReportEncoder` wraps a local Hugging Face model directory when a user has one (e.g. a clinical
BERT), tokenised by its own tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from medguide.data.errors import InputError, MissingInputError

__all__ = ["HuggingFaceReportEncoder", "TransformerReportEncoder"]


class TransformerReportEncoder(nn.Module):
    """Word embeddings, learned positions and a ``torch.nn.TransformerEncoder`` over the report's tokens.

    Texts are tokenised by ``vocabulary.encode(text, max_length)`` (a leading ``<cls>`` token, truncated or padded
    to ``max_length``), so the vocabulary travels with the encoder; padding is masked in every layer.

    Example::

        vocabulary = ReportVocabulary.build(training_reports, min_count=2)
        encoder = TransformerReportEncoder(vocabulary, dim=128, depth=2, heads=4, max_length=96)
        features, mask = encoder(["FINDINGS: right lower lobe consolidation.", "Lungs are clear."])
        # features [2, 96, 128], mask [2, 96] (True on real tokens)

    Args:
        vocabulary: a :class:`medguide.data.ReportVocabulary` (``len`` and ``encode``).
        dim: token feature width (divisible by ``heads``).
        depth: Transformer layers.
        heads: attention heads.
        max_length: tokens per report, ``<cls>`` included; longer reports are truncated.
        dropout: dropout in the layers, in training mode.

    Raises:
        ValueError: ``dim`` not divisible by ``heads``, or a non-positive size.
    """

    def __init__(
        self, vocabulary, dim: int = 128, depth: int = 2, heads: int = 4, max_length: int = 128, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if min(dim, depth, heads, max_length) < 1 or dim % heads:
            raise ValueError(
                f"TransformerReportEncoder: dim ({dim}) must be a positive multiple of heads ({heads}), and depth "
                f"({depth}) and max_length ({max_length}) positive."
            )
        self.vocabulary, self.max_length, self.dim = vocabulary, max_length, dim
        self.embedding = nn.Embedding(len(vocabulary), dim, padding_idx=0)
        self.positions = nn.Parameter(torch.zeros(1, max_length, dim))
        nn.init.normal_(self.positions, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``B`` report texts -> token features ``[B, max_length, dim]`` and mask ``[B, max_length]`` (bool)."""
        encoded = [self.vocabulary.encode(text, self.max_length) for text in texts]
        device = self.embedding.weight.device
        ids = torch.stack([ids for ids, _ in encoded]).to(device)
        mask = torch.stack([mask for _, mask in encoded]).to(device)
        x = self.embedding(ids) + self.positions[:, : ids.shape[1]]
        return self.norm(self.layers(x, src_key_padding_mask=~mask)), mask


class HuggingFaceReportEncoder(nn.Module):
    """A local Hugging Face text model (e.g. a clinical BERT) as report encoder, with an optional projection.

    Loaded with ``local_files_only=True`` from ``path`` (a directory holding the model's ``config.json``, weights
    and tokenizer files): nothing is downloaded. Needs the ``transformers`` package, which medguide does not
    install. The model's weights are frozen unless ``trainable``; the projection to ``dim`` always trains.

    Args:
        path: the model directory.
        dim: output width (a linear projection of the model's hidden size); ``None`` keeps the hidden size.
        max_length: tokens per report (the tokenizer truncates and pads).
        trainable: fine-tune the model too.

    Raises:
        MissingInputError: ``path`` is not a directory.
        InputError: ``transformers`` is not installed, or the directory does not hold a model it can load.
    """

    def __init__(self, path: str | Path, dim: int | None = None, max_length: int = 128, trainable: bool = False):
        super().__init__()
        path = Path(path)
        if not path.is_dir():
            raise MissingInputError(f"report encoder directory {str(path)!r} not found.")
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as error:
            raise InputError(
                f"a Hugging Face report encoder ({path}) needs the transformers package: pip install transformers"
            ) from error
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            self.model = AutoModel.from_pretrained(path, local_files_only=True)
        except Exception as error:
            raise InputError(f"report encoder directory {str(path)!r} holds no loadable model: {error}") from error
        self.model.requires_grad_(trainable)
        hidden = self.model.config.hidden_size
        self.projection = nn.Identity() if dim is None else nn.Linear(hidden, dim)
        self.max_length, self.dim = max_length, hidden if dim is None else dim

    def forward(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``B`` report texts -> token features ``[B, L, dim]`` and mask ``[B, L]`` (bool), ``L <= max_length``."""
        tokens = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.projection.weight.device if isinstance(self.projection, nn.Linear) else self.model.device)
        hidden = self.model(**tokens).last_hidden_state
        return self.projection(hidden), tokens["attention_mask"].bool()
