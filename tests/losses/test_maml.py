"""MAMLLoss against values worked out by hand (the joint loss, the mutual term's directions, temperature and ramp),
the progress handler, and a few steps of it teaching MAMLNet what a tumour is."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.metrics import DiceMetric
from monai.transforms import NormalizeIntensity, SpatialCrop

from medguide.data import brats_datalist, make_brats_dataset
from medguide.losses import MAMLLoss, TrainingProgress, nnunet_deep_supervision_weights, sigmoid_ramp_up
from medguide.networks import MAMLNet


def half_and_half(size: int = 8) -> torch.Tensor:
    """A label map whose first half (along the last axis) is 0 and second half 1; it stays so when halved."""
    label = torch.zeros(1, 1, size, size, size)
    label[..., size // 2 :] = 1
    return label


def test_deep_supervision_weights_are_nnunets():
    assert nnunet_deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0])
    assert nnunet_deep_supervision_weights(1) == [1.0]


def test_uninformative_logits_give_the_known_loss():
    # softmax of zero logits is 1/2 everywhere: CE = ln 2; foreground Dice = 2 (N/4) / (N/2 + N/2) = 1/2
    target = half_and_half()
    levels = [torch.zeros(1, 2, 8, 8, 8), torch.zeros(1, 2, 4, 4, 4), torch.zeros(1, 2, 2, 2, 2)]
    pred = {"fused": torch.zeros(1, 2, 8, 8, 8), "branches": [levels, [t.clone() for t in levels]]}
    per_term = math.log(2) + 0.5
    # weights for three levels: [2/3, 1/3, 0]; the fused term has the full-resolution weight
    expected = (2 / 3) * per_term + 2 * (2 / 3 + 1 / 3) * per_term
    assert MAMLLoss()(pred, target).item() == pytest.approx(expected, rel=1e-4)


def test_perfect_logits_give_almost_no_loss():
    target = half_and_half()

    def perfect(size: int) -> torch.Tensor:
        label = torch.nn.functional.interpolate(target, size=(size,) * 3, mode="nearest-exact")
        return torch.cat([1 - label, label], 1) * 40 - 20

    pred = {"fused": perfect(8), "branches": [[perfect(8), perfect(4)]]}
    assert MAMLLoss()(pred, target).item() < 1e-4


def test_mutual_term_is_zero_when_branches_agree_and_trains_both_sides():
    target = half_and_half()
    logits = torch.randn(1, 2, 8, 8, 8)
    agree = {"fused": logits.clone(), "branches": [[logits.clone(), torch.zeros(1, 2, 4, 4, 4)]]}
    assert MAMLLoss.mutual(agree["fused"], [agree["branches"][0][0]]).item() == pytest.approx(0.0, abs=1e-6)
    fused = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    branch = torch.randn(1, 2, 8, 8, 8, requires_grad=True)
    pred = {"fused": fused, "branches": [[branch, torch.zeros(1, 2, 4, 4, 4)]]}
    with_mutual = MAMLLoss(mutual_weight=1.0)(pred, target)
    without = MAMLLoss()(pred, target)
    assert with_mutual.item() > without.item()
    torch.autograd.grad(with_mutual - without, [fused, branch])  # the term reaches both predictions


def test_prediction_without_fusion_gets_only_its_deep_supervision():
    target = half_and_half()
    levels = [torch.zeros(1, 2, 8, 8, 8), torch.zeros(1, 2, 4, 4, 4)]
    # two levels: weights [1, 0]
    assert MAMLLoss()({"branches": [levels]}, target).item() == pytest.approx(math.log(2) + 0.5, rel=1e-4)


def uniform_and_three_to_one(size: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """Two-class logits: fused 0 everywhere (p = 1/2, 1/2), branch ln 3 and 0 (p = 3/4, 1/4), both with gradients."""
    fused = torch.zeros(1, 2, size, size, size, requires_grad=True)
    branch = torch.zeros(1, 2, size, size, size)
    branch[:, 0] = math.log(3)
    return fused, branch.requires_grad_()


# KL(p_fused || p_branch) = 1/2 ln(1/2 / 3/4) + 1/2 ln(1/2 / 1/4) = 1/2 ln(4/3)
FUSED_TO_BRANCH = 0.5 * math.log(4 / 3)
# KL(p_branch || p_fused) = 3/4 ln(3/2) + 1/4 ln(1/2)
BRANCH_TO_FUSED = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


@pytest.mark.parametrize(
    "direction, expected, fused_learns",
    [("symmetric", FUSED_TO_BRANCH + BRANCH_TO_FUSED, True), ("fused_to_branches", FUSED_TO_BRANCH, False)],
)
def test_mutual_term_directions_give_the_known_kl_and_train_the_right_side(direction, expected, fused_learns):
    fused, branch = uniform_and_three_to_one()
    term = MAMLLoss.mutual(fused, [branch, branch], direction)  # the mean over two identical branches
    assert term.item() == pytest.approx(expected, rel=1e-5)
    fused_grad, branch_grad = torch.autograd.grad(term, [fused, branch], allow_unused=True)
    assert branch_grad.abs().sum() > 0
    assert (fused_grad is not None and fused_grad.abs().sum() > 0) == fused_learns


def test_mutual_temperature_softens_both_sides_and_scales_by_its_square():
    fused, branch = uniform_and_three_to_one()
    # at T = 2 the branch is softmax(ln 3 / 2, 0) = (sqrt 3, 1) / (1 + sqrt 3); the fused stays uniform, so
    # KL(u || p) = -ln 2 - 1/2 ln(p_0 p_1) = ln((1 + sqrt 3) / 2) - 1/4 ln 3, times T^2 = 4
    expected = 4 * (math.log((1 + math.sqrt(3)) / 2) - math.log(3) / 4)
    assert MAMLLoss.mutual(fused, [branch], "fused_to_branches", 2.0).item() == pytest.approx(expected, rel=1e-5)


def test_sigmoid_ramp_up_at_start_middle_and_end():
    assert sigmoid_ramp_up(0.0, 0.4) == pytest.approx(math.exp(-5))
    assert sigmoid_ramp_up(0.2, 0.4) == pytest.approx(math.exp(-1.25))
    assert sigmoid_ramp_up(0.4, 0.4) == 1.0 and sigmoid_ramp_up(0.9, 0.4) == 1.0
    assert sigmoid_ramp_up(0.0, 0.0) == 1.0  # no ramp


def test_the_mutual_terms_weight_follows_the_ramp_in_the_loss():
    target = half_and_half(2)
    fused, branch = uniform_and_three_to_one()
    pred = {"fused": fused, "branches": [[branch, torch.zeros(1, 2, 1, 1, 1)]]}
    supervised = MAMLLoss()(pred, target).item()
    loss = MAMLLoss(mutual_weight=0.5, mutual_direction="fused_to_branches", mutual_ramp_up=0.4)
    for progress, ramp in [(0.0, math.exp(-5)), (0.2, math.exp(-1.25)), (0.4, 1.0), (1.0, 1.0)]:
        loss.set_progress(progress)
        assert loss(pred, target).item() - supervised == pytest.approx(0.5 * ramp * FUSED_TO_BRANCH, abs=1e-6)


def test_a_ramp_without_progress_is_refused():
    target = half_and_half(2)
    fused, branch = uniform_and_three_to_one()
    pred = {"fused": fused, "branches": [[branch, torch.zeros(1, 2, 1, 1, 1)]]}
    with pytest.raises(RuntimeError, match="TrainingProgress"):
        MAMLLoss(mutual_weight=0.1, mutual_ramp_up=0.5)(pred, target)
    assert MAMLLoss(mutual_weight=0.1)(pred, target) > 0  # no ramp: no progress needed


def test_training_progress_handler_sets_the_share_of_iterations_done():
    loss = MAMLLoss(mutual_weight=0.1, mutual_ramp_up=0.5)
    seen = []
    trainer = Engine(lambda engine, batch: seen.append(loss.progress))
    TrainingProgress(loss).attach(trainer)
    trainer.run(range(5), max_epochs=2)
    assert seen == pytest.approx([i / 10 for i in range(10)])


@pytest.mark.parametrize(
    "options, message",
    [
        ({"mutual_weight": -1.0}, "mutual_weight must be 0 or more"),
        ({"mutual_direction": "branches_to_fused"}, "mutual_direction must be .* got 'branches_to_fused'"),
        ({"mutual_temperature": 0.0}, "mutual_temperature must be above 0"),
        ({"mutual_ramp_up": 1.5}, r"mutual_ramp_up must be a share of training in \[0, 1\]"),
    ],
)
def test_mutual_options_out_of_range_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        MAMLLoss(**options)
    with pytest.raises(ValueError, match="progress must be in"):
        MAMLLoss().set_progress(1.2)


def tumour_patch(case: dict, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(image [1, 4, s, s, s] z-scored in the brain, whole tumour [1, 1, s, s, s]) around the case's tumour centre."""
    image = np.stack([nib.load(f).get_fdata(dtype=np.float32) for f in case["image"]])
    tumour = (np.asarray(nib.load(case["label"]).dataobj) > 0)[None].astype(np.float32)
    crop = SpatialCrop(roi_center=np.argwhere(tumour[0]).mean(0).round().astype(int).tolist(), roi_size=[size] * 3)
    image = NormalizeIntensity(nonzero=True, channel_wise=True)(torch.from_numpy(image))
    return torch.as_tensor(crop(image))[None], torch.as_tensor(crop(torch.from_numpy(tumour)))[None]


