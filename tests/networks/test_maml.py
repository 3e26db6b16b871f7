"""MAMLNet: every modality subset, 2D and 3D, gradients, the fast path, inferers, input checks, the paper's size,
the official initialisation and the single-modality route."""

from __future__ import annotations

import math

import pytest
import torch
from monai.inferers import SlidingWindowInferer
from torch import nn

from medguide.data import nonempty_subsets
from medguide.engines import resolve_precision
from medguide.networks import MAMLNet
from medguide.networks.maml import _default_strides

MODALITIES = ("t1", "t1ce", "t2", "flair")


def small(spatial_dims: int = 3, **kwargs) -> MAMLNet:
    torch.manual_seed(0)
    return MAMLNet(MODALITIES, 4, spatial_dims=spatial_dims, base_width=4, num_stages=3, **kwargs)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_every_subset_gives_fused_and_deep_supervision_outputs(spatial_dims):
    net = small(spatial_dims)
    size = (16,) * spatial_dims
    for subset in nonempty_subsets(MODALITIES):
        x = torch.randn(2, len(subset), *size)
        net.train()
        out = net(x, subset)
        assert out["fused"].shape == (2, 4, *size)
        assert len(out["branches"]) == len(subset)
        for branch in out["branches"]:
            assert [level.shape[2:] for level in branch] == [size, (8,) * spatial_dims]
        net.eval()
        with torch.no_grad():
            assert net(x, subset).shape == (2, 4, *size)


def test_gradients_reach_every_present_branch_and_no_absent_one():
    net = small()
    out = net(torch.randn(1, 2, 16, 16, 16), ["t1", "flair"])
    (out["fused"].sum() + sum(level.sum() for branch in out["branches"] for level in branch)).backward()

    def touched(index: int) -> bool:
        return all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.branches[index].parameters())

    assert touched(0) and touched(3)
    assert all(p.grad is None for i in (1, 2) for p in net.branches[i].parameters())
    fusion = net.fusion
    assert all(
        p.grad is not None for m in (fusion.dual, fusion.head, fusion.gates[0], fusion.gates[3]) for p in m.parameters()
    )
    assert all(p.grad is None for i in (1, 2) for p in fusion.gates[i].parameters())


def test_fused_output_alone_trains_every_branch():
    net = small()
    net(torch.randn(1, 4, 16, 16, 16))["fused"].sum().backward()
    for branch in net.branches:
        assert branch.encoder[0].conv1.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("training", [True, False])
def test_fast_execution_gives_the_plain_result(training):
    fast = small()
    plain = MAMLNet(MODALITIES, 4, base_width=4, num_stages=3, group_branches=False, channels_last=False)
    plain.load_state_dict(fast.state_dict())
    fast.train(training), plain.train(training)
    x = torch.randn(1, 3, 32, 32, 32)
    with torch.no_grad():
        a, b = fast(x, ["t1", "t2", "flair"]), plain(x, ["t1", "t2", "flair"])
    if training:
        torch.testing.assert_close(a["fused"], b["fused"], atol=1e-4, rtol=1e-4)
        for fa, fb in zip(a["branches"], b["branches"]):
            for la, lb in zip(fa, fb):
                torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)
    else:
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        assert a.is_contiguous()


def test_eval_output_works_in_sliding_window_inference():
    net = small().eval()
    inferer = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=2, overlap=0.5, mode="gaussian")
    with torch.no_grad():
        out = inferer(torch.randn(1, 2, 24, 20, 28), net, modalities=["t1ce", "flair"])
    assert out.shape == (1, 4, 24, 20, 28)


def test_inputs_that_do_not_fit_are_refused():
    net = small()
    with pytest.raises(ValueError, match="one channel per present modality"):
        net(torch.randn(1, 3, 16, 16, 16), ["t1", "t2"])
    with pytest.raises(ValueError, match="subset"):
        net(torch.randn(1, 1, 16, 16, 16), ["dwi"])
    with pytest.raises(ValueError, match="subset"):
        net(torch.randn(1, 2, 16, 16, 16), ["t1", "t1"])
    with pytest.raises(ValueError, match=r"size 18 \(spatial axis 2\) is not; the nearest valid sizes are 16 and 20"):
        net(torch.randn(1, 2, 16, 16, 18), ["t1", "t2"])
    with pytest.raises(ValueError, match="single voxel"):
        net(torch.randn(1, 2, 4, 4, 4), ["t1", "t2"])


