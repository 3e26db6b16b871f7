"""DMG engine parts: the three stages as plain MONAI trainers on a tiny synthetic brain set, chained through their
checkpoint files; the latent cache encodes once; frozen parts stay frozen; the paper's table has its five rows."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.data import CacheDataset, DataLoader
from monai.handlers import CheckpointSaver
from monai.transforms import Compose, ScaleIntensityd

from medguide.data import (
    DERM7PT_TASKS,
    InputError,
    cpm_radpath_datalist,
    derm7pt_datalist,
    make_cpm_radpath_dataset,
    make_derm7pt_dataset,
)
from medguide.engines import (
    BagCollate,
    LatentCache,
    PartsLoader,
    TaskBatch,
    Trainer,
    cache_latents,
    evaluate_guidance,
    guidance_rows,
    load_parts,
)
from medguide.losses import MultiTaskCrossEntropy
from medguide.metrics import ClassificationTable
from medguide.networks import (
    FusionClassifier,
    GatedAttentionMIL,
    GuidanceMLP,
    GuidedClassifier,
    LatentClassifier,
    MultiTaskHead,
)
from medguide.transforms import LoadBagd, LoadCased, LoadPhotod
from tests.networks.helpers import tiny_densenet

TASKS = {"class": 3}
CASES, FEATURES = 6, 8
INFERIOR, SUPERIOR = TaskBatch("image"), TaskBatch("bag", kwargs_keys={"mask": "bag_mask"})


def inferior_classifier(seed: int = 0) -> LatentClassifier:
    encoder = tiny_densenet(seed=seed)
    return LatentClassifier(encoder.module, encoder.latent_features, TASKS)


def superior_classifier(seed: int = 0) -> LatentClassifier:
    torch.manual_seed(seed)
    return LatentClassifier(GatedAttentionMIL(FEATURES, 8, 4), 8, TASKS)


def guided_classifier(seed: int = 0) -> GuidedClassifier:
    encoder = tiny_densenet(seed=seed)
    guidance = GuidanceMLP((encoder.latent_features, 8, 8))
    return GuidedClassifier(encoder.module, guidance, MultiTaskHead(16, TASKS))


def state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def train(network, loader, ckpt_dir: Path, prepare_batch=INFERIOR, loss=None, epochs: int = 1, handlers=()):
    """A stage as a bundle runs it: medguide's Trainer, MONAI's CheckpointSaver writing <ckpt_dir>/model.pt."""
    trainer = Trainer(
        device="cpu",
        max_epochs=epochs,
        train_data_loader=loader,
        network=network,
        optimizer=torch.optim.Adam(network.parameters(), 1e-2),
        loss_function=loss or MultiTaskCrossEntropy(TASKS),
        **({} if prepare_batch is None else {"prepare_batch": prepare_batch}),
        train_handlers=[
            *handlers,
            CheckpointSaver(str(ckpt_dir), {"model": network}, save_final=True, final_filename="model.pt"),
        ],
    )
    trainer.run()
    return ckpt_dir / "model.pt"


@pytest.fixture(scope="module")
def loader(tmp_path_factory) -> DataLoader:
    root = make_cpm_radpath_dataset(
        tmp_path_factory.mktemp("cpm"), num_cases=CASES, shape=(16, 16, 16), feature_dim=FEATURES, bag_size=(3, 6)
    )
    transform = Compose(
        [LoadCased(keys="image"), LoadBagd(keys="bag", feature_dim=FEATURES), ScaleIntensityd(keys="image")]
    )
    data = CacheDataset(cpm_radpath_datalist(root, modalities=("flair",)), transform, progress=False)
    return DataLoader(data, batch_size=2, collate_fn=BagCollate("bag"))


@pytest.fixture(scope="module")
def stage_a(loader, tmp_path_factory) -> dict:
    """Stage a: the inferior (MRI) and superior (bags) classifiers trained apart, each into its own folder."""
    out = tmp_path_factory.mktemp("models")
    inferior, superior = inferior_classifier(), superior_classifier()
    return {
        "out": out,
        "inferior": inferior,
        "superior": superior,
        "inferior_pt": train(inferior, loader, out / "classifiers" / "inferior"),
        "superior_pt": train(superior, loader, out / "classifiers" / "superior", SUPERIOR),
    }


@pytest.fixture(scope="module")
def stage_b(loader, stage_a) -> dict:
    """Stage b: fresh networks given stage a's files, latents cached once, G trained on the cache for 3 epochs."""
    inferior, superior = inferior_classifier(seed=1), superior_classifier(seed=1)
    encoded = []
    for network in (inferior, superior):
        network.encoder.register_forward_hook(lambda module, args, out: encoded.append(len(out)))
    cache = LatentCache(
        inferior,
        superior,
        loader,
        INFERIOR,
        SUPERIOR,
        checkpoints={"inferior": stage_a["inferior_pt"], "superior": stage_a["superior_pt"]},
        cache_file=stage_a["out"] / "guidance" / "latents.pt",
    )
    guidance = GuidanceMLP((8, 8, 8))
    untrained = state(guidance)
    cached = DataLoader(cache.dataset(), batch_size=4, shuffle=True)
    path = train(guidance, cached, stage_a["out"] / "guidance", prepare_batch=None, loss=torch.nn.MSELoss(), epochs=3)
    return {
        "cache": cache,
        "encoded": list(encoded),
        "guidance": guidance,
        "untrained": untrained,
        "loaded": (state(inferior), state(superior)),
        "pt": path,
    }


