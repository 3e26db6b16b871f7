"""DMG networks: G and D_c shapes, MONAI encoders and their weights files, and the guided classifier that
takes the inferior image only, keeps its frozen parts frozen and traces."""

from __future__ import annotations

import copy
import inspect
import io

import pytest
import torch
from monai.inferers import SimpleInferer
from torch import nn

from medguide.data import InputError
from medguide.networks import (
    FusionClassifier,
    GatedAttentionMIL,
    GuidanceMLP,
    GuidedClassifier,
    LatentClassifier,
    MultiTaskHead,
    image_encoder,
)
from tests.networks.helpers import TINY_DENSENET, tiny_densenet

BRAIN, SKIN = (1024, 512, 256, 256, 512), (2048, 1024, 512, 512, 1024, 2048)


def guided(spatial_dims: int = 3, in_channels: int = 1, tasks=None) -> GuidedClassifier:
    encoder = tiny_densenet(spatial_dims, in_channels, latent=16)
    guidance = GuidanceMLP((encoder.latent_features, 8, 4, 4, 8))
    head = MultiTaskHead(guidance.out_features + encoder.latent_features, tasks or {"class": 3})
    return GuidedClassifier(encoder.module, guidance, head)


@pytest.mark.parametrize("widths", [BRAIN, SKIN])
def test_guidance_mlp_maps_the_inferior_latent_to_the_superior_width(widths):
    g = GuidanceMLP(widths)
    linears = [m for m in g.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == list(zip(widths[:-1], widths[1:]))
    assert [m.p for m in g.layers if isinstance(m, nn.Dropout)] == [0.25] * (len(widths) - 2)
    assert isinstance(g.layers[-1], nn.Linear)  # a regression output: nothing after the last layer
    assert g.eval()(torch.randn(2, widths[0])).shape == (2, widths[-1])


@pytest.mark.parametrize("widths", [(16,), (), (16, 0, 8), (16, -2), (16, 2.5)])
def test_guidance_widths_that_cannot_be_built_are_refused(widths):
    with pytest.raises(ValueError, match="at least two positive integers"):
        GuidanceMLP(widths)


@pytest.mark.parametrize(
    ("name", "spatial_dims", "shape", "latent"),
    [
        ("densenet121", 3, (32, 32, 32), 1024),
        ("densenet121", 2, (64, 64), 1024),
        ("resnet18", 2, (64, 64), 512),
        ("resnet50", 2, (64, 64), 2048),
        ("efficientnet-b0", 2, (64, 64), 1280),
    ],
)
def test_monai_encoders_give_their_pooled_latent(name, spatial_dims, shape, latent):
    channels = 3 if spatial_dims == 2 else 1
    encoder = image_encoder(name, spatial_dims, channels)
    assert encoder.latent_features == latent
    with torch.no_grad():
        assert encoder.module.eval()(torch.randn(1, channels, *shape)).shape == (1, latent)


def test_unknown_encoders_are_refused_with_the_choices():
    with pytest.raises(ValueError, match="unknown image encoder 'vgg'; choose one of densenet121, densenet"):
        image_encoder("vgg", 2, 3)
    with pytest.raises(ValueError, match="spatial_dims must be 2 or 3"):
        image_encoder("densenet121", 1, 3)


@pytest.mark.parametrize(
    ("spatial_dims", "in_channels", "shape"),
    [(3, 1, (32, 32, 32)), (3, 4, (32, 32, 32)), (2, 3, (64, 64))],
    ids=["one MRI sequence", "four MRI sequences", "RGB photo"],
)
def test_guided_classifier_takes_the_inferior_image_alone(spatial_dims, in_channels, shape):
    net = guided(spatial_dims, in_channels).eval()
    assert list(inspect.signature(net.forward).parameters) == ["x"]
    x = torch.randn(2, in_channels, *shape)
    with torch.no_grad():
        out = SimpleInferer()(x, net)
    assert out.shape == (2, 3)
    # D_c sees concat(G(z_I), z_I): 8 + 16 features
    assert net.head.in_features == 24
    assert net.train()(x).shape == (2, 3)


def test_derm7pt_guided_head_gives_every_tasks_logits():
    net = guided(2, 3, tasks={"diagnosis": 5, "streaks": 3, "blue_whitish_veil": 2}).eval()
    with torch.no_grad():
        logits = net(torch.randn(2, 3, 64, 64))
    assert {task: t.shape for task, t in net.head.split(logits).items()} == {
        "diagnosis": (2, 5),
        "streaks": (2, 3),
        "blue_whitish_veil": (2, 2),
    }


def test_training_the_guided_classifier_leaves_encoder_and_guidance_unchanged():
    net = guided()
    frozen = {name: copy.deepcopy(getattr(net, name).state_dict()) for name in ("encoder", "guidance")}
    head = copy.deepcopy(net.head.state_dict())
    assert any("running_mean" in key for key in frozen["encoder"])
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(3):
        net.train()  # what a MONAI trainer calls every epoch
        opt.zero_grad()
        nn.functional.cross_entropy(net(torch.randn(2, 1, 32, 32, 32)), torch.tensor([0, 2])).backward()
        opt.step()
    assert net.head.training and not net.encoder.module.training and not net.guidance.module.training
    for name, before in frozen.items():
        part = getattr(net, name)
        assert all(p.grad is None and not p.requires_grad for p in part.parameters()), name
        for key, value in part.state_dict().items():
            assert torch.equal(value, before[key]), f"{name}.{key}"
    assert any(not torch.equal(v, head[k]) for k, v in net.head.state_dict().items())


def test_trace_gives_the_same_output():
    net = guided().eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        traced = torch.jit.trace(net, x)
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer)
        buffer.seek(0)
        torch.testing.assert_close(torch.jit.load(buffer)(x), net(x))


