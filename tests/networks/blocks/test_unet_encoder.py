"""The U-Net's input-size rule: exactly the sizes the encoder and decoder run on, and errors that say what fits."""

from __future__ import annotations

import pytest
import torch

from medguide.networks.blocks import UNetDecoder, UNetEncoder, unet_size_rule, unet_widths


def test_rule_for_the_bundles_default_network():
    rule = unet_size_rule(6)
    assert (rule.multiple, rule.minimum) == (32, 64)
    for fits in [(128, 128, 128), (160, 160, 64), (64, 64, 64), (64, 32, 32)]:
        rule.check(fits)


def fits(rule, shape) -> bool:
    try:
        rule.check(shape)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize("training", [True, False])
def test_rule_accepts_exactly_the_sizes_the_stages_run_on(training):
    torch.manual_seed(0)
    encoder = UNetEncoder(2, 1, unet_widths(2, 3))
    decoder = UNetDecoder(encoder)
    encoder.train(training), decoder.train(training)
    rule = unet_size_rule(3)
    # each new shape costs oneDNN a new kernel, so a few sizes on each side of the rule's edges
    for h in (2, 4, 6, 8, 12):
        for w in (3, 4, 8):
            try:
                with torch.no_grad():
                    decoder(encoder(torch.randn(1, 1, h, w)))
                runs = True
            except (RuntimeError, ValueError):
                runs = False
            assert fits(rule, (h, w)) == runs, (h, w)


def test_size_not_a_multiple_is_named_with_the_nearest_valid_sizes():
    with pytest.raises(ValueError, match=r"multiple of 2\^\(6 - 1\) = 32, and size 40 \(spatial axis 1\) is not; "):
        unet_size_rule(6).check((96, 40, 64))
    with pytest.raises(ValueError, match="the nearest valid sizes are 32 and 64"):
        unet_size_rule(6).check((96, 40, 64))
    with pytest.raises(ValueError, match="the nearest valid sizes are 32.$"):
        unet_size_rule(6).check((16, 64, 64))


def test_single_voxel_bottleneck_is_refused_with_the_minimum_size():
    with pytest.raises(ValueError, match=r"single voxel.*2\^6 = 64 or more, e\.g\. \(64, 32, 32\)"):
        unet_size_rule(6).check((32, 32, 32))


def test_encoder_needs_two_stages():
    with pytest.raises(ValueError, match="at least 2 stages"):
        UNetEncoder(3, 1, [8])
