"""Batches that name their modalities, modality dropout, subset inference and its table, clipping and mirroring."""

from __future__ import annotations

import re
import warnings

import pytest
import torch
from monai.data import DataLoader, MetaTensor
from monai.engines.utils import IterationEvents, default_prepare_batch
from monai.inferers import SimpleInferer
from monai.transforms import AsDiscreted, Compose

from medguide.data.modalities import nonempty_subsets
from medguide.engines import (
    MirroredInferer,
    ModalityBatch,
    SubsetEvaluator,
    Trainer,
    batch_modalities,
    predict_subsets,
)
from medguide.losses import MAMLLoss
from medguide.metrics.conventions import dice, hd95
from medguide.networks import MAMLNet, ModalityUNet
from medguide.transforms import LabelsToRegionsd

MODALITIES = ["t1", "t1ce", "t2", "flair"]


def batch(n: int = 2) -> dict:
    items = [
        {
            "image": torch.randn(4, 16, 16, 16),
            "label": torch.randint(0, 4, (1, 16, 16, 16)).float(),
            "modalities": MODALITIES,
        }
        for _ in range(n)
    ]
    return next(iter(DataLoader(items, batch_size=n)))


def test_collated_modalities_read_back():
    assert batch_modalities(batch()["modalities"]) == MODALITIES
    assert batch_modalities(["t1", "t2"]) == ["t1", "t2"]
    with pytest.raises(ValueError, match="different modalities"):
        batch_modalities([("t1", "t2")])


def test_modality_batch_passes_names_and_selects_channels():
    data = batch()
    image, label, args, kwargs = ModalityBatch(modalities=["flair", "t1ce"])(data)
    assert kwargs == {"modalities": ["flair", "t1ce"]} and args == ()
    torch.testing.assert_close(image, data["image"][:, [3, 1]])
    assert label.shape == (2, 1, 16, 16, 16)
    known = re.escape(str(MODALITIES))
    with pytest.raises(ValueError, match=rf"modalities asked for must be a non-empty subset of {known}.*unknown"):
        ModalityBatch(modalities=["dwi"])(data)
    with pytest.raises(ValueError, match=r"repeated \['t2'\]"):
        ModalityBatch(modalities=["t2", "t2"])(data)


def test_modality_dropout_trains_every_subset_and_no_dropout_keeps_all():
    data = batch(1)
    seen = {tuple(ModalityBatch(modality_dropout=1.0, seed=s)(data)[3]["modalities"]) for s in range(300)}
    assert len(seen) == 15
    assert all(ModalityBatch()(data)[3]["modalities"] == MODALITIES for _ in range(5))
    with pytest.raises(ValueError):
        ModalityBatch(modality_dropout=1.5)


def test_fixed_keeps_the_keys_and_drops_the_dropout():
    fixed = ModalityBatch(modality_dropout=1.0, image_key="img", label_key="seg", modality_key="mods").fixed(["t2"])
    assert (fixed.modalities, fixed.modality_dropout) == (["t2"], 0.0)
    assert (fixed.image_key, fixed.label_key, fixed.modality_key) == ("img", "seg", "mods")


def tiny_network() -> MAMLNet:
    torch.manual_seed(0)
    return MAMLNet(MODALITIES, 4, base_width=4, num_stages=3).eval()


def keyed(data: dict) -> dict:
    """The batch under other keys than MONAI's defaults, as a config's image_key, label_key and modality_key name."""
    return {"img": data["image"], "seg": data["label"], "mods": data["modalities"]}


def test_predict_subsets_infers_every_subset_through_the_batch_preparation():
    network, data = tiny_network(), keyed(batch(1))
    prepare = ModalityBatch(image_key="img", label_key="seg", modality_key="mods")
    with torch.no_grad():
        predicted = list(predict_subsets(network, SimpleInferer(), data, prepare))
        assert [subset for subset, _ in predicted] == nonempty_subsets(MODALITIES)
        for subset, pred in predicted:
            keep = [MODALITIES.index(m) for m in subset]
            # one branch pass for every subset: the same as each subset alone, to float rounding
            expected = network(data["img"][:, keep], modalities=list(subset))
            torch.testing.assert_close(pred, expected, rtol=1e-4, atol=1e-4)
        ((subset, pred),) = predict_subsets(network, SimpleInferer(), data, prepare, [("flair", "t1")])
        torch.testing.assert_close(pred, network(data["img"][:, [3, 0]], modalities=["flair", "t1"]))
    for subsets in ([("dwi",)], [("t1",), ("t1", "dwi")]):  # alone and in a shared pass
        with pytest.raises(ValueError, match=r"asked for.*unknown \['dwi'\]"):
            next(predict_subsets(network, SimpleInferer(), data, prepare, subsets))


