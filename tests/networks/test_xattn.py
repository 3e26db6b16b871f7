"""Report-guided localisation networks: the image-only attribute localiser (logits, one map per attribute on the
encoder's grid), the report guidance that trains it (a text-guided map, token weights over real tokens only), and
the report encoders."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from medguide.data import REPORT_ATTRIBUTES, InputError, MissingInputError, ReportVocabulary
from medguide.networks import (
    AttributeLocalizer,
    HuggingFaceReportEncoder,
    ReportGuidance,
    TransformerReportEncoder,
    region_encoder,
)

STRIDE = 8  # the tiny DenseNet: 4, times 2 for its one transition
DIM, TEXT_DIM, MAX_LENGTH = 16, 8, 12
REPORTS = [
    "Right lower lobe consolidation, concerning for pneumonia.",
    "The lungs are clear.",
    "No focal consolidation. Heart size is normal.",
]


def localizer(seed: int = 0) -> AttributeLocalizer:
    torch.manual_seed(seed)
    encoder = region_encoder("densenet", 1, init_features=4, growth_rate=4, block_config=(1, 1))
    return AttributeLocalizer(encoder.module, encoder.channels, REPORT_ATTRIBUTES, dim=DIM)


def report_encoder(seed: int = 0, max_length: int = MAX_LENGTH, depth: int = 1) -> TransformerReportEncoder:
    torch.manual_seed(seed)
    vocabulary = ReportVocabulary.build(REPORTS, min_count=1)
    return TransformerReportEncoder(vocabulary, dim=TEXT_DIM, depth=depth, heads=2, max_length=max_length, dropout=0)


def guidance(seed: int = 0) -> ReportGuidance:
    encoder = report_encoder(seed)
    torch.manual_seed(seed)
    return ReportGuidance(encoder, TEXT_DIM, DIM, num_heads=2)


def films(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(1))


def test_the_localiser_gives_attribute_logits_and_a_map_per_attribute():
    net = localizer().eval()
    image = films(2, 1, 32, 32)
    with torch.no_grad():
        logits = net(image)
        out = net(image, with_maps=True)
    assert logits.shape == (2, len(REPORT_ATTRIBUTES))
    torch.testing.assert_close(out.logits, logits)
    assert out.maps.shape == (2, 7, 32 // STRIDE, 32 // STRIDE)
    assert (out.maps >= 0).all()
    torch.testing.assert_close(out.maps.sum(dim=(2, 3)), torch.ones(2, 7))
    assert out.regions.shape == (2, (32 // STRIDE) ** 2, DIM)
    assert out.evidence.shape == out.maps.shape


def test_a_logit_is_the_evidence_its_map_points_at():
    # the map is the softmax of the regions' scores and the logit their map-weighted mean: a soft maximum, so a
    # film is called positive only through the regions its map puts weight on
    net = localizer().eval()
    with torch.no_grad():
        out = net(films(3, 1, 32, 32), with_maps=True)
    evidence = out.evidence.flatten(2)
    torch.testing.assert_close(out.maps.flatten(2), evidence.softmax(-1))
    torch.testing.assert_close(out.logits, (out.maps.flatten(2) * evidence).sum(-1))
    assert (out.logits >= evidence.mean(-1) - 1e-6).all() and (out.logits <= evidence.amax(-1) + 1e-6).all()


def test_the_map_grid_follows_a_non_square_film_x_first():
    net = localizer().eval()
    image = films(2, 1, 64, 96)
    with torch.no_grad():
        out = net(image, with_maps=True)
        grid = torch.relu(net.projection(net.encoder(image)))
    width, height = 64 // STRIDE, 96 // STRIDE
    assert out.maps.shape == (2, 7, width, height)
    torch.testing.assert_close(out.maps.sum(dim=(2, 3)), torch.ones(2, 7))
    # region n is grid cell (n // h, n % h): what ReportGuidance and the maps' reshape assume
    assert out.regions.shape == (2, width * height, DIM)
    torch.testing.assert_close(out.regions[:, 3 * height + 5], grid[:, :, 3, 5])


def test_the_localiser_refuses_no_attributes_and_a_bad_dropout():
    encoder = region_encoder("densenet", 1, init_features=4, growth_rate=4, block_config=(1, 1))
    with pytest.raises(ValueError, match="attribute"):
        AttributeLocalizer(encoder.module, encoder.channels, [], dim=DIM)
    with pytest.raises(ValueError, match="dropout"):
        AttributeLocalizer(encoder.module, encoder.channels, REPORT_ATTRIBUTES, dim=DIM, dropout=1.0)


def test_the_guidance_gives_a_text_map_on_the_grid_and_token_weights_over_real_tokens():
    net, guide = localizer().eval(), guidance().eval()
    texts = [REPORTS[0], REPORTS[1]]
    with torch.no_grad():
        out = net(films(2, 1, 64, 96), with_maps=True)
        guided = guide(texts, out.regions, out.evidence)
    assert guided.logits.shape == (2, 7)
    assert guided.map.shape == (2, 64 // STRIDE, 96 // STRIDE)
    assert (guided.map >= 0).all()
    torch.testing.assert_close(guided.map.sum(dim=(1, 2)), torch.ones(2))
    assert guided.location.shape == guided.map.shape
    torch.testing.assert_close(guided.location.sum(dim=(1, 2)), torch.ones(2))
    # softmax(opacity evidence + log location): the image's opacity map re-weighted by where the report points
    reweighted = out.maps[:, 0] * guided.location
    torch.testing.assert_close(guided.map, reweighted / reweighted.sum(dim=(1, 2), keepdim=True))
    # the text-path logits pool every attribute's evidence with the text-guided map
    torch.testing.assert_close(guided.logits, torch.einsum("bwh,bawh->ba", guided.map, out.evidence))
    assert guided.weights.shape == (2, MAX_LENGTH)
    torch.testing.assert_close(guided.weights.sum(dim=1), torch.ones(2))
    # <cls> and the words carry weight, the padding none: report 1 has 4 words ("the lungs are clear")
    _, mask = guide.report_encoder.vocabulary.encode(texts[1], MAX_LENGTH)
    assert mask.sum() == 5
    assert (guided.weights[1, ~mask] == 0).all() and (guided.weights[1, mask] > 0).all()


@pytest.mark.parametrize("through", ["map", "logits"])
def test_gradient_reaches_the_localiser_encoder_through_the_guidance(through):
    net, guide = localizer(), guidance()
    out = net(films(2, 1, 32, 32), with_maps=True)
    guided = guide(REPORTS[:2], out.regions, out.evidence)
    # a map sums to 1, so only a weighted sum of it has a gradient
    weights = torch.randn(guided.map.shape, generator=torch.Generator().manual_seed(3))
    loss = (guided.map * weights).sum() if through == "map" else guided.logits.sum()
    loss.backward()
    for module in (net.encoder, net.projection, guide.report_encoder, guide.position, guide.attention):
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), module


def test_a_reports_features_do_not_depend_on_the_batch_or_the_padding():
    encoder = report_encoder(depth=2).eval()
    short, long = REPORTS[1], REPORTS[0] + " " + REPORTS[2]
    with torch.no_grad():
        alone, alone_mask = encoder([short])
        batched, batched_mask = encoder([short, long])
    assert batched.shape == (2, MAX_LENGTH, TEXT_DIM) and batched_mask.dtype == torch.bool
    assert batched_mask[1].all()  # the long report fills max_length, truncated
    assert torch.equal(alone_mask[0], batched_mask[0])
    torch.testing.assert_close(batched[0][batched_mask[0]], alone[0][alone_mask[0]])

    # the same weights with twice the padding: the real tokens' features are unchanged, so padding is masked
    padded = report_encoder(depth=2, max_length=2 * MAX_LENGTH).eval()
    state = encoder.state_dict()
    padded_positions = padded.positions.detach().clone()
    padded_positions[:, :MAX_LENGTH] = state["positions"]
    padded.load_state_dict({**state, "positions": padded_positions})
    with torch.no_grad():
        more, more_mask = padded([short])
    torch.testing.assert_close(more[0][more_mask[0]], alone[0][alone_mask[0]])


@pytest.mark.parametrize(
    "sizes",
    [
        {"dim": 10, "heads": 4},
        {"dim": 0, "heads": 1},
        {"depth": 0},
        {"heads": 0},
        {"max_length": 0},
    ],
)
def test_the_report_encoder_refuses_bad_sizes(sizes):
    vocabulary = ReportVocabulary.build(REPORTS, min_count=1)
    with pytest.raises(ValueError, match="TransformerReportEncoder"):
        TransformerReportEncoder(vocabulary, **{"dim": 8, "heads": 2, **sizes})


def test_a_hugging_face_encoder_directory_that_is_missing_is_refused(tmp_path):
    with pytest.raises(MissingInputError, match="clinical-bert"):
        HuggingFaceReportEncoder(tmp_path / "clinical-bert")


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers is installed")
def test_a_hugging_face_encoder_without_transformers_says_to_install_it(tmp_path):
    with pytest.raises(InputError, match="pip install transformers"):
        HuggingFaceReportEncoder(tmp_path)


def test_grid_positions_are_cell_centres_in_region_order_x_first():
    from medguide.networks.xattn import grid_positions

    positions = grid_positions((2, 3))
    assert positions.shape == (6, 2)
    # region n is cell (n // h, n % h): region 5 is x = 1 of 2, y = 2 of 3, the last cell
    torch.testing.assert_close(positions[5], torch.tensor([0.5, 2 / 3]))
    torch.testing.assert_close(positions[0], torch.tensor([-0.5, -2 / 3]))
