"""The U-Net decoder takes its channels from the encoder and gives every level's feature, full resolution first."""

from __future__ import annotations

import torch

from medguide.networks.blocks import UNetDecoder, UNetEncoder


def test_decoder_is_built_from_the_encoders_widths():
    encoder = UNetEncoder(3, 2, [3, 5, 7, 11])
    decoder = UNetDecoder(encoder)
    assert decoder.widths == [3, 5, 7]
    assert [(b.transp_conv.conv.in_channels, b.transp_conv.conv.out_channels) for b in decoder] == [
        (11, 7),
        (7, 5),
        (5, 3),
    ]
    features = decoder(encoder(torch.randn(2, 2, 16, 8, 8)))
    assert [tuple(f.shape) for f in features] == [(2, 3, 16, 8, 8), (2, 5, 8, 4, 4), (2, 7, 4, 2, 2)]


def test_decoder_adds_no_copy_of_the_encoder_to_the_checkpoint():
    encoder = UNetEncoder(2, 1, [4, 8])
    keys = list(UNetDecoder(encoder).state_dict())
    assert keys and all(k.startswith("0.") for k in keys)
