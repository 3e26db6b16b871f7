"""MAML's outputs and checkpoint keys pinned: a refactoring of the networks must not change what a trained model gives.

``data/maml_reference.pt`` was written on 2026-11-30 (commit b286f1b) from a seeded tiny ``MAMLNet`` and
early-fusion ``ModalityUNet``: their state dicts, an input and the outputs in eval and training mode. Loading the
state dicts strictly checks that saved checkpoints still load; the outputs check the forward.

Converted the same day when the U-Net's logit heads lost their bias (issue 12, as the official build): the head
biases were dropped, the head weights renamed from ``heads.<j>.conv.conv.weight`` to ``heads.<j>.weight``, and the
outputs recomputed by the code of a96e929 with those biases set to zero. So the pinned outputs are the old network's
with bias-free heads; the fused outputs, which use no branch head, are unchanged.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medguide.networks import MAMLNet, ModalityUNet

MODALITIES = ("t1", "t1ce", "t2", "flair")
REFERENCE = torch.load(Path(__file__).parent / "data" / "maml_reference.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def networks():
    net = MAMLNet(MODALITIES, 4, base_width=2, num_stages=3)
    net.load_state_dict(REFERENCE["maml"])
    baseline = ModalityUNet(MODALITIES, 4, base_width=2, num_stages=3)
    baseline.load_state_dict(REFERENCE["early_fusion"])
    return net.eval(), baseline.eval()


@pytest.mark.parametrize(
    "name, channels, modalities",
    [("all", slice(None), None), ("t2+flair", slice(2, 4), ["t2", "flair"]), ("t1ce", slice(1, 2), ["t1ce"])],
)
def test_maml_eval_output_is_unchanged(networks, name, channels, modalities):
    with torch.no_grad():
        out = networks[0](REFERENCE["input"][:, channels], modalities)
    torch.testing.assert_close(out, REFERENCE["outputs"][name], atol=1e-5, rtol=1e-4)


def test_maml_training_outputs_are_unchanged(networks):
    net = networks[0]
    net.train()
    try:
        with torch.no_grad():
            out = net(REFERENCE["input"][:, :2], ["t1", "t1ce"])
    finally:
        net.eval()
    torch.testing.assert_close(out["fused"], REFERENCE["outputs"]["train_fused"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        out["branches"][1][1], REFERENCE["outputs"]["train_branch1_level1"], atol=1e-5, rtol=1e-4
    )


def test_early_fusion_output_is_unchanged(networks):
    with torch.no_grad():
        out = networks[1](REFERENCE["input"])
    torch.testing.assert_close(out, REFERENCE["outputs"]["early_fusion"], atol=1e-5, rtol=1e-4)