def counted_branch_passes(monkeypatch) -> list[int]:
    """The number of branches in each call of MAMLNet's branch decoder, recorded as the network runs."""
    import medguide.networks.maml as maml_module

    passes: list[int] = []
    decode = maml_module.decode_branches

    def counting(branches, xs, group=True):
        passes.append(len(branches))
        return decode(branches, xs, group=group)

    monkeypatch.setattr(maml_module, "decode_branches", counting)
    return passes


@pytest.mark.parametrize("route", ["fused", "branch"])
def test_predict_subsets_runs_each_branch_once_for_all_subsets_through_a_sliding_window(monkeypatch, route):
    """The missing-modality evaluation's cost: 15 subsets of 4 sequences from one pass of each branch (4 branch
    runs per window instead of 32), stitched by MONAI's sliding window and mirrored, and the predictions those of
    each subset alone; share_branches=False gives the old one-subset-at-a-time path, 15 passes."""
    from monai.inferers import SlidingWindowInferer

    network, data = tiny_network(), batch(1)
    data["image"] = torch.randn(1, 4, 24, 16, 16)
    inferer = MirroredInferer(SlidingWindowInferer((16, 16, 16), overlap=0.5, mode="gaussian"), axes=[0])
    passes = counted_branch_passes(monkeypatch)
    with torch.no_grad():
        shared = dict(predict_subsets(network, inferer, data, ModalityBatch(), single_modality=route))
        windows = len(passes)
        assert windows and passes == [4] * windows  # every window: the four branches together, once
        passes.clear()
        alone = dict(
            predict_subsets(network, inferer, data, ModalityBatch(), single_modality=route, share_branches=False)
        )
    assert len(passes) == 15 * windows
    assert list(shared) == list(alone) == nonempty_subsets(MODALITIES)
    for subset in alone:
        torch.testing.assert_close(shared[subset], alone[subset], rtol=1e-4, atol=1e-4)
    # the route reaches the shared pass: FLAIR alone is its own branch's output on the branch route
    flair = data["image"][:, 3:]
    with torch.no_grad():
        if route == "branch":
            expected = inferer(flair, network.branches[3])
        else:
            expected = inferer(flair, network, modalities=["flair"], single_modality="fused")
    torch.testing.assert_close(shared[("flair",)], expected, rtol=1e-4, atol=1e-4)


class CountedMoves(torch.Tensor):
    """A label that counts how often it is moved to a device."""

    moves = 0

    def to(self, *args, **kwargs):
        CountedMoves.moves += 1
        return super().to(*args, **kwargs)


def test_predict_subsets_leaves_the_label_where_it_is(monkeypatch):
    network, data = tiny_network(), batch(1)
    data["label"] = data["label"].as_subclass(CountedMoves)
    monkeypatch.setattr(CountedMoves, "moves", 0)
    with torch.no_grad():
        assert len(list(predict_subsets(network, SimpleInferer(), data, ModalityBatch(), device="cpu"))) == 15
    assert CountedMoves.moves == 0
    ModalityBatch()(data, "cpu")  # the engine's own preparation does move it, once
    assert CountedMoves.moves == 1


REGIONS = [[1, 3], [1, 2, 3], [3]]


def subset_evaluator(network: MAMLNet, tmp_path, prepare_batch=None, **kwargs) -> SubsetEvaluator:
    spacing = torch.tensor([1.0, 1.2, 2.0])
    affine = torch.diag(torch.cat([spacing, torch.ones(1)]))
    torch.manual_seed(1)
    items = [
        {
            "img": MetaTensor(torch.randn(4, 8, 8, 8), affine=affine),
            "seg": MetaTensor(torch.randint(0, 4, (1, 8, 8, 8)).float(), affine=affine),
            "mods": MODALITIES,
        }
        for _ in range(2)
    ]
    post = Compose([AsDiscreted(keys="pred", argmax=True), LabelsToRegionsd(keys=["pred", "label"], regions=REGIONS)])
    return SubsetEvaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(items, batch_size=1),
        network=network,
        inferer=SimpleInferer(),
        prepare_batch=prepare_batch or ModalityBatch(image_key="img", label_key="seg", modality_key="mods"),
        postprocessing=post,
        subset_postprocessing=post,
        regions=["TC", "WT", "ET"],
        table_dir=str(tmp_path),
        **kwargs,
    )


