"""``LocalizationWriter``: what an attribute localiser's inference gives per film, from the image alone: attribute
probabilities, boxes in the original film's pixel coordinates (CSV and JSON), and a heat-map overlay when asked."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Events

from medguide.data.errors import flag
from medguide.data.files import atomic_write_text
from medguide.engines.predictions import MapInferer, case_figure_path, per_case, per_case_logits
from medguide.transforms.boxes import MapToBoxes, heat_map_image_size
from medguide.visualize.localization import localization_figure

__all__ = ["LocalizationWriter"]


class LocalizationWriter:
    """Handler writing a localiser's predictions into ``output_dir``, from the image alone.

    - ``attributes.csv``: ``case``, then one column per attribute with its sigmoid probability; every image.
    - ``boxes.csv``: one row per box, ``case, box, x0, y0, x1, y1, score, <attribute>``: the box's number (1 is the
      best), its corners and score, and the localised attribute's probability (``opacity``); an image without a box
      has no row.
    - ``boxes.json``: ``{case: {"image_size": [W, H], "<attribute>": p, "boxes": [{"box": [x0, y0, x1, y1],
      "score": s}, ...]}}``, every image.
    - with ``figures``, ``<figures_dir>/<case>.png``: the film as the network saw it, the heat map over it, the boxes
      drawn and the probability in the title (:func:`medguide.visualize.localization_figure`); case ids that make the
      same file name are numbered ``_2``, ``_3``, ...

    The boxes come from the localised attribute's map (the first attribute, ``opacity``, by default), which
    :class:`medguide.engines.MapInferer` kept from the forward that gave the evaluator's ``pred`` (the logits): the
    map is upsampled bilinearly to the ORIGINAL film's size, thresholded at ``threshold`` of its maximum, and each
    connected component gives a box (:class:`medguide.transforms.MapToBoxes`, ChestX-ray8's box generation). So the
    boxes are in the film file's own pixel grid (``[x0, y0, x1, y1]``, pixel corners, x along the file's columns),
    whatever size the network saw, and compare directly with boxes drawn on the file (ChestX-ray8's
    ``BBox_List_2017.csv`` on its 1024-px images). The size is the image's ``meta`` under the first of ``size_keys``
    it holds (:class:`medguide.transforms.LoadChestFilmd` records the file's ``(W, H)`` as ``original_shape``). A
    box's score is the map's peak inside it: an attention weight (the map sums to 1 over its grid), which ranks an
    image's boxes; the probability says whether there is anything to localise.

    ``min_probability`` (default 0) writes boxes only for images whose attribute probability reaches it. At 0 every
    image gets its boxes, as the localisation protocol scores them (boxes of images known to hold the finding); 0.5
    keeps the boxes of the images the model calls positive.

    The CSV and JSON files are written once, when the engine completes, atomically (a run that stops half way leaves
    none; quoted by the csv module where a case id holds a comma); figures as each batch completes, each atomically.

    Example::

        {"_target_": "medguide.engines.LocalizationWriter", "output_dir": "@output_dir",
         "attributes": "@attributes", "inferer": "@inferer", "figures": "@figures"}

    Args:
        output_dir: the folder of the files (created).
        attributes: the attribute names, in the order of the logits and maps.
        inferer: the evaluator's :class:`medguide.engines.MapInferer`.
        attribute: the attribute whose map gives the boxes.
        threshold: the fraction of the upsampled map's maximum a pixel must reach to be in a box, in ``[0, 1]``
            (ChestX-ray8's 0.7 by default).
        max_boxes: at most this many boxes per image, the best; ``None``: all.
        min_probability: write boxes only for images whose ``attribute`` probability is at least this, in ``[0, 1]``.
        case_key: the batch key holding each case's id.
        image_key: the batch key holding each image (its meta gives the original size; shown in the figures).
        size_keys: the meta keys that may hold the original ``(W, H)``, the first found is used.
        figures: write an overlay per image (``true``/``false``, also as a command line's string).
        figures_dir: the overlays' folder, under ``output_dir``.
        max_figures: write at most this many overlays (the first images); ``None`` for all.
        digits: decimals written per probability and score.

    Raises:
        ValueError: no attribute, ``attribute`` not among them, ``threshold`` or ``min_probability`` outside
            ``[0, 1]``, ``max_boxes`` below 1; while running, maps that do not match the images and attributes, an
            image whose meta holds no size, or a case id met twice (its boxes would be lost in ``boxes.json``).
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        attributes: Sequence[str],
        inferer: MapInferer,
        attribute: str | None = None,
        threshold: float = 0.7,
        max_boxes: int | None = None,
        min_probability: float = 0.0,
        case_key: str = "case",
        image_key: str = "image",
        size_keys: Sequence[str] = ("original_shape", "spatial_shape"),
        figures: bool | str = False,
        figures_dir: str = "overlays",
        max_figures: int | None = None,
        digits: int = 6,
    ) -> None:
        self.attributes = [str(a) for a in attributes]
        if not self.attributes:
            raise ValueError("LocalizationWriter: attributes is empty; give the names of the localiser's outputs.")
        self.attribute = self.attributes[0] if attribute is None else str(attribute)
        if self.attribute not in self.attributes:
            raise ValueError(f"LocalizationWriter: attribute {attribute!r} is not one of {self.attributes}.")
        if not 0 <= float(min_probability) <= 1:
            raise ValueError(f"LocalizationWriter: min_probability must be in [0, 1], got {min_probability!r}.")
        self.to_boxes = MapToBoxes(threshold=float(threshold), max_boxes=max_boxes)
        self.output_dir, self.inferer = Path(output_dir), inferer
        self.index = self.attributes.index(self.attribute)
        self.min_probability = float(min_probability)
        self.case_key, self.image_key, self.size_keys = case_key, image_key, tuple(size_keys)
        self.figures = flag(figures, "figures")
        self.figures_dir = self.output_dir / figures_dir
        self.max_figures = max_figures
        self.digits = digits
        self.reset()

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def reset(self, engine=None) -> None:
        self.attribute_rows: list[list[str]] = []
        self.box_rows: list[list] = []
        self.predictions: dict[str, dict] = {}
        self.figure_paths: list[Path] = []

    def original_size(self, image, case: str) -> tuple[int, int]:
        """The original film's ``(W, H)`` from the image's meta."""
        meta = getattr(image, "meta", {})
        key = next((k for k in self.size_keys if meta.get(k) is not None), None)
        if key is None:
            raise ValueError(
                f"LocalizationWriter: the image of case {case!r} has no {' or '.join(self.size_keys)} in its meta, so "
                "its boxes cannot be put in the original film's pixel grid; load it with medguide.transforms."
                "LoadChestFilmd (or MONAI's LoadImaged), whose meta records it."
            )
        return heat_map_image_size(image, meta_key=key)

    def _round(self, value: float) -> float:
        return round(float(value), self.digits)

    def collect(self, engine) -> None:
        """Add the iteration's images, and write their overlays when asked."""
        cases, logits = per_case_logits(engine, self.case_key)
        probabilities = logits.sigmoid()
        maps = self.inferer.take()
        if maps.ndim != 4 or maps.shape[:2] != (len(cases), len(self.attributes)):
            raise ValueError(
                f"LocalizationWriter: the network gave maps of shape {tuple(maps.shape)} for {len(cases)} images and "
                f"{len(self.attributes)} attributes; expected [images, attributes, w, h]."
            )
        images = per_case(engine.state.batch, self.image_key)
        for i, case in enumerate(cases):
            if case in self.predictions:
                raise ValueError(f"LocalizationWriter: case id {case!r} appears twice; case ids must be unique.")
            size = self.original_size(images[i], case)
            probability = float(probabilities[i, self.index])
            boxes, scores = torch.zeros(0, 4), torch.zeros(0)
            if probability >= self.min_probability:
                boxes, scores = self.to_boxes(maps[i, self.index], spatial_size=size)
            corners = np.asarray(boxes, dtype=np.float64).round().astype(int).tolist()
            self.attribute_rows.append([case, *(f"{p:.{self.digits}f}" for p in probabilities[i].tolist())])
            for number, (box, score) in enumerate(zip(corners, scores.tolist()), start=1):
                self.box_rows.append([case, number, *box, f"{score:.{self.digits}f}", f"{probability:.{self.digits}f}"])
            self.predictions[case] = {
                "image_size": list(size),
                self.attribute: self._round(probability),
                "boxes": [{"box": box, "score": self._round(s)} for box, s in zip(corners, scores.tolist())],
            }
            if self.figures and (self.max_figures is None or len(self.figure_paths) < int(self.max_figures)):
                path = case_figure_path(self.figures_dir, case, self.figure_paths)
                title = f"{case}: {self.attribute} {probability:.2f}"
                self.figure_paths.append(
                    localization_figure(images[i], maps[i, self.index], boxes, path, size, scores.tolist(), title)
                )

    def write(self, engine=None) -> Path:
        """Write ``attributes.csv``, ``boxes.csv`` and ``boxes.json`` (headers only, ``{}``, when there were no
        images); returns ``output_dir``."""
        for name, header, rows in (
            ("attributes.csv", [self.case_key, *self.attributes], self.attribute_rows),
            ("boxes.csv", [self.case_key, "box", "x0", "y0", "x1", "y1", "score", self.attribute], self.box_rows),
        ):
            text = io.StringIO()
            csv.writer(text, lineterminator="\n").writerows([header, *rows])
            atomic_write_text(self.output_dir / name, text.getvalue())
        atomic_write_text(self.output_dir / "boxes.json", json.dumps(self.predictions, indent=2) + "\n")
        return self.output_dir
