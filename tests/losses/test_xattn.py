"""Losses of report-guided localisation on cases worked out by hand: the masked attribute BCE (masked entries count
for nothing), the KL map alignment (stop-gradient target) and the location prior's geometry (patient's right =
image's left)."""

from __future__ import annotations

import math

import pytest
import torch

from medguide.data import REPORT_ATTRIBUTES as ATTRIBUTES
from medguide.losses import LocationPriorLoss, MapAlignmentLoss, MaskedAttributeBCE, location_prior

LN2 = math.log(2)


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_masked_bce_by_hand():
    """Unmasked entries: (logit 0, target 1) log 2; (2, 0) log(1 + e^2); (-1, 1) log(1 + e). Their mean."""
    logits = torch.tensor([[0.0, 2.0], [-1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [1.0, float("nan")]])
    mask = torch.tensor([[True, True], [True, False]])
    expected = (LN2 + softplus(2) + softplus(1)) / 3
    assert MaskedAttributeBCE()(logits, targets, mask).item() == pytest.approx(expected, rel=1e-6)
    assert MaskedAttributeBCE(reduction="sum")(logits, targets, mask).item() == pytest.approx(3 * expected, rel=1e-6)
    none = MaskedAttributeBCE(reduction="none")(logits, targets, mask)
    assert none.shape == (2, 2) and none[1, 1] == 0
    # positive weight 3 on the first attribute: log 2 and log(1 + e) count three times
    weighted = MaskedAttributeBCE(pos_weight=[3.0, 1.0])(logits, targets, mask)
    assert weighted.item() == pytest.approx((3 * LN2 + softplus(2) + 3 * softplus(1)) / 3, rel=1e-6)
    # a fractional mask weights its entry: (1 * log 2 + 0.5 * log(1 + e^2)) / 1.5
    soft = MaskedAttributeBCE()(logits[:1], targets[:1], torch.tensor([[1.0, 0.5]]))
    assert soft.item() == pytest.approx((LN2 + 0.5 * softplus(2)) / 1.5, rel=1e-6)


def test_masked_targets_change_nothing_and_get_no_gradient():
    torch.manual_seed(0)
    logits = torch.randn(4, 7, requires_grad=True)
    targets = (torch.rand(4, 7) > 0.5).float()
    mask = torch.rand(4, 7) > 0.3
    loss = MaskedAttributeBCE()(logits, targets, mask)
    flipped = torch.where(mask, targets, 1 - targets)
    assert MaskedAttributeBCE()(logits, flipped, mask).item() == loss.item()
    loss.backward()
    assert (logits.grad[~mask] == 0).all() and (logits.grad[mask] != 0).all()


def test_nothing_unmasked_gives_zero_with_a_finite_zero_gradient():
    logits = torch.randn(3, 7, requires_grad=True)
    loss = MaskedAttributeBCE(pos_weight=torch.ones(7))(logits, torch.full((3, 7), float("nan")), torch.zeros(3, 7))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 7))


