"""Report-guided localisation engine parts: the guided training step as a real Trainer's ``iteration_update`` on a
tiny in-memory loader (its loss terms, what it trains, the image-only baseline, what it refuses), and the
localisation evaluation (ChestX-ray8 boxes, pointing game, opacity AUC) worked out by hand on fake localisers."""

from __future__ import annotations

import copy
import csv
import math

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset, MetaTensor
from monai.data.utils import no_collation
from monai.engines.utils import IterationEvents
from torch import nn

from medguide.data import REPORT_ATTRIBUTES, InputError, ReportVocabulary
from medguide.engines import (
    LOCALIZATION_COLUMNS,
    REPORT_TERMS,
    ReportGuidedIteration,
    Trainer,
    evaluate_localization,
    localization_scores,
    report_terms,
)
from medguide.losses import LocationPriorLoss, MaskedAttributeBCE
from medguide.metrics import map_mask_iou
from medguide.networks import AttributeLocalizer, ReportGuidance, TransformerReportEncoder, region_encoder
from medguide.networks.xattn import LocalizerOutputs

DIM, TEXT_DIM = 16, 8
REPORTS = [
    "Right lower lobe consolidation, concerning for pneumonia.",
    "The lungs are clear.",
    "Left upper lobe opacity may represent pneumonia.",
    "No focal consolidation.",
]
# opacity (first) stated present in cases 0 and 2; -1 where the report says nothing of the attribute
LABELS = [
    [1, 0, 1, 0, 0, 1, 0],
    [0, 0, 0, 0, 0, 0, 0],
    [1, 1, 0, 1, -1, -1, -1],
    [0, -1, -1, -1, -1, -1, -1],
]


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def localizer(seed: int = 0) -> AttributeLocalizer:
    torch.manual_seed(seed)
    encoder = region_encoder("densenet", 1, init_features=4, growth_rate=4, block_config=(1, 1))
    return AttributeLocalizer(encoder.module, encoder.channels, REPORT_ATTRIBUTES, dim=DIM)


def guidance(seed: int = 0) -> ReportGuidance:
    torch.manual_seed(seed)
    vocabulary = ReportVocabulary.build(REPORTS, min_count=1)
    text = TransformerReportEncoder(vocabulary, dim=TEXT_DIM, depth=1, heads=2, max_length=12, dropout=0)
    return ReportGuidance(text, TEXT_DIM, DIM, num_heads=2)


def loader(labels=LABELS, with_text: bool = True) -> DataLoader:
    """Two batches of two cases, collated by MONAI: ``report_text`` becomes a list of two strings."""
    images = torch.randn(len(labels), 1, 32, 32, generator=torch.Generator().manual_seed(1))
    items = [
        {
            "image": image,
            "label": torch.tensor(label, dtype=torch.float32),
            **({"report_text": text} if with_text else {}),
        }
        for image, label, text in zip(images, labels, REPORTS)
    ]
    return DataLoader(Dataset(items), batch_size=2)


def train(guide: ReportGuidance | None, data: DataLoader | None = None, **kwargs) -> dict:
    """One epoch of the guided (or, without ``guide``, image-only) step; the terms of each iteration as floats."""
    network = localizer()
    untrained = copy.deepcopy(network)
    parameters = [*network.parameters(), *(guide.parameters() if guide is not None else [])]
    prior_weight = kwargs.pop("prior_weight", 0.0)
    ramp_up = kwargs.pop("ramp_up", 0.0)
    prior = kwargs.pop("prior", None)
    trainer = Trainer(
        "cpu",
        max_epochs=1,
        train_data_loader=data or loader(),
        network=network,
        optimizer=torch.optim.Adam(parameters, 1e-2),
        loss_function=MaskedAttributeBCE(),
        iteration_update=ReportGuidedIteration(guide, prior_weight=prior_weight, prior=prior, ramp_up=ramp_up),
        **kwargs,
    )
    batches, outputs = [], []
    trainer.add_event_handler(IterationEvents.FORWARD_COMPLETED, lambda engine: batches.append(engine.state.batch))
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda engine: outputs.append(report_terms(engine.state.output))
    )
    trainer.run()
    return {"trainer": trainer, "network": network, "untrained": untrained, "batches": batches, "terms": outputs}


