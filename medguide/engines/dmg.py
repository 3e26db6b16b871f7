"""Engine parts of deep multimodal guidance (DMG): batches of tasks and bags, the latent cache, loading trained parts,
and the paper's table.

Mallya & Hamarneh, MICCAI 2022, https://arxiv.org/abs/2203.05683 (``../shared/METHODS.md`` section 2). Each stage
is a plain :class:`medguide.engines.Trainer`; this module holds only what a config cannot say:

a. the inferior and superior classifiers (:class:`medguide.networks.LatentClassifier`, loss
   :class:`medguide.losses.MultiTaskCrossEntropy`) take their batches through :class:`TaskBatch` (an image, or bags
   padded by :class:`BagCollate` with their mask as a network keyword, and targets ``[B, T]``);
b. :class:`LatentCache` encodes the paired inputs once with both frozen encoders; ``G``
   (:class:`medguide.networks.GuidanceMLP`, loss ``torch.nn.MSELoss``) trains on its dataset of
   ``{"image": z_I, "label": z_S}`` with the trainer's default ``prepare_batch``, never re-encoding, and keeps the
   epoch with the lowest mean squared error on the validation cases' latents (cached the same way; an evaluator with
   ``metric_cmp_fn`` :func:`lower_is_better`);
c. the :class:`medguide.networks.GuidedClassifier` (``E_I`` and ``G`` frozen inside it) gets stage a's encoder and
   stage b's ``G`` from their checkpoint files through :class:`PartsLoader`, the first handler of its trainer.

:func:`evaluate_guidance` scores the paper's rows (S+I, S, I, G(I), G(I)+I, from :func:`guidance_rows`) on the test
split into a :class:`medguide.metrics.ClassificationTable`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from ignite.engine import Events
from monai.data import list_data_collate
from monai.engines.utils import PrepareBatch
from monai.utils import convert_to_tensor
from torch import nn
from torch.utils.data import Dataset as TorchDataset

from medguide.data.errors import InputError
from medguide.data.files import atomic_target
from medguide.engines.batches import TaskBatch
from medguide.engines.checkpoints import _differences
from medguide.engines.handler_errors import pass_own_error, passes_own_error
from medguide.engines.precision import autocast, resolve_precision
from medguide.metrics.classification import ClassificationTable
from medguide.networks.dmg import GuidedClassifier

__all__ = [
    "BagCollate",
    "LatentCache",
    "PartsLoader",
    "TaskBatch",
    "cache_latents",
    "evaluate_guidance",
    "evaluate_seeds",
    "guidance_rows",
    "evaluating",
    "load_parts",
    "lower_is_better",
    "predict_rows",
]

logger = logging.getLogger("medguide.engines")


class BagCollate:
    """``collate_fn`` batching bags of different sizes: each bag padded with zeros to the batch's largest, plus a mask.

    Every item's ``[N_i, D]`` tensor under a key of ``keys`` becomes ``[N, D]`` with ``N = max N_i`` and gets
    ``<key><mask_suffix>``, a boolean ``[N]`` that is ``True`` at its real instances; then MONAI's
    ``list_data_collate`` batches the items, giving ``[B, N, D]`` bags and ``[B, N]`` masks, which
    :class:`medguide.networks.blocks.GatedAttentionMIL` takes (padded instances get no attention).

    Example::

        "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 4,
                       "collate_fn": {"_target_": "medguide.engines.BagCollate", "keys": ["bag"]}}

    Args:
        keys: the keys of the bags.
        mask_suffix: appended to a bag's key to name its mask.
    """

    def __init__(self, keys: str | Sequence[str] = ("bag",), mask_suffix: str = "_mask") -> None:
        self.keys = [keys] if isinstance(keys, str) else list(keys)
        self.mask_suffix = mask_suffix

    def __call__(self, items: Sequence[Mapping]) -> dict:
        items = [dict(item) for item in items]
        for key in self.keys:
            bags = [torch.as_tensor(item[key]) for item in items if key in item]
            if not bags:
                continue
            size = max(len(bag) for bag in bags)
            for item in items:
                if key not in item:
                    continue
                bag = torch.as_tensor(item[key])
                mask = torch.zeros(size, dtype=torch.bool)
                mask[: len(bag)] = True
                item[key] = torch.cat([bag, bag.new_zeros(size - len(bag), *bag.shape[1:])])
                item[key + self.mask_suffix] = mask
        return list_data_collate(items)


def lower_is_better(current: float, best: float) -> bool:
    """``metric_cmp_fn`` of an evaluator whose key metric is an error (stage b's validation MSE): true when
    ``current`` improves on ``best``. MONAI's workflows start ``best`` at -1, which no error reaches, so the first
    validation is always the best so far. Pair it with ``CheckpointSaver(key_metric_negative_sign=True)``, which keeps
    the checkpoint of the lowest value.

    Example (the evaluator of a ``train.json``)::

        "key_val_metric": {"val_mse": {"_target_": "MeanSquaredError",
                                       "output_transform": "$from_engine(['pred', 'label'])"}},
        "metric_cmp_fn": "$medguide.engines.lower_is_better"
    """
    return best < 0 or current < best


def _encoding(encoder: nn.Module) -> Callable:
    # a LatentClassifier encodes with its encode(); a bare encoder (image or bag) is its own forward
    return getattr(encoder, "encode", encoder)


@contextlib.contextmanager
def evaluating(networks: Iterable[nn.Module]) -> Iterator[None]:
    """Every network in eval mode without gradient for the block, each put back in its own mode afterwards (also
    when the block raises): how the latent cache, the table and the report run trained networks."""
    networks = list(networks)
    modes = [network.training for network in networks]
    try:
        for network in networks:
            network.eval()
        with torch.no_grad():
            yield
    finally:
        for network, mode in zip(networks, modes):
            network.train(mode)


def predict_rows(
    rows: Mapping[str, tuple[nn.Module, TaskBatch]],
    loader: Iterable,
    device: str | torch.device = "cpu",
    precision: str = "float32",
) -> Iterator[tuple[Mapping, dict[str, torch.Tensor]]]:
    """Each batch of ``loader`` with every row's logits on it: ``(batch, {row: logits [B, outputs] float32})``.

    Each row's network runs (in eval mode without gradient, :func:`evaluating`, in ``precision``) on what its
    ``prepare_batch`` takes from the batch; the one loop behind :func:`evaluate_guidance` and the demo report.
    """
    dtype = resolve_precision(precision, device)
    with evaluating(network for network, _ in rows.values()), autocast(dtype, device):
        for batchdata in loader:
            logits = {}
            for row, (network, batch) in rows.items():
                x, kwargs = batch.inputs(batchdata, device)
                logits[row] = torch.as_tensor(network(x, **kwargs)).float()
            yield batchdata, logits


def cache_latents(
    encoders: nn.Module | Sequence[nn.Module],
    loader: Iterable,
    prepare_batch: TaskBatch | Sequence[TaskBatch],
    device: str | torch.device = "cpu",
    precision: str = "float32",
) -> tuple[torch.Tensor, ...]:
    """Encode every case of ``loader`` once with each frozen encoder: the latents stage b trains ``G`` on.

    One pass over ``loader``; each encoder runs in eval mode without gradient (its mode is restored afterwards) on
    the input its ``prepare_batch`` takes from the batch (``TaskBatch(image_key="image")`` for the MRI,
    ``TaskBatch(image_key="bag", kwargs_keys={"mask": "bag_mask"})`` for padded bags), in ``precision``.

    Args:
        encoders: one encoder or several, each a :class:`medguide.networks.LatentClassifier` (its ``encode``) or a
            module returning ``[B, F]``.
        loader: batches holding every encoder's input (and the label).
        prepare_batch: one :class:`TaskBatch` per encoder (one for all).
        device: where the encoders run.
        precision: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``; latents are kept in float32.

    Returns:
        each encoder's latents ``[num_cases, F_k]`` (float32, on the CPU) in the loader's order, then the targets
        ``[num_cases, T]`` of the first ``prepare_batch`` (an empty ``[num_cases, 0]`` tensor without labels).

    Raises:
        ValueError: a number of ``prepare_batch`` other than one or one per encoder, or an empty ``loader``.
    """
    encoders = [encoders] if isinstance(encoders, nn.Module) else list(encoders)
    batches = [prepare_batch] * len(encoders) if isinstance(prepare_batch, PrepareBatch) else list(prepare_batch)
    if len(batches) != len(encoders):
        raise ValueError(f"cache_latents: {len(batches)} prepare_batch for {len(encoders)} encoders.")
    dtype = resolve_precision(precision, device)
    latents: list[list[torch.Tensor]] = [[] for _ in encoders]
    targets = []
    with evaluating(encoders), autocast(dtype, device):
        for batchdata in loader:
            for encoder, batch, kept in zip(encoders, batches, latents):
                x, kwargs = batch.inputs(batchdata, device)
                # plain tensors: an image's meta data would follow its latent into the cache and its collation
                kept.append(convert_to_tensor(_encoding(encoder)(x, **kwargs), track_meta=False).float().cpu())
            label = batches[0].targets(batchdata)
            targets.append(label if label is not None else torch.zeros(len(kept[-1]), 0, dtype=torch.long))
    if not targets:
        raise ValueError("cache_latents: the loader gave no batch to encode.")
    return (*(torch.cat(kept) for kept in latents), torch.cat(targets))


def _fingerprint(loader: Iterable, *modules: nn.Module) -> str:
    """A digest of the modules' weights and buffers, of the number of cases (where the loader has a dataset) and of
    the datalist items behind them (where the dataset keeps them, as MONAI's ``data``: case ids, file paths, labels,
    in order): a cache file is reused only for the encoders and the training cases, labels included, it was made
    from. A corrected label or another data set of the same size is encoded anew; no file is read for this."""
    dataset = getattr(loader, "dataset", ())
    digest = hashlib.sha256(str(len(dataset)).encode("utf-8"))
    items = getattr(dataset, "data", None)
    if isinstance(items, Sequence) and not isinstance(items, str):
        digest.update(json.dumps(list(items), sort_keys=True, default=str).encode("utf-8"))
    for module in modules:
        for name, value in module.state_dict().items():
            digest.update(name.encode("utf-8"))
            digest.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class LatentCache:
    """Stages b and c's training data: the paired latents ``(z_I, z_S)`` and the labels of every case, encoded once.

    The data set of :meth:`dataset` encodes when its first item is read (:func:`cache_latents`, both frozen
    encoders in one pass over ``loader``) and serves ``{"image": z_I, "label": z_S}`` from then on, so ``G`` trains
    epoch after epoch on it through a plain :class:`medguide.engines.Trainer` (its default ``prepare_batch``; network
    ``GuidanceMLP``, loss ``torch.nn.MSELoss``) and no encoder runs again. With ``cache_file`` the latents
    are also written there (atomically) and read back by a later run, e.g. stage b run alone again, as long as the
    encoders' weights and the number of training cases are those that made them (a digest of both is stored beside
    them, and the training cases' datalist items: ids, paths, labels); delete the file after changing the contents of
    an image file in place. Stage c trains ``D_c`` on
    :meth:`labelled_dataset` (``{"image": z_I, "label": targets}``) through
    :meth:`medguide.networks.GuidedClassifier.latent_head`, so ``E_I`` does not run there either.

    Example (stage b of a ``train.json``)::

        "cache": {"_target_": "medguide.engines.LatentCache", "inferior": "@classifiers#inferior#network",
                  "superior": "@classifiers#superior#network", "loader": "@guidance#encode_loader",
                  "inferior_batch": "@inferior_batch", "superior_batch": "@superior_batch",
                  "checkpoints": {"inferior": "...inferior/model.pt", "superior": "...superior/model.pt"},
                  "device": "@device", "precision": "@precision", "cache_file": "$@guidance#ckpt_dir + '/latents.pt'"},
        "dataloader": {"_target_": "DataLoader", "dataset": "$@guidance#cache.dataset()", "batch_size": 16,
                       "shuffle": true}

    Args:
        inferior: ``C_I`` (a :class:`medguide.networks.LatentClassifier`) or ``E_I``.
        superior: ``C_S`` or ``E_S``.
        loader: the training cases, each batch holding both inputs; not shuffled, no random augmentation (each
            case is encoded once, as it is).
        inferior_batch: the :class:`TaskBatch` giving ``inferior`` its input.
        superior_batch: the :class:`TaskBatch` giving ``superior`` its input.
        checkpoints: ``{"inferior": path, "superior": path}`` (either or both): stage a's state dicts, loaded by
            :func:`load_parts` into the whole network before encoding (when the cache is built, so a config can
            name files that stage a has not written yet).
        device: where the encoders run.
        precision: the encoders' precision (see :func:`cache_latents`).
        cache_file: where to keep the latents between runs (``None``: in memory only).
    """

    def __init__(
        self,
        inferior: nn.Module,
        superior: nn.Module,
        loader: Iterable,
        inferior_batch: TaskBatch,
        superior_batch: TaskBatch,
        checkpoints: Mapping[str, str | os.PathLike] | None = None,
        device: str | torch.device = "cpu",
        precision: str = "float32",
        cache_file: str | os.PathLike | None = None,
    ) -> None:
        unknown = set(checkpoints or {}) - {"inferior", "superior"}
        if unknown:
            raise ValueError(f"LatentCache checkpoints are 'inferior' and 'superior', got {sorted(unknown)}.")
        self.inferior, self.superior, self.loader = inferior, superior, loader
        self.batches = (inferior_batch, superior_batch)
        self.checkpoints = dict(checkpoints or {})
        self.device, self.precision = device, precision
        self.cache_file = None if cache_file is None else Path(cache_file)
        self._latents: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def latents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(z_I, z_S)``: ``[num_cases, F_I]`` and ``[num_cases, F_S]``, float32 on the CPU, encoded on first use."""
        return self._cached()[:2]

    def targets(self) -> torch.Tensor:
        """The cases' class indices ``[num_cases, T]`` (int64; ``[num_cases, 0]`` for cases without labels), in the
        order of :meth:`latents`."""
        return self._cached()[2]

    def dataset(self) -> TorchDataset:
        """Stage b's data: ``{"image": z_I, "label": z_S}`` per case (see :meth:`latents`), which a trainer's default
        ``prepare_batch`` takes as ``(input, target)`` from MONAI's or torch's ``DataLoader``. Nothing is encoded until
        the first item is read (its length is the loader's number of cases), so a config can build the loader and
        trainer before stage a has written the encoders' checkpoints (``check_properties``, a run of all stages)."""
        return _CachedLatents(self, "superior")

    def labelled_dataset(self) -> TorchDataset:
        """Stage c's data: ``{"image": z_I, "label": targets}`` per case, ``targets`` the ``[T]`` class indices, which
        :class:`TaskBatch` takes as they are; encoded on first read, as :meth:`dataset`."""
        return _CachedLatents(self, "label")

    def _cached(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._latents is None:
            for name, path in self.checkpoints.items():
                load_parts(getattr(self, name), {"": path}, map_location=self.device)
            self._latents = self._read() or self._encode()
        return self._latents

    def _encode(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        encoded = cache_latents([self.inferior, self.superior], self.loader, self.batches, self.device, self.precision)
        if self.cache_file is not None:
            z_inferior, z_superior, targets = encoded
            saved = {"fingerprint": _fingerprint(self.loader, self.inferior, self.superior), "inferior": z_inferior}
            with atomic_target(self.cache_file) as tmp:
                torch.save({**saved, "superior": z_superior, "targets": targets}, tmp)
        return encoded

    def _read(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if self.cache_file is None or not self.cache_file.is_file():
            return None
        try:
            saved = torch.load(self.cache_file, map_location="cpu", weights_only=True)
            fingerprint, z_inferior, z_superior = saved["fingerprint"], saved["inferior"], saved["superior"]
            targets = saved["targets"]
        except Exception as error:  # a broken cache (or one written before targets were kept) is rebuilt, not fatal
            logger.warning("latent cache '%s' is unreadable (%s); encoding again.", self.cache_file, error)
            return None
        if fingerprint != _fingerprint(self.loader, self.inferior, self.superior):
            logger.info("latent cache '%s' was made by other encoder weights; encoding again.", self.cache_file)
            return None
        return z_inferior, z_superior, targets


class _CachedLatents(TorchDataset):
    """A :class:`LatentCache`'s cases as ``{"image": z_I, "label": z_S or the targets}``, encoded on first read."""

    def __init__(self, cache: LatentCache, label: str) -> None:
        self.cache, self.label = cache, label

    def __len__(self) -> int:
        cases = getattr(self.cache.loader, "dataset", None)
        return len(cases) if cases is not None else len(self.cache.latents()[0])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        z_inferior, z_superior = self.cache.latents()
        label = z_superior if self.label == "superior" else self.cache.targets()
        return {"image": z_inferior[index], "label": label[index]}


def _read_state(path: Path, map_location: str | torch.device, run_id: str | None = None) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        stage = f"the {run_id} stage first (--run_id {run_id})" if run_id else "the stage that writes it first"
        raise InputError(f"no checkpoint at '{path}': run {stage}.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:
        raise InputError(f"'{path}' cannot be read as a state dict ({type(error).__name__}: {error}).") from error
    if not isinstance(state, Mapping):
        raise InputError(f"'{path}' holds a {type(state).__name__}, not a state dict.")
    return state


def load_parts(
    network: nn.Module,
    parts: Mapping[str, str | os.PathLike],
    map_location: str | torch.device = "cpu",
    written_by: Mapping[str, str] | None = None,
) -> nn.Module:
    """Load trained parts of ``network`` from the checkpoints of earlier stages, each part strictly; returns it.

    For each ``{part: path}``, ``part`` is a submodule of ``network`` (``"encoder"``, ``"guidance"``, ``"head"``;
    ``""`` for the whole network) and ``path`` a state dict (``model.pt`` of MONAI's ``CheckpointSaver``). The keys
    under ``<part>.`` are loaded with that prefix removed (stage a's ``LatentClassifier`` file into a
    ``GuidedClassifier``'s ``encoder``); a file without any key under it is the part's own state dict and is loaded
    whole (stage b's ``GuidanceMLP`` file into ``guidance``). Frozen parts load as well (their keys are the wrapped
    module's). Files load with ``map_location`` and ``weights_only=True``. ``written_by`` (``{part: run id}``, e.g.
    ``{"": "train_teacher"}``) names in the missing-file message the bundle run id that writes each part's file.

    Example: ``load_parts(guided, {"encoder": "models/classifiers/inferior/model.pt", "guidance":
    "models/guidance/model.pt"}, "cuda")``.

    Raises:
        InputError: one line naming the part and the file: no such file, not a state dict, or tensors that differ
            in shape, are missing or unexpected (the part is left unchanged).
        ValueError: ``part`` names no submodule of ``network``.
    """
    for part, path in parts.items():
        try:
            module = network.get_submodule(part)
        except AttributeError as error:
            raise ValueError(f"load_parts: {type(network).__name__} has no part {part!r}.") from error
        path = Path(path)
        state = _read_state(path, map_location, (written_by or {}).get(part))
        prefix = f"{part}." if part else ""
        if prefix and any(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        shapes, missing, unexpected = _differences(state, module)
        if shapes or missing or unexpected:
            first = (shapes or missing or unexpected)[0]
            raise InputError(
                f"'{path}' does not fit the {part or 'whole'} part ({type(module).__name__}) of this "
                f"{type(network).__name__}: {len(shapes)} tensors differ in shape, {len(missing)} are missing and "
                f"{len(unexpected)} unexpected (first: {first!r}); is it the right stage's checkpoint?"
            )
        module.load_state_dict(state)
    return network


class PartsLoader:
    """Handler loading trained parts into a network when its engine starts (:func:`load_parts`).

    Stage c lists it first in its trainer's handlers, so the guided classifier starts from stage a's ``E_I`` and
    stage b's ``G`` however the stage is run (alone, or after the others in the same process); a missing or wrong
    file ends the run with its one-line message. Building the handler reads nothing.

    Example::

        {"_target_": "medguide.engines.PartsLoader", "network": "@network", "map_location": "@device",
         "parts": {"encoder": "$@classifiers#inferior#ckpt_dir + '/model.pt'",
                   "guidance": "$@guidance#ckpt_dir + '/model.pt'"}}

    Args:
        network: the network to load into.
        parts: ``{part: checkpoint path}`` as for :func:`load_parts`.
        map_location: where the loaded tensors go.
        written_by: ``{part: run id}`` of the stages that write the files, named when one is missing (e.g.
            ``{"": "train_teacher"}``).
    """

    def __init__(
        self,
        network: nn.Module,
        parts: Mapping[str, str | os.PathLike],
        map_location: str | torch.device = "cpu",
        written_by: Mapping[str, str] | None = None,
    ) -> None:
        self.network, self.parts, self.map_location = network, dict(parts), map_location
        self.written_by = dict(written_by or {})
        self._error: InputError | None = None

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)
        engine.add_event_handler(Events.STARTED, self)

    @passes_own_error
    def exception_raised(self, engine, e: BaseException) -> None:
        """Re-raise this loader's own error as it is; leave other exceptions to the other handlers."""
        pass_own_error(engine, e, self._error)

    def __call__(self, engine=None) -> None:
        network = self.network.module if isinstance(self.network, nn.parallel.DistributedDataParallel) else self.network
        try:
            load_parts(network, self.parts, self.map_location, self.written_by)
        except InputError as error:
            self._error = error
            raise


def guidance_rows(
    inferior: nn.Module,
    superior: nn.Module,
    guided: GuidedClassifier,
    inferior_batch: TaskBatch,
    superior_batch: TaskBatch,
    fusion: nn.Module | None = None,
    fusion_batch: TaskBatch | None = None,
) -> dict[str, tuple[nn.Module, TaskBatch]]:
    """The paper's rows as ``{row: (network, prepare_batch)}``, in its order: S+I, S, I, G(I), G(I)+I.

    - S+I: ``fusion`` (a :class:`medguide.networks.FusionClassifier`, both modalities at test), with
      ``fusion_batch`` (e.g. ``TaskBatch(image_key="image", kwargs_keys={"superior": "bag", "superior_mask":
      "bag_mask"})``). It is a fourth stage-a model with its own training; without it the row is left out.
    - S: ``superior``, stage a's ``C_S``; I: ``inferior``, stage a's ``C_I``.
    - G(I): ``D_S(G(E_I(x_I)))``, built here from ``guided``'s ``E_I`` and ``G`` and ``superior.head``.
    - G(I)+I: ``guided``, stage c's model.

    Every network but S+I and S takes ``inferior_batch``'s input only.
    """
    guided_only = GuidedClassifier(guided.encoder.module, guided.guidance.module, superior.head, guided_only=True)
    rows = {} if fusion is None else {"S+I": (fusion, fusion_batch or inferior_batch)}
    rows |= {
        "S": (superior, superior_batch),
        "I": (inferior, inferior_batch),
        "G(I)": (guided_only, inferior_batch),
        "G(I)+I": (guided, inferior_batch),
    }
    return rows


def evaluate_guidance(
    rows: Mapping[str, tuple[nn.Module, TaskBatch]],
    loader: Iterable,
    table: ClassificationTable,
    seed: int,
    device: str | torch.device = "cpu",
    precision: str = "float32",
    output_dir: str | os.PathLike | None = None,
    name: str = "guidance_table",
) -> ClassificationTable:
    """Score each row's network on every case of ``loader`` (the test split) into ``table`` as ``seed``; save it.

    Each batch is predicted by every row's network (eval mode, no gradient, ``precision``; each network's mode is
    restored afterwards) from what its ``prepare_batch`` takes, and added to ``table`` with the targets of the row's
    ``prepare_batch``. The table keeps earlier seeds, so calling this once per trained seed gives the mean and
    spread; with ``output_dir`` it is written there as ``<name>.csv``, ``.md`` (and ``_mcnemar.csv`` with
    ``compare``, e.g. ``("G(I)+I", "I")``) after this seed.

    Example::

        table = ClassificationTable({"class": 3}, compare=("G(I)+I", "I"))
        evaluate_guidance(guidance_rows(c_i, c_s, guided, TaskBatch(), TaskBatch("bag")), test_loader, table, seed=0,
                          output_dir="eval")

    Returns:
        ``table``.

    Raises:
        ValueError: a batch without labels.
    """
    for batchdata, logits in predict_rows(rows, loader, device, precision):
        for row, (_, batch) in rows.items():
            targets = batch.targets(batchdata)
            if targets is None:
                raise ValueError(f"evaluate_guidance: a batch has no label '{batch.label_key}' to score.")
            table.update(row, seed, logits[row], targets)
    if output_dir is not None:
        paths = table.save(output_dir, name)
        logger.info("%s (%s):\n%s", name, ", ".join(map(str, paths)), table.to_markdown())
    return table


def check_seed_folders(seeds: Sequence[int], ckpt_dirs: Sequence[str | os.PathLike]) -> None:
    """Refuse seeds and checkpoint folders that are not one folder per distinct seed (``ValueError``)."""
    if len(seeds) != len(ckpt_dirs) or len(set(seeds)) != len(seeds):
        raise ValueError(
            f"give one checkpoint folder per distinct seed: seeds {list(seeds)}, folders {list(ckpt_dirs)}."
        )


def evaluate_seeds(
    rows: Mapping[str, tuple[nn.Module, TaskBatch]],
    checkpoints: Sequence[tuple[nn.Module, str]],
    ckpt_dirs: Sequence[str | os.PathLike],
    seeds: Sequence[int],
    loader: Iterable,
    table: ClassificationTable,
    device: str | torch.device = "cpu",
    precision: str = "float32",
    output_dir: str | os.PathLike | None = None,
    name: str = "guidance_table",
) -> ClassificationTable:
    """:func:`evaluate_guidance` once per trained seed: each seed's checkpoints loaded into the rows' networks first.

    Each seed is a separate training run of all stages, saved under its own checkpoint folder; ``ckpt_dirs[i]`` is
    the folder of ``seeds[i]``. The table (and its files in ``output_dir``) then hold every seed, with the mean and
    spread over them.

    Example (an ``evaluate.json``)::

        "checkpoints": [["@classifiers#inferior#network", "classifiers/inferior/model.pt"],
                        ["@network", "model.pt"]]

    Args:
        rows: as :func:`guidance_rows` gives them.
        checkpoints: ``(network, path relative to a seed's checkpoint folder)`` pairs, each loaded whole by
            :func:`load_parts` (``map_location=device``); the G(I) row shares its parts with the others.
        ckpt_dirs: one checkpoint folder per seed.
        seeds: the seeds, in the order of ``ckpt_dirs``.
        loader, table, device, precision, output_dir, name: as for :func:`evaluate_guidance`.

    Raises:
        ValueError: ``seeds`` and ``ckpt_dirs`` differ in length, or a seed repeats.
        InputError: a checkpoint is missing or does not fit (one line naming the file).
    """
    check_seed_folders(seeds, ckpt_dirs)
    for seed, folder in zip(seeds, ckpt_dirs):
        for network, path in checkpoints:
            load_parts(network, {"": Path(folder) / path}, map_location=device)
        evaluate_guidance(rows, loader, table, int(seed), device, precision, output_dir, name)
    return table