def test_masked_bce_bad_inputs():
    with pytest.raises(ValueError, match="one shape"):
        MaskedAttributeBCE()(torch.zeros(2, 3), torch.zeros(2, 3), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        MaskedAttributeBCE()(torch.zeros(1, 2), torch.tensor([[2.0, 0.0]]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="pos_weight has 2"):
        MaskedAttributeBCE(pos_weight=[1.0, 2.0])(torch.zeros(1, 3), torch.zeros(1, 3), torch.ones(1, 3))
    with pytest.raises(ValueError, match="positive"):
        MaskedAttributeBCE(pos_weight=[0.0])


def test_alignment_by_hand_and_zero_when_the_maps_agree():
    """t = (1/2, 1/2, 0), p = (1/4, 1/4, 1/2): KL = 2 * 1/2 * log(1/2 / 1/4) = log 2."""
    target = torch.tensor([[0.5, 0.5, 0.0]])
    prediction = torch.tensor([[0.25, 0.25, 0.5]])
    assert MapAlignmentLoss()(prediction, target).item() == pytest.approx(LN2, rel=1e-6)
    assert MapAlignmentLoss(log_input=True)(prediction.log(), target).item() == pytest.approx(LN2, rel=1e-6)
    assert MapAlignmentLoss()(prediction, 4 * target).item() == pytest.approx(LN2, rel=1e-6)  # renormalised
    assert MapAlignmentLoss()(target, target).item() == 0.0
    # a grid [B, w, h] is its flattened regions
    grids = torch.softmax(torch.randn(2, 3, 4), dim=0)
    flat = MapAlignmentLoss()(grids[0].reshape(1, -1), grids[1].reshape(1, -1))
    assert MapAlignmentLoss()(grids[:1], grids[1:]).item() == pytest.approx(flat.item())


def test_alignment_trains_the_image_map_only():
    torch.manual_seed(0)
    image_logits = torch.randn(2, 6, requires_grad=True)
    text_logits = torch.randn(2, 6, requires_grad=True)
    prediction, target = torch.softmax(image_logits, 1), torch.softmax(text_logits, 1)
    MapAlignmentLoss()(prediction, target).backward()
    assert text_logits.grad is None
    # d KL / d logits of a softmax is p - t, averaged over the 2 samples
    expected = (prediction - target).detach() / 2
    torch.testing.assert_close(image_logits.grad, expected)


def test_alignment_weights_exclude_samples():
    target = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    prediction = torch.tensor([[0.25, 0.25, 0.5], [float("nan"), 0.0, 0.0]], requires_grad=True)
    loss = MapAlignmentLoss()(prediction, target, weight=torch.tensor([True, False]))
    assert loss.item() == pytest.approx(LN2, rel=1e-6)
    nothing = MapAlignmentLoss()(prediction, target, weight=torch.zeros(2))
    assert nothing.item() == 0.0
    nothing.backward()
    assert torch.equal(prediction.grad, torch.zeros(2, 3))
    with pytest.raises(ValueError, match="weight"):
        MapAlignmentLoss()(prediction, target, weight=torch.ones(3))
    with pytest.raises(ValueError, match="one shape"):
        MapAlignmentLoss()(prediction, target[:, :2])


def attributes(**present: float) -> torch.Tensor:
    """Targets in ATTRIBUTES' order, opacity present, the named ones set."""
    row = dict.fromkeys(ATTRIBUTES, 0.0) | {"opacity": 1.0} | present
    return torch.tensor([[row[name] for name in ATTRIBUTES]])


def printed(prior: torch.Tensor) -> list[list[int]]:
    """A [w, h] mask printed as the film is seen: rows top to bottom, the image's left (patient's right) first."""
    return prior.int().T.tolist()


def test_prior_geometry_patient_right_is_image_left():
    everything = torch.ones(1, 7)
    right_lower = location_prior(attributes(right=1, lower=1), everything, (4, 3))[0]
    assert printed(right_lower) == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]]
    left_upper = location_prior(attributes(left=1, upper=1), everything, (4, 3))[0]
    assert printed(left_upper) == [[0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0]]
    # no side stated: both; two zones: their union; odd width: the middle column is on both sides
    lower_middle = location_prior(attributes(middle=1, lower=1), everything, (4, 3))[0]
    assert printed(lower_middle) == [[0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]]
    odd = location_prior(attributes(right=1), everything, (5, 3))[0]
    assert printed(odd) == [[1, 1, 1, 0, 0]] * 3
    # extensive: the whole height of the stated side
    assert (
        printed(location_prior(attributes(left=1, upper=1, extensive=1), everything, (4, 3))[0]) == [[0, 0, 1, 1]] * 3
    )


def test_prior_reads_only_mentioned_attributes_and_the_lung_band():
    """Masked 'right' says nothing: both sides. lung_rows (0.25, 1) on 4 rows: centres 1/8, 3/8, 5/8, 7/8 become
    -1/6 (outside), 1/6, 1/2, 5/6: upper, middle, lower."""
    mask = torch.ones(1, 7)
    mask[0, ATTRIBUTES.index("right")] = 0
    prior = location_prior(attributes(right=1, lower=1), mask, (2, 4))[0]
    assert printed(prior) == [[0, 0], [0, 0], [0, 0], [1, 1]]  # centres 1/8 upper, 3/8 and 5/8 middle, 7/8 lower
    banded = location_prior(attributes(upper=1), torch.ones(1, 7), (2, 4), lung_rows=(0.25, 1.0))[0]
    assert printed(banded) == [[0, 0], [1, 1], [0, 0], [0, 0]]
    with pytest.raises(ValueError, match="lung_rows"):
        location_prior(attributes(), torch.ones(1, 7), (2, 4), lung_rows=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"\[B, 7\]"):
        location_prior(torch.zeros(1, 6), torch.ones(1, 6), (2, 4))


