"""Concept distillation losses: a teacher's concept similarities taught to a student of another modality.

Wang et al., "MultiEYE: Dataset and Benchmark for OCT-Enhanced Retinal Disease Recognition from Fundus Images",
IEEE TMI 2025, https://arxiv.org/abs/2412.09402 (code: https://github.com/xmed-lab/MultiEYE, its
``process/finetune.py``; ``../shared/METHODS.md`` section 3). A batch holds B fundus images (the student's) and B OCT
images (the frozen teacher's), unpaired but label-matched: OCT image ``i`` has the label of fundus image ``i``. Both
networks are :class:`medguide.networks.ConceptClassifier` and give similarity vectors ``[B, L, K]`` (L = 2 levels,
K concepts; :attr:`medguide.networks.blocks.ConceptOutputs.levels`). The student's loss (:class:`OCTCoDALoss`) is

    ``CE(student logits, y) + gate * (alpha * L_local + beta * L_global)``

with ``L_local`` a supervised contrastive loss over the 2B similarity vectors (:class:`SupervisedContrastiveLoss`),
``L_global`` the MSE between the class prototypes of the two modalities (:class:`ClassPrototypeMSELoss`) and
``gate`` SwitOKD's switch (:func:`switokd_gate`). MONAI's ``ContrastiveLoss`` is SimCLR's NT-Xent (one positive per
sample, its augmented view, on cosine similarity), so it cannot take several same-label positives and is not used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.loss import _Loss

__all__ = ["ClassPrototypeMSELoss", "OCTCoDALoss", "SupervisedContrastiveLoss", "switokd_gate"]


def _labels(labels: torch.Tensor, size: int, name: str, num_classes: int | None = None) -> torch.Tensor:
    # collated labels may come as [B, 1] or as integral floats
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] != size:
        raise ValueError(f"{name} must be class indices [{size}], got shape {tuple(labels.shape)}.")
    if labels.is_floating_point():
        if not torch.equal(labels, labels.round()):
            raise ValueError(f"{name} must be class indices; got fractional values.")
        labels = labels.long()
    if num_classes is not None and ((labels < 0) | (labels >= num_classes)).any():
        bad = int(((labels < 0) | (labels >= num_classes)).nonzero()[0])
        raise ValueError(f"{name}[{bad}] = {int(labels[bad])} is not one of the classes 0..{num_classes - 1}.")
    return labels


def _levels(similarities: torch.Tensor, name: str) -> torch.Tensor:
    if similarities.ndim == 2:
        return similarities[:, None]
    if similarities.ndim != 3:
        raise ValueError(
            f"{name} must be similarity vectors [N, K] or [N, levels, K], got shape {tuple(similarities.shape)}."
        )
    return similarities


class SupervisedContrastiveLoss(_Loss):
    """Supervised contrastive loss (Khosla et al., NeurIPS 2020) on raw dot products, per level, averaged.

    For each level, with ``z_i`` the ``N`` vectors and ``P(i)`` the other vectors of ``i``'s label::

        l_ij = z_i . z_j / temperature,
        L = mean over anchors i with P(i) non-empty of  -1/|P(i)| sum_{j in P(i)} (l_ij - log sum_{k != i} exp l_ik),

    then the mean over levels. MultiEYE uses it on the 2B similarity vectors of fundus and OCT (OCT detached), with
    ``temperature = 10`` dividing the plain dot product of the similarity vectors (not normalised: the first level
    is already made of cosines, the second is not), and the two levels weighted 0.5 each. An anchor with no positive
    (its label nowhere else in the set) adds nothing, where MultiEYE's code would give nan (it then drops the whole
    distillation term for that batch); label-matched pairs always give every anchor a positive.

    Args:
        temperature: divides the dot products (> 0; MultiEYE: 10).
        normalize: L2-normalise each vector first (cosine similarities, the usual SupCon); MultiEYE does not.

    Raises:
        ValueError: if ``temperature`` is not positive.

    Example:
        >>> loss = SupervisedContrastiveLoss(temperature=1.0)
        >>> round(loss(torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0, 1])).item(), 4)
        0.3133
    """

    def __init__(self, temperature: float = 10.0, normalize: bool = False) -> None:
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"SupervisedContrastiveLoss: temperature must be positive, got {temperature!r}.")
        self.temperature = float(temperature)
        self.normalize = normalize

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss, a scalar ``>= 0`` (0 when no vector shares its label with another).

        Args:
            features: ``[N, K]`` or ``[N, levels, K]`` (e.g. ``torch.cat([student.levels, teacher.levels.detach()])``).
            labels: ``[N]`` class indices (any integers; equal means positive).

        Raises:
            ValueError: if ``features`` is not 2- or 3-dimensional or ``labels`` is not ``[N]`` integral.
        """
        z = _levels(features, "features").transpose(0, 1)  # [levels, N, K]
        labels = _labels(labels, z.shape[1], "labels")
        # under mixed precision a bfloat16 product of logits up to K / temperature would be off by a few hundredths
        with torch.autocast(z.device.type, enabled=False):
            z = F.normalize(z.float(), dim=-1) if self.normalize else z.float()
            logits = z @ z.transpose(1, 2) / self.temperature  # [levels, N, N]
        self_pairs = torch.eye(z.shape[1], dtype=torch.bool, device=z.device)
        log_prob = logits - torch.logsumexp(logits.masked_fill(self_pairs, float("-inf")), dim=2, keepdim=True)
        positives = (labels[:, None] == labels[None, :]) & ~self_pairs
        counts = positives.sum(dim=1)
        anchors = counts > 0
        if not anchors.any():
            return logits.sum() * 0.0
        per_anchor = -(log_prob * positives).sum(dim=2)[:, anchors] / counts[anchors]  # [levels, anchors]
        return per_anchor.mean()