def test_stage_a_encoder_and_head_chain_into_the_guided_and_guided_only_models():
    inferior, superior = tiny_densenet(2, 3, latent=16), tiny_densenet(2, 3, latent=16)
    c_i = LatentClassifier(inferior.module, inferior.latent_features, {"class": 3})
    c_s = LatentClassifier(superior.module, superior.latent_features, {"class": 3})
    nn.init.normal_(c_i.encoder.features.conv0.weight)
    guidance = GuidanceMLP((16, 8, 16))
    net = guided(2, 3)
    # stage a's checkpoint of C_I holds E_I under the same prefix as the guided model's
    net.load_state_dict({k: v for k, v in c_i.state_dict().items() if k.startswith("encoder.")}, strict=False)
    x = torch.randn(2, 3, 64, 64)
    c_i.eval(), net.eval()
    with torch.no_grad():
        torch.testing.assert_close(net.encoder(x), c_i.encode(x))
        g_of_i = GuidedClassifier(c_i.encoder, guidance, c_s.head, guided_only=True).eval()
        torch.testing.assert_close(g_of_i(x), c_s.head(guidance.eval()(c_i.encode(x))))


def test_a_head_that_does_not_fit_the_guided_latent_is_refused():
    encoder = tiny_densenet(latent=16)
    with pytest.raises(ValueError, match=r"head takes 16 features but concat\(G\(z_I\), z_I\) has 24"):
        GuidedClassifier(encoder.module, GuidanceMLP((16, 8)), MultiTaskHead(16, {"class": 3}))
    with pytest.raises(ValueError, match=r"head takes 24 features but G\(z_I\) has 8"):
        GuidedClassifier(encoder.module, GuidanceMLP((16, 8)), MultiTaskHead(24, {"class": 3}), guided_only=True)


def test_histology_bags_and_fusion_classifier_shapes():
    mil = GatedAttentionMIL(32, 12, 6)
    c_s = LatentClassifier(mil, mil.out_features, {"class": 3}).eval()
    bags, mask = torch.randn(2, 7, 32), torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    with torch.no_grad():
        assert c_s.encode(bags, mask).shape == (2, 12)
        assert c_s(bags, mask=mask).shape == (2, 3)
        image = tiny_densenet(latent=16)
        fusion = FusionClassifier(image.module, image.latent_features, mil, 12, {"class": 3}).eval()
        assert fusion.encode(torch.randn(2, 1, 32, 32, 32), bags, superior_mask=mask).shape == (2, 28)
        assert fusion(torch.randn(2, 1, 32, 32, 32), bags, superior_mask=mask).shape == (2, 3)


def test_a_local_weights_file_loads_strictly_and_a_wrong_one_is_named(tmp_path):
    trained = tiny_densenet(2, 3, latent=16)
    nn.init.normal_(trained.module.features.conv0.weight)
    path = tmp_path / "encoder.pt"
    torch.save(trained.module.state_dict(), path)
    loaded = image_encoder("densenet", 2, 3, weights=path, **TINY_DENSENET[16])
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.module.eval()(x), trained.module.eval()(x))
    with pytest.raises(InputError, match=r"encoder\.pt.*does not fit the DenseNet encoder: .*features\.conv0\.weight"):
        image_encoder("densenet", 2, 1, weights=path, **TINY_DENSENET[16])
    with pytest.raises(InputError, match=r"encoder\.pt.*unexpected features\.transition1"):
        image_encoder("densenet", 2, 3, weights=path, init_features=8, growth_rate=4, block_config=(2,))
    with pytest.raises(FileNotFoundError, match=r"missing\.pt.*not found"):
        image_encoder("densenet", 2, 3, weights=tmp_path / "missing.pt", **TINY_DENSENET[16])
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(InputError, match=r"list\.pt.*holds a list, not a state dict"):
        image_encoder("densenet", 2, 3, weights=tmp_path / "list.pt", **TINY_DENSENET[16])


def test_the_latent_head_is_the_guided_classifier_without_its_encoder():
    """Stage c trains ``latent_head()`` on cached ``z_I``: the classifier's own head trains, ``G`` stays frozen."""
    encoder = tiny_densenet(spatial_dims=2, in_channels=3, latent=16)
    classifier = GuidedClassifier(
        encoder.module, GuidanceMLP([16, 8, 6]), MultiTaskHead(6 + 16, {"a": 3, "b": 2})
    ).eval()
    head = classifier.latent_head()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(classifier(x), head(classifier.encoder(x)))
    guidance = {k: v.clone() for k, v in classifier.guidance.state_dict().items()}
    optimizer = torch.optim.SGD(head.parameters(), lr=0.5)
    head.train()
    head(torch.randn(4, 16)).sum().backward()
    optimizer.step()
    assert [n for n, p in head.named_parameters() if p.requires_grad] == [
        n for n, _ in head.named_parameters() if n.startswith("head.")
    ]
    assert all(torch.equal(v, classifier.guidance.state_dict()[k]) for k, v in guidance.items())
    with torch.no_grad():  # the classifier's head is the one that trained
        assert torch.allclose(classifier(x), head.eval()(classifier.encoder(x)))
    assert set(head.state_dict()) == {k for k in classifier.state_dict() if not k.startswith("encoder.")}
