"""OCT-CoDA's concept distillation losses on cases worked out by hand: the supervised contrastive loss, the class
prototype MSE (and where its gradient goes), SwitOKD's gate, and the combined student loss."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medguide.losses import ClassPrototypeMSELoss, OCTCoDALoss, SupervisedContrastiveLoss, switokd_gate

E, LN = math.e, math.log


def logits_of(*probabilities: list[float]) -> torch.Tensor:
    """Logits whose softmax is each row of ``probabilities`` (log p)."""
    return torch.tensor(probabilities).log()


def two_by_two() -> tuple[torch.Tensor, torch.Tensor]:
    """2 fundus + 2 OCT vectors over 2 concepts, labels [0, 1] on each side: z = e1, e2 (fundus), e1, e2 (OCT)."""
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    return z, torch.tensor([0, 1, 0, 1])


def test_contrastive_by_hand_and_the_temperature_divides():
    """Anchor e1 (fundus, label 0): dot products 0 (e2), 1 (OCT e1, its positive), 0 (OCT e2), each / tau.

    tau = 1: -(1 - log(e^0 + e^1 + e^0)) = log(2 + e) - 1; tau = 10: log(2 + e^0.1) - 0.1. All four anchors alike.
    """
    z, labels = two_by_two()
    assert SupervisedContrastiveLoss(1.0)(z, labels).item() == pytest.approx(LN(2 + E) - 1, rel=1e-6)
    assert SupervisedContrastiveLoss()(z, labels).item() == pytest.approx(LN(2 + E**0.1) - 0.1, rel=1e-6)
    # scaled vectors: the dot products grow (MultiEYE does not normalise), unless normalize=True
    assert SupervisedContrastiveLoss(1.0)(2 * z, labels).item() == pytest.approx(LN(2 + E**4) - 4, abs=1e-6)
    assert SupervisedContrastiveLoss(1.0, normalize=True)(2 * z, labels).item() == pytest.approx(LN(2 + E) - 1)


def test_contrastive_levels_are_averaged():
    """Level 2 holds four equal vectors [1, 1]: every dot product is 2, so each anchor's log-probability of any
    other is 2 - log(3 e^2) = -log 3, and the level's loss is log 3; the loss is the mean of the two levels."""
    z, labels = two_by_two()
    levels = torch.stack([z, torch.ones(4, 2)], dim=1)  # [4, 2 levels, 2 concepts]
    expected = ((LN(2 + E) - 1) + LN(3)) / 2
    assert SupervisedContrastiveLoss(1.0)(levels, labels).item() == pytest.approx(expected, rel=1e-6)


def test_contrastive_with_several_positives_and_an_anchor_without_one():
    """Vectors e1, e1, e2 with labels 0, 0, 1 and tau = 1. Anchor 0: others score 1 (positive), 0, so
    -(1 - log(e + 1)); anchor 1 the same; anchor 2 has no positive and is left out: the loss is log(1 + e) - 1.
    Labels 0, 0, 0: anchor 0 has two positives (scores 1 and 0), -1/2 (1 + 0 - 2 log(e + 1)); anchor 1 the same;
    anchor 2 scores 0, 0 against its two positives: log 2."""
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    loss = SupervisedContrastiveLoss(1.0)
    assert loss(z, torch.tensor([0, 0, 1])).item() == pytest.approx(LN(1 + E) - 1, rel=1e-6)
    all_positive = (2 * (LN(1 + E) - 0.5) + LN(2)) / 3
    assert loss(z, torch.tensor([0, 0, 0])).item() == pytest.approx(all_positive, rel=1e-6)
    alone = torch.randn(3, 2, requires_grad=True)
    value = loss(alone, torch.tensor([0, 1, 2]))
    assert value.item() == 0.0
    value.backward()  # no positive anywhere: 0, still part of the graph


def test_contrastive_matches_a_plain_loop_on_random_vectors():
    torch.manual_seed(0)
    z, labels, tau = torch.randn(8, 2, 5), torch.tensor([0, 1, 2, 0, 0, 1, 2, 3]), 10.0
    per_level = []
    for level in range(2):
        anchors = []
        for i in range(8):
            others = [k for k in range(8) if k != i]
            positives = [j for j in others if labels[j] == labels[i]]
            if not positives:
                continue
            scores = {k: float(z[i, level] @ z[k, level]) / tau for k in others}
            log_denominator = LN(sum(math.exp(s) for s in scores.values()))
            anchors.append(-sum(scores[j] - log_denominator for j in positives) / len(positives))
        per_level.append(sum(anchors) / len(anchors))
    expected = sum(per_level) / 2
    assert SupervisedContrastiveLoss(tau)(z, labels).item() == pytest.approx(expected, rel=1e-5)


