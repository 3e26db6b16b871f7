"""``ClassProbabilityWriter``: an inference run's class probabilities, one CSV row per case, written atomically;
``ConceptWriter`` with ``ConceptInferer``: a concept model's probabilities and strongest concepts per image, and a
figure per image when asked; ``MapInferer``: the attribute maps of a localiser for
:class:`medguide.engines.LocalizationWriter`. Both inferers keep a second output of the forward the evaluator runs
(:class:`KeepingInferer`)."""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from ignite.engine import Events
from monai.inferers import Inferer
from monai.utils import CommonKeys

from medguide.data.errors import flag
from medguide.data.files import atomic_write_text
from medguide.losses.classification import split_task_logits
from medguide.visualize.concepts import concept_figure

__all__ = [
    "ClassProbabilityWriter",
    "ConceptInferer",
    "ConceptWriter",
    "KeepingInferer",
    "MapInferer",
    "case_figure_path",
    "explanation_figure",
    "per_case",
    "per_case_logits",
]


def per_case_logits(engine, case_key: str = "case") -> tuple[list[str], torch.Tensor]:
    """The iteration's case ids and the evaluator's ``pred`` as float32 CPU logits ``[B, outputs]``, from a decollated
    (MONAI's default) or batched output alike."""
    batch, output = engine.state.batch, engine.state.output
    if isinstance(output, Mapping):
        logits, cases = output[CommonKeys.PRED], list(batch[case_key])
    else:
        logits = torch.stack([torch.as_tensor(item[CommonKeys.PRED]).reshape(-1) for item in output])
        cases = [item[case_key] for item in batch]
    return [str(c) for c in cases], torch.as_tensor(logits).detach().float().cpu().reshape(len(cases), -1)


class ClassProbabilityWriter:
    """Handler writing ``<output_dir>/<filename>``: a ``case`` column, then one column per class of every task.

    The engine's ``pred`` is taken as the tasks' logits side by side (``[sum(classes)]`` per case, as
    :class:`medguide.networks.blocks.MultiTaskHead` gives them); each task's softmax is written. Columns are the class
    names for a single task (``case,G,A,O``), ``<task>:<class>`` for several. The file is written once, when the
    engine completes, through :func:`medguide.data.atomic_write_text` (temporary file, then rename), so a run that
    stops half way leaves no partial table.

    Example::

        {"_target_": "medguide.engines.ClassProbabilityWriter", "output_dir": "@output_dir",
         "classes": {"class": ["G", "A", "O"]}}

    Args:
        output_dir: the folder of the CSV (created).
        classes: ``{task: [class names]}`` in the order of the logits (a plain list: one task).
        filename: the CSV's name.
        case_key: the batch key holding each case's id.
        digits: decimals written per probability.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Mapping[str, Sequence[str]] | Sequence[str],
        filename: str = "probabilities.csv",
        case_key: str = "case",
        digits: int = 6,
    ) -> None:
        self.path = Path(output_dir) / filename
        self.classes = (
            {"class": list(classes)} if not isinstance(classes, Mapping) else {t: list(c) for t, c in classes.items()}
        )
        self.tasks = {task: len(names) for task, names in self.classes.items()}
        self.case_key, self.digits = case_key, digits
        self.rows: list[list[str]] = []

    def attach(self, engine) -> None:
        engine.add_event_handler(Events.STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def header(self) -> list[str]:
        """``case`` then the class columns."""
        if len(self.classes) == 1:
            return [self.case_key, *next(iter(self.classes.values()))]
        return [self.case_key, *(f"{task}:{name}" for task, names in self.classes.items() for name in names)]

    def reset(self, engine=None) -> None:
        self.rows = []

    def probabilities(self, engine) -> tuple[list[str], torch.Tensor]:
        """The iteration's case ids and their probabilities ``[B, sum(classes)]`` (each task's softmax), from a
        decollated or batched output alike."""
        cases, logits = per_case_logits(engine, self.case_key)
        per_task = split_task_logits(logits, self.tasks)
        return cases, torch.cat([task.softmax(dim=1) for task in per_task.values()], dim=1)

    def collect(self, engine) -> None:
        """Add the iteration's cases (decollated or batched output alike)."""
        for case, values in zip(*self.probabilities(engine)):
            self.rows.append([case, *(f"{v:.{self.digits}f}" for v in values.tolist())])

    def write(self, engine=None) -> Path:
        """Write the CSV (header only when there were no cases); returns its path."""
        # csv quotes a case id or concept name holding a comma or a quote ("eye, left.jpg")
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([self.header(), *self.rows])
        atomic_write_text(self.path, text.getvalue())
        return self.path


