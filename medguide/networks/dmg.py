"""Deep multimodal guidance (DMG): a superior modality guides an inferior one's classifier, at training only.

Mallya & Hamarneh, "Deep Multimodal Guidance for Medical Image Classification", MICCAI 2022,
https://arxiv.org/abs/2203.05683. Three stages (``../shared/METHODS.md`` section 2):

a. an inferior classifier ``C_I = D_I(E_I(x_I))`` and a superior one ``C_S = D_S(E_S(x_S))``, trained apart
   (:class:`LatentClassifier`; the paper's S+I row is :class:`FusionClassifier`);
b. with both encoders frozen, the guidance model ``G`` (:class:`GuidanceMLP`) learns to map ``z_I = E_I(x_I)`` to
   the paired ``z_S = E_S(x_S)`` (MSE on cached latents);
c. with ``E_I`` and ``G`` frozen, a new head ``D_c`` learns from ``concat(G(z_I), z_I)``
   (:class:`GuidedClassifier`, which takes the inferior image only).

Encoders come from MONAI (:func:`image_encoder`), from scratch unless a local weights file is given; a bag of
histology patch features is encoded by :class:`medguide.networks.blocks.GatedAttentionMIL`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import torch
from monai.networks.nets import DenseNet, DenseNet121, EfficientNetBN, resnet18, resnet50
from monai.networks.nets.efficientnet import efficientnet_params
from torch import nn

from medguide.data.errors import InputError, MissingInputError
from medguide.networks.blocks import Frozen, MultiTaskHead

__all__ = [
    "FusionClassifier",
    "GuidanceMLP",
    "GuidedClassifier",
    "GuidedHead",
    "LatentClassifier",
    "LatentEncoder",
    "image_encoder",
    "image_encoder_names",
    "load_encoder_weights",
]


class GuidanceMLP(nn.Module):
    """The guidance model ``G``: an MLP from the inferior latent ``z_I`` to the superior latent ``z_S``.

    ``Linear(widths[0], widths[1])``, then for each further width ReLU, dropout and the next ``Linear``; nothing
    after the last layer (it regresses ``z_S`` with MSE). The paper's widths: brain (MRI DenseNet121 1024-d to the
    histology MIL's 512-d) ``(1024, 512, 256, 256, 512)``; skin (Inception-V3 2048-d to 2048-d)
    ``(2048, 1024, 512, 512, 1024, 2048)``; dropout 0.25.

    Args:
        widths: ``z_I``'s width, the hidden widths, and ``z_S``'s width (at least two entries, all positive).
        dropout: dropout between the layers in training mode.

    Raises:
        ValueError: if ``widths`` has fewer than two entries or one is not a positive integer.
    """

    def __init__(self, widths: Sequence[int], dropout: float = 0.25) -> None:
        super().__init__()
        widths = list(widths)
        if len(widths) < 2 or any(isinstance(w, bool) or int(w) != w or w < 1 for w in widths):
            raise ValueError(
                f"GuidanceMLP widths must be at least two positive integers (input, ..., output), got {widths}."
            )
        widths = [int(w) for w in widths]
        layers: list[nn.Module] = [nn.Linear(widths[0], widths[1])]
        for width_in, width_out in zip(widths[1:-1], widths[2:]):
            layers += [nn.ReLU(), nn.Dropout(dropout), nn.Linear(width_in, width_out)]
        self.widths = tuple(widths)
        self.layers = nn.Sequential(*layers)

    @property
    def in_features(self) -> int:
        """Width of ``z_I``."""
        return self.widths[0]

    @property
    def out_features(self) -> int:
        """Width of the guided latent ``G(z_I)`` (that of ``z_S``)."""
        return self.widths[-1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, widths[0]]`` -> ``[B, widths[-1]]``, in training and eval mode alike."""
        return self.layers(z)


class LatentEncoder(NamedTuple):
    """An encoder returning a pooled latent vector ``[B, latent_features]``, and that width."""

    module: nn.Module
    latent_features: int


def _densenet(spatial_dims: int, in_channels: int, densenet: type[DenseNet], **kwargs: Any) -> LatentEncoder:
    # MONAI's DenseNet ends with features -> ReLU -> adaptive pool -> flatten -> Linear; without the Linear it
    # gives the pooled latent and keeps MONAI's state-dict keys
    net = densenet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, **kwargs)
    latent = net.class_layers.out.in_features
    net.class_layers.out = nn.Identity()
    return LatentEncoder(net, latent)


