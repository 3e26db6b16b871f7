"""Running several independent U-Net branches together, as one grouped convolution where that is faster.

This is :class:`medguide.networks.MAMLNet`'s execution detail; a :class:`medguide.networks.UNet` on its own runs
its stages plainly.

PyTorch sends a float32 CPU convolution of a single sample to its slow native kernel unless the input is large
(ATen's ``use_mkldnn`` heuristic: ``N * C * D * H > 20480`` for 3D), while a grouped convolution always goes to
oneDNN. In a U-Net that leaves every low-resolution stage on the slow kernel, up to ten times slower than
oneDNN. Independent branches (one per modality) with the same layer shapes are exactly a grouped convolution
whose weights are the branches' weights stacked, so those stages run as one; the large stages, where oneDNN is
already used, run branch by branch. The arithmetic is the same either way; only the kernels differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from monai.networks.blocks.dynunet_block import UnetBasicBlock, UnetUpBlock

from medguide.networks.blocks import instance_norm

if TYPE_CHECKING:
    from medguide.networks.unet import UNet

__all__ = ["decode_branches", "groupable", "run_basic_blocks", "run_up_blocks"]

# ATen's threshold on N * C * D * H above which a 3x3x3 float32 CPU convolution goes to oneDNN
_ATEN_MKLDNN_MIN = 20480


def groupable(x: torch.Tensor, channels: int, spatial: Sequence[int], num_branches: int) -> bool:
    """Whether branches whose layers work at ``channels`` x ``spatial`` on inputs like ``x`` should be grouped."""
    sizes = (x.shape[0], channels, *spatial)
    return (
        num_branches > 1
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled("cpu")
        and sizes[0] == 1
        and sizes[0] * sizes[1] * sizes[2] * (sizes[3] if len(sizes) == 5 else 1) <= _ATEN_MKLDNN_MIN
    )


# The grouped path reads MONAI's block attributes (UnetBasicBlock: conv1.conv, norm1, conv2.conv, norm2, lrelu;
# UnetUpBlock: transp_conv.conv, conv_block); tests/networks/test_branches.py pins them, so a MONAI release that
# renames them fails there by name.


def _stacked(modules: Sequence[torch.nn.Module], name: str) -> torch.Tensor | None:
    tensors = [getattr(m, name) for m in modules]
    return None if tensors[0] is None else torch.cat(tensors)


def _grouped_basic_block(blocks: Sequence[UnetBasicBlock], x: torch.Tensor) -> torch.Tensor:
    """``UnetBasicBlock`` of every branch on ``x`` holding the branches' channels one after another."""
    conv = F.conv3d if x.dim() == 5 else F.conv2d
    for conv_name, norm_name in (("conv1", "norm1"), ("conv2", "norm2")):
        convs = [getattr(b, conv_name).conv for b in blocks]
        norms = [getattr(b, norm_name) for b in blocks]
        x = conv(
            x,
            _stacked(convs, "weight"),
            _stacked(convs, "bias"),
            stride=convs[0].stride,
            padding=convs[0].padding,
            groups=len(blocks),
        )
        x = instance_norm(x, _stacked(norms, "weight"), _stacked(norms, "bias"), norms[0].eps)
        x = F.leaky_relu(x, blocks[0].lrelu.negative_slope)
    return x


def run_basic_blocks(blocks: Sequence[UnetBasicBlock], xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Apply ``blocks[i]`` to ``xs[i]`` for every branch ``i``, grouped when :func:`groupable`."""
    conv = blocks[0].conv1.conv
    spatial = [s // st for s, st in zip(xs[0].shape[2:], conv.stride)]
    if groupable(xs[0], conv.out_channels, spatial, len(blocks)):
        return list(_grouped_basic_block(blocks, torch.cat(list(xs), 1)).chunk(len(blocks), 1))
    return [block(x) for block, x in zip(blocks, xs)]


def run_up_blocks(
    blocks: Sequence[UnetUpBlock], xs: Sequence[torch.Tensor], skips: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Apply ``blocks[i](xs[i], skips[i])`` for every branch ``i``, grouped when :func:`groupable`."""
    transposed = blocks[0].transp_conv.conv
    channels = transposed.out_channels
    if not groupable(skips[0], channels, skips[0].shape[2:], len(blocks)):
        return [block(x, skip) for block, x, skip in zip(blocks, xs, skips)]
    up = F.conv_transpose3d if xs[0].dim() == 5 else F.conv_transpose2d
    convs = [b.transp_conv.conv for b in blocks]
    x = up(
        torch.cat(list(xs), 1),
        _stacked(convs, "weight"),
        _stacked(convs, "bias"),
        stride=transposed.stride,
        groups=len(blocks),
    )
    # each branch's up-sampled channels are followed by its own skip channels, as its UnetUpBlock concatenates
    x = torch.stack([x.unflatten(1, (len(blocks), channels)), torch.stack(list(skips), 1)], 2).flatten(1, 3)
    x = _grouped_basic_block([b.conv_block for b in blocks], x)
    return list(x.chunk(len(blocks), 1))


def decode_branches(unets: Sequence[UNet], xs: Sequence[torch.Tensor], group: bool = True) -> list[list[torch.Tensor]]:
    """Decoder features of several U-Nets of one shape, each on its own input.

    With ``group`` the branches run stage by stage and their small stages as one grouped convolution; the result is
    the same as calling each U-Net's :meth:`UNet.decode`, which is what ``group=False`` does.

    Args:
        unets: the branches, all built with the same arguments.
        xs: one input per branch.
        group: allow grouping.

    Returns:
        for each branch, its decoder features at every level, full resolution first.
    """
    if not group:
        return [unet.decode(x) for unet, x in zip(unets, xs)]
    skips = []
    for stage in range(unets[0].num_stages):
        xs = run_basic_blocks([u.encoder[stage] for u in unets], xs)
        skips.append(xs)
    features = []
    for level, skip in enumerate(reversed(skips[:-1])):
        xs = run_up_blocks([u.decoder[level] for u in unets], xs, skip)
        features.append(xs)
    return [list(levels) for levels in zip(*features[::-1])]