def test_a_guided_epoch_reports_every_loss_term():
    run = train(guidance(), prior_weight=0.5)
    assert run["trainer"].state.iteration == 2
    for terms in run["terms"]:  # report_terms on MONAI's decollated output, as a StatsHandler logs them
        assert set(terms) == set(REPORT_TERMS) and all(math.isfinite(v) for v in terms.values())
        assert terms["attributes"] > 0 and terms["text"] > 0 and terms["prior"] > 0
        assert terms["loss"] == pytest.approx(
            terms["attributes"] + terms["text"] + terms["alignment"] + 0.5 * terms["prior"], rel=1e-5
        )
    # each batch has a case stating opacity, so the image map is pulled toward the text map
    assert all(terms["alignment"] > 0 for terms in run["terms"])


@pytest.mark.parametrize("spread", [False, True])
def test_a_spread_prior_is_on_the_reports_location_map_the_mass_prior_on_the_guided_map(spread):
    guide, given, guided = guidance(), [], []

    class Spy(LocationPriorLoss):
        def forward(self, attention, *args, **kwargs):
            given.append(attention.detach().clone())
            return super().forward(attention, *args, **kwargs)

    guide.register_forward_hook(lambda module, inputs, output: guided.append(output))
    train(guide, prior_weight=0.5, prior=Spy(spread=spread))
    assert len(given) == len(guided) == 2
    for attention, output in zip(given, guided, strict=True):
        expected = output.location if spread else output.map
        torch.testing.assert_close(attention, expected.detach().float())


def test_the_ramp_up_starts_the_alignment_and_prior_at_zero_and_brings_them_in_linearly():
    # two iterations in one epoch, ramp over the whole run: factor 0 at the first iteration, 1/2 at the second
    run = train(guidance(), prior_weight=0.5, ramp_up=1.0)
    for factor, terms in zip([0.0, 0.5], run["terms"], strict=True):
        assert terms["alignment"] > 0 and terms["prior"] > 0
        assert terms["loss"] == pytest.approx(
            terms["attributes"] + terms["text"] + factor * (terms["alignment"] + 0.5 * terms["prior"]), rel=1e-5
        )
    with pytest.raises(ValueError, match="ramp_up"):
        ReportGuidedIteration(guidance(), ramp_up=1.5)


def test_the_guidance_trains_with_the_localiser():
    guide = guidance()
    before = state(guide)
    run = train(guide)
    after = state(guide)
    for part in ("report_encoder.embedding.weight", "projection.weight", "relevance.weight", "position.0.weight"):
        assert not torch.equal(before[part], after[part]), part
    assert not torch.equal(state(run["untrained"])["queries"], state(run["network"])["queries"])


def test_without_guidance_the_loss_is_the_attribute_bce_alone():
    run = train(None, data=loader(with_text=False))  # the baseline needs no report text
    for terms in run["terms"]:
        assert terms["text"] == terms["alignment"] == terms["prior"] == 0
        assert terms["loss"] == terms["attributes"]
    # the first step's loss is the masked BCE of the untrained network on the first batch
    batch = run["batches"][0]
    with torch.no_grad():
        expected = MaskedAttributeBCE()(run["untrained"].train()(batch["image"]), batch["label"])
    assert run["terms"][0]["loss"] == pytest.approx(float(expected), rel=1e-5)


def test_no_alignment_where_no_report_states_opacity():
    labels = [[0 if i % 2 else -1, *label[1:]] for i, label in enumerate(LABELS)]
    run = train(guidance(), data=loader(labels))
    for terms in run["terms"]:
        assert terms["alignment"] == 0 and terms["text"] > 0


def test_a_guided_batch_without_report_text_is_refused_naming_it():
    with pytest.raises(ValueError, match="report_text"):
        train(guidance(), data=loader(with_text=False))


def test_gradient_accumulation_is_refused():
    with pytest.raises(ValueError, match="ReportGuidedIteration takes no accumulation_steps"):
        train(guidance(), accumulation_steps=2)