def _resnet(spatial_dims: int, in_channels: int, resnet: Callable[..., nn.Module], **kwargs: Any) -> LatentEncoder:
    # without its fully connected layer MONAI's ResNet returns the flattened average pool
    net = resnet(
        pretrained=False, spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False, **kwargs
    )
    return LatentEncoder(net, net.in_planes)


def _efficientnet(spatial_dims: int, in_channels: int, name: str, **kwargs: Any) -> LatentEncoder:
    net = EfficientNetBN(name, pretrained=False, spatial_dims=spatial_dims, in_channels=in_channels, **kwargs)
    latent = net._fc.in_features
    net._fc = nn.Identity()
    return LatentEncoder(net, latent)


_ENCODERS: dict[str, Callable[..., LatentEncoder]] = {
    "densenet121": partial(_densenet, densenet=DenseNet121),
    "densenet": partial(_densenet, densenet=DenseNet),
    "resnet18": partial(_resnet, resnet=resnet18),
    "resnet50": partial(_resnet, resnet=resnet50),
    **{name: partial(_efficientnet, name=name) for name in efficientnet_params},
}


def image_encoder_names() -> list[str]:
    """The names :func:`image_encoder` takes."""
    return list(_ENCODERS)


def image_encoder(
    name: str, spatial_dims: int, in_channels: int, weights: str | Path | None = None, **kwargs: Any
) -> LatentEncoder:
    """A MONAI image encoder, from scratch, that returns the pooled latent vector ``[B, latent_features]``.

    - ``"densenet121"``: MONAI ``DenseNet121`` (1024-d), 3D for MRI (the paper's brain encoder), 2D for photos;
    - ``"densenet"``: MONAI ``DenseNet`` with ``init_features``, ``growth_rate``, ``block_config`` (and ``bn_size``)
      from ``kwargs``, e.g. ``init_features=8, growth_rate=4, block_config=(2, 2)`` (16-d) for CPU runs and tests;
      latent width ``init_features`` plus ``growth_rate`` per layer, halved at each transition;
    - ``"resnet18"`` (512-d), ``"resnet50"`` (2048-d): MONAI ``resnet18``/``resnet50`` without their fully
      connected layer, 2D or 3D (``kwargs`` such as ``conv1_t_stride=2`` go to MONAI's ``ResNet``);
    - ``"efficientnet-b0"`` (1280-d) to ``"efficientnet-b8"`` and ``"efficientnet-l2"``: MONAI ``EfficientNetBN``
      (``pretrained=False``) without its final linear layer (its dropout stays, in training mode).

    The module is MONAI's own, its last linear layer replaced by ``nn.Identity``, so its state-dict keys are
    MONAI's minus that layer's.

    Args:
        name: one of :func:`image_encoder_names`.
        spatial_dims: 2 (photographs) or 3 (volumes).
        in_channels: input channels (1 for one MRI sequence, 4 for the four as channels, 3 for RGB).
        weights: optional local state-dict file (e.g. an encoder trained elsewhere) loaded strictly into the
            encoder by :func:`load_encoder_weights`; ``None`` leaves the random initialisation. Nothing is
            downloaded.
        kwargs: passed to the MONAI network (e.g. ``dropout_prob`` or ``norm`` for DenseNet).

    Returns:
        a :class:`LatentEncoder`: ``(module, latent_features)``.

    Raises:
        ValueError: for an unknown ``name`` or a ``spatial_dims`` other than 2 or 3.
        MissingInputError: (a ``FileNotFoundError``) if ``weights`` is not a file.
        InputError: (a ``ValueError``) if ``weights`` does not fit the encoder, naming the file and the first
            differing keys.
    """
    if name not in _ENCODERS:
        raise ValueError(f"unknown image encoder {name!r}; choose one of {', '.join(image_encoder_names())}.")
    if spatial_dims not in (2, 3):
        raise ValueError(f"image_encoder: spatial_dims must be 2 or 3, got {spatial_dims}.")
    encoder = _ENCODERS[name](spatial_dims, in_channels, **kwargs)
    if weights is not None:
        load_encoder_weights(encoder.module, weights)
    return encoder


