"""Engine parts of MAML: batches that name their modalities, modality dropout, the missing-modality evaluator."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence

import torch
from ignite.engine import Events
from monai.data import decollate_batch
from monai.engines.utils import IterationEvents, PrepareBatch
from monai.transforms import Compose
from monai.utils import CommonKeys as Keys

from medguide.data.geometry import spacing_of
from medguide.data.modalities import check_modalities, nonempty_subsets
from medguide.engines.workflows import Evaluator
from medguide.metrics.subsets import SubsetTable
from medguide.networks.maml import SINGLE_MODALITY_ROUTES

__all__ = ["ModalityBatch", "SubsetEvaluator", "batch_modalities", "predict_subsets"]

logger = logging.getLogger("medguide.engines")


def batch_modalities(value: Sequence) -> list[str]:
    """The modality names of a collated batch, which must be the same for every sample.

    PyTorch's collation turns each sample's list of names into one tuple per position; a batch of one that was
    never collated keeps its plain list.
    """
    if isinstance(value, str):
        return [value]
    names = []
    for entry in value:
        if isinstance(entry, str):
            names.append(entry)
            continue
        if len(set(entry)) != 1:
            raise ValueError(f"samples of one batch have different modalities: {list(value)}; use batch size 1.")
        names.append(entry[0])
    return names


class ModalityBatch(PrepareBatch):
    """``prepare_batch`` for :class:`medguide.networks.MAMLNet`: passes the batch's modality names to the network.

    Returns ``(image, label, (), {"modalities": names})`` so that MONAI's engines call
    ``inferer(image, network, modalities=names)``. ``modality_dropout`` trains every subset: with that
    probability an iteration keeps a random non-empty subset of the modalities (each subset equally likely).

    Args:
        modality_dropout: probability of training an iteration on a random subset.
        modalities: evaluate this fixed subset instead of everything a case has.
        image_key, label_key, modality_key: keys of the batch dict.
        seed: seed of the subset draws.
    """

    def __init__(
        self,
        modality_dropout: float = 0.0,
        modalities: Sequence[str] | None = None,
        image_key: str = "image",
        label_key: str = "label",
        modality_key: str = "modalities",
        seed: int | None = 0,
    ) -> None:
        if not 0.0 <= modality_dropout <= 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1], got {modality_dropout}.")
        self.modality_dropout = modality_dropout
        self.modalities = modalities
        self.image_key, self.label_key, self.modality_key = image_key, label_key, modality_key
        self.rng = random.Random(seed)

    def select(self, names: list[str]) -> list[int]:
        """Channels to keep of a batch whose channels are the modalities ``names``."""
        if self.modalities is not None:
            return [names.index(m) for m in check_modalities(self.modalities, names, "the modalities asked for")]
        if self.modality_dropout and self.rng.random() < self.modality_dropout:
            return sorted(self.rng.choice(nonempty_subsets(range(len(names)))))
        return list(range(len(names)))

    def fixed(self, modalities: Sequence[str]) -> ModalityBatch:
        """This preparation with its keys, for the fixed subset ``modalities`` (no dropout)."""
        return ModalityBatch(
            modalities=modalities, image_key=self.image_key, label_key=self.label_key, modality_key=self.modality_key
        )

    def inputs(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs) -> tuple[torch.Tensor, dict]:
        """The network's inputs alone, without the label: the kept channels on ``device`` and ``{"modalities":
        names}``, for an inference that needs no label on the device."""
        names = batch_modalities(batchdata[self.modality_key])
        keep = self.select(names)
        image = batchdata[self.image_key][:, keep].to(device=device, non_blocking=non_blocking, **kwargs)
        return image, {"modalities": [names[i] for i in keep]}

    def __call__(self, batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
        image, network_kwargs = self.inputs(batchdata, device, non_blocking, **kwargs)
        label = batchdata.get(self.label_key)
        if isinstance(label, torch.Tensor):
            label = label.to(device=device, non_blocking=non_blocking, **kwargs)
        return image, label, (), network_kwargs


def predict_subsets(
    network,
    inferer,
    batchdata: dict,
    prepare_batch: ModalityBatch,
    subsets: Iterable[Sequence[str]] | None = None,
    device: str | torch.device | None = None,
    single_modality: str | None = None,
    share_branches: bool = True,
) -> Iterator[tuple[tuple[str, ...], torch.Tensor]]:
    """Predict a batch from each subset of its modalities: the missing-modality inference, for every user.

    Each subset's image is prepared as ``prepare_batch.fixed(subset).inputs`` prepares it (same keys, those
    channels; the label stays where it is, as the inference does not use it) and inferred as MONAI's engines infer,
    ``inferer(image, network, modalities=[...])``. Gradients, the network's mode and the precision are the
    caller's to set, e.g. ``torch.no_grad()``, ``network.eval()`` and :func:`medguide.engines.precision.autocast`.

    A network in eval mode whose branches do not see each other (:meth:`medguide.networks.MAMLNet.subset_logits`)
    predicts the subsets from one pass of each modality's branch with ``share_branches``, when a modality is in two
    or more of them (4 branch passes instead of 32 for BraTS's 15 subsets, the fusion head still once per subset;
    the same predictions to float rounding; ``benchmarks/maml_speed.py --only_subsets`` measures it). The inferer
    then runs once, on the channels of every modality the subsets name, and must pass the network's dict output
    through (MONAI's ``SimpleInferer``, ``SlidingWindowInferer`` unbuffered, :class:`MirroredInferer`); it holds
    one prediction per subset at once, on the inferer's output device (for BraTS's 15 at 4 classes on a 240 x 240 x
    155 grid, about 2.1 GB in float32, plus the sliding window's per-key count maps). Other networks, and
    ``share_branches=False``, predict one subset at a time, when the iteration reaches it.

    Example::

        with torch.no_grad():
            for subset, logits in predict_subsets(network, SimpleInferer(), batch, ModalityBatch()):
                ...  # ("t1",), then ("t1ce",), ..., ("t1", "t1ce", "t2", "flair")

    Args:
        network: the network, e.g. :class:`medguide.networks.MAMLNet`.
        inferer: a MONAI inferer (or any callable taking ``(image, network, modalities=...)`` and passing the
            network's output through; for the shared pass also its other keywords and a dict output).
        batchdata: a collated batch holding ``prepare_batch``'s image and modality keys.
        prepare_batch: the batch preparation of the engine, whose keys it reads.
        subsets: the subsets to predict, each in any order of the batch's modalities; default every non-empty
            subset of the batch's modalities, smallest first.
        device: where the image is moved before the inference (``None``: where it is).
        single_modality: the route of a one-modality subset, ``"fused"`` or ``"branch"``, given to the network as
            its ``single_modality`` keyword (:class:`medguide.networks.MAMLNet`) for those subsets only; ``None``
            gives nothing, so the network's own setting holds (and networks without routes work).
        share_branches: predict all subsets from one branch pass where the network offers it (above).

    Yields:
        ``(subset, prediction)``: the subset as a tuple, and the inferer's output for it.

    Raises:
        ValueError: a subset names a modality the batch does not have, or the inferer dropped subsets of the shared
            pass (e.g. MONAI's buffered sliding window keeps one output of a dict; give ``share_branches=False``).
    """
    names = batch_modalities(batchdata[prepare_batch.modality_key])
    subsets = nonempty_subsets(names) if subsets is None else [tuple(s) for s in subsets]
    named = {m for subset in subsets for m in subset}
    module = getattr(network, "module", network)  # DDP wraps it; a no-grad inference may call it directly
    # sharing pays only where a modality's branch would otherwise run for two or more subsets
    if (
        share_branches
        and hasattr(module, "subset_logits")
        and not module.training
        and sum(map(len, subsets)) > len(named)
    ):
        # every modality a subset names, in the batch's order (an unknown name is refused here, naming it)
        present = [m for m in names if m in named] + sorted(named - set(names))
        image, kwargs = prepare_batch.fixed(present).inputs(batchdata, device)
        if single_modality is not None:
            kwargs["single_modality"] = single_modality
        predictions = inferer(image, module.subset_logits, subsets=subsets, **kwargs)
        missing = [s for s in subsets if not isinstance(predictions, Mapping) or s not in predictions]
        if missing:
            raise ValueError(
                f"{type(inferer).__name__} returned no prediction for the subsets {missing} of the shared branch pass "
                "(it must pass a dict output through; MONAI's buffered sliding window keeps one key): give "
                "share_branches=False."
            )
        for i, subset in enumerate(subsets):  # each freed once the caller is done with it (a repeated one at its last)
            yield subset, predictions[subset] if subset in subsets[i + 1 :] else predictions.pop(subset)
        return
    for subset in subsets:
        image, kwargs = prepare_batch.fixed(subset).inputs(batchdata, device)
        if single_modality is not None and len(subset) == 1:
            kwargs["single_modality"] = single_modality
        yield tuple(subset), inferer(image, network, **kwargs)


class SubsetEvaluator(Evaluator):
    """Evaluator that also scores every non-empty subset of each case's modalities: the missing-modality table.

    The engine's own output, metrics and handlers use all the modalities a case has, as a plain evaluator does.
    In addition every case is inferred from every subset (:func:`predict_subsets`, with the engine's
    ``prepare_batch`` and its keys; a :class:`medguide.networks.MAMLNet` runs each modality's branch once for all
    subsets unless ``share_branches`` is ``False``); ``subset_postprocessing`` turns each prediction and label into
    one-hot regions, and a :class:`medguide.metrics.SubsetTable` collects Dice and HD95 per region, HD95 in millimetres
    from the spacing of each case's label affine (in voxels for labels without an affine). At the end of the run
    the table is logged and written as CSV and markdown into ``table_dir``.

    One present modality can be scored along several routes of :class:`medguide.networks.MAMLNet`
    (``single_modality_routes``, e.g. ``["fused", "branch"]``: the fusion head and the modality's own branch); each
    one-modality subset then has a row per route, side by side, and the table a ``route`` column (rows of two or
    more modalities use the fusion head: ``fused``). The table ends with the mean over all subsets per region, as
    missing-modality papers report it (``subset_mean``), one row per route.

    Args:
        subset_postprocessing: transform on decollated ``{"pred", "label"}`` dicts giving one-hot regions.
        regions: region names, one per channel after ``subset_postprocessing``.
        table_dir: folder for ``missing_modality_table.csv`` / ``.md``.
        hd95: also compute HD95.
        single_modality_routes: routes of one-modality subsets to score, each of
            :data:`medguide.networks.SINGLE_MODALITY_ROUTES`; ``None`` scores them once with the network's own
            setting, and the table has no ``route`` column.
        subset_mean: end the table with the mean over the subsets.
        share_branches: predict the subsets of a case from one pass of each branch (:func:`predict_subsets`):
            several times faster, holding one prediction per subset at once; ``False`` predicts one subset at a
            time, for memory.
        args, kwargs: as for :class:`medguide.engines.Evaluator`; ``prepare_batch`` must be a
            :class:`ModalityBatch`.

    Raises:
        TypeError: ``prepare_batch`` is not a :class:`ModalityBatch`.
        ValueError: ``single_modality_routes`` is empty, repeats a route or names an unknown one, or is given for a
            network without routes (not a :class:`medguide.networks.MAMLNet`).
    """

    def __init__(
        self,
        *args,
        subset_postprocessing,
        regions: Sequence[str],
        table_dir: str,
        hd95: bool = True,
        single_modality_routes: Sequence[str] | None = None,
        subset_mean: bool = True,
        share_branches: bool = True,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not isinstance(self.prepare_batch, ModalityBatch):
            raise TypeError(
                f"SubsetEvaluator needs a medguide.engines.ModalityBatch as prepare_batch, got {self.prepare_batch!r}."
            )
        if single_modality_routes is not None:
            single_modality_routes = list(single_modality_routes)
            unknown = [r for r in single_modality_routes if r not in SINGLE_MODALITY_ROUTES]
            if not single_modality_routes or unknown or len(set(single_modality_routes)) < len(single_modality_routes):
                raise ValueError(
                    f"single_modality_routes must be distinct routes of {list(SINGLE_MODALITY_ROUTES)}, "
                    f"got {single_modality_routes}."
                )
            network = getattr(self.network, "module", self.network)  # DDP wraps it
            if not hasattr(network, "single_modality"):
                raise ValueError(
                    f"single_modality_routes {single_modality_routes} need a network with routes (MAMLNet); "
                    f"{type(network).__name__} has none: give single_modality_routes None."
                )
        self.single_modality_routes = single_modality_routes
        self.share_branches = share_branches
        if isinstance(subset_postprocessing, Sequence):
            subset_postprocessing = Compose(subset_postprocessing)
        self.subset_postprocessing = subset_postprocessing
        self.table = SubsetTable(regions, hd95=hd95, subset_mean=subset_mean)
        self.table_dir = table_dir
        self.add_event_handler(Events.EPOCH_STARTED, lambda engine: engine.table.reset())
        self.add_event_handler(Events.EPOCH_COMPLETED, self._save_table)
        # the batched forward output, kept before MONAI decollates and post-processes it (on MODEL_COMPLETED)
        self._forward: dict = {}
        self.add_event_handler(IterationEvents.FORWARD_COMPLETED, self._keep_forward)

    def _iteration(self, engine: SubsetEvaluator, batchdata: dict) -> dict:
        output = super()._iteration(engine, batchdata)
        prepare = engine.prepare_batch
        names = batch_modalities(batchdata[prepare.modality_key])
        label = batchdata[prepare.label_key]
        # HD95 in mm: the loaded label's affine (crops move its origin, not its spacing); voxels without one
        spacing = spacing_of(label)
        subsets = nonempty_subsets(names)
        routes = engine.single_modality_routes or [None]
        # the parent's forward used every modality (with the network's own route, which matters for one modality
        # only) unless prepare_batch chose a subset; reuse it for the last subset
        reused = []
        if engine._forward[Keys.IMAGE].shape[1] == len(names) and (len(names) > 1 or routes == [None]):
            reused = [(subsets.pop(), engine._forward[Keys.PRED])]
        network = engine.network
        with engine.mode(network), torch.no_grad(), engine.amp_context():
            # every subset with the first route (one shared branch pass where the network allows), the one-modality
            # subsets again with each other route (their branches alone); rows of two or more modalities come from
            # the fusion head whatever the route
            predicted = (
                (route if len(subset) == 1 else "fused", subset, pred)
                for route in routes
                for subset, pred in predict_subsets(
                    network,
                    engine.inferer,
                    batchdata,
                    prepare,
                    subsets if route == routes[0] else [s for s in subsets if len(s) == 1],
                    engine.state.device,
                    single_modality=route,
                    share_branches=engine.share_branches,
                )
            )
            for route, subset, pred in itertools.chain(predicted, (("fused", *r) for r in reused)):
                items = [
                    engine.subset_postprocessing({Keys.PRED: p, Keys.LABEL: y})
                    for p, y in zip(decollate_batch(pred.float()), decollate_batch(label))
                ]
                engine.table.update(
                    subset,
                    torch.stack([i[Keys.PRED] for i in items]).cpu(),
                    torch.stack([i[Keys.LABEL] for i in items]).cpu(),
                    spacing=spacing,
                    route=None if routes == [None] else route,
                )
        return output

    def _keep_forward(self, engine: SubsetEvaluator) -> None:
        engine._forward = {key: engine.state.output[key] for key in (Keys.IMAGE, Keys.PRED)}

    def _save_table(self, engine: SubsetEvaluator) -> None:
        csv_path, md_path = engine.table.save(engine.table_dir)
        logger.info("missing-modality table (%s, %s):\n%s", csv_path, md_path, engine.table.to_markdown())