# --- localisation evaluation ------------------------------------------------------------------------------------

GRID = (4, 4)
FILM = (64, 32)  # the original (W, H); the preprocessed film is 32 x 32
# ground truth per film: A holds the predicted box, B overlaps 3 of its 10 columns, C is far from it, D has no box
BOXES = [[[16, 16, 32, 24]], [[0, 0, 22, 32]], [[40, 0, 64, 10]], []]
SCORES = [0.9, 0.2, 0.4, 0.1]  # the films' values: the fakes' opacity logit is gain times the film's mean
LABELS_PNEUMONIA = [1, 1, 0, 0]


class FakeLocalizer(nn.Module):
    """Opacity logit ``gain * mean(film)``; every attribute's map a single bright cell of the 4 x 4 grid."""

    def __init__(self, cell: tuple[int, int] = (1, 2), gain: float = 1.0) -> None:
        super().__init__()
        heat = torch.zeros(GRID)
        heat[cell] = 1.0
        self.heat = nn.Parameter(heat)
        self.gain = nn.Parameter(torch.tensor(gain))

    def forward(self, image: torch.Tensor, with_maps: bool = False):
        logits = torch.zeros(len(image), len(REPORT_ATTRIBUTES))
        logits[:, 0] = self.gain * image.mean(dim=(1, 2, 3))
        if not with_maps:
            return logits
        maps = self.heat.expand(len(image), len(REPORT_ATTRIBUTES), *GRID)
        return LocalizerOutputs(logits, maps, torch.zeros(len(image), GRID[0] * GRID[1], 1), maps.log())


