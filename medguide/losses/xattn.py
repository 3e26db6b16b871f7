"""Losses of report-guided pneumonia localisation: masked attribute BCE, map alignment and a location prior.

Bhalodia et al., "Improving Pneumonia Localization via Cross-Attention on Medical Images and Reports", MICCAI 2021
(https://arxiv.org/abs/2110.03094; ``../shared/METHODS.md`` section 4). Only the abstract is public; the losses are
ours. The image-only path predicts pneumonia attributes extracted from the report (:class:`MaskedAttributeBCE`; an
attribute the report does not mention is masked, not negative) and an attention map trained to match the map the
report's tokens produce (:class:`MapAlignmentLoss`); :class:`LocationPriorLoss` adds the side and zone the report
names.

Maps are on the region grid of the image encoder in medguide's MONAI layout, ``[B, w, h]`` (spatial axes x, y; a
region sequence ``[B, N]`` is that grid flattened, :func:`medguide.networks.blocks.flatten_regions`). On a frontal
chest film the patient's right is on the image's left: small x.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

from medguide.data.reports import REPORT_ATTRIBUTES

__all__ = ["LocationPriorLoss", "MapAlignmentLoss", "MaskedAttributeBCE", "location_prior"]

ZONES = ("upper", "middle", "lower")


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    # nothing to average must give 0 with a zero gradient, never 0 / 0
    total = weights.sum()
    return (values * weights).sum() / total.clamp(min=torch.finfo(values.dtype).tiny) if total > 0 else values.sum() * 0


class MaskedAttributeBCE(_Loss):
    """Binary cross-entropy with logits over attributes, averaged over the entries the report mentions.

    ``loss = sum(mask * bce(logits, targets)) / sum(mask)`` over the batch and the attributes. A masked entry
    (``mask = 0``, not mentioned) adds nothing whatever its target holds (even nan); a batch with nothing unmasked
    gives 0 with a zero gradient. A mask between 0 and 1 weights the entry (e.g. an uncertain mention). Without a
    mask, a negative target marks the entry not mentioned (``-1``, as the bundle's single ``label`` tensor holds
    them), so a MONAI trainer's ``loss_function(pred, label)`` call works as it is.

    Args:
        pos_weight: ``[A]`` weight of the positive term per attribute (``binary_cross_entropy_with_logits``'s);
            ``None``: 1.
        reduction: ``"mean"`` (over unmasked entries), ``"sum"`` or ``"none"`` (``[B, A]``, 0 at masked entries).

    Raises:
        ValueError: if ``reduction`` is unknown or ``pos_weight`` is not positive.

    Example:
        >>> loss = MaskedAttributeBCE()
        >>> logits, targets = torch.zeros(1, 2), torch.tensor([[1.0, float("nan")]])
        >>> round(loss(logits, targets, torch.tensor([[1, 0]])).item(), 4)  # log 2, the second entry is masked
        0.6931
    """

    pos_weight: torch.Tensor | None

    def __init__(self, pos_weight: Sequence[float] | torch.Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"MaskedAttributeBCE: reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
        weight = None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32).reshape(-1)
        if weight is not None and not (weight > 0).all():
            raise ValueError(f"MaskedAttributeBCE: pos_weight must be positive, got {pos_weight!r}.")
        self.register_buffer("pos_weight", weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The loss: a scalar ``>= 0`` (or ``[B, A]`` with ``reduction="none"``).

        Args:
            logits: ``[B, A]``, unbounded.
            targets: ``[B, A]`` in ``[0, 1]`` where mentioned (anything, nan included, where masked).
            mask: ``[B, A]``, boolean or weights in ``[0, 1]``: 1 where the report mentions the attribute; ``None``:
                ``targets >= 0``.

        Raises:
            ValueError: if the shapes differ, ``pos_weight`` does not have ``A`` entries, or a mentioned target is
                outside ``[0, 1]``.
        """
        if mask is None:
            mask = targets >= 0
        if logits.ndim != 2 or targets.shape != logits.shape or mask.shape != logits.shape:
            raise ValueError(
                f"MaskedAttributeBCE expects logits, targets and mask of one shape [B, A], got {tuple(logits.shape)}, "
                f"{tuple(targets.shape)} and {tuple(mask.shape)}."
            )
        if self.pos_weight is not None and self.pos_weight.numel() != logits.shape[1]:
            raise ValueError(
                f"MaskedAttributeBCE: pos_weight has {self.pos_weight.numel()} entries, the logits "
                f"{logits.shape[1]} attributes."
            )
        weights = mask.to(logits.dtype)
        observed = weights > 0
        targets = torch.where(observed, targets.to(logits.dtype), 0.0)
        if ((targets < 0) | (targets > 1)).any():
            raise ValueError("MaskedAttributeBCE: a mentioned target is outside [0, 1].")
        losses = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=self.pos_weight, reduction="none")
        losses = torch.where(observed, losses, 0.0)
        if self.reduction == "none":
            return losses * weights
        if self.reduction == "sum":
            return (losses * weights).sum()
        return _weighted_mean(losses, weights)