def whole_tumour_dice(network: MAMLNet, image: torch.Tensor, tumour: torch.Tensor) -> float:
    network.eval()
    with torch.no_grad():
        predicted = network(image).argmax(1, keepdim=True).float()
    return DiceMetric(include_background=True, ignore_empty=False)(predicted, tumour).item()


def test_a_few_sgd_steps_find_the_tumour_in_a_case_never_seen(tmp_path):
    """Twenty SGD steps of MAMLLoss on one synthetic case, then the whole tumour of another: what a broken loss,
    gradient or network fails. The tumour fills a fifth of the patch, so predicting it everywhere scores about 0.36.

    Measured with PyTorch's default initialisation over seeds 0-19: untrained 0.00-0.42, trained 0.87-0.93, trained
    minus untrained at least 0.47; on two other synthetic sets (seeds 1, 2; initialisations 0-4) trained at least
    0.82, the gain at least 0.45. With nnU-Net's He initialisation (issue 12), seeds 0-7: untrained 0.00-0.31,
    trained 0.70-0.87 (seed 0, the one tested: 0.85). The thresholds leave headroom for another CPU's arithmetic.
    """
    train_case, test_case = brats_datalist(make_brats_dataset(tmp_path, num_cases=2, shape=(32, 32, 32), seed=0))
    image, tumour = tumour_patch(train_case)
    test_image, test_tumour = tumour_patch(test_case)
    torch.manual_seed(0)
    network = MAMLNet(["t1", "t1ce", "t2", "flair"], out_channels=2, base_width=4, num_stages=3)
    untrained = whole_tumour_dice(network, test_image, test_tumour)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    loss = MAMLLoss()
    network.train()
    for _ in range(20):
        optimizer.zero_grad()
        loss(network(image), tumour).backward()
        optimizer.step()
    trained = whole_tumour_dice(network, test_image, test_tumour)
    assert trained > 0.75 and trained > untrained + 0.3, (
        f"whole-tumour Dice {untrained:.3f} untrained, {trained:.3f} trained"
    )