def films() -> DataLoader:
    items = []
    for score, boxes, label in zip(SCORES, BOXES, LABELS_PNEUMONIA):
        film = MetaTensor(torch.full((1, 32, 32), score), meta={"spatial_shape": torch.tensor(FILM)})
        items.append({"image": film, "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "label": label})
    return DataLoader(Dataset(items), batch_size=3, collate_fn=no_collation)  # batches of 3 and 1 films


def test_localization_scores_by_hand():
    """Cell (1, 2) of the 4 x 4 map, upsampled bilinearly to 64 x 32, peaks at 0.908 on the pixels nearest the
    cell's centre; 0.7 of that keeps x 19..28, y 17..22: one box [19, 17, 29, 23] of area 60. IoBB with A's box: 1;
    with B's: 3 x 6 / 60 = 0.3; with C's: 0. The map's peak points at (24, 20), in A's box only. D has no box."""
    scores = localization_scores(FakeLocalizer(), films())
    assert list(scores) == list(LOCALIZATION_COLUMNS)
    expected = {
        # correct when IoBB > T: A at every T, B up to T = 0.25; of 3 boxed films
        **dict(zip((f"accuracy@{t}" for t in (0.1, 0.25, 0.5, 0.75, 0.9)), [2 / 3, 2 / 3, 1 / 3, 1 / 3, 1 / 3])),
        # the one box is a false positive where it matches no truth: C always, B above T = 0.25
        **dict(zip((f"afp@{t}" for t in (0.1, 0.25, 0.5, 0.75, 0.9)), [1 / 3, 1 / 3, 2 / 3, 2 / 3, 2 / 3])),
        "pointing_game": 1 / 3,
        # positives 0.9, 0.2; negatives 0.4 and D's 0.1: 3 of 4 pairs ordered (without D it would be 1 of 2)
        "opacity_auc": 0.75,
    }
    for column, value in expected.items():
        assert scores[column] == pytest.approx(value), column
    # mIoU over the boxed films only (D's would be 0 and lower the mean)
    heat = torch.zeros(1, *GRID)
    heat[0, 1, 2] = 1.0
    ious = [map_mask_iou(heat, torch.tensor(boxes), FILM) for boxes in BOXES[:3]]
    assert 0 < scores["miou"] == pytest.approx(sum(ious) / 3)


@pytest.fixture
def seed_folders(tmp_path):
    """Two seeds' checkpoints of two rows: seed 1 trains the guided model well and the baseline badly, seed 2 the
    reverse (a bright cell at (3, 0), whose box [51, 0, 64, 6] lies inside C's, and a reversed opacity score)."""
    good, bad = FakeLocalizer((1, 2), 1.0), FakeLocalizer((3, 0), -1.0)
    folders = [tmp_path / "seed1", tmp_path / "seed2"]
    for folder, (guided, baseline) in zip(folders, [(good, bad), (bad, good)]):
        folder.mkdir()
        torch.save(guided.state_dict(), folder / "guided.pt")
        torch.save(baseline.state_dict(), folder / "baseline.pt")
    return folders


def test_evaluate_localization_writes_mean_and_sd_over_seeds(seed_folders, tmp_path):
    guided, baseline = FakeLocalizer((0, 0), 0.0), FakeLocalizer((0, 0), 0.0)
    table = evaluate_localization(
        {"guided": guided, "baseline": baseline},
        [(guided, "guided.pt"), (baseline, "baseline.pt")],
        seed_folders,
        [1, 2],
        films(),
        output_dir=tmp_path / "out",
        name="cxr8",
    )
    # the bad seed: C correct at every T (IoBB 1), A and B a false positive each; pointing at (56, 4), in C
    good = {"accuracy@0.1": 2 / 3, "accuracy@0.5": 1 / 3, "afp@0.1": 1 / 3, "pointing_game": 1 / 3, "opacity_auc": 0.75}
    bad = {"accuracy@0.1": 1 / 3, "accuracy@0.5": 1 / 3, "afp@0.1": 2 / 3, "pointing_game": 1 / 3, "opacity_auc": 0.25}
    assert [row["model"] for row in table] == ["guided", "baseline"]
    for row in table:
        assert row["seeds"] == 2
        for column in good:
            mean, sd = (good[column] + bad[column]) / 2, abs(good[column] - bad[column]) / math.sqrt(2)
            assert row[column] == pytest.approx(mean), column
            assert row[f"{column} sd"] == pytest.approx(sd, abs=1e-12), column

    out = tmp_path / "out"
    with open(out / "cxr8.csv", newline="", encoding="utf-8") as file:
        written = list(csv.DictReader(file))
    assert [row["model"] for row in written] == ["guided", "baseline"]
    assert float(written[0]["opacity_auc"]) == pytest.approx(0.5)
    assert float(written[0]["opacity_auc sd"]) == pytest.approx(0.5 / math.sqrt(2))
    with open(out / "cxr8_per_seed.csv", newline="", encoding="utf-8") as file:
        per_seed = {(row["model"], row["seed"]): row for row in csv.DictReader(file)}
    assert set(per_seed) == {("guided", "1"), ("guided", "2"), ("baseline", "1"), ("baseline", "2")}
    assert float(per_seed["guided", "1"]["accuracy@0.1"]) == pytest.approx(2 / 3)
    assert float(per_seed["baseline", "1"]["accuracy@0.1"]) == pytest.approx(1 / 3)
    assert float(per_seed["baseline", "2"]["opacity_auc"]) == pytest.approx(0.75)
    markdown = (out / "cxr8.md").read_text(encoding="utf-8")
    assert "seeds 1, 2" in markdown
    assert "| guided | 0.500 ± 0.236 |" in markdown  # accuracy@0.1, the first column


@pytest.mark.parametrize("seeds, folders", [([1, 2], 1), ([1], 2), ([1, 1], 2)])
def test_evaluate_localization_refuses_seeds_that_do_not_match_the_folders(seed_folders, seeds, folders):
    net = FakeLocalizer()
    with pytest.raises(ValueError, match="one checkpoint folder per distinct seed"):
        evaluate_localization({"guided": net}, [(net, "guided.pt")], seed_folders[:folders], seeds, films())


def test_evaluate_localization_names_a_missing_checkpoint(seed_folders):
    net = FakeLocalizer()
    with pytest.raises(InputError, match="absent.pt"):
        evaluate_localization({"guided": net}, [(net, "absent.pt")], seed_folders, [1, 2], films())