def test_location_prior_loss_is_the_mass_outside():
    """All attention in the image's bottom-left cell: inside for the patient's right lower zone, outside for the
    left; half of it there, half top right: 1/2 outside the right lower zone."""
    attention = torch.zeros(2, 4, 3)
    attention[0, 0, 2] = 1.0
    attention[1, 0, 2] = attention[1, 3, 0] = 0.5
    attention.requires_grad_(True)
    everything = torch.ones(2, 7)
    right_lower = attributes(right=1, lower=1).expand(2, -1)
    loss = LocationPriorLoss()
    assert loss(attention, right_lower, everything).item() == pytest.approx(0.25)  # (0 + 1/2) / 2
    assert loss(attention[:1], attributes(left=1, lower=1), everything[:1]).item() == 1.0
    assert loss(attention.flatten(1), right_lower, everything, grid_size=(4, 3)).item() == pytest.approx(0.25)


def test_location_prior_loss_excludes_reports_without_a_stated_place():
    attention = torch.full((3, 4, 3), 1 / 12, requires_grad=True)
    no_opacity = attributes(opacity=0, right=1)
    nowhere = attributes()  # opacity, but no side or zone
    extensive_only = attributes(extensive=1)
    targets = torch.cat([no_opacity, nowhere, extensive_only])
    loss = LocationPriorLoss()(attention, targets, torch.ones(3, 7))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(attention.grad, torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match="grid_size"):
        LocationPriorLoss()(attention.flatten(1), targets, torch.ones(3, 7))
    with pytest.raises(ValueError, match="opacity"):
        LocationPriorLoss(attributes=("left", "right"))


def test_a_spread_prior_wants_the_whole_named_region_and_nothing_else():
    """KL(uniform over the allowed cells || map): 0 for a map spread evenly over the patient's right lower zone (the
    image's bottom-left cells (0, 2) and (1, 2) on a 4 x 3 grid), large for one collapsed onto one of them; a
    report naming no place allows the whole grid."""
    spread = LocationPriorLoss(spread=True)
    right_lower = attributes(right=1, lower=1)
    even = torch.zeros(1, 4, 3)
    even[0, 0, 2] = even[0, 1, 2] = 0.5
    assert spread(even, right_lower, torch.ones(1, 7)).item() == pytest.approx(0.0, abs=1e-6)
    collapsed = torch.zeros(1, 4, 3)
    collapsed[0, 0, 2] = 1.0
    expected = -math.log(2) - (math.log(1.0) + math.log(1e-6)) / 2
    assert spread(collapsed, right_lower, torch.ones(1, 7)).item() == pytest.approx(expected, rel=1e-5)
    assert LocationPriorLoss()(collapsed, right_lower, torch.ones(1, 7)).item() == 0.0  # the mass form: no cost
    # no place named (here: opacity absent): the whole grid is allowed, a uniform map costs nothing
    uniform = torch.full((1, 4, 3), 1 / 12)
    assert spread(uniform, attributes(opacity=0), torch.ones(1, 7)).item() == pytest.approx(0.0, abs=1e-6)
    # ... or rather the whole lung band: rows 1 and 2 of 3 for a band from 0.34 of the height down
    banded = LocationPriorLoss(spread=True, lung_rows=(0.34, 1.0))
    in_band = torch.zeros(1, 4, 3)
    in_band[0, :, 1:] = 1 / 8
    assert banded(in_band, attributes(opacity=0), torch.ones(1, 7)).item() == pytest.approx(0.0, abs=1e-6)
    assert banded(uniform, attributes(opacity=0), torch.ones(1, 7)).item() > 0.1
    # a zone with no cell centre on a coarse grid (the middle third of 2 rows) leaves the sample out, never NaN
    coarse = torch.full((1, 4, 2), 1 / 8, requires_grad=True)
    loss = spread(coarse, attributes(middle=1), torch.ones(1, 7))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(coarse.grad, torch.zeros(1, 4, 2))


def test_without_a_mask_a_negative_target_marks_not_mentioned():
    logits = torch.tensor([[0.3, -1.2, 2.0]])
    label = torch.tensor([[1.0, -1.0, 0.0]])
    explicit = MaskedAttributeBCE()(logits, label.clamp(min=0), torch.tensor([[1, 0, 1]]))
    assert torch.allclose(MaskedAttributeBCE()(logits, label), explicit)