def load_encoder_weights(module: nn.Module, path: str | Path, shown: int = 3) -> nn.Module:
    """Loads a local state-dict file strictly into ``module`` (on CPU, ``weights_only=True``) and returns it.

    Args:
        module: the encoder (or any module).
        path: the ``.pt``/``.pth`` file holding a state dict with exactly ``module``'s keys and shapes.
        shown: how many differing keys of each kind the error names.

    Raises:
        MissingInputError: (a ``FileNotFoundError``) if ``path`` is not a file.
        InputError: (a ``ValueError``) if the file holds no state dict, or keys are missing, unexpected or of another
            shape: one message naming the file and the first differing keys of each kind.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"encoder weights file {str(path)!r} not found.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise InputError(f"encoder weights file {str(path)!r} cannot be read as a state dict: {error}") from error
    if not isinstance(state, Mapping):
        raise InputError(f"encoder weights file {str(path)!r} holds a {type(state).__name__}, not a state dict.")
    expected = module.state_dict()

    def first(keys: list[str]) -> str:
        return ", ".join(keys[:shown]) + (f" (and {len(keys) - shown} more)" if len(keys) > shown else "")

    problems = []
    if missing := [k for k in expected if k not in state]:
        problems.append(f"missing {first(missing)}")
    if unexpected := [k for k in state if k not in expected]:
        problems.append(f"unexpected {first(unexpected)}")
    if reshaped := [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != v.shape
    ]:
        problems.append(f"other shape (file vs encoder) {first(reshaped)}")
    if problems:
        raise InputError(
            f"encoder weights file {str(path)!r} does not fit the {type(module).__name__} encoder: "
            + "; ".join(problems)
        )
    module.load_state_dict(state)
    return module


def _encode(encoder: nn.Module, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    # an image encoder takes no mask; a bag encoder (GatedAttentionMIL) takes one for padded bags
    return encoder(x) if mask is None else encoder(x, mask=mask)


class LatentClassifier(nn.Module):
    """Stage a's classifier of one modality, ``C = D(E(x))``: an encoder, then a :class:`MultiTaskHead`.

    The inferior ``C_I`` takes an image through an :func:`image_encoder`; the superior ``C_S`` an image, or for
    histology a bag of patch features through :class:`medguide.networks.blocks.GatedAttentionMIL` (latent width
    its ``hidden``, 512). :meth:`encode` gives the latent that stage b caches.

    Args:
        encoder: ``E``, returning ``[B, latent_features]``.
        latent_features: width of ``E``'s output.
        tasks: task name -> number of classes (see :class:`MultiTaskHead`).
        dropout: dropout on the latent before the head in training mode.
    """

    def __init__(
        self, encoder: nn.Module, latent_features: int, tasks: Mapping[str, int], dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = MultiTaskHead(latent_features, tasks, dropout)

    @property
    def latent_features(self) -> int:
        """Width of the latent vector."""
        return self.head.in_features

    def encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The latent ``E(x)``: ``[B, latent_features]`` (``mask``: a bag encoder's ``[B, N]`` padding mask)."""
        return _encode(self.encoder, x, mask)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, sum of the tasks' classes]`` in training and eval mode alike (:meth:`MultiTaskHead.split`).

        Args:
            x: the encoder's input: an image ``[B, C, *spatial]``, or bags ``[B, N, D]`` for a bag encoder.
            mask: for a bag encoder, ``[B, N]``, ``True`` at real instances; ``None`` for images.
        """
        return self.head(self.encode(x, mask))


class FusionClassifier(nn.Module):
    """The paper's S+I row: one head on ``concat(z_S, z_I)`` from both modalities' encoders (both needed at test).

    Args:
        inferior_encoder: ``E_I``, returning ``[B, inferior_features]``.
        inferior_features: width of ``z_I``.
        superior_encoder: ``E_S``, returning ``[B, superior_features]`` (a bag encoder takes ``superior_mask``).
        superior_features: width of ``z_S``.
        tasks: task name -> number of classes (see :class:`MultiTaskHead`).
        dropout: dropout on the concatenated latent in training mode.
    """

    def __init__(
        self,
        inferior_encoder: nn.Module,
        inferior_features: int,
        superior_encoder: nn.Module,
        superior_features: int,
        tasks: Mapping[str, int],
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.inferior_encoder = inferior_encoder
        self.superior_encoder = superior_encoder
        self.head = MultiTaskHead(superior_features + inferior_features, tasks, dropout)

    def encode(
        self, inferior: torch.Tensor, superior: torch.Tensor, superior_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``concat(z_S, z_I)``: ``[B, superior_features + inferior_features]``."""
        return torch.cat([_encode(self.superior_encoder, superior, superior_mask), self.inferior_encoder(inferior)], 1)

    def forward(
        self, inferior: torch.Tensor, superior: torch.Tensor, superior_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Logits ``[B, sum of the tasks' classes]`` in training and eval mode alike.

        Args:
            inferior: the inferior image ``[B, C, *spatial]`` (the engine's ``inputs``).
            superior: the superior image, or bags ``[B, N, D]`` (an extra network input, as a kwarg from the
                engine's ``prepare_batch``).
            superior_mask: ``[B, N]`` padding mask of the superior bags, if any.
        """
        return self.head(self.encode(inferior, superior, superior_mask))


class GuidedClassifier(nn.Module):
    """The DMG model used at inference: ``y = D_c(concat(G(E_I(x_I)), E_I(x_I)))``, from the inferior image only.

    ``E_I`` (stage a) and ``G`` (stage b) are wrapped in :class:`medguide.networks.blocks.Frozen`: whatever the
    trainer does (``train()``, an optimizer over all parameters), they get no gradient, stay in eval mode and keep
    their parameters and batch-norm statistics; only ``head`` (``D_c``) trains. State-dict keys are ``encoder.*``
    (as :class:`LatentClassifier`'s, so stage a's ``E_I`` loads by that prefix), ``guidance.*`` and ``head.*``.

    With ``guided_only`` the head sees ``G(z_I)`` alone: that is the paper's G(I) row, ``D_S(G(z_I))``, built as
    ``GuidedClassifier(E_I, G, C_S.head, guided_only=True)`` from the stage a and b networks.

    One input, one tensor out, in training and eval mode alike, so MONAI's ``SimpleInferer``,
    ``verify_net_in_out``, ``torch.jit.trace`` and ``ckpt_export --use_trace`` take it as it is.

    Args:
        inferior_encoder: ``E_I``, returning ``z_I`` ``[B, guidance.in_features]`` (e.g. :func:`image_encoder`'s
            module); frozen in place.
        guidance: ``G``, e.g. :class:`GuidanceMLP`; frozen in place.
        head: ``D_c``, e.g. ``MultiTaskHead(guidance.out_features + latent_features, tasks)`` (``D_S`` with
            ``guided_only``).
        guided_only: feed ``G(z_I)`` alone to the head (the G(I) row) instead of ``concat(G(z_I), z_I)``.

    Raises:
        ValueError: if ``head.in_features`` does not equal ``guidance.out_features + guidance.in_features``
            (``guidance.out_features`` with ``guided_only``), where they have those attributes.
    """

    def __init__(
        self, inferior_encoder: nn.Module, guidance: nn.Module, head: nn.Module, guided_only: bool = False
    ) -> None:
        super().__init__()
        self.guided_only = guided_only
        guided, latent = getattr(guidance, "out_features", None), getattr(guidance, "in_features", None)
        expected = guided if guided_only else (None if guided is None or latent is None else guided + latent)
        width = getattr(head, "in_features", None)
        if expected is not None and width is not None and width != expected:
            takes = "G(z_I)" if guided_only else "concat(G(z_I), z_I)"
            raise ValueError(f"GuidedClassifier: the head takes {width} features but {takes} has {expected}.")
        self.encoder = Frozen(inferior_encoder)
        self.guidance = Frozen(guidance)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits from the inferior image alone, in training and eval mode alike.

        Args:
            x: the inferior image ``[B, C, *spatial]``.

        Returns:
            ``[B, head outputs]`` (for a :class:`MultiTaskHead`, the tasks' logits side by side; see its ``split``).
        """
        return self.classify(self.encoder(x))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Logits from the inferior latent ``z_I`` ``[B, guidance.in_features]``: ``D_c(concat(G(z_I), z_I))`` (the
        forward without ``E_I``)."""
        return _guided_logits(self.guidance, self.head, self.guided_only, z)

    def latent_head(self) -> GuidedHead:
        """This classifier without ``E_I``, sharing its ``G`` and head: stage c trains it on cached ``z_I``."""
        return GuidedHead(self)


class GuidedHead(nn.Module):
    """A :class:`GuidedClassifier` from the inferior latent on: ``D_c(concat(G(z_I), z_I))``, for stage c on cached
    latents.

    It holds the classifier's own ``G`` (frozen) and head, not copies, so training it trains the classifier's head
    in place and saving the classifier saves the trained head; ``E_I`` is not run, since stage c's ``z_I`` of every
    training case were encoded once by stage b's :class:`medguide.engines.LatentCache`. State-dict keys are
    ``guidance.*`` and ``head.*``.

    Args:
        classifier: the guided classifier whose head trains.
    """

    def __init__(self, classifier: GuidedClassifier) -> None:
        super().__init__()
        self.guidance, self.head, self.guided_only = classifier.guidance, classifier.head, classifier.guided_only

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, head outputs]`` from ``z_I`` ``[B, guidance.in_features]``."""
        return _guided_logits(self.guidance, self.head, self.guided_only, z)


def _guided_logits(guidance: nn.Module, head: nn.Module, guided_only: bool, z: torch.Tensor) -> torch.Tensor:
    guided = guidance(z)
    return head(guided if guided_only else torch.cat([guided, z], dim=1))
