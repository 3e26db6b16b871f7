"""RandBatchAugment: each image of a batch augmented with its own draw, as MONAI's per-image transforms would; and
AugmentedBatch, which applies it to a trainer's prepared input only."""

from __future__ import annotations

import math

import pytest
import torch
from monai.data import MetaTensor
from monai.engines.utils import PrepareBatchDefault
from monai.transforms import AdjustContrast

from medguide.engines import AugmentedBatch, TaskBatch
from medguide.transforms import RandBatchAugment


def dots(n: int, height: int, width: int, up: int = 0, right: int = 0) -> torch.Tensor:
    """``n`` one-channel images, each a bright dot ``up`` rows above and ``right`` columns right of the centre."""
    x = torch.zeros(n, 1, height, width)
    x[:, 0, height // 2 - up, width // 2 + right] = 1.0
    return x


def test_probability_one_flips_every_image_and_zero_leaves_the_batch_as_it_is():
    x = torch.randn(4, 3, 8, 10)
    assert torch.equal(RandBatchAugment(flip_prob=1.0, flip_axis=1)(x), x.flip(3))
    assert torch.equal(RandBatchAugment(flip_prob=1.0, flip_axis=0)(x), x.flip(2))
    assert torch.equal(RandBatchAugment()(x), x)


def test_each_image_gets_its_own_draw_and_a_seed_repeats_them():
    x = dots(64, 9, 9, right=3)
    flipped = RandBatchAugment(flip_prob=0.5).set_random_state(1)(x)
    moved = (flipped != x).flatten(1).any(dim=1)
    assert 10 < int(moved.sum()) < 54  # about half of the 64 images, not all or none
    again = RandBatchAugment(flip_prob=0.5).set_random_state(1)(x)
    other = RandBatchAugment(flip_prob=0.5).set_random_state(2)(x)
    assert torch.equal(flipped, again) and not torch.equal(flipped, other)


def test_rotation_and_scaling_turn_about_the_centre_in_pixels_even_when_the_image_is_not_square():
    # a dot 8 px above the centre of a 21 x 201 image: turned about the centre in pixel units by at most 0.26 rad it
    # moves sideways by at most 8 sin(0.26) = 2 px and stays about 8 px away (scaled by at most 10 %); in coordinates
    # normalised per axis, where 8 rows are 0.76 of the half height and a column 0.01 of the half width, it would
    # move sideways by up to 20 px
    x = dots(32, 21, 201, up=8)
    out = RandBatchAugment(affine_prob=1.0, rotate_range=0.26, scale_range=0.1).set_random_state(0)(x)
    rows, cols = [], []
    for image in out[:, 0]:
        row, col = divmod(int(image.argmax()), image.shape[1])
        rows.append(10 - row)
        cols.append(col - 100)
    distances = [math.hypot(r, c) for r, c in zip(rows, cols, strict=True)]
    assert all(8 / 1.1 - 1.5 <= d <= 8 / 0.9 + 1.5 for d in distances), distances
    assert all(abs(c) <= 3 for c in cols) and max(abs(c) for c in cols) >= 1, cols  # turned, and not sheared


def test_gamma_is_monais_adjust_contrast_per_image():
    x = torch.randn(3, 2, 6, 7) * 2.0
    out = RandBatchAugment(gamma_prob=1.0, gamma=(2.0, 2.0))(x)
    for image, augmented in zip(x, out, strict=True):
        assert torch.allclose(augmented, AdjustContrast(gamma=2.0)(image).as_tensor(), atol=1e-5)
        assert torch.isclose(augmented.min(), image.min()) and torch.isclose(augmented.max(), image.max())


def test_dtype_and_device_are_kept_and_metadata_dropped():
    x = MetaTensor(torch.randn(2, 1, 8, 8, dtype=torch.float64))
    out = RandBatchAugment(1.0, 1, 1.0, 0.2, 0.1, "zeros", 1.0, (0.8, 1.25))(x)
    assert type(out) is torch.Tensor and out.dtype == torch.float64 and out.device == x.device


@pytest.mark.parametrize(
    "kwargs",
    [{"flip_prob": 1.5}, {"affine_prob": -0.1}, {"flip_axis": 2}, {"scale_range": 1.0}, {"rotate_range": -0.1},
     {"gamma": (0.0, 1.0)}, {"gamma": (2.0, 1.0)}],
)  # fmt: skip
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="RandBatchAugment"):
        RandBatchAugment(**kwargs)


def test_a_volume_is_refused_with_its_shape():
    with pytest.raises(ValueError, match=r"\[B, C, H, W\].*\(1, 1, 4, 4, 4\)"):
        RandBatchAugment(flip_prob=1.0)(torch.zeros(1, 1, 4, 4, 4))


def test_augmented_batch_changes_the_input_only_and_reads_through_to_the_wrapped_batch():
    batch = {"oct": torch.randn(4, 1, 5, 5), "oct_label": torch.tensor([0, 1, 2, 3])}
    wrapped = AugmentedBatch(RandBatchAugment(flip_prob=1.0), TaskBatch("oct", "oct_label"))
    assert wrapped.image_key == "oct"  # OCTCoDAIteration asks its teacher batch for the image key
    image, targets, args, kwargs = wrapped(batch, torch.device("cpu"))
    assert torch.equal(image, batch["oct"].flip(3))
    assert torch.equal(targets, torch.tensor([[0], [1], [2], [3]])) and args == () and kwargs == {}
    plain = AugmentedBatch(RandBatchAugment(flip_prob=1.0))  # MONAI's default: (image, label)
    image, label = plain({"image": batch["oct"], "label": batch["oct_label"]}, torch.device("cpu"))
    assert isinstance(plain.prepare_batch, PrepareBatchDefault)
    assert torch.equal(image, batch["oct"].flip(3)) and torch.equal(label, batch["oct_label"])