class ClassPrototypeMSELoss(_Loss):
    """MSE between the student's and the teacher's class prototypes (mean similarity vector per class) in a batch.

    For each class ``c`` present in both sets, ``p_c`` is the mean of the student's vectors of label ``c`` and
    ``q_c`` the teacher's; the loss is the mean squared difference over those classes and every other axis
    (``torch.nn.functional.mse_loss`` of the stacked prototypes), as MultiEYE's global distillation. The teacher side is
    always detached. MultiEYE's code detaches the student's prototypes too, so the term trains nothing there; here the
    gradient reaches the student unless ``detach_student=True`` (the public code's behaviour, for comparison).

    Args:
        detach_student: detach the student's prototypes as MultiEYE's code does (the loss then has no gradient).

    Example:
        >>> loss = ClassPrototypeMSELoss()
        >>> loss(torch.tensor([[1.0], [3.0]]), torch.tensor([0, 0]), torch.tensor([[0.0]]), torch.tensor([0])).item()
        4.0
    """

    def __init__(self, detach_student: bool = False) -> None:
        super().__init__()
        self.detach_student = detach_student

    def forward(
        self,
        student: torch.Tensor,
        student_labels: torch.Tensor,
        teacher: torch.Tensor,
        teacher_labels: torch.Tensor,
    ) -> torch.Tensor:
        """The loss, a scalar ``>= 0``; 0 when no class is in both sets.

        Args:
            student: the student's vectors ``[B, ...]`` (e.g. ``[B, levels, K]``).
            student_labels: ``[B]`` class indices.
            teacher: the teacher's vectors ``[B', ...]``, the same trailing shape.
            teacher_labels: ``[B']`` class indices.

        Raises:
            ValueError: if the trailing shapes differ or a labels tensor does not match its vectors.
        """
        if student.shape[1:] != teacher.shape[1:]:
            raise ValueError(
                f"student vectors {tuple(student.shape)} and teacher vectors {tuple(teacher.shape)} differ after the "
                "batch axis."
            )
        student_labels = _labels(student_labels, student.shape[0], "student_labels")
        teacher_labels = _labels(teacher_labels, teacher.shape[0], "teacher_labels")
        present = student_labels.unique()
        shared = present[torch.isin(present, teacher_labels)]
        if shared.numel() == 0:
            return student.sum() * 0.0
        if self.detach_student:
            student = student.detach()
        teacher_prototypes = _prototypes(teacher.detach(), teacher_labels, shared)
        return F.mse_loss(_prototypes(student, student_labels, shared), teacher_prototypes)


