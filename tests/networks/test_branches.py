"""MAML's branch grouping: the MONAI attributes it reads exist, and grouped decoding equals the plain loop."""

from __future__ import annotations

import monai
import pytest
import torch
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetUpBlock
from torch import nn

from medguide.networks import UNet
from medguide.networks.branches import decode_branches, groupable

# what medguide/networks/branches.py reads from MONAI's blocks, with the type it expects there
BASIC_BLOCK = {
    "conv1.conv": (nn.Conv2d, nn.Conv3d),
    "norm1": (nn.InstanceNorm2d, nn.InstanceNorm3d),
    "conv2.conv": (nn.Conv2d, nn.Conv3d),
    "norm2": (nn.InstanceNorm2d, nn.InstanceNorm3d),
    "lrelu": nn.LeakyReLU,
}
UP_BLOCK = {"transp_conv.conv": (nn.ConvTranspose2d, nn.ConvTranspose3d), "conv_block": UnetBasicBlock}


def attribute(module: nn.Module, path: str, expected: type | tuple[type, ...]):
    found = module
    for name in path.split("."):
        found = getattr(found, name, None)
    assert isinstance(found, expected), (
        f"MONAI {monai.__version__}: {type(module).__name__}.{path} is {type(found).__name__}, not "
        f"{expected}; medguide/networks/branches.py reads it to group MAML's branches, so update it there."
    )
    return found


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_monai_blocks_have_the_attributes_the_grouping_reads(spatial_dims):
    net = UNet(spatial_dims, 1, 2, base_width=4, num_stages=3)
    basic_blocks = [*net.encoder, *(up.conv_block for up in net.decoder)]
    for block in basic_blocks:
        assert type(block) is UnetBasicBlock
        for path, expected in BASIC_BLOCK.items():
            attribute(block, path, expected)
        assert block.lrelu.negative_slope == 0.01
    for up in net.decoder:
        assert type(up) is UnetUpBlock
        for path, expected in UP_BLOCK.items():
            attribute(up, path, expected)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_grouped_decoding_gives_each_unets_own_decoding(spatial_dims):
    torch.manual_seed(0)
    unets = [UNet(spatial_dims, 1, 2, base_width=4, num_stages=3) for _ in range(3)]
    for unet in unets:
        for param in unet.parameters():
            nn.init.normal_(param, std=0.3)
    xs = [torch.randn(1, 1, *(16,) * spatial_dims) for _ in unets]
    assert groupable(xs[0], 4, xs[0].shape[2:], len(unets)), "the grouped path would not be taken"
    with torch.no_grad():
        grouped = decode_branches(unets, xs)
        plain = [unet.decode(x) for unet, x in zip(unets, xs)]
    for branch_grouped, branch_plain in zip(grouped, plain):
        assert len(branch_grouped) == len(branch_plain) == 2
        for a, b in zip(branch_grouped, branch_plain):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_only_small_single_sample_float32_cpu_stages_are_grouped():
    x = torch.randn(1, 1, 16, 16, 16)
    assert groupable(x, 4, (16, 16, 16), 3)
    assert not groupable(x, 4, (16, 16, 16), 1)
    assert not groupable(torch.randn(2, 1, 16, 16, 16), 4, (16, 16, 16), 3)
    assert not groupable(x.double(), 4, (16, 16, 16), 3)
    assert not groupable(x, 32, (32, 32, 32), 3)