def test_subset_table_holds_each_subsets_own_prediction_under_the_configured_keys(tmp_path):
    network = tiny_network()
    evaluator = subset_evaluator(network, tmp_path)
    evaluator.run()
    rows = {row["modalities"]: row for row in evaluator.table.rows()}
    assert list(rows) == ["+".join(s) for s in nonempty_subsets(MODALITIES)] + ["mean of 15 subsets"]
    assert "route" not in rows["t1"]
    post = evaluator.subset_postprocessing
    for subset in nonempty_subsets(MODALITIES):
        keep = [MODALITIES.index(m) for m in subset]
        scores, distances = [], []
        for data in evaluator.data_loader:
            with torch.no_grad():
                pred = network(data["img"][:, keep], modalities=list(subset))
            out = post({"pred": pred[0], "label": data["seg"][0]})
            scores.append(dice(out["pred"][None], out["label"][None]))
            distances.append(hd95(out["pred"][None], out["label"][None], spacing=[1.0, 1.2, 2.0]))
        row = rows["+".join(subset)]
        for name, expected in (("Dice {}", torch.cat(scores)), ("HD95 {} (mm)", torch.cat(distances))):
            for region, value in zip(["TC", "WT", "ET"], expected.double().mean(0).tolist()):
                assert row[name.format(region)] == pytest.approx(value, abs=1e-6)
    assert (tmp_path / "missing_modality_table.csv").is_file()


def test_predict_subsets_gives_the_route_to_one_modality_subsets_only():
    network, data = tiny_network(), batch(1)
    calls = []

    def inferer(image, net, **kwargs):
        calls.append(kwargs)
        return net(image, **kwargs)

    with torch.no_grad():
        predicted = dict(
            predict_subsets(network, inferer, data, ModalityBatch(), single_modality="branch", share_branches=False)
        )
        torch.testing.assert_close(predicted[("flair",)], network.branches[3].eval()(data["image"][:, 3:]))
    assert [c.get("single_modality") for c in calls] == ["branch"] * 4 + [None] * 11
    calls.clear()
    with torch.no_grad():
        list(predict_subsets(network, inferer, data, ModalityBatch()))
    assert not any("single_modality" in c for c in calls)  # networks without routes (ModalityUNet) still work


def test_the_table_scores_both_routes_of_one_modality_and_ends_with_the_subset_means(tmp_path):
    """Each sequence alone through the fusion head and through its own branch, side by side; the 15-subset mean
    per route takes that route's one-modality rows and the fused rows of the rest."""
    network = tiny_network()
    evaluator = subset_evaluator(network, tmp_path, single_modality_routes=["fused", "branch"])
    evaluator.run()
    rows = evaluator.table.rows()
    singles = [(m, route) for m in MODALITIES for route in ("fused", "branch")]
    multis = [("+".join(s), "fused") for s in nonempty_subsets(MODALITIES) if len(s) > 1]
    means = [("mean of 15 subsets", "fused"), ("mean of 15 subsets", "branch")]
    assert [(row["modalities"], row["route"]) for row in rows] == singles + multis + means
    by_key = {(row["modalities"], row["route"]): row for row in rows}
    post = evaluator.subset_postprocessing
    for m in MODALITIES:
        scores = {"fused": [], "branch": []}
        for data in evaluator.data_loader:
            image = data["img"][:, [MODALITIES.index(m)]]
            with torch.no_grad():
                for route in scores:
                    pred = network(image, modalities=[m], single_modality=route)
                    out = post({"pred": pred[0], "label": data["seg"][0]})
                    scores[route].append(dice(out["pred"][None], out["label"][None]))
        for route, values in scores.items():
            for region, value in zip(["TC", "WT", "ET"], torch.cat(values).double().mean(0).tolist()):
                assert by_key[(m, route)][f"Dice {region}"] == pytest.approx(value, abs=1e-6)
    for route in ("fused", "branch"):
        chosen = [by_key[(m, route)] for m in MODALITIES] + [by_key[key] for key in multis]
        for column in ("Dice TC", "Dice ET", "HD95 WT (mm)", "Dice mean"):
            expected = sum(row[column] for row in chosen) / 15
            assert by_key[("mean of 15 subsets", route)][column] == pytest.approx(expected, abs=1e-6)
    markdown = (tmp_path / "missing_modality_table.md").read_text(encoding="utf-8")
    assert "| modalities | route | n |" in markdown and "| t1 | branch | 2 |" in markdown
    assert "| mean of 15 subsets | branch | 2 |" in markdown and "own branch" in markdown


