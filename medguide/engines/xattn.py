"""Engine part of report-guided pneumonia localisation: the training step that uses the image and its report.

Bhalodia et al., MICCAI 2021, https://arxiv.org/abs/2110.03094 (``../shared/METHODS.md`` section 4); the design is
medguide's (see :mod:`medguide.networks.xattn`). Validation and test use the image alone, through the stock
:class:`medguide.engines.Evaluator`: the localiser's ``forward`` needs no report.

Labels: a batch's ``label`` is the report's attribute targets ``[B, A]`` in the order of
:data:`medguide.data.REPORT_ATTRIBUTES`, ``1.`` present, ``0.`` absent, and ``-1.`` where the report does not
mention the attribute (or hedges it, by default): :class:`medguide.losses.MaskedAttributeBCE` and the metrics leave
those entries out. One tensor, so MONAI's ``prepare_batch``, metrics and decollation take it as any label.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from monai.utils import CommonKeys as Keys
from torch import nn

from medguide.data.files import atomic_write_text
from medguide.engines.dmg import check_seed_folders, evaluating, load_parts
from medguide.engines.iterations import TrainingIteration
from medguide.engines.precision import autocast, resolve_precision
from medguide.losses.xattn import LocationPriorLoss, MapAlignmentLoss
from medguide.metrics.attributes import attribute_aucs
from medguide.metrics.localization import THRESHOLDS, LocalizationMetrics
from medguide.metrics.tables import csv_text, markdown_table, mean_sd_cell, mean_sd_columns
from medguide.networks.xattn import ReportGuidance
from medguide.transforms.boxes import map_to_boxes

__all__ = [
    "LOCALIZATION_COLUMNS",
    "REPORT_TERMS",
    "ReportGuidedIteration",
    "evaluate_localization",
    "localization_scores",
    "report_terms",
]

logger = logging.getLogger("medguide.engines")

REPORT_TERMS = ("loss", "attributes", "text", "alignment", "prior")
"""The scalars :class:`ReportGuidedIteration` puts in ``engine.state.output`` (0 for a term that is off)."""


def report_terms(output: Mapping | list[Mapping]) -> dict[str, float]:
    """The loss terms of one iteration as ``{name: float}`` from MONAI's decollated or batched output: the
    ``output_transform`` of a ``StatsHandler`` that logs them."""
    first = output if isinstance(output, Mapping) else output[0]
    return {name: float(first[name]) for name in REPORT_TERMS if name in first}


class ReportGuidedIteration(TrainingIteration):
    """One training step of the localiser, guided by the report when ``guidance`` is given.

    The image comes through the trainer's ``prepare_batch`` (with its ``label``, the attribute targets, -1 where
    not mentioned); the localiser (the trainer's network, :class:`medguide.networks.AttributeLocalizer`) runs
    through the trainer's ``inferer`` with ``with_maps=True``. The loss::

        loss = BCE(image logits)                                   # the trainer's loss_function, masked
             + text_weight      * BCE(text-guided logits)          # with guidance
             + alignment_weight * KL(text map (stop-gradient) || image opacity map)   # where the report says opacity
             + prior_weight     * mass of the text map outside the side and zone the report names   # optional
                                 (a ``spread`` prior: KL from uniform-over-that-region to the report's location map)

    Without ``guidance`` only the first term is left: the same network trained without text, the CAM-style
    baseline. ``guidance`` is trained with the localiser (give the optimizer both modules' parameters) and saved
    beside it, but inference never needs it.

    Args:
        guidance: the report side, :class:`medguide.networks.ReportGuidance` (already on the trainer's device, or
            wrapped in DDP); None for the image-only baseline. Its ``opacity_index`` (where ``opacity`` is among the
            attributes) also says which image map is aligned and which samples are: those whose report states it.
        text_key: the batch key of the report texts (a list of ``B`` strings once collated).
        text_weight, alignment_weight, prior_weight: weights of the terms above (0 switches a term off).
        prior: the location prior (default :class:`medguide.losses.LocationPriorLoss` with the standard
            attributes); used only with a positive ``prior_weight``.
        ramp_up: share of the training (in ``[0, 1]``) over which the alignment and prior weights rise linearly
            from 0 to their values, so the image map is not pulled toward a text map that is still random (as
            mean-teacher methods ramp their consistency term); 0: full weight from the first iteration.

    Raises:
        ValueError: (per iteration) a batch without ``label``, or without ``text_key`` when guided.
    """

    def __init__(
        self,
        guidance: ReportGuidance | None = None,
        text_key: str = "report_text",
        text_weight: float = 1.0,
        alignment_weight: float = 1.0,
        prior_weight: float = 0.0,
        prior: LocationPriorLoss | None = None,
        ramp_up: float = 0.0,
    ) -> None:
        if not 0 <= ramp_up <= 1:
            raise ValueError(f"ReportGuidedIteration: ramp_up must be in [0, 1], got {ramp_up}.")
        self.ramp_up = ramp_up
        self.guidance = guidance
        self.text_key = text_key
        self.text_weight, self.alignment_weight, self.prior_weight = text_weight, alignment_weight, prior_weight
        self.alignment = MapAlignmentLoss()
        self.prior = LocationPriorLoss() if prior is None and prior_weight > 0 else prior

    def modules(self) -> list[nn.Module]:
        return [] if self.guidance is None else [self.guidance]

    def check(self, engine: Any, batchdata: Mapping) -> None:
        if not isinstance(batchdata, Mapping) or Keys.LABEL not in batchdata:
            raise ValueError("the training batch has no 'label': give it the report's attribute targets.")
        if self.guidance is not None and self.text_key not in batchdata:
            raise ValueError(
                f"the training batch has no report text '{self.text_key}': put medguide.data.ReportAttributesd in the "
                "training transforms, or train without guidance (the image-only baseline)."
            )

    def forward(self, engine: Any, batchdata: Mapping) -> tuple:
        image, label = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking, **engine.to_kwargs)[:2]
        outputs = engine.inferer(image, engine.network, with_maps=True)
        engine.state.output.update({Keys.IMAGE: image, Keys.LABEL: label, Keys.PRED: outputs.logits})
        guided = None
        if self.guidance is not None:
            # through the inferer, so medguide's CPU autocast covers the text side as it does the image side
            guided = engine.inferer(batchdata[self.text_key], self.guidance, outputs.regions, outputs.evidence)
        return outputs, guided, label

    def ramp(self, engine: Any) -> float:
        """The factor of the alignment and prior weights at the engine's current iteration, in ``[0, 1]``."""
        if not self.ramp_up:
            return 1.0
        done = (engine.state.iteration - 1) / max(1, engine.state.max_epochs * (engine.state.epoch_length or 1))
        return min(1.0, done / self.ramp_up)

    def loss(self, engine: Any, forwarded: tuple) -> dict[str, torch.Tensor]:
        outputs, guided, label = forwarded
        label = label.float()
        zero = outputs.logits.float().sum() * 0
        terms = {"attributes": engine.loss_function(outputs.logits.float(), label)}
        terms.update(text=zero, alignment=zero, prior=zero)
        if guided is not None:
            if self.text_weight:
                terms["text"] = engine.loss_function(guided.logits.float(), label)
            if self.alignment_weight:
                opacity = getattr(self.guidance, "module", self.guidance).opacity_index  # DDP wraps it
                stated = label[:, opacity] > 0.5
                image_map = outputs.maps[:, opacity].float()
                terms["alignment"] = self.alignment(image_map, guided.map.float(), weight=stated)
            if self.prior_weight:
                # a spread prior is on where the report points (the location map), the mass prior on the guided map
                target_map = guided.location if self.prior.spread else guided.map
                terms["prior"] = self.prior(target_map.float(), label.clamp(min=0), (label >= 0).float())
        ramp = self.ramp(engine)
        terms["loss"] = (
            terms["attributes"]
            + self.text_weight * terms["text"]
            + ramp * (self.alignment_weight * terms["alignment"] + self.prior_weight * terms["prior"])
        )
        return terms


LOCALIZATION_COLUMNS = (
    *(f"accuracy@{t}" for t in THRESHOLDS),
    *(f"afp@{t}" for t in THRESHOLDS),
    "pointing_game",
    "miou",
    "opacity_auc",
)
"""The columns of :func:`evaluate_localization`'s table, in order."""


def localization_scores(
    network: nn.Module,
    loader: Iterable,
    device: str | torch.device = "cpu",
    precision: str = "float32",
    image_key: str = "image",
    opacity_index: int = 0,
    map_threshold: float = 0.7,
) -> dict[str, float]:
    """The ChestX-ray8 box protocol, pointing game, mIoU and opacity AUC of one localiser on a test set.

    Each film's opacity map is upsampled to the film's original grid (its meta ``spatial_shape``, (W, H)) and turned
    into boxes by :func:`medguide.transforms.map_to_boxes` (``map_threshold`` of the map's maximum), compared with
    the item's ``boxes`` (original grid) by :class:`medguide.metrics.LocalizationMetrics`; films without a box count
    in the AUC only. The opacity AUC is over every film, against its ``label`` (1 pneumonia, 0 not).

    Args:
        network: a trained :class:`medguide.networks.AttributeLocalizer`.
        loader: batches as lists of items (``collate_fn=monai.data.utils.no_collation``), each with the
            preprocessed film under ``image_key`` (``[1, W', H']``, meta ``spatial_shape`` the original (W, H)),
            ``boxes`` (``[K, 4]`` ``[x0, y0, x1, y1]``, original pixels) and ``label``.
        device, precision: where and in which precision the network runs (:func:`medguide.engines.autocast`).
        image_key: the items' key of the film.
        opacity_index: the position of ``opacity`` among the attributes.
        map_threshold: relative threshold of the map for boxes and mIoU.

    Returns:
        ``{column: value}`` for :data:`LOCALIZATION_COLUMNS` (nan where undefined, e.g. no boxed film).
    """
    metrics = LocalizationMetrics(map_threshold=map_threshold)
    scores, labels = [], []
    with evaluating([network]), autocast(resolve_precision(precision, device), device):
        for items in loader:
            images = torch.stack([torch.as_tensor(item[image_key]) for item in items]).to(device)
            outputs = network(images, with_maps=True)
            for item, logits, heat_map in zip(items, outputs.logits, outputs.maps[:, opacity_index]):
                size = [int(s) for s in item[image_key].meta["spatial_shape"]]
                boxes, _ = map_to_boxes(heat_map.float().cpu(), spatial_size=size, threshold=map_threshold)
                truth = torch.as_tensor(item.get("boxes", []), dtype=torch.float32).reshape(-1, 4)
                if len(truth):
                    metrics.update(boxes, truth, heat_map=heat_map.float().cpu()[None], image_size=size)
                scores.append(float(logits[opacity_index]))
                labels.append(int(item["label"]))
    result = {name: value for name, value in metrics.aggregate().items() if name in LOCALIZATION_COLUMNS}
    auc = attribute_aucs(torch.tensor(scores)[:, None], torch.tensor(labels, dtype=torch.float32)[:, None], ["o"])
    return {**{column: result.get(column, math.nan) for column in LOCALIZATION_COLUMNS}, "opacity_auc": auc["o"]}


def evaluate_localization(
    rows: Mapping[str, nn.Module],
    checkpoints: Sequence[tuple[nn.Module, str]],
    ckpt_dirs: Sequence[str | os.PathLike],
    seeds: Sequence[int],
    loader: Iterable,
    device: str | torch.device = "cpu",
    precision: str = "float32",
    output_dir: str | os.PathLike | None = None,
    name: str = "localization_table",
    map_threshold: float = 0.7,
) -> list[dict[str, object]]:
    """:func:`localization_scores` of each row for each trained seed, and the table of mean and spread over seeds.

    Each seed is a separate training run in its own checkpoint folder (``ckpt_dirs[i]`` of ``seeds[i]``); its
    checkpoints are loaded into the rows' networks first (:func:`medguide.engines.load_parts`). With ``output_dir``
    writes ``<name>.csv`` (one row per model: each column's mean and ``<column> sd``, and the seeds),
    ``<name>_per_seed.csv`` and ``<name>.md`` (mean ± sd, the seeds named), atomically, and logs the markdown.

    Returns:
        the table's rows: ``{"model": row name, "seeds": n, column: mean, "<column> sd": sd, ...}``.

    Raises:
        ValueError: ``seeds`` and ``ckpt_dirs`` differ in length, or a seed repeats.
        InputError: a checkpoint is missing or does not fit (one line naming the file).
    """
    check_seed_folders(seeds, ckpt_dirs)
    per_seed: list[dict[str, object]] = []
    for seed, folder in zip(seeds, ckpt_dirs):
        for network, path in checkpoints:
            load_parts(network, {"": Path(folder) / path}, map_location=device)
        for model, network in rows.items():
            scores = localization_scores(network, loader, device, precision, map_threshold=map_threshold)
            per_seed.append({"model": model, "seed": int(seed), **scores})
            logger.info("%s, seed %s: %s", model, seed, ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    table = [
        {
            "model": model,
            "seeds": len(seeds),
            **mean_sd_columns([{c: r[c] for c in LOCALIZATION_COLUMNS} for r in per_seed if r["model"] == model]),
        }
        for model in rows
    ]
    if output_dir is not None:
        header = ["model", *LOCALIZATION_COLUMNS]
        body = [[row["model"], *(mean_sd_cell(row[c], row[f"{c} sd"]) for c in LOCALIZATION_COLUMNS)] for row in table]
        caption = f"ChestX-ray8 protocol on the test films, mean ± sd over seeds {', '.join(map(str, seeds))}"
        markdown = "\n".join([caption, "", *markdown_table(header, body)]) + "\n"
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / f"{name}.csv", csv_text(table))
        atomic_write_text(folder / f"{name}_per_seed.csv", csv_text(per_seed))
        atomic_write_text(folder / f"{name}.md", markdown)
        logger.info("%s\n%s", name, markdown)
    return table