def prototype_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Student (fundus) [1, 0], [3, 2] of class 0 and [0, 4] of class 1; teacher (OCT) [0, 0] class 0, [1, 1]
    class 1, [5, 5] class 2 (not in the fundus batch, so left out)."""
    student = torch.tensor([[1.0, 0.0], [3.0, 2.0], [0.0, 4.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]], requires_grad=True)
    return student, torch.tensor([0, 0, 1]), teacher, torch.tensor([0, 1, 2])


def test_prototype_mse_by_hand_with_gradient_to_the_student_only():
    """Prototypes: student class 0 = mean([1, 0], [3, 2]) = [2, 1], class 1 = [0, 4]; teacher [0, 0] and [1, 1].
    Differences [2, 1] and [-1, 3]: MSE = (4 + 1 + 1 + 9) / 4 = 3.75.
    Gradient: dL/dp = 2 (p - q) / 4, shared by the class's n members (1/n each): rows 0 and 1 (n = 2) get
    [2, 1] / 4 = [0.5, 0.25], row 2 (n = 1) gets [-1, 3] / 2 = [-0.5, 1.5]."""
    student, student_labels, teacher, teacher_labels = prototype_case()
    value = ClassPrototypeMSELoss()(student, student_labels, teacher, teacher_labels)
    assert value.item() == pytest.approx(3.75)
    value.backward()
    torch.testing.assert_close(student.grad, torch.tensor([[0.5, 0.25], [0.5, 0.25], [-0.5, 1.5]]))
    assert teacher.grad is None


def test_prototype_mse_detached_as_in_the_public_code_trains_nothing():
    student, student_labels, teacher, teacher_labels = prototype_case()
    value = ClassPrototypeMSELoss(detach_student=True)(student, student_labels, teacher, teacher_labels)
    assert value.item() == pytest.approx(3.75) and not value.requires_grad


def test_prototype_mse_over_levels_and_with_no_shared_class():
    student, student_labels, teacher, teacher_labels = prototype_case()
    # the same numbers as two levels of one concept each: [B, 2, 1]
    levels = ClassPrototypeMSELoss()(student[:, :, None], student_labels, teacher[:, :, None], teacher_labels)
    assert levels.item() == pytest.approx(3.75)
    assert ClassPrototypeMSELoss()(student, torch.tensor([3, 3, 3]), teacher, teacher_labels).item() == 0.0
    with pytest.raises(ValueError, match="differ after the batch axis"):
        ClassPrototypeMSELoss()(student, student_labels, teacher[:, :1], teacher_labels)


def test_gate_opens_when_the_teacher_is_closer_and_the_gap_is_large():
    """Target 0 of 3 classes. Student softmax [0.5, 0.4, 0.1]: s = 0.5 + 0.4 + 0.1 = 1.0; teacher [0.7, 0.1, 0.2]:
    t = 0.3 + 0.1 + 0.2 = 0.6; gap g = 0.2 + 0.3 + 0.1 = 0.6; threshold = s - exp(-t / (s + t)) t
    = 1 - 0.6 exp(-0.375) = 0.5876 < g, and t < s: open."""
    student, teacher = logits_of([0.5, 0.4, 0.1]), logits_of([0.7, 0.1, 0.2])
    assert 1.0 - 0.6 * math.exp(-0.375) == pytest.approx(0.58763, abs=1e-5)
    assert switokd_gate(student, teacher, torch.tensor([0])).item() is True


def test_gate_stays_closed_for_a_small_gap_or_a_worse_teacher():
    """Teacher [0.8, 0.1, 0.1]: t = 0.4, g = 0.3 + 0.3 + 0 = 0.6, threshold = 1 - 0.4 exp(-0.4 / 1.4) = 0.6994 > g:
    closed although the teacher is closer. Roles swapped (student [0.7, 0.1, 0.2], teacher [0.5, 0.4, 0.1]):
    t = 1.0 > s = 0.6: closed."""
    assert 1.0 - 0.4 * math.exp(-0.4 / 1.4) == pytest.approx(0.69941, abs=1e-5)
    student = logits_of([0.5, 0.4, 0.1])
    assert switokd_gate(student, logits_of([0.8, 0.1, 0.1]), torch.tensor([0])).item() is False
    assert switokd_gate(logits_of([0.7, 0.1, 0.2]), student, torch.tensor([0])).item() is False


def test_gate_decides_per_batch_on_batch_means_and_takes_the_teachers_own_labels():
    """The open case and the swapped case together: s = (1.0 + 0.6) / 2 = 0.8 and t = (0.6 + 1.0) / 2 = 0.8, so
    t < s fails for the batch although it holds for the first sample alone.

    Teacher [0.2, 0.1, 0.7] against the student's label 0: t = 0.8 + 0.1 + 0.7 = 1.6 > s = 1.0, closed; against its
    own label 2: t = 0.2 + 0.1 + 0.3 = 0.6 < s, g = 0.3 + 0.3 + 0.6 = 1.2 > 1 - 0.6 exp(-0.375) = 0.5876, open."""
    student = logits_of([0.5, 0.4, 0.1], [0.7, 0.1, 0.2])
    teacher = logits_of([0.7, 0.1, 0.2], [0.5, 0.4, 0.1])
    assert switokd_gate(student, teacher, torch.tensor([0, 0])).item() is False
    student, teacher = logits_of([0.5, 0.4, 0.1]), logits_of([0.2, 0.1, 0.7])
    assert switokd_gate(student, teacher, torch.tensor([0])).item() is False
    assert switokd_gate(student, teacher, torch.tensor([0]), teacher_targets=torch.tensor([2])).item() is True


def test_gate_refuses_what_does_not_fit():
    with pytest.raises(ValueError, match=r"\[B, classes\]"):
        switokd_gate(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="not one of the classes 0..2"):
        switokd_gate(torch.zeros(2, 3), torch.zeros(2, 3), torch.tensor([0, 3]))


def test_student_loss_is_ce_plus_the_weighted_terms():
    """Uniform logits over 3 classes: CE = log 3. Levels from :func:`two_by_two` (one level, tau = 10):
    L_local = log(2 + e^0.1) - 0.1; the OCT side equals the fundus side, so L_global = 0; with the teacher's
    vectors halved, the class prototypes differ by [0.5, 0] and [0, 0.5]: L_global = (0.25 + 0.25) / 4 = 0.125."""
    z, _ = two_by_two()
    student_levels, targets = z[:2].clone().requires_grad_(), torch.tensor([0, 1])
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = OCTCoDALoss(gate=False)
    terms = loss.terms(logits, student_levels, logits.detach(), z[2:], targets)
    assert terms["ce"].item() == pytest.approx(LN(3))
    assert terms["local"].item() == pytest.approx(LN(2 + E**0.1) - 0.1, rel=1e-6)
    assert terms["global"].item() == 0.0 and terms["gate"].item() == 1.0
    assert terms["loss"].item() == pytest.approx(LN(3) + 0.6 * (LN(2 + E**0.1) - 0.1), rel=1e-6)
    halved = loss.terms(logits, student_levels, logits.detach(), z[2:] / 2, targets)
    assert halved["global"].item() == pytest.approx(0.125)
    expected = LN(3) + 0.6 * halved["local"].item() + 0.05 * 0.125
    assert loss(logits, student_levels, logits.detach(), z[2:] / 2, targets).item() == pytest.approx(expected)


def test_a_closed_gate_leaves_cross_entropy_alone():
    """Teacher logits equal to the student's: t = s, so the gate is closed and the loss is the CE alone; the levels
    get no gradient from it, the logits the CE's."""
    z, _ = two_by_two()
    levels = z[:2].clone().requires_grad_()
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]], requires_grad=True)
    targets = torch.tensor([0, 1])
    terms = OCTCoDALoss().terms(logits, levels, logits.detach(), z[2:], targets)
    assert terms["gate"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(F.cross_entropy(logits, targets).item())
    terms["loss"].backward()
    assert levels.grad is None or torch.all(levels.grad == 0)


def test_student_loss_refuses_bad_settings_and_labels():
    with pytest.raises(ValueError, match="alpha and beta"):
        OCTCoDALoss(alpha=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        OCTCoDALoss(temperature=0.0)
    with pytest.raises(ValueError, match="class indices"):
        OCTCoDALoss()(torch.zeros(2, 3), torch.zeros(2, 2, 4), torch.zeros(2, 3), torch.zeros(2, 2, 4), torch.zeros(3))


def test_mixed_precision_leaves_the_contrastive_and_prototype_terms_in_float32():
    torch.manual_seed(0)
    z, labels = torch.randn(8, 2, 98), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    loss, prototypes = SupervisedContrastiveLoss(), ClassPrototypeMSELoss()
    expected = loss(z, labels).item(), prototypes(z[:4], labels[:4], z[4:], labels[4:]).item()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss(z, labels), prototypes(z[:4], labels[:4], z[4:], labels[4:])
    assert all(value.dtype == torch.float32 for value in got)
    assert [value.item() for value in got] == pytest.approx(expected, rel=1e-6)
