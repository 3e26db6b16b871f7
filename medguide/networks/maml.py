"""Modality-aware Mutual Learning network (MAML)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.layers.factories import Act, Conv, Norm
from torch import nn

from medguide.data.modalities import check_modalities, distinct_modalities, nonempty_subsets
from medguide.networks.blocks import instance_norm_factory_name
from medguide.networks.branches import decode_branches
from medguide.networks.unet import UNet

__all__ = ["MAMLNet", "ModalityAwareFusion", "SINGLE_MODALITY_ROUTES"]

SINGLE_MODALITY_ROUTES = ("fused", "branch")
"""What :class:`MAMLNet` returns in eval mode when one modality is present: the fusion head's logits or the
branch's own."""


def _check_route(single_modality: str) -> str:
    if single_modality not in SINGLE_MODALITY_ROUTES:
        raise ValueError(f"single_modality must be 'fused' or 'branch', got {single_modality!r}.")
    return single_modality


def _contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = [1]
    for size in reversed(shape[1:]):
        strides.insert(0, strides[0] * max(size, 1))
    return tuple(strides)


def _default_strides(grad: torch.Tensor) -> torch.Tensor:
    """``grad`` with the default (contiguous) strides, which a 1x1x1 kernel's gradient may lack under autocast.

    Copied only when its strides differ: ``is_contiguous()`` does not tell, since a ``[C_out, C_in, 1, 1, 1]``
    gradient in channels-last layout counts as contiguous with other strides than its weight's.
    """
    if grad.stride() == _contiguous_strides(grad.shape):
        return grad
    return grad.clone(memory_format=torch.contiguous_format)


class ModalityAwareFusion(nn.Module):
    """Modality-aware (MA) attention fusion of MAML.

    ``F_dual = Conv3(concat(F_1..F_M))``; for each modality ``A_m = sigmoid(Conv3(LReLU(IN(Conv3(concat(F_m,
    F_dual))))))``; ``F_att = sum_m A_m * F_m``; fused logits ``= Conv1x1(F_att)`` (no bias). Its convolutions keep
    PyTorch's default initialisation, as in the official code (only the branches get nnU-Net's He initialisation).

    Missing modalities (ours; the official code has none): ``F_dual`` is the same convolution restricted to the
    input channels of the present modalities and ``F_att`` sums over the present ones; both are scaled by
    ``M / k`` for ``k`` of ``M`` present, as inverted dropout does, so that their magnitude does not depend on
    how many modalities a case has. With every modality present this is exactly the official module.

    Args:
        spatial_dims: 2 or 3.
        num_modalities: M.
        channels: channels of each modality's feature (16 in the paper).
        out_channels: number of classes.
    """

    def __init__(self, spatial_dims: int, num_modalities: int, channels: int, out_channels: int) -> None:
        super().__init__()
        conv = Conv[Conv.CONV, spatial_dims]
        self.num_modalities = num_modalities
        self.dual = conv(num_modalities * channels, channels, kernel_size=3, padding=1, bias=True)
        self.gates = nn.ModuleList(
            nn.Sequential(
                conv(2 * channels, channels, kernel_size=3, padding=1),
                Norm[instance_norm_factory_name(), spatial_dims](channels, affine=True),
                Act[Act.LEAKYRELU](negative_slope=0.01, inplace=True),
                conv(channels, channels, kernel_size=3, padding=1),
                nn.Sigmoid(),
            )
            for _ in range(num_modalities)
        )
        self.head = conv(channels, out_channels, kernel_size=1, bias=False)

    def forward(self, features: Sequence[torch.Tensor], present: Sequence[int]) -> torch.Tensor:
        """Fused logits from the full-resolution features of the modalities with indices ``present``.

        The same in training and eval mode.

        Args:
            features: one ``[B, channels, *spatial]`` feature per present modality, in the order of ``present``.
            present: indices of the present modalities among the ``num_modalities``, increasing.

        Returns:
            ``[B, out_channels, *spatial]`` logits.
        """
        scale = self.num_modalities / len(present)
        channels = self.dual.out_channels
        weight = self.dual.weight.view(channels, self.num_modalities, channels, *self.dual.kernel_size)
        weight = weight[:, list(present)].flatten(1, 2)
        if scale != 1:
            weight = weight * scale
        conv = F.conv3d if weight.dim() == 5 else F.conv2d
        dual = conv(torch.cat(list(features), 1), weight, self.dual.bias, padding=1)
        attended = sum(self.gates[m](torch.cat([f, dual], 1)) * f for m, f in zip(present, features))
        return self.head(attended * scale if scale != 1 else attended)