def test_default_is_the_official_build_with_the_papers_parameter_count():
    net = MAMLNet(MODALITIES, 4)
    assert net.branches[0].num_stages == 6 and net.branches[0].feature_channels == 16
    per_branch = sum(p.numel() for p in net.branches[0].parameters())
    total = sum(p.numel() for p in net.parameters())
    assert round(per_branch / 1e6, 1) == 16.6
    assert round(total / 1e6, 1) == 66.5


def test_mean_fusion_is_the_mean_of_branch_logits():
    net = small(fusion="mean").eval()
    x = torch.randn(1, 2, 16, 16, 16)
    with torch.no_grad():
        fused = net(x, ["t1", "t2"])
        single = [net.branches[i].eval()(x[:, c : c + 1]) for c, i in enumerate((0, 2))]
    torch.testing.assert_close(fused, (single[0] + single[1]) / 2, atol=1e-5, rtol=1e-5)


NATIVE_BF16 = pytest.mark.skipif(
    not resolve_precision("auto", "cpu"),
    reason="precision 'auto' is float32 on this CPU (no AMX), so medguide's default never trains under CPU bfloat16 "
    "autocast here; emulated bfloat16 gives other gradient strides",
)


@pytest.mark.parametrize(
    "dtype", [None, pytest.param(torch.bfloat16, marks=NATIVE_BF16)], ids=["float32", "bfloat16-autocast"]
)
def test_gradients_have_their_weights_strides(dtype):
    """DDP warns and copies every step when a gradient's strides differ from its weight's (the 1x1x1 heads)."""
    net = small()
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        out = net(torch.randn(1, 2, 16, 16, 16), ["t1", "flair"])
    (out["fused"].float().sum() + sum(level.float().sum() for branch in out["branches"] for level in branch)).backward()
    mismatched = [name for name, p in net.named_parameters() if p.grad is not None and p.grad.stride() != p.stride()]
    assert not mismatched, f"gradients with other strides than their weights: {mismatched}"


def test_a_gradient_with_the_default_strides_is_not_copied():
    default = torch.randn(4, 8, 1, 1, 1)
    assert _default_strides(default) is default
    # a 1x1x1 kernel's channels-last gradient counts as contiguous, yet its strides differ from its weight's
    channels_last = torch.randn(4, 8, 1, 1, 1).clone(memory_format=torch.channels_last_3d)
    assert channels_last.is_contiguous() and channels_last.stride() != default.stride()
    copied = _default_strides(channels_last)
    assert copied.stride() == default.stride()
    torch.testing.assert_close(copied, channels_last)


@pytest.mark.parametrize("modalities", [["t1", "t1"], ["t1", "t2", "t1"]])
def test_a_repeated_modality_is_refused_at_construction(modalities):
    with pytest.raises(ValueError, match=r"MAMLNet's modalities must be distinct, but \['t1'\] appear more than once"):
        MAMLNet(modalities, 2, base_width=4, num_stages=3)
    with pytest.raises(ValueError, match="must name at least one modality"):
        MAMLNet([], 2, base_width=4, num_stages=3)
    assert MAMLNet("t1", 2, base_width=4, num_stages=3).modalities == ("t1",)


