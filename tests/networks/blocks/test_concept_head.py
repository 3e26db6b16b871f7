"""ConceptHead and ConceptClassifier (OCT-CoDA): shapes, both similarity levels worked out by hand, the concept
matrix fixed through a training step, one class for teacher and student, and a classifier that traces."""

from __future__ import annotations

import pytest
import torch
from monai.inferers import SimpleInferer

from medguide.losses import OCTCoDALoss
from medguide.networks import ConceptClassifier, ConceptHead, ConceptOutputs
from medguide.networks.blocks import Frozen
from tests.networks.helpers import tiny_densenet

K, D, CLASSES = 5, 4, 3


def concepts(seed: int = 0) -> torch.Tensor:
    return torch.randn(K, D, generator=torch.Generator().manual_seed(seed))


def classifier(seed: int = 0, in_channels: int = 3) -> ConceptClassifier:
    encoder = tiny_densenet(spatial_dims=2, in_channels=in_channels, latent=8, seed=seed)
    return ConceptClassifier(encoder.module, encoder.latent_features, concepts(), CLASSES)


def test_shapes_and_ranges():
    head = ConceptHead(16, concepts(), CLASSES)
    x = torch.randn(6, 16)
    logits = head(x)
    assert isinstance(logits, torch.Tensor) and logits.shape == (6, CLASSES)
    out = head(x, with_concepts=True)
    assert isinstance(out, ConceptOutputs)
    assert out.similarity.shape == out.second_level.shape == (6, K) and out.levels.shape == (6, 2, K)
    torch.testing.assert_close(out.logits, logits)
    torch.testing.assert_close(out.levels[:, 0], out.similarity)
    assert out.similarity.abs().max() <= 1 + 1e-6  # cosines
    torch.testing.assert_close(head.concepts.norm(dim=1), torch.ones(K))
    assert (head.num_concepts, head.num_classes) == (K, CLASSES)


def test_both_levels_by_hand():
    """F = d = 2, identity projections, T = [[1, 0], [0, 1], [3, 4]] (its last row normalised to [0.6, 0.8]).

    x = [3, 4]: normalize -> [0.6, 0.8] -> projection I -> [0.6, 0.8] (unit already) -> similarity
    [0.6, 0.8, 0.36 + 0.64] = [0.6, 0.8, 1.0]; second level: (I x + [1, 0]) T^T = [4, 4] T^T = [4, 4, 2.4 + 3.2].
    Logits with classifier rows [1, 0, 0] and [0, 1, 1] and bias [0, 0.5]: [0.6, 0.8 + 1.0 + 0.5] = [0.6, 2.3].
    """
    head = ConceptHead(2, torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]]), num_classes=2)
    with torch.no_grad():
        head.projection.weight.copy_(torch.eye(2))
        head.second_projection.weight.copy_(torch.eye(2))
        head.second_projection.bias.copy_(torch.tensor([1.0, 0.0]))
        head.classifier.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]))
        head.classifier.bias.copy_(torch.tensor([0.0, 0.5]))
    out = head(torch.tensor([[3.0, 4.0]]), with_concepts=True)
    torch.testing.assert_close(head.concepts[2], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(out.similarity, torch.tensor([[0.6, 0.8, 1.0]]))
    torch.testing.assert_close(out.second_level, torch.tensor([[4.0, 4.0, 5.6]]))
    torch.testing.assert_close(out.logits, torch.tensor([[0.6, 2.3]]))
    assert head.projection.bias is None  # FLAIR's projection has no bias; MultiEYE's second one has


def test_the_concept_matrix_is_a_buffer_that_a_training_step_leaves_unchanged():
    torch.manual_seed(0)
    student, teacher = classifier(seed=0), classifier(seed=1)
    names = {name for name, _ in student.named_parameters()}
    assert not any("concepts" in name for name in names)
    assert "head.concepts" in student.state_dict() and "head.concepts" in dict(student.named_buffers())
    before_t = student.head.concepts.clone()
    before_w = student.head.projection.weight.detach().clone()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-2)
    teacher = Frozen(teacher)
    labels = torch.tensor([0, 1, 2, 0])
    s = student(torch.randn(4, 3, 16, 16), with_concepts=True)
    t = teacher(torch.randn(4, 3, 16, 16), with_concepts=True)
    OCTCoDALoss(gate=False)(s.logits, s.levels, t.logits, t.levels, labels).backward()
    optimizer.step()
    torch.testing.assert_close(student.head.concepts, before_t, rtol=0, atol=0)
    assert not torch.equal(student.head.projection.weight, before_w)


def test_distillation_reaches_the_student_and_not_the_teacher():
    torch.manual_seed(0)
    student, teacher = classifier(seed=0), Frozen(classifier(seed=1))
    labels = torch.tensor([0, 1, 2, 1])
    s = student(torch.randn(4, 3, 16, 16), with_concepts=True)
    t = teacher(torch.randn(4, 3, 16, 16), with_concepts=True)
    # alpha = 0: the student's second level is trained by the prototype MSE alone
    OCTCoDALoss(alpha=0.0, beta=1.0, gate=False)(s.logits, s.levels, t.logits, t.levels, labels).backward()
    grad = student.head.second_projection.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_and_student_are_one_class_with_their_own_weights():
    student, teacher = classifier(seed=0), classifier(seed=1)
    assert type(student) is type(teacher)
    assert list(student.state_dict()) == list(teacher.state_dict())
    assert not torch.equal(student.head.projection.weight, teacher.head.projection.weight)
    torch.testing.assert_close(student.head.concepts, teacher.head.concepts)
    teacher.load_state_dict(student.state_dict())  # a checkpoint of one loads into the other
    torch.testing.assert_close(teacher.head.projection.weight, student.head.projection.weight)


def test_classifier_traces_and_runs_through_a_monai_inferer():
    net = classifier().eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = net(x)
        traced = torch.jit.trace(net, x)
        assert expected.shape == (2, CLASSES)
        torch.testing.assert_close(traced(torch.cat([x, x])), torch.cat([expected, expected]))
        torch.testing.assert_close(SimpleInferer()(x, net), expected)
    assert net.train()(x).shape == (2, CLASSES)  # one tensor in training mode too
    assert (net.num_concepts, net.num_classes) == (K, CLASSES)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (torch.ones(4), "matrix"),
        (torch.ones(0, 4), "matrix"),
        (torch.tensor([[1.0, 0.0], [0.0, 0.0]]), "row 1 is all zeros"),
        (torch.tensor([[1.0, float("nan")]]), "row 0 .* not finite"),
    ],
)
def test_unusable_concepts_are_refused(matrix, message):
    with pytest.raises(ValueError, match=message):
        ConceptHead(4, matrix, CLASSES)


def test_unusable_sizes_and_inputs_are_refused():
    with pytest.raises(ValueError, match="num_classes"):
        ConceptHead(4, concepts(), 1)
    with pytest.raises(ValueError, match="in_features"):
        ConceptHead(0, concepts(), CLASSES)
    with pytest.raises(ValueError, match=r"features \[B, 16\]"):
        ConceptHead(16, concepts(), CLASSES)(torch.randn(2, 8))
