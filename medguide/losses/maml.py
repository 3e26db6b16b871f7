"""Loss of Modality-aware Mutual Learning (MAML)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch.nn.modules.loss import _Loss

__all__ = ["MAMLLoss", "MUTUAL_DIRECTIONS", "TrainingProgress", "nnunet_deep_supervision_weights", "sigmoid_ramp_up"]

MUTUAL_DIRECTIONS = ("symmetric", "fused_to_branches")
"""Who teaches whom in :class:`MAMLLoss`'s mutual term."""


def nnunet_deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's deep-supervision weights: halving per level, the lowest resolution 0, normalised to sum 1.

    Example:
        >>> [round(w * 15) for w in nnunet_deep_supervision_weights(5)]
        [8, 4, 2, 1, 0]
    """
    raw = [0.5**k for k in range(levels)]
    if levels > 1:
        raw[-1] = 0.0
    total = sum(raw)
    return [w / total for w in raw]


def sigmoid_ramp_up(progress: float, length: float) -> float:
    """Mean teacher's sigmoid-shaped ramp-up ``exp(-5 (1 - t)^2)`` with ``t = min(progress / length, 1)``.

    Laine & Aila, "Temporal Ensembling for Semi-Supervised Learning", ICLR 2017, and Tarvainen & Valpola, "Mean
    teachers are better role models", NeurIPS 2017 (https://arxiv.org/abs/1703.01780). It starts at
    ``exp(-5) = 0.0067``, is ``exp(-1.25) = 0.29`` half-way and 1 from ``progress = length`` on; ``length = 0``
    means no ramp (1 throughout).

    Example:
        >>> round(sigmoid_ramp_up(0.1, 0.2), 4)
        0.2865

    Args:
        progress: share of training done, in [0, 1].
        length: share of training over which the ramp rises, in [0, 1].
    """
    if length == 0:
        return 1.0
    return math.exp(-5 * (1 - min(progress / length, 1.0)) ** 2)


class MAMLLoss(_Loss):
    """Joint loss of MAML, as in the official code, plus an optional mutual-learning term.

    ``L = w_0 * L(fused) + sum_m sum_k w_k * L(branch_m at level k)`` with nnU-Net's Dice+CE as ``L`` and
    nnU-Net's deep-supervision weights ``w`` (``[8/15, 4/15, 2/15, 1/15, 0]`` for five levels). Targets at the
    lower levels are made by MONAI's :class:`~monai.losses.DeepSupervisionLoss` (nearest-exact resizing).

    ``mutual_weight`` (ours; 0, the default, is the official code) adds a mutual-learning term at full resolution,
    as in deep mutual learning (Zhang et al., CVPR 2018, https://arxiv.org/abs/1706.00384) and knowledge
    distillation (Hinton et al., 2015, https://arxiv.org/abs/1503.02531), with
    softmax probabilities at temperature ``T`` (``p = softmax(logits / T)``) and ``sg`` stopping the gradient:

    - ``mutual_direction="symmetric"``: ``T^2 mean_m [KL(sg(p_fused) || p_m) + KL(sg(p_m) || p_fused)]``, each
      branch learns from the fused prediction and the fused prediction from each branch;
    - ``"fused_to_branches"``: ``T^2 mean_m KL(sg(p_fused) || p_m)``, the fused prediction teaches the branches
      (which cannot see the other modalities) and is not pulled toward them.

    KL is summed over classes and averaged over voxels and batch; ``T^2`` keeps the gradient's scale independent of
    ``T`` (Hinton et al.). The term's weight is ``mutual_weight * sigmoid_ramp_up(progress, mutual_ramp_up)``: with
    ``mutual_ramp_up > 0`` it rises from about 0 to ``mutual_weight`` over that share of training, so that a
    random fused head teaches nothing at the start. The loss learns how far training is through :attr:`progress`,
    which :class:`TrainingProgress` sets at every iteration of an Ignite trainer (or :meth:`set_progress`).

    Args:
        mutual_weight: weight of the mutual term, 0 or more.
        mutual_direction: ``"symmetric"`` or ``"fused_to_branches"``.
        mutual_temperature: softmax temperature ``T`` of the mutual term, above 0.
        mutual_ramp_up: share of training (of all iterations) over which the weight ramps up, in [0, 1]; 0 means
            full weight from the first iteration.
        include_background: Dice over the background class too (nnU-Net: no).
        batch_dice: Dice over the whole batch as one volume (nnU-Net's ``batch_dice``).
        smooth: Dice smoothing, numerator and denominator.

    Attributes:
        progress: share of training done, in [0, 1], or ``None`` until told.

    Raises:
        ValueError: an option is out of its range or not one of its values.
    """

    def __init__(
        self,
        mutual_weight: float = 0.0,
        mutual_direction: str = "symmetric",
        mutual_temperature: float = 1.0,
        mutual_ramp_up: float = 0.0,
        include_background: bool = False,
        batch_dice: bool = True,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        if mutual_weight < 0:
            raise ValueError(f"mutual_weight must be 0 or more, got {mutual_weight}.")
        if mutual_direction not in MUTUAL_DIRECTIONS:
            raise ValueError(f"mutual_direction must be 'symmetric' or 'fused_to_branches', got {mutual_direction!r}.")
        if not mutual_temperature > 0:
            raise ValueError(f"mutual_temperature must be above 0, got {mutual_temperature}.")
        if not 0 <= mutual_ramp_up <= 1:
            raise ValueError(f"mutual_ramp_up must be a share of training in [0, 1], got {mutual_ramp_up}.")
        self.mutual_weight = mutual_weight
        self.mutual_direction = mutual_direction
        self.mutual_temperature = mutual_temperature
        self.mutual_ramp_up = mutual_ramp_up
        self.progress: float | None = None
        self.dice_ce = DiceCELoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            batch=batch_dice,
            smooth_nr=smooth,
            smooth_dr=smooth,
        )

    def set_progress(self, fraction: float) -> None:
        """Tell the loss that ``fraction`` (in [0, 1]) of training is done; the mutual term's ramp reads it.

        Raises:
            ValueError: ``fraction`` is outside [0, 1].
        """
        if not 0 <= fraction <= 1:
            raise ValueError(f"training progress must be in [0, 1], got {fraction}.")
        self.progress = float(fraction)

    def current_mutual_weight(self) -> float:
        """The mutual term's weight now: ``mutual_weight`` times the ramp at :attr:`progress`.

        Raises:
            RuntimeError: the weight ramps up (``mutual_weight > 0`` and ``mutual_ramp_up > 0``) but no progress
                was set: attach :class:`TrainingProgress` to the trainer.
        """
        if not self.mutual_weight or not self.mutual_ramp_up:
            return self.mutual_weight
        if self.progress is None:
            raise RuntimeError(
                "MAMLLoss ramps its mutual term up over training but was not told the training progress: attach "
                "medguide.losses.TrainingProgress(loss) to the trainer, or call loss.set_progress(fraction)."
            )
        return self.mutual_weight * sigmoid_ramp_up(self.progress, self.mutual_ramp_up)

    def forward(self, pred: dict, target: torch.Tensor) -> torch.Tensor:
        """``pred`` is :class:`medguide.networks.MAMLNet`'s training output, ``target`` the label map [B, 1, ...].

        A prediction without ``"fused"`` (:class:`medguide.networks.ModalityUNet`) gets its deep supervision only.

        Raises:
            RuntimeError: the mutual term ramps up but no training progress was set (:meth:`current_mutual_weight`).
        """
        levels = len(pred["branches"][0])
        weights = nnunet_deep_supervision_weights(levels)
        deep = DeepSupervisionLoss(self.dice_ce, weights=weights)
        loss = sum(deep(branch, target) for branch in pred["branches"])
        if "fused" not in pred:  # a single U-Net baseline: its deep supervision alone
            return loss
        # float(): reduced-precision logits would otherwise make the loss itself reduced precision
        loss = loss + weights[0] * self.dice_ce(pred["fused"].float(), target)
        weight = self.current_mutual_weight()
        if weight:
            branches = [b[0] for b in pred["branches"]]
            loss = loss + weight * self.mutual(pred["fused"], branches, self.mutual_direction, self.mutual_temperature)
        return loss

    @staticmethod
    def mutual(
        fused: torch.Tensor, branches: list[torch.Tensor], direction: str = "symmetric", temperature: float = 1.0
    ) -> torch.Tensor:
        """The mutual-learning term between the fused and each branch's full-resolution logits (see the class).

        Args:
            fused: ``[B, C, *spatial]`` fused logits.
            branches: ``[B, C, *spatial]`` logits of each present branch.
            direction: ``"symmetric"`` or ``"fused_to_branches"``.
            temperature: softmax temperature ``T``; the KL is multiplied by ``T^2``.

        Returns:
            a scalar, 0 when every branch agrees with the fused prediction.
        """
        log_fused = F.log_softmax(fused.float() / temperature, 1)
        terms = []
        for branch in branches:
            log_branch = F.log_softmax(branch.float() / temperature, 1)
            term = _kl(log_fused.detach(), log_branch)
            if direction == "symmetric":
                term = term + _kl(log_branch.detach(), log_fused)
            terms.append(term)
        return temperature**2 * torch.stack(terms).mean()


def _kl(log_target: torch.Tensor, log_input: torch.Tensor) -> torch.Tensor:
    """``KL(target || input)`` from log-probabilities over dim 1, summed over classes, averaged over the rest."""
    return F.kl_div(log_input, log_target, log_target=True, reduction="none").sum(1).mean()


class TrainingProgress:
    """Ignite handler that tells a loss how far training is: ``loss.set_progress(fraction)`` at every iteration.

    ``fraction = (iteration - 1) / (max_epochs * epoch_length)``, the share of iterations done before the one that
    starts, set at ``ITERATION_STARTED``: 0 at the first iteration, just below 1 at the last. It works with MONAI's
    trainers as one of their ``train_handlers`` (they call :meth:`attach`), e.g. in a bundle config::

        {"_target_": "medguide.losses.TrainingProgress", "loss": "@loss"}

    Args:
        loss: anything with ``set_progress(fraction)``, e.g. :class:`MAMLLoss`.
    """

    def __init__(self, loss: MAMLLoss) -> None:
        self.loss = loss

    def attach(self, engine: Engine) -> None:
        """Update the loss's progress at every ``ITERATION_STARTED`` of ``engine``."""
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        state = engine.state
        self.loss.set_progress((state.iteration - 1) / (state.max_epochs * state.epoch_length))
