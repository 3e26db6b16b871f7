"""The layout-keeping instance norm: the result of PyTorch's, the layout kept, registered in MONAI when used."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from medguide.networks.blocks import InstanceNorm3d


@pytest.mark.parametrize("batch", [1, 2])
def test_layout_keeping_norm_gives_pytorchs_result_and_keeps_channels_last(batch):
    torch.manual_seed(0)
    ours, reference = InstanceNorm3d(4, affine=True), nn.InstanceNorm3d(4, affine=True)
    nn.init.normal_(ours.weight), nn.init.normal_(ours.bias)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(batch, 4, 6, 5, 4).contiguous(memory_format=torch.channels_last_3d)
    out = ours(x)
    torch.testing.assert_close(out, reference(x), atol=1e-5, rtol=1e-5)
    if batch == 1:
        assert out.is_contiguous(memory_format=torch.channels_last_3d)


def test_norm_is_registered_in_monai_when_a_network_is_built_not_on_import():
    script = """
from monai.networks.layers.factories import Norm
import medguide.networks.blocks
import medguide.networks
registered_on_import = [n for n in Norm.names if n.startswith("MEDGUIDE")]
assert not registered_on_import, registered_on_import
from medguide.networks import UNet
from medguide.networks.blocks import InstanceNorm3d, instance_norm_factory_name
UNet(3, 1, 2, base_width=2, num_stages=2)
assert Norm[instance_norm_factory_name(), 3] is InstanceNorm3d
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stderr