class KeepingInferer(Inferer):
    """The inferer of an evaluator whose network gives a second output beside its logits: one forward with
    ``keyword=True``, the logits returned, ``outputs.<field>`` kept for a writer to :meth:`take`.

    MONAI's evaluator calls its inferer on every batch, inside its no-grad and autocast context, and puts what the
    inferer returns under ``pred``. Returning the plain logits keeps ``pred`` what every other handler, metric and
    post-transform of the evaluator expects (:class:`ClassProbabilityWriter`, ``IgniteMetricHandler``); the second
    output of the same forward waits here for the writer, so no image goes through the network twice and the
    evaluator needs no ``_iteration`` of its own. The network is any whose ``forward`` takes ``keyword=True`` and then
    returns an object with ``.logits`` and ``.<field>``. :class:`ConceptInferer` and :class:`MapInferer` are the two in
    use.

    Args:
        keyword: the forward's keyword asking for the second output (``"with_concepts"``).
        field: the attribute of the forward's output to keep (``"similarity"``).
        kept: what the kept output is, for the error of a writer that finds none (``"concept similarities"``).
        writer: the handler that takes it, for the same error (``"ConceptWriter"``).
    """

    def __init__(self, keyword: str, field: str, kept: str = "", writer: str = "writer") -> None:
        super().__init__()
        self.keyword, self.field = keyword, field
        self.kept, self.writer = kept or field, writer
        self.value: torch.Tensor | None = None

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        """``network(inputs, *args, <keyword>=True, **kwargs).logits``; keeps ``.<field>``."""
        outputs = network(inputs, *args, **{self.keyword: True}, **kwargs)
        self.value = getattr(outputs, self.field).detach()
        return outputs.logits

    def take(self) -> torch.Tensor:
        """The kept output of the last batch, as float32 on the CPU, once (then forgotten, so a batch the inferer did
        not see is never explained with another's).

        Raises:
            RuntimeError: when no batch went through this inferer since the last ``take``.
        """
        if self.value is None:
            raise RuntimeError(
                f"{type(self).__name__} holds no {self.kept} for this batch: give the evaluator this inferer "
                f"(its 'inferer') and the {self.writer} the same one."
            )
        value, self.value = self.value, None
        return value.float().cpu()


class ConceptInferer(KeepingInferer):
    """The inferer of a concept model's evaluator: one forward with ``with_concepts=True``, the logits returned, the
    concept similarities ``[B, K]`` kept for :class:`ConceptWriter` (why: :class:`KeepingInferer`).

    The network is any whose ``forward`` takes ``with_concepts=True`` and then returns an object with ``.logits`` and
    ``.similarity`` (:class:`medguide.networks.ConceptClassifier`, :class:`medguide.networks.blocks.ConceptOutputs`).
    In a config::

        "inferer": {"_target_": "medguide.engines.ConceptInferer"},
        "handlers": [{"_target_": "medguide.engines.ConceptWriter", "inferer": "@inferer", ...}]
    """

    def __init__(self) -> None:
        super().__init__("with_concepts", "similarity", "concept similarities", "ConceptWriter")


class MapInferer(KeepingInferer):
    """The inferer of a localiser's evaluator: one forward with ``with_maps=True``, the attribute logits returned, the
    attribute maps ``[B, A, w, h]`` kept for :class:`medguide.engines.LocalizationWriter` (why:
    :class:`KeepingInferer`).

    The network is any whose ``forward`` takes ``with_maps=True`` and then returns an object with ``.logits`` and
    ``.maps`` (:class:`medguide.networks.AttributeLocalizer`, :class:`medguide.networks.LocalizerOutputs`). In a
    config::

        "inferer": {"_target_": "medguide.engines.MapInferer"},
        "handlers": [{"_target_": "medguide.engines.LocalizationWriter", "inferer": "@inferer", ...}]
    """

    def __init__(self) -> None:
        super().__init__("with_maps", "maps", "attribute maps", "LocalizationWriter")


