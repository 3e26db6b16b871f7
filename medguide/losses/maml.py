"""Loss of Modality-aware Mutual Learning (MAML)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch.nn.modules.loss import _Loss

__all__ = ["MAMLLoss", "nnunet_deep_supervision_weights"]


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


class MAMLLoss(_Loss):
    """Joint loss of MAML, as in the official code, plus an optional mutual-learning term.

    ``L = w_0 * L(fused) + sum_m sum_k w_k * L(branch_m at level k)`` with nnU-Net's Dice+CE as ``L`` and
    nnU-Net's deep-supervision weights ``w`` (``[8/15, 4/15, 2/15, 1/15, 0]`` for five levels). Targets at the
    lower levels are made by MONAI's :class:`~monai.losses.DeepSupervisionLoss` (nearest-exact resizing).

    ``mutual_weight`` (ours; 0, the default, is the official code) adds
    ``mutual_weight * mean_m [KL(sg(p_fused) || p_m) + KL(sg(p_m) || p_fused)]`` at full resolution, where
    ``p`` are softmax probabilities and ``sg`` stops the gradient: each branch learns from the fused prediction
    and the fused prediction from each branch, as in deep mutual learning (Zhang et al., CVPR 2018).

    Args:
        mutual_weight: weight of the mutual term.
        include_background: Dice over the background class too (nnU-Net: no).
        batch_dice: Dice over the whole batch as one volume (nnU-Net's ``batch_dice``).
        smooth: Dice smoothing, numerator and denominator.
    """

    def __init__(
        self,
        mutual_weight: float = 0.0,
        include_background: bool = False,
        batch_dice: bool = True,
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        self.mutual_weight = mutual_weight
        self.dice_ce = DiceCELoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            batch=batch_dice,
            smooth_nr=smooth,
            smooth_dr=smooth,
        )

    def forward(self, pred: dict, target: torch.Tensor) -> torch.Tensor:
        """``pred`` is :class:`medguide.networks.MAMLNet`'s training output, ``target`` the label map [B, 1, ...].

        A prediction without ``"fused"`` (:class:`medguide.networks.ModalityUNet`) gets its deep supervision only.
        """
        levels = len(pred["branches"][0])
        weights = nnunet_deep_supervision_weights(levels)
        deep = DeepSupervisionLoss(self.dice_ce, weights=weights)
        loss = sum(deep(branch, target) for branch in pred["branches"])
        if "fused" not in pred:  # a single U-Net baseline: its deep supervision alone
            return loss
        # float(): reduced-precision logits would otherwise make the loss itself reduced precision
        loss = loss + weights[0] * self.dice_ce(pred["fused"].float(), target)
        if self.mutual_weight:
            loss = loss + self.mutual_weight * self.mutual(pred["fused"], [b[0] for b in pred["branches"]])
        return loss

    @staticmethod
    def mutual(fused: torch.Tensor, branches: list[torch.Tensor]) -> torch.Tensor:
        """Symmetric mutual-learning KL between the fused and each branch's full-resolution prediction."""
        log_fused = F.log_softmax(fused.float(), 1)
        terms = []
        for branch in branches:
            log_branch = F.log_softmax(branch.float(), 1)
            terms.append(
                F.kl_div(log_branch, log_fused.detach(), log_target=True, reduction="none").sum(1).mean()
                + F.kl_div(log_fused, log_branch.detach(), log_target=True, reduction="none").sum(1).mean()
            )
        return torch.stack(terms).mean()