@pytest.fixture(scope="module")
def stage_c(loader, stage_a, stage_b) -> dict:
    """Stage c: a fresh guided classifier, stage a's E_I and stage b's G loaded by the trainer's first handler."""
    guided = guided_classifier(seed=2)
    head = state(guided.head)
    parts = {"encoder": stage_a["inferior_pt"], "guidance": stage_b["pt"]}
    path = train(guided, loader, stage_a["out"], epochs=2, handlers=[PartsLoader(guided, parts)])
    return {"guided": guided, "head": head, "pt": path}


def test_task_batch_gives_targets_per_task_and_network_keywords():
    prepare = TaskBatch("bag", tasks={"diagnosis": 5, "streaks": 3}, kwargs_keys={"mask": "bag_mask"})
    batch = {"bag": torch.zeros(2, 4, 8), "label": {"streaks": torch.tensor([2, 0]), "diagnosis": torch.tensor([1, 4])}}
    x, targets, args, kwargs = prepare(batch)
    assert x.shape == (2, 4, 8) and args == () and kwargs == {}  # a batch without masks: no mask keyword
    assert targets.tolist() == [[1, 2], [4, 0]] and targets.dtype == torch.int64  # columns in the order of tasks
    mask = torch.ones(2, 4, dtype=torch.bool)
    assert prepare({**batch, "bag_mask": mask})[3]["mask"] is mask
    assert TaskBatch()({"image": torch.zeros(3, 1), "label": torch.tensor([0, 2, 1])})[1].tolist() == [[0], [2], [1]]
    assert TaskBatch()({"image": torch.zeros(1, 1)})[1] is None
    with pytest.raises(ValueError, match="give TaskBatch the tasks"):
        TaskBatch().targets(batch)
    with pytest.raises(ValueError, match=r"lacks the tasks \['pigmentation'\]"):
        TaskBatch(tasks=["diagnosis", "pigmentation"]).targets(batch)


