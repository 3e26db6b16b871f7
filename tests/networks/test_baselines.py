"""ModalityUNet (early fusion, single modality): outputs per mode, missing modalities as zeros, names checked."""

from __future__ import annotations

import pytest
import torch

from medguide.networks import ModalityUNet

MODALITIES = ("t1", "t1ce", "t2", "flair")


def small() -> ModalityUNet:
    torch.manual_seed(0)
    return ModalityUNet(MODALITIES, 4, base_width=8, num_stages=3)


def test_training_gives_one_deep_supervised_branch_and_eval_the_logits():
    net = small()
    x = torch.randn(2, 4, 16, 16, 16)
    out = net.train()(x)
    assert list(out) == ["branches"] and len(out["branches"]) == 1
    assert [tuple(level.shape) for level in out["branches"][0]] == [(2, 4, 16, 16, 16), (2, 4, 8, 8, 8)]
    with torch.no_grad():
        assert net.eval()(x).shape == (2, 4, 16, 16, 16)


def test_early_fusion_fills_missing_modalities_with_zeros():
    net = small().eval()
    x = torch.randn(1, 2, 16, 16, 16)
    full = torch.zeros(1, 4, 16, 16, 16)
    full[:, [1, 3]] = x
    with torch.no_grad():
        torch.testing.assert_close(net(x, ["t1ce", "flair"]), net(full))


def test_inputs_that_do_not_fit_are_refused():
    net = small().eval()
    with pytest.raises(ValueError, match=r"unknown \['dwi'\]"):
        net(torch.randn(1, 1, 16, 16, 16), ["dwi"])
    with pytest.raises(ValueError, match=r"repeated \['t1'\]"):
        net(torch.randn(1, 2, 16, 16, 16), ["t1", "t1"])
    with pytest.raises(ValueError, match="one channel per present modality"):
        net(torch.randn(1, 3, 16, 16, 16), ["t1", "t2"])
    with pytest.raises(ValueError, match="nearest valid sizes are 16 and 20"):
        net(torch.randn(1, 4, 16, 16, 18))


def test_the_modalities_are_checked_at_construction():
    with pytest.raises(ValueError, match=r"ModalityUNet's modalities must be distinct, but \['t2'\] appear"):
        ModalityUNet(["t2", "t2"], 4, base_width=8, num_stages=3)
    # one name is one input channel, not one per letter
    single = ModalityUNet("t1ce", 4, base_width=8, num_stages=3)
    assert single.modalities == ("t1ce",) and single.encoder.in_channels == 1