def _file_name(case: str) -> str:
    """A case id as a file name: path separators and characters a file system may refuse replaced by ``_``."""
    return re.sub(r'[\\/:*?"<>|\x00-\x1f]', "_", case).strip(". ") or "_"


def _unique(path: Path, taken: Sequence[Path]) -> Path:
    """``path``, or ``<stem>_2.png``, ``<stem>_3.png``, ... where this run already wrote that file: two case ids
    that differ only in characters :func:`_file_name` replaces (``a/b`` and ``a:b``) keep a figure each."""
    candidate, number = path, 1
    while candidate in taken:
        number += 1
        candidate = path.with_name(f"{path.stem}_{number}{path.suffix}")
    return candidate


def case_figure_path(folder: str | os.PathLike, case: str, taken: Sequence[Path] = (), prefix: str = "") -> Path:
    """``<folder>/<prefix><case>.png``, the case id made a file name, numbered ``_2``, ``_3``, ... where that name is
    among ``taken`` (the figures this run already wrote): where each case's figure goes."""
    return _unique(Path(folder) / f"{prefix}{_file_name(str(case))}.png", taken)


def explanation_figure(
    image,
    similarity: torch.Tensor,
    concepts: Sequence[str],
    top_k: int,
    folder: str | os.PathLike,
    case: str,
    title: str,
    taken: Sequence[Path] = (),
    prefix: str = "",
) -> Path:
    """One image's explanation as a PNG: the image beside its ``top_k`` concepts of highest similarity, strongest
    first (:func:`medguide.visualize.concept_figure`), written to ``<folder>/<prefix><case>.png`` (the case id made
    a file name; numbered ``_2``, ``_3``, ... where that name is among ``taken``, the figures already written).

    Args:
        image: the image as :func:`medguide.visualize.display_image` takes it (``[C, W, H]``).
        similarity: ``[K]`` its cosine similarity with each concept, in ``[-1, 1]``.
        concepts: the K concept names.
        top_k: how many concepts to show (at most K).
        folder, case, title, taken, prefix: where and under which title (see above).

    Returns:
        the path written.
    """
    strongest, order = similarity.detach().float().cpu().topk(min(int(top_k), len(concepts)))
    path = case_figure_path(folder, case, taken, prefix)
    return concept_figure(image, [concepts[c] for c in order.tolist()], strongest.tolist(), path, title)


def per_case(batch, key: str) -> list:
    """``batch[key]`` split per case, from a batched dict or a decollated list of dicts alike."""
    return list(batch[key]) if isinstance(batch, Mapping) else [item[key] for item in batch]