def test_padded_bags_score_as_the_bags_alone():
    bags = [torch.randn(3, FEATURES), torch.randn(5, FEATURES)]
    batch = BagCollate("bag")([{"bag": bag, "label": i} for i, bag in enumerate(bags)])
    assert batch["bag"].shape == (2, 5, FEATURES)
    assert batch["bag_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    classifier = superior_classifier().eval()
    x, targets, _, kwargs = SUPERIOR(batch)
    padded = classifier(x, **kwargs)
    alone = torch.cat([classifier(bag[None]) for bag in bags])
    torch.testing.assert_close(padded, alone)
    assert targets.tolist() == [[0], [1]]


def test_stage_a_trains_both_classifiers_into_their_checkpoints(stage_a):
    for name in ("inferior", "superior"):
        saved = torch.load(stage_a[f"{name}_pt"], map_location="cpu", weights_only=True)
        assert same(saved, state(stage_a[name]))
    # training moved the weights
    assert not same(state(inferior_classifier()), state(stage_a["inferior"]))
    assert not same(state(superior_classifier()), state(stage_a["superior"]))


def test_stage_b_encodes_each_case_once_and_trains_only_g(loader, stage_a, stage_b):
    # one pass over the data for the cache (each encoder saw each case once), none in G's three epochs
    assert sum(stage_b["encoded"]) == 2 * CASES
    z_inferior, z_superior = stage_b["cache"].latents()
    assert len(stage_b["cache"].dataset()) == CASES
    assert z_inferior.shape == (CASES, 8) and z_superior.shape == (CASES, 8)
    # stage a's files were loaded into the fresh networks, and encoding (in eval mode) left them as they were,
    # batch-norm statistics included; their training mode is given back
    loaded_inferior, loaded_superior = stage_b["loaded"]
    assert same(loaded_inferior, state(stage_a["inferior"])) and same(loaded_superior, state(stage_a["superior"]))
    assert stage_b["cache"].inferior.training and stage_b["cache"].superior.training
    stage_a["inferior"].eval()
    with torch.no_grad():
        expected = torch.cat([stage_a["inferior"].encode(batch["image"]) for batch in loader])
    torch.testing.assert_close(z_inferior, expected.as_tensor())
    assert not same(stage_b["untrained"], state(stage_b["guidance"]))
    saved = torch.load(stage_b["pt"], map_location="cpu", weights_only=True)
    assert same(saved, state(stage_b["guidance"]))


def test_latent_cache_file_is_reused_only_for_the_same_encoders(loader, stage_a, stage_b):
    cache_file = stage_a["out"] / "guidance" / "latents.pt"
    assert cache_file.is_file()
    inferior, superior = stage_b["cache"].inferior, stage_b["cache"].superior
    encoded = []
    hook = inferior.encoder.register_forward_hook(lambda module, args, out: encoded.append(len(out)))
    try:
        again = LatentCache(inferior, superior, loader, INFERIOR, SUPERIOR, cache_file=cache_file).latents()
        assert encoded == []  # read back, not encoded
        for kept, read in zip(stage_b["cache"].latents(), again):
            torch.testing.assert_close(kept, read)
        other = inferior_classifier(seed=5)
        other.encoder.register_forward_hook(lambda module, args, out: encoded.append(len(out)))
        rebuilt = LatentCache(other, superior, loader, INFERIOR, SUPERIOR, cache_file=cache_file).latents()
        assert sum(encoded) == CASES  # other weights: encoded again
        z, _ = cache_latents(other, loader, INFERIOR)
        torch.testing.assert_close(rebuilt[0], z)
    finally:
        hook.remove()
        cache_file.unlink()


def test_latent_cache_file_is_not_reused_after_a_label_changes(loader, stage_b, tmp_path):
    """Stage c trains on the cached labels: a corrected label (same cases, same encoders) is encoded anew, so the
    targets, the class weights and the sampler describe one labelling."""
    cache = stage_b["cache"]
    cache_file = tmp_path / "latents.pt"
    LatentCache(cache.inferior, cache.superior, loader, INFERIOR, SUPERIOR, cache_file=cache_file).latents()
    items = [dict(item) for item in loader.dataset.data]
    items[0]["label"] = (items[0]["label"] + 1) % TASKS["class"]
    relabelled = DataLoader(
        CacheDataset(items, loader.dataset.transform, progress=False), batch_size=2, collate_fn=BagCollate("bag")
    )
    encoded = []
    hook = cache.inferior.encoder.register_forward_hook(lambda module, args, out: encoded.append(len(out)))
    try:
        again = LatentCache(cache.inferior, cache.superior, relabelled, INFERIOR, SUPERIOR, cache_file=cache_file)
        assert int(again.targets()[0, 0]) == items[0]["label"]
        assert sum(encoded) == CASES  # encoded anew, not read back with the old label
        assert (
            int(LatentCache(cache.inferior, cache.superior, loader, INFERIOR, SUPERIOR).targets()[0, 0])
            != items[0]["label"]
        )
    finally:
        hook.remove()


def test_stage_c_loads_stage_a_and_b_and_keeps_them_frozen(stage_a, stage_b, stage_c):
    guided = stage_c["guided"]
    # parameters and batch-norm statistics of E_I are stage a's, those of G stage b's, after two epochs of training
    encoder = torch.load(stage_a["inferior_pt"], map_location="cpu", weights_only=True)
    expected = {k.removeprefix("encoder."): v for k, v in encoder.items() if k.startswith("encoder.")}
    assert same(state(guided.encoder), expected)
    assert any("running_mean" in key for key in expected)
    assert same(state(guided.guidance), torch.load(stage_b["pt"], map_location="cpu", weights_only=True))
    assert not same(stage_c["head"], state(guided.head))  # only D_c trained
    assert same(torch.load(stage_c["pt"], map_location="cpu", weights_only=True), state(guided))


def test_the_guided_model_predicts_from_the_inferior_image_alone(loader, stage_c):
    guided = stage_c["guided"].eval()
    batch = next(iter(loader))
    inferior_only = {key: batch[key] for key in ("image", "label")}
    x, targets, _, kwargs = INFERIOR(inferior_only)
    with torch.no_grad():
        logits = guided(x, **kwargs)
    assert kwargs == {} and logits.shape == (2, 3) and targets.shape == (2, 1)


def test_a_wrong_checkpoint_is_named_in_one_line(loader, stage_a, stage_b):
    guided = guided_classifier()
    before = state(guided)
    with pytest.raises(InputError) as error:
        load_parts(guided, {"encoder": stage_b["pt"]})  # G's file where the encoder's is expected
    message = str(error.value)
    assert str(stage_b["pt"]) in message and "encoder" in message and "\n" not in message
    assert same(before, state(guided))
    with pytest.raises(InputError, match="no checkpoint at .*: run the stage that writes it first"):
        load_parts(guided, {"guidance": stage_a["out"] / "missing.pt"})
    # where the config says which run id writes a part, the message names it
    with pytest.raises(InputError, match=r"run the train_guidance stage first \(--run_id train_guidance\)"):
        load_parts(guided, {"guidance": stage_a["out"] / "missing.pt"}, written_by={"guidance": "train_guidance"})
    # as stage c's first handler, the error ends the run as it is
    trainer = Trainer(
        device="cpu",
        max_epochs=1,
        train_data_loader=loader,
        network=guided,
        optimizer=torch.optim.SGD(guided.parameters(), 1e-3),
        loss_function=MultiTaskCrossEntropy(TASKS),
        prepare_batch=INFERIOR,
        train_handlers=[PartsLoader(guided, {"encoder": stage_a["superior_pt"]})],
    )
    with pytest.raises(InputError, match="superior"):
        trainer.run()
    assert same(before, state(guided))


def test_the_table_has_the_papers_five_rows(loader, stage_a, stage_b, stage_c, tmp_path):
    inferior, superior = stage_a["inferior"], stage_a["superior"]
    fusion = FusionClassifier(inferior.encoder, 8, superior.encoder, 8, TASKS)
    fusion_batch = TaskBatch("image", kwargs_keys={"superior": "bag", "superior_mask": "bag_mask"})
    rows = guidance_rows(inferior, superior, stage_c["guided"], INFERIOR, SUPERIOR, fusion, fusion_batch)
    assert list(rows) == ["S+I", "S", "I", "G(I)", "G(I)+I"]
    table = ClassificationTable(TASKS, compare=("G(I)+I", "I"))
    for seed in (0, 1):
        evaluate_guidance(rows, loader, table, seed, output_dir=tmp_path)
    assert [(row["model"], row["seeds"]) for row in table.rows()] == [
        (name, 2) for name in ["S+I", "S", "I", "G(I)", "G(I)+I"]
    ]
    assert {p.name for p in tmp_path.iterdir()} == {
        "guidance_table.csv",
        "guidance_table.md",
        "guidance_table_mcnemar.csv",
    }
    # G(I) is D_S on G(E_I(x_I)): the superior head on the guided latent
    batch = next(iter(loader))
    guided = stage_c["guided"].eval()
    with torch.no_grad():
        expected = superior.head.eval()(guided.guidance(guided.encoder(batch["image"])))
        torch.testing.assert_close(rows["G(I)"][0](batch["image"]), expected)
    without_fusion = guidance_rows(inferior, superior, stage_c["guided"], INFERIOR, SUPERIOR)
    assert list(without_fusion) == ["S", "I", "G(I)", "G(I)+I"]


def test_a_derm7pt_classifier_trains_on_the_eight_tasks(tmp_path):
    tasks = {task: len(classes) for task, classes in DERM7PT_TASKS.items()}
    root = make_derm7pt_dataset(tmp_path / "derm7pt", num_cases=20, image_size=32)
    transform = Compose([LoadPhotod(keys="clinic"), ScaleIntensityd(keys="clinic")])
    loader = DataLoader(CacheDataset(derm7pt_datalist(root)[:4], transform, progress=False), batch_size=2)
    encoder = tiny_densenet(2, 3)
    classifier = LatentClassifier(encoder.module, encoder.latent_features, tasks)
    prepare = TaskBatch("clinic", tasks=tasks)
    x, targets, _, _ = prepare(next(iter(loader)))
    assert targets.shape == (2, 8) and classifier(x).shape == (2, sum(tasks.values()))
    before = state(classifier)
    train(classifier, loader, tmp_path / "clinic", prepare, MultiTaskCrossEntropy(tasks))
    assert not same(before, state(classifier))


def test_stage_b_keeps_the_epoch_with_the_lowest_validation_error(tmp_path):
    """Stage b's selection as the bundles configure it: ``MeanSquaredError`` on the validation latents,
    ``lower_is_better`` and ``CheckpointSaver(key_metric_negative_sign=True)``; the file holds the best epoch, not
    the last."""
    from ignite.engine import Events
    from monai.handlers import MeanSquaredError, ValidationHandler
    from monai.handlers.utils import from_engine

    from medguide.engines import Evaluator, lower_is_better

    generator = torch.Generator().manual_seed(0)
    mapping = torch.randn(6, 4, generator=generator)

    def latents(n: int) -> list[dict[str, torch.Tensor]]:
        z = torch.randn(n, 6, generator=generator)
        return [
            {"image": zi, "label": zs} for zi, zs in zip(z, z @ mapping + 0.3 * torch.randn(n, 4, generator=generator))
        ]

    torch.manual_seed(0)
    network = GuidanceMLP([6, 16, 4], dropout=0.0)
    saver = CheckpointSaver(
        str(tmp_path),
        {"model": network},
        save_key_metric=True,
        key_metric_negative_sign=True,
        key_metric_filename="model.pt",
    )
    validation = DataLoader(latents(8), batch_size=8)
    evaluator = Evaluator(
        "cpu",
        val_data_loader=validation,
        network=network,
        key_val_metric={"val_mse": MeanSquaredError(output_transform=from_engine(["pred", "label"]))},
        metric_cmp_fn=lower_is_better,
        val_handlers=[saver],
    )
    errors = []
    evaluator.add_event_handler(Events.COMPLETED, lambda engine: errors.append(engine.state.metrics["val_mse"]))
    # few training cases and a large step: the validation error falls, then rises as G overfits and jumps about
    trainer = Trainer(
        "cpu",
        max_epochs=30,
        train_data_loader=DataLoader(latents(6), batch_size=3, shuffle=True),
        network=network,
        optimizer=torch.optim.SGD(network.parameters(), lr=0.3, momentum=0.9),
        loss_function=torch.nn.MSELoss(),
        train_handlers=[ValidationHandler(1, evaluator)],
    )
    trainer.run()
    best = min(range(len(errors)), key=errors.__getitem__)
    assert best < len(errors) - 1 and errors[-1] > errors[best], errors  # the last epoch is not the best here
    network.load_state_dict(torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True))
    network.eval()
    with torch.no_grad():
        batch = next(iter(validation))
        saved = torch.nn.functional.mse_loss(network(batch["image"]), batch["label"]).item()
    assert saved == pytest.approx(errors[best], rel=1e-5)
    assert evaluator.state.best_metric == pytest.approx(errors[best]) and lower_is_better(0.5, -1)