def weights_over_he_std(modules: list[nn.Module]) -> torch.Tensor:
    """Every convolution weight of ``modules`` divided by nnU-Net's He standard deviation for its fan-in."""
    convs = [m for module in modules for m in module.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    fan_in = [conv.weight.shape[1] * math.prod(conv.weight.shape[2:]) for conv in convs]
    return torch.cat([conv.weight.flatten() / math.sqrt(2 / (1.0001 * f)) for conv, f in zip(convs, fan_in)])


def test_branches_start_he_normal_and_the_fusion_keeps_pytorchs_default():
    torch.manual_seed(0)
    net = MAMLNet(MODALITIES, 4, base_width=8, num_stages=3)  # channels-last: initialised before the layout change
    branches = weights_over_he_std(list(net.branches))
    assert branches.std().item() == pytest.approx(1.0, abs=0.02)
    # PyTorch's default, uniform with bound 1 / sqrt(fan_in), has 1 / sqrt(6) of He's standard deviation
    fusion = weights_over_he_std([net.fusion])
    assert fusion.std().item() == pytest.approx(1 / math.sqrt(6), abs=0.04)
    assert all(head.bias is None for branch in net.branches for head in branch.heads)
    assert net.fusion.head.bias is None and net.fusion.dual.bias.abs().sum() > 0  # the default's bias, not zero


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_branch_route_returns_the_branch_alone_with_one_modality(spatial_dims):
    fused_net = small(spatial_dims).eval()
    branch_net = MAMLNet(MODALITIES, 4, spatial_dims=spatial_dims, base_width=4, num_stages=3, single_modality="branch")
    branch_net.load_state_dict(fused_net.state_dict())
    branch_net.eval()
    x = torch.randn(1, 1, *(16,) * spatial_dims)
    with torch.no_grad():
        alone = fused_net.branches[2](x)
        fused = fused_net(x, ["t2"])
        torch.testing.assert_close(branch_net(x, ["t2"]), alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fused_net(x, ["t2"], single_modality="branch"), alone, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(branch_net(x, ["t2"], single_modality="fused"), fused)
        assert not torch.allclose(fused, alone, atol=1e-3)
        # with two modalities the route changes nothing
        pair = torch.randn(1, 2, *(16,) * spatial_dims)
        torch.testing.assert_close(branch_net(pair, ["t1", "t2"]), fused_net(pair, ["t1", "t2"]))


def test_branch_route_leaves_training_output_unchanged_and_works_in_an_inferer():
    net = small(single_modality="branch")
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        out = net.train()(x, ["flair"])
        assert set(out) == {"fused", "branches"} and out["fused"].shape == (1, 4, 16, 16, 16)
        net.eval()
        inferer = SlidingWindowInferer(roi_size=(16, 16, 16), sw_batch_size=1, overlap=0.5)
        routed = inferer(x, net, modalities=["flair"], single_modality="fused")
        torch.testing.assert_close(routed, net(x, ["flair"], single_modality="fused"), atol=1e-5, rtol=1e-5)


def test_an_unknown_single_modality_route_is_refused():
    with pytest.raises(ValueError, match="single_modality must be 'fused' or 'branch', got 'branches'"):
        MAMLNet(MODALITIES, 2, base_width=4, num_stages=3, single_modality="branches")
    with pytest.raises(ValueError, match="got 'mean'"):
        small().eval()(torch.randn(1, 1, 16, 16, 16), ["t1"], single_modality="mean")


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("fusion", ["ma", "mean"])
@pytest.mark.parametrize("route", ["fused", "branch"])
def test_subset_logits_are_each_subsets_own_forward(spatial_dims, fusion, route):
    """Every subset from one pass of the branches equals the forward on that subset's channels alone; the given
    modalities may be a subset in any order, and the subsets any order of them."""
    net = small(spatial_dims, fusion=fusion).eval()
    present = ["flair", "t1", "t2"]
    x = torch.randn(2, 3, *(16,) * spatial_dims)
    subsets = [*nonempty_subsets(present), ("t2", "flair")]
    with torch.no_grad():
        out = net.subset_logits(x, present, subsets, single_modality=route)
        assert list(out) == subsets
        for subset in subsets:
            expected = net(x[:, [present.index(m) for m in subset]], subset, single_modality=route)
            torch.testing.assert_close(out[subset], expected, rtol=1e-4, atol=1e-4)
        assert list(net.subset_logits(torch.randn(1, 4, *(16,) * spatial_dims))) == nonempty_subsets(MODALITIES)


def test_subset_logits_refuse_training_mode_and_subsets_of_absent_modalities():
    net = small()
    x = torch.randn(1, 2, 16, 16, 16)
    with pytest.raises(RuntimeError, match="eval"):
        net.train().subset_logits(x, ["t1", "t2"])
    with pytest.raises(ValueError, match=r"modalities present.*unknown \['flair'\]"):
        net.eval().subset_logits(x, ["t1", "t2"], [("t1", "flair")])
    with pytest.raises(ValueError, match="2 channels but 3 modalities"):
        net.eval().subset_logits(x, ["t1", "t2", "flair"])