class MapAlignmentLoss(_Loss):
    """KL divergence from the text-guided attention map (a stop-gradient target) to the image-only map.

    Per sample, with ``t`` the text-guided map and ``p`` the image-only map over the ``N`` regions::

        KL(t || p) = sum_n t_n (log t_n - log p_n),

    averaged over the samples with their weights (0 excludes a sample, e.g. one whose report mentions no opacity,
    where the text-guided map points at nothing in particular). ``t`` is detached, so only the image-only path
    learns, and renormalised to sum 1 (so a map summed over several tokens may be given as it is). ``p`` is taken as
    probabilities, as :class:`medguide.networks.blocks.CrossAttention` returns them (head-averaged weights are no
    softmax of anything, so there are no logits to give), clamped at ``eps`` before the log; with ``log_input``, as
    log-probabilities.

    Args:
        log_input: ``prediction`` holds log-probabilities rather than probabilities.
        eps: smallest probability taken in the log, for log-probabilities too (a region the image-only map ignores,
            masked ones included, costs at most ``-t_n log eps``).

    Raises:
        ValueError: if ``eps`` is not in ``(0, 1)``.

    Example:
        >>> t = torch.tensor([[0.5, 0.5, 0.0]])
        >>> MapAlignmentLoss()(t, t).item(), round(MapAlignmentLoss()(torch.tensor([[0.25, 0.25, 0.5]]), t).item(), 4)
        (0.0, 0.6931)
    """

    def __init__(self, log_input: bool = False, eps: float = 1e-8) -> None:
        super().__init__()
        if not 0 < eps < 1:
            raise ValueError(f"MapAlignmentLoss: eps must be in (0, 1), got {eps!r}.")
        self.log_input = log_input
        self.eps = eps

    def forward(
        self, prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss, a scalar ``>= 0``; 0 (with a zero gradient) when every weight is 0.

        Args:
            prediction: the image-only map ``[B, N]`` or ``[B, w, h]``, probabilities summing to 1 per sample
                (log-probabilities with ``log_input``).
            target: the text-guided map, the same shape, non-negative with a positive sum per included sample.
            weight: ``[B]`` per-sample weights (boolean or ``>= 0``); ``None``: all 1.

        Raises:
            ValueError: if the shapes differ, or ``weight`` is not ``[B]``.
        """
        if prediction.shape != target.shape or prediction.ndim < 2:
            raise ValueError(
                f"MapAlignmentLoss expects maps of one shape [B, N] or [B, w, h], got {tuple(prediction.shape)} and "
                f"{tuple(target.shape)}."
            )
        batch = prediction.shape[0]
        weights = torch.ones(batch, device=prediction.device) if weight is None else weight.reshape(-1)
        if weights.shape[0] != batch:
            raise ValueError(f"MapAlignmentLoss: weight must be [{batch}], got {tuple(weight.shape)}.")
        weights = weights.to(device=prediction.device, dtype=torch.float32)
        with torch.autocast(prediction.device.type, enabled=False):
            log_p = prediction.flatten(1).float()
            log_p = (log_p if self.log_input else log_p.clamp(min=self.eps).log()).clamp(min=math.log(self.eps))
            t = target.detach().flatten(1).float().clamp(min=0)
            t = t / t.sum(dim=1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
            divergence = F.kl_div(log_p, t, reduction="none").sum(dim=1)
        # an excluded sample's map may be anything; its zero weight must not turn a nan into the loss
        divergence = torch.where(weights > 0, divergence, 0.0)
        return _weighted_mean(divergence, weights)


def _band_rows(height: int, lung_rows: tuple[float, float], device: torch.device) -> torch.Tensor:
    """Each grid row's centre as a fraction of the lung band ``lung_rows`` (0 at its top, 1 at its bottom), ``[h]``."""
    top, bottom = lung_rows
    return ((torch.arange(height, device=device) + 0.5) / height - top) / (bottom - top)


def location_prior(
    targets: torch.Tensor,
    mask: torch.Tensor,
    grid_size: Sequence[int],
    attributes: Sequence[str] = REPORT_ATTRIBUTES,
    lung_rows: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """Where the report allows the finding on the region grid: a boolean ``[B, w, h]`` mask.

    Geometry (medguide's MONAI layout: x = spatial axis 0, left to right on the image; y = axis 1, top to bottom):

    - side: the patient's right is the image's left half (regions whose centre has ``x <= w / 2``), the patient's
      left the right half (``x >= w / 2``); with odd ``w`` the middle column, the mediastinum, is in both;
    - zone: the band ``lung_rows`` of the image's height (fractions, default the whole height: a crude lung field)
      is cut into thirds, upper, middle and lower; a region is in a zone when its centre is;
    - the allowed region is the union of the sides stated present times the union of the zones stated present;
      a report that states no side allows both, one that states no zone (or states ``extensive``) allows the whole
      height. An attribute counts as stated present when it is mentioned (``mask > 0``) and its target is above 0.5.

    Args:
        targets: ``[B, A]`` attribute targets in ``[0, 1]``, in the order of ``attributes``.
        mask: ``[B, A]``, nonzero where the report mentions the attribute.
        grid_size: ``(w, h)`` of the region grid.
        attributes: the attribute names (default :data:`medguide.data.REPORT_ATTRIBUTES`, the order the report
            parser gives its targets in; ``left`` and ``right`` are the patient's sides). ``left``, ``right``,
            ``upper``, ``middle``, ``lower`` and ``extensive`` are read; any absent one is never stated.
        lung_rows: the lung band as fractions of the height, ``0 <= top < bottom <= 1``.

    Raises:
        ValueError: if ``targets`` and ``mask`` are not ``[B, len(attributes)]``, ``grid_size`` is not two positive
            integers, or ``lung_rows`` is not an increasing pair in ``[0, 1]``.

    Example:
        >>> prior = location_prior(torch.tensor([[1.0, 0, 1, 0, 0, 1, 0]]), torch.ones(1, 7), (4, 3))  # right lower
        >>> prior[0].int().T.tolist()  # printed as the image is seen: rows top to bottom, patient's right on the left
        [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
    """
    attributes = tuple(attributes)
    if targets.ndim != 2 or targets.shape != mask.shape or targets.shape[1] != len(attributes):
        raise ValueError(
            f"location_prior expects targets and mask [B, {len(attributes)}], got {tuple(targets.shape)} and "
            f"{tuple(mask.shape)}."
        )
    if len(grid_size) != 2 or min(grid_size) < 1:
        raise ValueError(f"location_prior: grid_size must be two positive integers (w, h), got {grid_size!r}.")
    top, bottom = lung_rows
    if not 0 <= top < bottom <= 1:
        raise ValueError(f"location_prior: lung_rows must be 0 <= top < bottom <= 1, got {lung_rows!r}.")
    width, height = (int(s) for s in grid_size)
    stated = (mask > 0) & (targets > 0.5)

    def present(name: str) -> torch.Tensor:
        return stated[:, attributes.index(name)] if name in attributes else torch.zeros_like(stated[:, 0])

    x = (torch.arange(width, device=targets.device) + 0.5) / width
    y = _band_rows(height, lung_rows, targets.device)
    side_cells = torch.stack([x <= 0.5, x >= 0.5])  # image left = patient right, image right = patient left
    sides = torch.stack([present("right"), present("left")], dim=1)  # [B, 2]
    sides = sides | ~sides.any(dim=1, keepdim=True)
    columns = (sides[:, :, None] & side_cells[None]).any(dim=1)  # [B, w]
    zone_cells = torch.stack([(y >= k / 3) & (y < (k + 1) / 3) for k in range(3)])
    zones = torch.stack([present(name) for name in ZONES], dim=1)  # [B, 3]
    anywhere = ~zones.any(dim=1) | present("extensive")
    rows = (zones[:, :, None] & zone_cells[None]).any(dim=1) | anywhere[:, None]  # [B, h]
    return columns[:, :, None] & rows[:, None, :]


class LocationPriorLoss(_Loss):
    """Attention mass outside the lung region the report names (:func:`location_prior`), averaged over samples.

    Per sample, ``sum(map * (1 - prior))`` in ``[0, 1]`` for a map summing to 1; averaged over the samples whose
    report states opacity present and a side or zone (``extensive`` alone constrains nothing), 0 with a zero
    gradient when there is none.

    With ``spread=True`` the map is instead pulled toward the uniform distribution over the allowed region,
    ``KL(uniform(prior) || map) = -log(n) - mean over the n allowed cells of log(map)`` (``>= 0``, 0 for exactly that
    map), over every sample (a report that names no zone allows the whole lung band, ``lung_rows``; a named region
    with no cell centre on a coarse grid leaves the sample out). Mass outside costs as before,
    and so does a map that collapses onto one allowed cell: meant for a map that only says *where the report
    points* (:class:`medguide.networks.ReportGuidance`'s ``location``), which the mass alone lets settle on any one
    cell of the zone, the same for every film.

    Args:
        attributes: the attribute names in the order of the targets (default
            :data:`medguide.data.REPORT_ATTRIBUTES`; ``opacity`` must be among them).
        lung_rows: the lung band as fractions of the image height (see :func:`location_prior`).
        spread: the KL form above instead of the mass outside.

    Raises:
        ValueError: if ``attributes`` has no ``opacity``, or as :func:`location_prior`.

    Example:
        >>> attention = torch.zeros(1, 4, 3)
        >>> attention[0, 3, 2] = 1.0  # all mass in the image's bottom right corner: the patient's left lower zone
        >>> right_lower = torch.tensor([[1.0, 0, 1, 0, 0, 1, 0]])
        >>> LocationPriorLoss()(attention, right_lower, torch.ones(1, 7)).item()
        1.0
    """

    def __init__(
        self,
        attributes: Sequence[str] = REPORT_ATTRIBUTES,
        lung_rows: tuple[float, float] = (0.0, 1.0),
        spread: bool = False,
    ) -> None:
        super().__init__()
        self.spread = bool(spread)
        self.attributes = tuple(attributes)
        if "opacity" not in self.attributes:
            raise ValueError(f"LocationPriorLoss: attributes must include 'opacity', got {self.attributes}.")
        top, bottom = lung_rows
        if not 0 <= top < bottom <= 1:
            raise ValueError(f"LocationPriorLoss: lung_rows must be 0 <= top < bottom <= 1, got {lung_rows!r}.")
        self.lung_rows = (float(top), float(bottom))

    def forward(
        self,
        attention: torch.Tensor,
        targets: torch.Tensor,
        mask: torch.Tensor,
        grid_size: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """The loss, a scalar in ``[0, 1]`` (``spread``: ``>= 0``).

        Args:
            attention: the image-only map ``[B, w, h]``, or ``[B, N]`` with ``grid_size``; probabilities.
            targets: ``[B, A]`` attribute targets.
            mask: ``[B, A]``, nonzero where mentioned.
            grid_size: ``(w, h)`` when ``attention`` is flattened.

        Raises:
            ValueError: if ``attention`` is neither ``[B, w, h]`` nor ``[B, w * h]`` with ``grid_size``, or as
                :func:`location_prior`.
        """
        if attention.ndim == 3 and grid_size is None:
            grid_size = tuple(attention.shape[1:])
        if grid_size is None or attention.ndim not in (2, 3) or attention[0].numel() != grid_size[0] * grid_size[1]:
            raise ValueError(
                f"LocationPriorLoss expects attention [B, w, h], or [B, w * h] with grid_size, got "
                f"{tuple(attention.shape)} and grid_size {grid_size!r}."
            )
        prior = location_prior(targets, mask, grid_size, self.attributes, self.lung_rows)
        if self.spread:
            # a report that names no zone allows the whole height; spread over the lung band only
            y = _band_rows(grid_size[1], self.lung_rows, prior.device)
            band = (y >= 0) & (y <= 1)
            allowed = (prior & band[None, None, :]).flatten(1).to(attention.dtype)
            count = allowed.sum(dim=1)
            log_map = attention.flatten(1).clamp_min(1e-6).log()
            kl = -count.clamp_min(1).log() - (log_map * allowed).sum(dim=1) / count.clamp_min(1)
            return _weighted_mean(kl, (count > 0).to(kl.dtype))  # a region with no cell on this grid: left out
        outside = (attention.flatten(1) * ~prior.flatten(1)).sum(dim=1)
        stated = (mask > 0) & (targets > 0.5)
        located = stated[:, [self.attributes.index(n) for n in ("left", "right", *ZONES) if n in self.attributes]]
        include = stated[:, self.attributes.index("opacity")] & located.any(dim=1)
        return _weighted_mean(outside, include.to(outside.dtype))