def test_unknown_routes_are_refused(tmp_path):
    for routes in ([], ["branch", "branch"], ["auto"]):
        with pytest.raises(ValueError, match="single_modality_routes"):
            subset_evaluator(tiny_network(), tmp_path, single_modality_routes=routes)
    # routes for a network without them (early fusion): named before any case is run, not a TypeError mid-run
    early = ModalityUNet(MODALITIES, 3, spatial_dims=3, base_width=2, num_stages=2)
    with pytest.raises(ValueError, match="network with routes"):
        subset_evaluator(early, tmp_path, single_modality_routes=["fused", "branch"])


def test_subset_evaluator_needs_a_modality_batch(tmp_path):
    with pytest.raises(TypeError, match="ModalityBatch"):
        subset_evaluator(tiny_network(), tmp_path, prepare_batch=default_prepare_batch)


def run_trainer(grad_clip: float | None) -> tuple[Trainer, list]:
    torch.manual_seed(0)
    net = MAMLNet(MODALITIES, 4, base_width=4, num_stages=3)
    data = [batch(1) for _ in range(2)]
    norms = []
    trainer = Trainer(
        device=torch.device("cpu"),
        max_epochs=1,
        train_data_loader=data,
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=1e-2),
        loss_function=MAMLLoss(),
        inferer=SimpleInferer(),
        prepare_batch=ModalityBatch(),
        grad_clip=grad_clip,
        decollate=False,
    )

    @trainer.on(IterationEvents.BACKWARD_COMPLETED)
    def record(engine):
        norms.append(torch.norm(torch.stack([p.grad.norm() for p in net.parameters() if p.grad is not None])).item())

    trainer.run()
    return trainer, norms


def test_gradient_clipping_bounds_the_update():
    _, unclipped = run_trainer(None)
    trainer, clipped = run_trainer(1e-3)
    assert max(unclipped) > 1e-3
    # handlers run in registration order: the clip is registered first, so the recorded norms are clipped
    assert max(clipped) <= 1e-3 * 1.001
    assert trainer.state.output["loss"].dtype == torch.float32


def test_subsets_share_a_branch_pass_only_where_a_branch_would_run_twice(monkeypatch):
    """One-modality subsets (the branch-route rows) run each branch once anyway: no shared pass, which would only
    hold every prediction at once; a network in training mode is not given the eval-only shared pass either."""
    network, data = tiny_network(), batch(1)
    passes = counted_branch_passes(monkeypatch)
    singles = [(m,) for m in MODALITIES]
    with torch.no_grad():
        assert [s for s, _ in predict_subsets(network, SimpleInferer(), data, ModalityBatch(), singles)] == singles
        assert passes == [1, 1, 1, 1]
        passes.clear()
        list(predict_subsets(network, SimpleInferer(), data, ModalityBatch(), [("t1",), ("t1", "t2")]))
        assert passes == [2]
        passes.clear()
        network.train()
        list(predict_subsets(network, SimpleInferer(), data, ModalityBatch(), [("t1",), ("t1", "t2")]))
        assert passes == [1, 2]


def test_an_inferer_that_drops_subsets_of_the_shared_pass_is_named():
    """MONAI's buffered sliding window keeps only the first key of a dict output; the subsets it drops are named,
    with the way out, instead of a KeyError."""
    from monai.inferers import SlidingWindowInferer

    network, data = tiny_network(), batch(1)
    buffered = SlidingWindowInferer((16, 16, 16), buffer_steps=1)
    with (
        torch.no_grad(),
        pytest.raises(ValueError, match=r"SlidingWindowInferer returned no prediction.*share_branches=False"),
    ):
        list(predict_subsets(network, buffered, data, ModalityBatch()))
    with torch.no_grad():
        assert len(list(predict_subsets(network, buffered, data, ModalityBatch(), share_branches=False))) == 15


def test_mirroring_averages_flipped_predictions():
    def network(x):  # not flip-invariant: depends on position along the first spatial axis
        return x * torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1)

    x = torch.randn(1, 1, 4, 3, 2)
    mirrored = MirroredInferer(SimpleInferer(), axes=[0])(x, network)
    expected = (network(x) + torch.flip(network(torch.flip(x, [2])), [2])) / 2
    torch.testing.assert_close(mirrored, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(MirroredInferer(SimpleInferer(), axes=[])(x, network), network(x))

    def several(x):  # a network with a dict of outputs, as MAMLNet.subset_logits
        return {"a": network(x), "b": -network(x)}

    out = MirroredInferer(SimpleInferer(), axes=[0])(x, several)
    torch.testing.assert_close(out["a"], expected)
    torch.testing.assert_close(out["b"], -expected)
    # the sum is kept in place, never in what the network returned: here its own input
    kept = x.clone()
    torch.testing.assert_close(MirroredInferer(SimpleInferer(), axes=[0, 1])(x, lambda t: t), x)
    torch.testing.assert_close(x, kept)