class MAMLNet(nn.Module):
    """Modality-aware Mutual Learning for multi-modal segmentation.

    Zhang et al., "Modality-aware Mutual Learning for Multi-modal Medical Image Segmentation", MICCAI 2021,
    https://arxiv.org/abs/2107.09842. One independent U-Net per modality (no weight sharing, one input channel
    each), fused at the last full-resolution decoder feature by :class:`ModalityAwareFusion`.

    Any non-empty subset of the modalities can be given: ``forward(x, modalities)`` takes ``x`` with one channel
    per present modality, in the order of ``modalities``; the branches of absent modalities are not run, so the
    cost grows with the number present.

    In training mode the forward returns a dict ``{"fused": logits, "branches": [[logits per level, full
    resolution first] per present modality]}`` for :class:`medguide.losses.MAMLLoss`; in eval mode it returns the
    fused logits only, so MONAI's inferers wrap it unchanged.

    One modality present (ours; the official code always has all): in eval mode ``single_modality="fused"`` runs
    the fusion head on that one branch's feature, ``"branch"`` returns the branch's own full-resolution logits, as
    the paper's author advises for a single available modality. The route can also be chosen per call
    (``forward(x, ["flair"], single_modality="branch")``, or as a keyword of a MONAI inferer), so one network can
    be scored both ways. With two or more modalities, and in training mode, the route changes nothing.

    Initialisation as the official code: each branch's convolutions, transposed convolutions and logit heads are
    He-normal (nnU-Net's ``InitWeights_He(1e-2)``, see :class:`UNet`) with bias-free heads; the fusion module keeps
    PyTorch's default.

    Input sizes are those of each branch's :class:`UNet`: every spatial size a multiple of 2^(num_stages - 1), and
    at least one of them 2^num_stages or more so that the bottleneck is not a single voxel, on which instance
    normalisation fails (:func:`medguide.networks.unet_size_rule`). For example, the default ``num_stages=6`` (the
    official build) takes 128x128x128 (a 4x4x4 bottleneck) and 160x160x64 (5x5x2) patches and refuses 32x32x32
    (1x1x1) and 100x100x100 (not a multiple of 32); the smallest cube is 64x64x64. :meth:`forward` raises
    ``ValueError`` naming the size and the nearest valid ones before running.

    Two execution choices make it faster than running one U-Net per modality in a loop, at the same result:
    on the CPU the branches' small stages run as one grouped convolution, which PyTorch sends to oneDNN instead
    of its slow native kernel (:mod:`medguide.networks.branches`), and 3D features are kept in channels-last
    layout, in which oneDNN and cuDNN convolve faster (:mod:`medguide.networks.blocks.norms` keeps the layout through
    instance normalisation). Outputs are returned contiguous.

    Args:
        modalities: distinct names of the modalities in their canonical order, e.g. ``("t1", "t1ce", "t2",
            "flair")``.
        out_channels: number of classes, background included.
        spatial_dims: 2 or 3.
        base_width: width of each branch's full-resolution stage (16 in the paper).
        num_stages: resolution levels per branch, ``num_stages - 1`` down-samplings and deep-supervision outputs.
            The default 6 is the official build for 128^3 patches (five 2x2x2 poolings to a 4x4x4 bottleneck,
            16.6 M parameters per branch at ``base_width=16``, 66.5 M for four modalities).
        max_width: cap on the branch widths (320).
        group_branches: run the branches' small stages as one grouped convolution.
        fusion: ``"ma"`` (the paper's modality-aware fusion) or ``"mean"`` (the ablation without MA: the fused
            logits are the mean of the present branches' full-resolution logits).
        channels_last: keep 3D features in channels-last layout. With both ``False`` the branches run one after
            another in the default layout: the plain reference.
        single_modality: the eval-mode output when exactly one modality is present: ``"fused"`` (the fusion
            head) or ``"branch"`` (that modality's own branch). With ``fusion="mean"`` the two are the same.

    Raises:
        ValueError: ``modalities`` is empty or repeats a name, ``fusion`` is neither ``"ma"`` nor ``"mean"``, or
            ``single_modality`` is neither ``"fused"`` nor ``"branch"``.
    """

    def __init__(
        self,
        modalities: Sequence[str],
        out_channels: int,
        spatial_dims: int = 3,
        base_width: int = 16,
        num_stages: int = 6,
        max_width: int = 320,
        group_branches: bool = True,
        channels_last: bool = True,
        fusion: str = "ma",
        single_modality: str = "fused",
    ) -> None:
        super().__init__()
        self.modalities = distinct_modalities(modalities, "MAMLNet's modalities")
        self.single_modality = _check_route(single_modality)
        self.spatial_dims = spatial_dims
        self.group_branches = group_branches
        self.channels_last = channels_last and spatial_dims == 3
        self.branches = nn.ModuleList(
            UNet(spatial_dims, 1, out_channels, base_width, num_stages, max_width) for _ in self.modalities
        )
        if fusion not in ("ma", "mean"):
            raise ValueError(f"fusion must be 'ma' or 'mean', got {fusion!r}.")
        self.fusion = (
            ModalityAwareFusion(spatial_dims, len(self.modalities), base_width, out_channels)
            if fusion == "ma"
            else None
        )
        if self.channels_last:
            # after the branches' initialisation, which the layout change keeps;
            # weights in the features' layout let oneDNN skip reordering them at every call
            self.to(memory_format=torch.channels_last_3d)
            for param in self.parameters():
                if param.dim() == 5 and param.shape[2:] == (1, 1, 1):
                    # 1x1x1 kernels: the same memory either way, but DDP expects a gradient's strides to match its
                    # weight's (else it warns and copies every step); in float32 the gradients come with the
                    # default strides, under CPU bfloat16 autocast with channels-last ones, which the hook undoes
                    param.data = param.data.clone(memory_format=torch.contiguous_format)
                    param.register_hook(_default_strides)

    def indices(self, modalities: Sequence[str] | str | None) -> list[int]:
        """Indices of ``modalities`` among the network's, checked; ``None`` means all of them.

        Raises:
            ValueError: if ``modalities`` is not a non-empty subset of the network's without repeats
                (:func:`medguide.data.check_modalities`).
        """
        if modalities is None:
            return list(range(len(self.modalities)))
        return [self.modalities.index(m) for m in check_modalities(modalities, self.modalities)]

    def _decode(
        self, x: torch.Tensor, modalities: Sequence[str] | None, single_modality: str | None
    ) -> tuple[str, list[int], list[UNet], list[list[torch.Tensor]]]:
        """The route, the present modalities' indices, their branches and decoder features (input checked)."""
        route = self.single_modality if single_modality is None else _check_route(single_modality)
        present = self.indices(modalities)
        if x.shape[1] != len(present):
            raise ValueError(
                f"input has {x.shape[1]} channels but {len(present)} modalities are named "
                f"({[self.modalities[i] for i in present]}); give one channel per present modality."
            )
        self.branches[0].size_rule.check(x.shape[2:])
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        branches = [self.branches[m] for m in present]
        return route, present, branches, decode_branches(branches, list(x.split(1, 1)), group=self.group_branches)

    def forward(
        self, x: torch.Tensor, modalities: Sequence[str] | None = None, single_modality: str | None = None
    ) -> torch.Tensor | dict[str, torch.Tensor | list[list[torch.Tensor]]]:
        """Segmentation logits from the present modalities.

        Args:
            x: ``[B, k, *spatial]``, one channel per present modality in the order of ``modalities``; the spatial
                sizes fitting :func:`medguide.networks.unet_size_rule` for ``num_stages``.
            modalities: names of the ``k`` present modalities, a non-empty subset of the network's without
                repeats; ``None`` means all of them, in the network's order.
            single_modality: ``"fused"`` or ``"branch"``, this call's route when one modality is present (see the
                class); ``None`` takes the network's :attr:`single_modality`.

        Returns:
            in training mode, ``{"fused": [B, out_channels, *spatial], "branches": [[B, out_channels,
            *spatial / 2^j] for the num_stages - 1 levels j, full resolution first] for each present modality}``;
            in eval mode, the logits ``[B, out_channels, *spatial]`` only: the fused ones, or the branch's with one
            modality present on the ``"branch"`` route.

        Raises:
            ValueError: if the modalities are not a subset of the network's, the channels do not match them, a
                spatial size does not fit the U-Net, or ``single_modality`` is not a route.
        """
        route, present, branches, decoded = self._decode(x, modalities, single_modality)
        if not self.training and len(present) == 1 and route == "branch":
            return branches[0].heads[-1](decoded[0][0]).contiguous()
        if self.fusion is None:
            logits = [[logit.contiguous() for logit in b.logits(levels)] for b, levels in zip(branches, decoded)]
            fused = torch.stack([levels[0] for levels in logits]).mean(0)
        else:
            fused = self.fusion([levels[0] for levels in decoded], present).contiguous()
            if not self.training:
                return fused
            logits = [[logit.contiguous() for logit in b.logits(levels)] for b, levels in zip(branches, decoded)]
        return {"fused": fused, "branches": logits} if self.training else fused

    def subset_logits(
        self,
        x: torch.Tensor,
        modalities: Sequence[str] | None = None,
        subsets: Sequence[Sequence[str]] | None = None,
        single_modality: str | None = None,
    ) -> dict[tuple[str, ...], torch.Tensor]:
        """Eval-mode logits of several subsets of the present modalities, each modality's branch run once.

        The missing-modality evaluation asks for every non-empty subset of a case's modalities (15 for BraTS's
        four). The branches do not see each other (no weight sharing, one input channel each, per-channel instance
        normalisation), so a modality's branch features are the same in every subset that holds it: this runs the
        branches of the present modalities once and only the fusion head per subset, instead of ``sum_k k *
        C(M, k)`` branch passes (32 for four modalities; 4 here). Each subset's logits equal ``forward`` on that
        subset's channels alone, to float rounding. MONAI's ``SlidingWindowInferer`` stitches the returned dict key
        by key (unbuffered; its ``buffer_steps`` mode keeps the first key only), e.g.
        ``SlidingWindowInferer((128, 128, 128))(x, net.subset_logits, modalities=names)``.

        Args:
            x: ``[B, k, *spatial]``, one channel per present modality in the order of ``modalities``, as for
                :meth:`forward`.
            modalities: names of the ``k`` present modalities (``None``: all of the network's, in its order).
            subsets: the subsets to predict, each a non-empty subset of ``modalities`` in any order; default every
                non-empty subset, smallest first (:func:`medguide.data.nonempty_subsets`).
            single_modality: the route of one-modality subsets (``"fused"`` or ``"branch"``, see the class);
                ``None`` takes the network's :attr:`single_modality`.

        Returns:
            ``{subset: [B, out_channels, *spatial] logits}``, keyed by each subset as a tuple of names as given.

        Raises:
            RuntimeError: called in training mode (the training forward returns every branch's deep supervision
                and is one subset per call).
            ValueError: as :meth:`forward`, or a subset is empty or names a modality not in ``modalities``.
        """
        if self.training:
            raise RuntimeError("subset_logits is eval-mode inference; call network.eval() first.")
        route, present, branches, decoded = self._decode(x, modalities, single_modality)
        names = [self.modalities[i] for i in present]
        subsets = nonempty_subsets(names) if subsets is None else [tuple(s) for s in subsets]
        features = [levels[0] for levels in decoded]
        branch_logits: dict[int, torch.Tensor] = {}

        def own(position: int) -> torch.Tensor:  # a branch's full-resolution logits, made once when first needed
            if position not in branch_logits:
                branch_logits[position] = branches[position].heads[-1](features[position]).contiguous()
            return branch_logits[position]

        out = {}
        for subset in subsets:
            # the subset's modalities in the order given (the fusion's sum does not depend on it)
            positions = sorted(names.index(m) for m in check_modalities(subset, names, "the modalities present"))
            if len(positions) == 1 and (route == "branch" or self.fusion is None):
                out[subset] = own(positions[0])
            elif self.fusion is None:
                out[subset] = torch.stack([own(p) for p in positions]).mean(0)
            else:
                out[subset] = self.fusion([features[p] for p in positions], [present[p] for p in positions])
                out[subset] = out[subset].contiguous()
        return out
