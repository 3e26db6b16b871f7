"""Region encoders: MONAI's DenseNet and ResNet returning their last feature map on a grid of the input's size divided
by the stated stride, loading the weights file of the pooled ``image_encoder`` of the same name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medguide.data import InputError, MissingInputError
from medguide.networks import RegionFeatures, image_encoder, region_encoder

# one dense layer per block: 4 + 4 features, halved by the transition, + 4 again -> 8 channels
TINY_DENSENET = {"init_features": 4, "growth_rate": 4, "block_config": (1, 1)}
TINY_RESNET = {"widen_factor": 0.125}  # 8 to 64 channels instead of 64 to 512


@pytest.mark.parametrize(
    "name, kwargs, channels, stride",
    [
        ("densenet", TINY_DENSENET, 8, 8),  # 4, times 2 for the one transition
        ("densenet", {"init_features": 4, "growth_rate": 4, "block_config": (1, 1, 1)}, 8, 16),
        # MONAI's ResNet: conv1 of stride conv1_t_stride (default 1), then the max pool and three stride-2 layers
        ("resnet18", {}, 512, 16),
        ("resnet18", {"no_max_pool": True, **TINY_RESNET}, 64, 8),
        ("resnet18", {"conv1_t_stride": 2, **TINY_RESNET}, 64, 32),
    ],
)
def test_region_features_are_the_input_grid_divided_by_the_stride(name, kwargs, channels, stride):
    torch.manual_seed(0)
    encoder = region_encoder(name, 1, **kwargs)
    assert encoder.channels == channels
    with torch.no_grad():
        features = encoder.module.eval()(torch.randn(2, 1, 64, 96))
    # x first, as MONAI loads a film: the grid keeps the input's axis order
    assert features.shape == (2, channels, 64 // stride, 96 // stride)


def last_feature_map(name: str, net: nn.Module, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The map the MONAI network pools, caught by a hook on its own layer (not through RegionFeatures); its output."""
    layer = net.class_layers.relu if name == "densenet" else net.layer4
    caught = []
    handle = layer.register_forward_hook(lambda module, inputs, output: caught.append(output))
    try:
        pooled = net(image)
    finally:
        handle.remove()
    return caught[0], pooled


@pytest.mark.parametrize("name, kwargs", [("densenet", TINY_DENSENET), ("resnet18", TINY_RESNET)])
def test_an_image_encoder_weights_file_loads_and_gives_that_networks_feature_map(name, kwargs, tmp_path):
    torch.manual_seed(0)
    source = image_encoder(name, 2, 1, **kwargs).module.eval()
    path = tmp_path / "encoder.pt"
    torch.save(source.state_dict(), path)

    torch.manual_seed(1)  # another initialisation, which the file must replace
    untrained = region_encoder(name, 1, **kwargs).module.eval()
    encoder = region_encoder(name, 1, weights=path, **kwargs).module.eval()
    assert encoder.net.state_dict().keys() == source.state_dict().keys()

    image = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = encoder(image)
        expected, pooled = last_feature_map(name, source, image)
        assert not torch.allclose(untrained(image), expected)
    torch.testing.assert_close(features, expected)
    # and the pooled latent the classifier was trained on is the mean of this map
    torch.testing.assert_close(features.mean(dim=(2, 3)), pooled)


def test_a_weights_file_that_is_missing_or_does_not_fit_is_refused(tmp_path):
    with pytest.raises(MissingInputError, match="absent.pt"):
        region_encoder("densenet", 1, weights=tmp_path / "absent.pt", **TINY_DENSENET)
    torch.manual_seed(0)
    path = tmp_path / "resnet.pt"
    torch.save(image_encoder("resnet18", 2, 1, **TINY_RESNET).module.state_dict(), path)
    with pytest.raises(InputError, match="resnet.pt"):
        region_encoder("densenet", 1, weights=path, **TINY_DENSENET)


@pytest.mark.parametrize("name", ["efficientnet-b0", "vit", "DenseNet"])
def test_an_unknown_name_is_refused_naming_the_choices(name):
    # efficientnet is an image_encoder, but has no region encoder
    with pytest.raises(ValueError, match="resnet18"):
        region_encoder(name, 1)


@pytest.mark.parametrize("net", [nn.Conv2d(1, 4, 3), nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU())])
def test_region_features_refuse_another_network_type(net):
    with pytest.raises(TypeError, match="DenseNet or ResNet"):
        RegionFeatures(net)
