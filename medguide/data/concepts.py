"""Concept lists (findings in plain words, each with its class) and their text embeddings ``T`` ``[K, d]``.

A concept-bottleneck network (:class:`~medguide.networks.blocks.ConceptHead`) compares image features with a fixed
matrix of concept text embeddings. The matrix is made once from a CSV and shipped as a file beside the bundle, so
nothing downloads at run time; ``medguide concepts embed LIST OUT`` makes it.

The list is a UTF-8 CSV with a header and the columns ``concept`` (the finding in plain words) and ``class`` (the
class it belongs to, by its short name); other columns are not read::

    concept,class
    drusen at the macula,dAMD
    "no fluid, haemorrhage or exudate anywhere in the retina",NOR

Refused, with an :class:`~medguide.data.errors.InputError` naming the file (and the line): a missing file
(:class:`~medguide.data.errors.MissingInputError`), a file that is not UTF-8, a missing column, a row with more cells
than the header (an unquoted comma), an empty concept or class, a class that is not one of the declared ones, and a
concept listed twice (compared without case and repeated spaces, as the encoders see them).

Text encoders are named by a spec ``NAME[:ARGUMENT]`` in :data:`TEXT_ENCODERS` (add one there: a callable
``(argument, dim) -> encoder``, the encoder a callable ``texts -> [K, d]`` array with a ``description``):

- ``tfidf`` (the default; offline, no download, scikit-learn only): TF-IDF of the word 1-2-grams and the character
  3-5-grams (within words) of the list's own texts, reduced to ``d`` dimensions (default 64, below ``K``) by a
  truncated SVD (ARPACK, seed 0): latent semantic analysis of the list. Deterministic. Similarity reflects wording,
  not meaning: "haemorrhage" and "bleeding" are unrelated unless they share character n-grams; and since the
  vocabulary and the SVD are fitted to the list, every row depends on the whole list.
- ``hf:DIR``: a Hugging Face model in the local folder ``DIR`` (e.g. a BERT trained on clinical text), loaded with
  ``transformers``' ``AutoTokenizer``/``AutoModel`` from that folder only (``local_files_only``); a concept is the
  mean of the last hidden state over its tokens, so ``d`` is the model's width. ``transformers`` is not a medguide
  dependency: install it to use this encoder.

The matrix file is a NumPy ``.npz`` of four arrays: ``concepts`` and ``classes`` ([K] strings), ``embeddings``
(float32 [K, d], unit rows) and ``encoder`` (a string saying what made it), read by :func:`load_concepts` with
``allow_pickle=False``. An ``.npz`` rather than a ``.pt``: it holds no pickled objects, NumPy alone reads it (the
command needs no torch), and the repository ignores ``*.pt`` as training output, which a shipped matrix is not.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np

from medguide.data.errors import InputError, MissingInputError
from medguide.data.files import atomic_target

__all__ = [
    "TEXT_ENCODERS",
    "ConceptList",
    "HuggingFaceEncoder",
    "TfidfEncoder",
    "TextEncoder",
    "embed_concepts",
    "load_concepts",
    "read_concepts",
    "save_concepts",
    "text_encoder",
]

COLUMNS = ("concept", "class")
DEFAULT_ENCODER = "tfidf"
MATRIX_SUFFIX = ".npz"


class ConceptList(NamedTuple):
    """The concepts of a list, in its order, and the class of each."""

    concepts: list[str]
    classes: list[str]


class TextEncoder(Protocol):
    """Texts -> ``[len(texts), d]`` embeddings; ``description`` says what made them (stored beside the matrix)."""

    description: str

    def __call__(self, texts: Sequence[str]) -> np.ndarray: ...


def _key(text: str) -> str:
    """A concept as the encoders see it: without case and repeated spaces."""
    return " ".join(text.split()).casefold()


def read_concepts(csv_file: str | os.PathLike, classes: Sequence[str]) -> ConceptList:
    """Read a concept list (format and errors in the module docstring).

    Args:
        csv_file: the CSV with columns ``concept`` and ``class``.
        classes: the class names a row may give, e.g. ``list(MULTIEYE_CLASSES)``.

    Raises:
        MissingInputError: the file does not exist.
        InputError: naming the file and line: see the module docstring.
    """
    csv_file = Path(csv_file)
    if not csv_file.is_file():
        raise MissingInputError(f"concept list not found: '{csv_file}'")
    concepts, owners, lines = [], [], {}
    try:
        with open(csv_file, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [name.strip() for name in reader.fieldnames or []]
            if absent := [c for c in COLUMNS if c not in header]:
                raise InputError(
                    f"concept list '{csv_file}' has no column {absent[0]!r} (line 1 has {header or 'nothing'}); "
                    f"expected a header 'concept,class'"
                )
            reader.fieldnames = header
            for row in reader:
                where = f"concept list '{csv_file}', line {reader.line_num}"
                if row.get(None):
                    raise InputError(f"{where}: more cells than the header; quote a concept that holds a comma")
                text, owner = ((row.get(c) or "").strip() for c in COLUMNS)
                if not text or not owner:
                    raise InputError(f"{where}: empty {'concept' if not text else 'class'} ({text or owner!r})")
                if owner not in classes:
                    raise InputError(f"{where}: unknown class {owner!r} of {text!r}; classes: {', '.join(classes)}")
                if (first := lines.setdefault(_key(text), reader.line_num)) != reader.line_num:
                    raise InputError(f"{where}: concept {text!r} is already on line {first}")
                concepts.append(text)
                owners.append(owner)
    except UnicodeDecodeError as error:
        raise InputError(
            f"concept list '{csv_file}' is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
        ) from error
    if not concepts:
        raise InputError(f"concept list '{csv_file}' holds no concept below its header")
    return ConceptList(concepts, owners)


class TfidfEncoder:
    """The offline default: TF-IDF over word and character n-grams of the texts, then a truncated SVD to ``dim``.

    Fitted to the texts it embeds (latent semantic analysis of the list), deterministic, no download. It encodes
    wording, not meaning (see the module docstring).

    Args:
        dim: output width ``d``; below the number of texts (the SVD of ``K`` texts has at most ``K`` directions,
            and ARPACK takes fewer than ``K``).
        seed: seeds ARPACK's start vector; the result is the exact leading singular subspace either way.

    Example:
        >>> TfidfEncoder(dim=2)(["drusen at the macula", "soft drusen", "enlarged optic cup"]).shape
        (3, 2)
    """

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        if dim < 1:
            raise InputError(f"the tfidf encoder's dim must be at least 1, got {dim}")
        self.dim, self.seed = dim, seed
        self.description = (
            f"tfidf: TF-IDF (sublinear tf) of word 1-2-grams and character 3-5-grams within words of the lower-cased "
            f"concept texts, truncated SVD (arpack, seed {seed}) to {dim} dimensions; fitted to this list"
        )

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        from scipy.sparse import hstack
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        if self.dim >= len(texts):
            raise InputError(
                f"the tfidf encoder gives fewer dimensions than concepts: {len(texts)} concepts take --dim "
                f"{len(texts) - 1} at most, got {self.dim}"
            )
        words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True)
        characters = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)
        features = hstack([words.fit_transform(texts), characters.fit_transform(texts)]).tocsr()
        svd = TruncatedSVD(n_components=self.dim, algorithm="arpack", random_state=self.seed)
        return svd.fit_transform(features)


class HuggingFaceEncoder:
    """A local Hugging Face model: each text is the mean of the model's last hidden state over its tokens.

    Loaded with ``transformers``' ``AutoTokenizer`` and ``AutoModel`` from ``model_dir`` only
    (``local_files_only=True``; nothing downloads). ``transformers`` is optional: without it this raises an
    :class:`~medguide.data.errors.InputError` that names the package.

    Args:
        model_dir: a folder holding the model's ``config.json``, weights and tokenizer files.
        dim: the expected width, checked against the model's (``None``: the model's).
        batch_size: texts per forward pass.
        max_length: tokens kept per text.
    """

    def __init__(
        self, model_dir: str | os.PathLike, dim: int | None = None, batch_size: int = 32, max_length: int = 128
    ) -> None:
        try:
            import transformers
        except ImportError as error:
            raise InputError(
                "--encoder hf:DIR needs the Python package 'transformers', which is not installed (medguide does not "
                "depend on it): pip install transformers"
            ) from error
        self.model_dir = Path(model_dir)
        if not self.model_dir.is_dir():
            raise MissingInputError(f"Hugging Face model folder not found: '{self.model_dir}'")
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            self.model = transformers.AutoModel.from_pretrained(self.model_dir, local_files_only=True).eval()
        except (OSError, ValueError) as error:
            raise InputError(
                f"'{self.model_dir}' is not a Hugging Face model folder transformers can load: {error}"
            ) from error
        width = self.model.config.hidden_size
        if dim is not None and dim != width:
            raise InputError(f"the model in '{self.model_dir}' gives {width} dimensions, not --dim {dim}")
        self.batch_size, self.max_length = batch_size, max_length
        self.description = (
            f"hf:{self.model_dir.resolve()} ({self.model.config.model_type}, {width} dimensions): mean of the last "
            f"hidden state over the tokens; transformers {transformers.__version__}"
        )

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        rows = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(
                    list(texts[start : start + self.batch_size]),
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                hidden = self.model(**tokens).last_hidden_state
                mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                rows.append((hidden * mask).sum(1) / mask.sum(1))
        return torch.cat(rows).float().numpy()


def _tfidf(argument: str, dim: int | None) -> TfidfEncoder:
    if argument:
        raise InputError(f"the tfidf encoder takes no argument, got 'tfidf:{argument}'")
    return TfidfEncoder() if dim is None else TfidfEncoder(dim)


def _hugging_face(argument: str, dim: int | None) -> HuggingFaceEncoder:
    if not argument:
        raise InputError("the hf encoder needs a model folder: --encoder hf:/path/to/model")
    return HuggingFaceEncoder(argument, dim)


# name: (argument after "NAME:", or "", the --dim asked for, or None) -> encoder
TEXT_ENCODERS: dict[str, Callable[[str, int | None], TextEncoder]] = {"tfidf": _tfidf, "hf": _hugging_face}


def text_encoder(spec: str | None = None, dim: int | None = None) -> TextEncoder:
    """The encoder a spec ``NAME[:ARGUMENT]`` names in :data:`TEXT_ENCODERS` (``tfidf``, ``hf:/path/to/model``;
    ``None``: ``tfidf``), giving ``dim`` dimensions (``None``: the encoder's default)."""
    spec = spec or DEFAULT_ENCODER
    name, _, argument = spec.partition(":")
    if name not in TEXT_ENCODERS:
        raise InputError(f"unknown text encoder {spec!r}; encoders: {', '.join(TEXT_ENCODERS)} (NAME[:ARGUMENT])")
    return TEXT_ENCODERS[name](argument, dim)


def embed_concepts(concepts: ConceptList, encoder: TextEncoder) -> np.ndarray:
    """``T``: the concepts' embeddings ``[K, d]``, float32, each row L2-normalised.

    Raises:
        InputError: a concept whose embedding is zero or not finite (it has no direction), named.
    """
    matrix = np.asarray(encoder(concepts.concepts), dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != len(concepts.concepts):
        raise ValueError(f"{encoder.description}: gave shape {matrix.shape} for {len(concepts.concepts)} concepts")
    norms = np.linalg.norm(matrix, axis=1)
    if bad := [i for i, n in enumerate(norms) if not np.isfinite(n) or n == 0]:
        raise InputError(f"concept {concepts.concepts[bad[0]]!r} has no usable embedding ({encoder.description})")
    return (matrix / norms[:, None]).astype(np.float32)


def save_concepts(path: str | os.PathLike, concepts: ConceptList, embeddings: np.ndarray, description: str) -> Path:
    """Write the matrix file (format in the module docstring) atomically; ``path`` ends in ``.npz``."""
    path = Path(path)
    if path.suffix != MATRIX_SUFFIX:
        raise InputError(f"the concept matrix is a NumPy .npz file: name it *{MATRIX_SUFFIX}, not '{path.name}'")
    with atomic_target(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(
            f,
            concepts=np.array(concepts.concepts, dtype=str),
            classes=np.array(concepts.classes, dtype=str),
            embeddings=np.ascontiguousarray(embeddings, dtype=np.float32),
            encoder=np.array(description, dtype=str),
        )
    return path


def load_concepts(path: str | os.PathLike) -> dict:
    """A matrix file written by :func:`save_concepts`, checked: ``{"concepts": [K str], "classes": [K str],
    "embeddings": float32 [K, d] array, "encoder": str}`` (a :class:`~medguide.networks.blocks.ConceptHead` takes
    the array as it is).

    Raises:
        MissingInputError: the file does not exist.
        InputError: it is not such a file, or its concepts, classes and rows disagree.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"concept matrix not found: '{path}' (make it with `medguide concepts embed`)")
    try:
        with np.load(path, allow_pickle=False) as arrays:
            content = {key: arrays[key] for key in arrays.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise InputError(f"concept matrix '{path}' cannot be read as a NumPy .npz file: {error}") from error
    if absent := sorted({"concepts", "classes", "embeddings", "encoder"} - set(content)):
        raise InputError(f"concept matrix '{path}' lacks {absent}; make it with `medguide concepts embed`")
    embeddings = content["embeddings"]
    count = len(content["concepts"])
    if embeddings.ndim != 2 or embeddings.shape[0] != count or len(content["classes"]) != count:
        raise InputError(
            f"concept matrix '{path}': {count} concepts, {len(content['classes'])} classes and embeddings of shape "
            f"{embeddings.shape} do not agree"
        )
    return {
        "concepts": content["concepts"].tolist(),
        "classes": content["classes"].tolist(),
        "embeddings": embeddings,
        "encoder": str(content["encoder"]),
    }