class ConceptWriter(ClassProbabilityWriter):
    """Handler writing a concept model's explanations: ``<output_dir>/<filename>``, one row per image, and a figure
    per image when asked.

    Columns: ``case``, ``predicted`` (the class of highest probability), one per class (its softmax probability),
    then ``top1_concept, top1_similarity, ..., topk_concept, topk_similarity``: the ``top_k`` concepts of highest
    cosine similarity with the image, strongest first. The logits are the evaluator's ``pred``, the similarities
    those :class:`ConceptInferer` kept from the same forward (why: see there). The CSV is written once, when the
    engine completes, atomically (a run that stops half way leaves none); quoted where a concept name holds a comma.

    With ``figures``, ``<output_dir>/<figures_dir>/<case>.png`` shows each image beside a bar chart of its ``top_k``
    concepts, the predicted class in the title (:func:`medguide.visualize.concept_figure`), written as each batch
    completes (each file atomically). The image is the batch's ``image_key`` as the evaluator's transforms left it
    (``[C, W, H]``, as ``LoadPhotod`` loads a photograph), scaled to its own range for display.

    Example::

        {"_target_": "medguide.engines.ConceptWriter", "output_dir": "@output_dir", "classes": "@class_names",
         "concepts": "@concept_names", "inferer": "@inferer", "top_k": 5, "figures": "@concept_figures"}

    Args:
        output_dir: the folder of the CSV (created).
        classes: the class names, in the order of the logits.
        concepts: the concept names, in the order of the similarity columns (the rows of the concept matrix).
        inferer: the evaluator's :class:`ConceptInferer`.
        top_k: how many concepts per image (at most the number of concepts).
        filename: the CSV's name.
        case_key: the batch key holding each case's id.
        image_key: the batch key holding each image (for the figures).
        figures: write a figure per image (``true``/``false``, also as a command line's string).
        figures_dir: the figures' folder, under ``output_dir``.
        max_figures: write at most this many figures (the first images); ``None`` for all.
        digits: decimals written per probability and similarity.

    Raises:
        ValueError: on fewer than two classes, no concept, or ``top_k`` not in ``[1, number of concepts]``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        classes: Sequence[str],
        concepts: Sequence[str],
        inferer: ConceptInferer,
        top_k: int = 5,
        filename: str = "concepts.csv",
        case_key: str = "case",
        image_key: str = "image",
        figures: bool | str = False,
        figures_dir: str = "concept_figures",
        max_figures: int | None = None,
        digits: int = 6,
    ) -> None:
        if isinstance(classes, Mapping) or len(classes) < 2:
            raise ValueError(f"ConceptWriter: classes must be a list of at least two class names, got {classes!r}.")
        super().__init__(output_dir, list(classes), filename, case_key, digits)
        self.concepts = [str(c) for c in concepts]
        if not self.concepts:
            raise ValueError("ConceptWriter: concepts is empty; give the names of the concept matrix's rows.")
        if isinstance(top_k, bool) or int(top_k) != top_k or not 1 <= top_k <= len(self.concepts):
            raise ValueError(f"ConceptWriter: top_k must be an integer in [1, {len(self.concepts)}], got {top_k!r}.")
        self.inferer, self.top_k, self.image_key = inferer, int(top_k), image_key
        self.figures = flag(figures, "figures")
        self.figures_dir = Path(output_dir) / figures_dir
        self.max_figures = max_figures
        self.figure_paths: list[Path] = []

    def header(self) -> list[str]:
        """``case``, ``predicted``, the classes, then ``top<i>_concept``, ``top<i>_similarity`` per rank."""
        ranks = [f"top{i}_{part}" for i in range(1, self.top_k + 1) for part in ("concept", "similarity")]
        return [self.case_key, "predicted", *self.classes["class"], *ranks]

    def reset(self, engine=None) -> None:
        super().reset(engine)
        self.figure_paths = []

    def collect(self, engine) -> None:
        """Add the iteration's images, and write their figures when asked."""
        cases, probabilities = self.probabilities(engine)
        similarity = self.inferer.take()
        if similarity.shape != (len(cases), len(self.concepts)):
            raise ValueError(
                f"ConceptWriter: the network gave concept similarities of shape {tuple(similarity.shape)} for "
                f"{len(cases)} images and {len(self.concepts)} concept names."
            )
        strongest, order = similarity.topk(self.top_k, dim=1)
        names = self.classes["class"]
        predicted = probabilities.argmax(1).tolist()
        for i, case in enumerate(cases):
            ranks = [
                cell
                for c, s in zip(order[i].tolist(), strongest[i].tolist())
                for cell in (self.concepts[c], f"{s:.{self.digits}f}")
            ]
            values = (f"{v:.{self.digits}f}" for v in probabilities[i].tolist())
            self.rows.append([case, names[predicted[i]], *values, *ranks])
        if self.figures:
            images = per_case(engine.state.batch, self.image_key)
            for i, case in enumerate(cases):
                if self.max_figures is not None and len(self.figure_paths) >= self.max_figures:
                    break
                title = f"{case}: predicted {names[predicted[i]]} ({probabilities[i, predicted[i]]:.2f})"
                self.figure_paths.append(
                    explanation_figure(
                        images[i],
                        similarity[i],
                        self.concepts,
                        self.top_k,
                        self.figures_dir,
                        case,
                        title,
                        self.figure_paths,
                    )
                )