def _prototypes(vectors: torch.Tensor, labels: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    members = (labels[None, :] == classes[:, None]).float()  # [C, B]
    with torch.autocast(vectors.device.type, enabled=False):
        means = members @ vectors.flatten(1).float() / members.sum(dim=1, keepdim=True)
    return means.view(len(classes), *vectors.shape[1:])


def _distance_to_labels(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.softmax(dim=1) - F.one_hot(labels, logits.shape[1]).to(logits.dtype)).abs().sum(dim=1).mean()


@torch.no_grad()
def switokd_gate(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Whether to distil this batch: SwitOKD's switch as MultiEYE's code uses it, one decision per batch.

    Qian et al., "Switchable Online Knowledge Distillation", ECCV 2022 (code: https://github.com/hfutqian/SwitOKD).

    With batch means of L1 distances between softmax probabilities and one-hot labels,
    ``s = mean_i |softmax(student_i) - y_i|_1``, ``t = mean_i |softmax(teacher_i) - y'_i|_1`` and
    ``g = mean_i |softmax(student_i) - softmax(teacher_i)|_1`` (the distillation gap, temperature 1), and the adaptive
    threshold ``delta = s - exp(-t / (s + t)) * t``, distillation is on when the teacher is closer to the labels than
    the student (``t < s``) and the gap exceeds the threshold (``g > delta``): the condition of SwitOKD's "expert
    mode" (there the teacher pauses while the student keeps distilling; otherwise both learn). MultiEYE's teacher is
    frozen, so otherwise it trains the student with cross entropy alone for that batch. Each distance lies in
    ``[0, 2]``; since ``g >= |s - t|`` and ``exp(-t / (s + t)) < 1``, a teacher whose probabilities lie on the way from
    the student's to the labels (``g = s - t``: with two classes, a teacher more confident in the right class on
    every sample) never opens the gate.

    Args:
        student_logits: ``[B, C]``.
        teacher_logits: ``[B, C]``, row ``i`` from the teacher's image paired with the student's image ``i``.
        targets: ``[B]`` the student's class indices.
        teacher_targets: ``[B]`` the teacher's class indices (default ``targets``; MultiEYE's label-matched pairs
            make them equal, and its code uses ``targets`` for both).

    Returns:
        a 0-dimensional bool tensor (no gradient), on the logits' device.

    Raises:
        ValueError: if the logits are not both ``[B, C]`` or a target is not one of the C classes.
    """
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} must both "
            "be [B, classes]."
        )
    size, classes = student_logits.shape
    targets = _labels(targets, size, "targets", classes)
    teacher_targets = targets if teacher_targets is None else _labels(teacher_targets, size, "teacher_targets", classes)
    student_logits, teacher_logits = student_logits.float(), teacher_logits.float()
    s = _distance_to_labels(student_logits, targets)
    t = _distance_to_labels(teacher_logits, teacher_targets)
    gap = (student_logits.softmax(dim=1) - teacher_logits.softmax(dim=1)).abs().sum(dim=1).mean()
    threshold = s - torch.exp(-t / (s + t)) * t
    return (gap > threshold) & (t < s)


class OCTCoDALoss(_Loss):
    """OCT-CoDA's student loss: ``CE + gate * (alpha * L_local + beta * L_global)`` (MultiEYE, IEEE TMI 2025).

    - ``CE``: ``torch.nn.functional.cross_entropy`` of the student's logits;
    - ``L_local``: :class:`SupervisedContrastiveLoss` over ``cat(student levels, teacher levels)`` ``[2B, L, K]``
      with labels ``cat(targets, teacher_targets)``;
    - ``L_global``: :class:`ClassPrototypeMSELoss` between the student's and the teacher's levels;
    - ``gate``: :func:`switokd_gate` (1 or 0 per batch), or always 1 with ``gate=False``.

    The teacher's outputs are detached throughout (it is frozen). Defaults are those of MultiEYE's published run
    (``alpha_distill 0.6``, ``beta_distill 0.05``, ``temperature 10`` in its README; ``main.py``'s own default for
    beta is 0.03).

    Args:
        alpha: weight of ``L_local`` (>= 0).
        beta: weight of ``L_global`` (>= 0).
        temperature: of the contrastive loss (> 0).
        gate: distil only in batches where :func:`switokd_gate` opens; ``False`` distils every batch.
        detach_student_prototypes: detach the student's prototypes as MultiEYE's code does (``L_global`` then
            trains nothing); by default its gradient reaches the student.
        normalize_contrast: L2-normalise the similarity vectors before the contrastive dot products (MultiEYE does
            not).

    Raises:
        ValueError: if ``alpha`` or ``beta`` is negative or ``temperature`` not positive.
    """

    def __init__(
        self,
        alpha: float = 0.6,
        beta: float = 0.05,
        temperature: float = 10.0,
        gate: bool = True,
        detach_student_prototypes: bool = False,
        normalize_contrast: bool = False,
    ) -> None:
        super().__init__()
        if not (alpha >= 0 and beta >= 0):
            raise ValueError(f"OCTCoDALoss: alpha and beta must be >= 0, got alpha={alpha!r}, beta={beta!r}.")
        self.alpha, self.beta, self.gate = float(alpha), float(beta), gate
        self.local = SupervisedContrastiveLoss(temperature, normalize=normalize_contrast)
        self.prototypes = ClassPrototypeMSELoss(detach_student=detach_student_prototypes)

    def terms(
        self,
        student_logits: torch.Tensor,
        student_levels: torch.Tensor,
        teacher_logits: torch.Tensor,
        teacher_levels: torch.Tensor,
        targets: torch.Tensor,
        teacher_targets: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """The loss and its parts, for logging: ``loss``, ``ce``, ``local``, ``global``, ``gate`` (0. or 1.).

        Args:
            student_logits: ``[B, C]``.
            student_levels: ``[B, L, K]`` (or ``[B, K]``), e.g. ``student(x, with_concepts=True).levels``.
            teacher_logits: ``[B, C]`` (only the gate reads them).
            teacher_levels: ``[B, L, K]`` (or ``[B, K]``), detached here.
            targets: ``[B]`` the student's class indices.
            teacher_targets: ``[B]`` the teacher's (default ``targets``).

        Raises:
            ValueError: on shapes that do not fit or class indices out of range.
        """
        classes = student_logits.shape[-1]
        targets = _labels(targets, student_logits.shape[0], "targets", classes)
        if teacher_targets is None:
            teacher_targets = targets
        teacher_targets = _labels(teacher_targets, teacher_levels.shape[0], "teacher_targets", classes)
        student_levels = _levels(student_levels, "student_levels")
        teacher_levels = _levels(teacher_levels, "teacher_levels").detach()
        ce = F.cross_entropy(student_logits, targets)
        local = self.local(torch.cat([student_levels, teacher_levels]), torch.cat([targets, teacher_targets]))
        global_ = self.prototypes(student_levels, targets, teacher_levels, teacher_targets)
        if self.gate:
            gate = switokd_gate(student_logits, teacher_logits, targets, teacher_targets).to(ce.dtype)
        else:
            gate = torch.ones((), dtype=ce.dtype, device=ce.device)
        loss = ce + gate * (self.alpha * local + self.beta * global_)
        return {"loss": loss, "ce": ce, "local": local, "global": global_, "gate": gate}

    def forward(self, *args: torch.Tensor | None, **kwargs: torch.Tensor | None) -> torch.Tensor:
        """The student's loss, a scalar (arguments as :meth:`terms`)."""
        return self.terms(*args, **kwargs)["loss"]
