"""The report of a classification bundle's demo: the result table, a confusion matrix per task, cases where the
method changed the prediction (guidance for DMG, distillation for OCT-CoDA), the concepts a concept model saw in a few
test images, and the commands that reproduce it.

``medguide demo`` calls :func:`write_classification_report` when a bundle's ``configs/demo.json`` names it as its
``report``. It reads what the bundle's ``evaluate.json`` declares: ``evaluate#rows`` (``{row: (network,
prepare_batch)}``, e.g. the deep multimodal guidance rows S+I, S, I, G(I), G(I)+I), ``evaluate#checkpoints``,
``seed_dirs``, ``seeds``, ``evaluate#dataloader`` (the test split), ``evaluate#name`` (the table written to
``output_dir``) and ``classes``; optionally ``evaluate#compared`` (the baseline row and the method's row whose
predictions are compared case by case, default ``["I", "G(I)+I"]``) and ``evaluate#method_name`` (default
``"guidance"``). Where the method's network explains with concepts, the report shows a few test images beside their
strongest concepts (``concept_names``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from medguide.data.files import atomic_write_text
from medguide.visualize.figures import save_figure

__all__ = ["confusion_matrix_figure", "write_classification_report"]

BASELINE, GUIDED = "I", "G(I)+I"
SHOWN_CASES = 5
TOP_CONCEPTS = 5


def confusion_matrix_figure(
    matrices: Mapping[str, np.ndarray], classes: Sequence[str], path: str | os.PathLike, title: str = "", dpi: int = 110
) -> Path:
    """One panel per model: its confusion matrix (rows true class, columns predicted; counts, shaded by row share).

    Args:
        matrices: {model: ``[K, K]`` counts}, in panel order.
        classes: the K class names.
        path: the PNG to write (atomically).
        title: the figure's title (e.g. the task).
        dpi: resolution.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(matrices), figsize=(2.6 * len(matrices), 2.9), squeeze=False)
    for ax, (model, matrix) in zip(axes[0], matrices.items()):
        matrix = np.asarray(matrix)
        share = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(int(count)), ha="center", va="center", color="white" if share[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(classes)), classes)
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_title(model)
    axes[0][0].set_ylabel("true")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi)


def _predict(
    rows, loader, device, case_key: str, precision: str = "float32"
) -> tuple[list[str], dict[str, torch.Tensor], torch.Tensor]:
    """(case ids, {row: logits [N, outputs]}, targets [N, T]) of every row on every case of ``loader``, in the
    ``precision`` the table was computed in."""
    from medguide.engines.dmg import predict_rows

    cases, logits, targets = [], {row: [] for row in rows}, []
    for batch, predicted in predict_rows(rows, loader, device, precision):
        cases += [str(case) for case in batch[case_key]]
        for row, values in predicted.items():
            logits[row].append(values.cpu())
        targets.append(next(iter(rows.values()))[1].targets(batch))
    return cases, {row: torch.cat(v) for row, v in logits.items()}, torch.cat(targets)


def _concept_figures(network, parser, out: Path) -> list[Path]:
    """``concepts_<case>.png`` in ``out`` for the first ``SHOWN_CASES`` test cases, where ``network`` explains its
    predictions with concepts (it takes ``with_concepts``, as :class:`medguide.networks.ConceptClassifier`); else
    none. Each shows the image beside its ``top_k`` strongest concepts (:func:`medguide.visualize.concept_figure`)."""
    if not hasattr(network, "num_concepts"):
        return []
    from medguide.engines.dmg import evaluating
    from medguide.engines.precision import autocast, resolve_precision
    from medguide.engines.predictions import explanation_figure

    names = list(parser.get_parsed_content("concept_names"))
    classes = list(parser.get_parsed_content("classes"))
    image_key, label_key, case_key = (parser.get_parsed_content(k) for k in ("image_key", "label_key", "case_key"))
    device = next(network.parameters()).device
    dtype = resolve_precision(parser.get_parsed_content("precision"), device)
    paths = []
    for batch in parser.get_parsed_content("evaluate#dataloader"):
        images = batch[image_key][: SHOWN_CASES - len(paths)]
        with evaluating([network]), autocast(dtype, device):
            inputs = images.as_tensor() if hasattr(images, "as_tensor") else images
            outputs = network(inputs.to(device), with_concepts=True)
        for i, case in enumerate(batch[case_key][: len(images)]):
            predicted, true = classes[int(outputs.logits[i].argmax())], classes[int(batch[label_key][i])]
            title = f"{case}: predicted {predicted}, true {true}"
            figure = explanation_figure(
                images[i], outputs.similarity[i], names, TOP_CONCEPTS, out, case, title, paths, prefix="concepts_"
            )
            paths.append(figure)
        if len(paths) >= SHOWN_CASES:
            break
    return paths


def _changed_cases(
    cases,
    logits,
    targets,
    tasks: Mapping[str, int],
    classes: Mapping[str, Sequence[str]],
    compared: Sequence[str] = (BASELINE, GUIDED),
) -> list:
    """Markdown table rows of the cases whose prediction the method's row (``compared[1]``, default G(I)+I) changed
    from the baseline row's (``compared[0]``, default I), per task: how many the method fixed, broke and changed while
    still wrong, then examples of each in turn (a fixed, a broken, a still-wrong case, ...), up to ``SHOWN_CASES``, so
    the examples show both sides as the counts do."""
    from medguide.losses.classification import split_task_logits

    before_row, after_row = compared
    if before_row not in logits or after_row not in logits:
        return []
    baseline, guided = split_task_logits(logits[before_row], tasks), split_task_logits(logits[after_row], tasks)
    rows = []
    for column, task in enumerate(tasks):
        names = classes[task]
        p_base, p_guided = baseline[task].softmax(1), guided[task].softmax(1)
        before, after, truth = p_base.argmax(1), p_guided.argmax(1), targets[:, column]
        kinds: dict[str, list[int]] = {"fixed": [], "broke": [], "still wrong": []}
        for i in sorted(range(len(cases)), key=lambda i: str(cases[i])):
            if before[i] != after[i] and truth[i] >= 0:
                verdict = "fixed" if after[i] == truth[i] else ("broke" if before[i] == truth[i] else "still wrong")
                kinds[verdict].append(i)
        if not any(kinds.values()):
            continue
        counts = ", ".join(f"{verdict} {len(found)}" for verdict, found in kinds.items())
        rows.append(f"| | {task} | | | | {counts} |")
        turns = [
            (verdict, i)
            for n in range(SHOWN_CASES)
            for verdict, found in kinds.items()
            if n < len(found)
            for i in [found[n]]
        ]
        for verdict, i in turns[:SHOWN_CASES]:
            rows.append(
                f"| {cases[i]} | {task} | {names[truth[i]]} | {names[before[i]]} ({p_base[i, before[i]]:.2f}) | "
                f"{names[after[i]]} ({p_guided[i, after[i]]:.2f}) | {verdict} |"
            )
    return rows


def write_classification_report(
    bundle: str,
    configs: Path,
    overlays: list[Path],
    overrides: dict,
    out: Path,
    timings: dict[str, float],
    inference: dict | None = None,
) -> Path:
    """Write ``report.md`` (table, a confusion matrix figure per task, cases where the method changed the prediction,
    timings, commands) into ``out``; returns its path.

    Args:
        bundle: the bundle's name.
        configs: its ``configs`` folder.
        overlays: overlay configs the run used (e.g. ``cpu_scale.json``).
        overrides: the config overrides the run used (``bundle_root``, ``output_dir``, ...).
        out: the folder the run wrote into; ``report.md`` and ``confusion_<task>.png`` go there.
        timings: seconds per step.
        inference: where the trained bundle also predicted a real case: ``command``, ``predictions``, ``sample``.
    """
    from monai.bundle import ConfigWorkflow

    from medguide.cli.main import real_case_lines, report_closing_lines
    from medguide.engines.dmg import load_parts
    from medguide.metrics.classification import confusion_matrix

    train = [configs / "train.json", *overlays]
    evaluate = [configs / "train.json", configs / "evaluate.json", *overlays]
    workflow = ConfigWorkflow(config_file=[str(f) for f in evaluate], workflow_type="train", **overrides)
    workflow.initialize()
    parser = workflow.parser
    device = parser.get_parsed_content("device")
    tasks = dict(parser.get_parsed_content("tasks"))
    declared = parser.get_parsed_content("classes")
    classes = dict(declared) if isinstance(declared, Mapping) else {next(iter(tasks)): list(declared)}
    seeds, seed_dirs = list(parser.get_parsed_content("seeds")), list(parser.get_parsed_content("seed_dirs"))
    for network, path in parser.get_parsed_content("evaluate#checkpoints"):
        load_parts(network, {"": Path(seed_dirs[0]) / path}, map_location=device)
    rows = parser.get_parsed_content("evaluate#rows")
    precision = parser.get_parsed_content("precision")
    cases, logits, targets = _predict(
        rows, parser.get_parsed_content("evaluate#dataloader"), device, parser.get_parsed_content("case_key"), precision
    )

    from medguide.losses.classification import split_task_logits

    figures = []
    for column, (task, count) in enumerate(tasks.items()):
        matrices = {
            row: confusion_matrix(
                targets[:, column].numpy(), split_task_logits(lg, tasks)[task].argmax(1).numpy(), count
            )
            for row, lg in logits.items()
        }
        figures.append(
            confusion_matrix_figure(matrices, classes[task], out / f"confusion_{task}.png", f"{task}, seed {seeds[0]}")
        )
    inferior = parser.get("inferior_name", "inferior image")
    table_name = parser.get_parsed_content("evaluate#name")
    table = (Path(parser.get_parsed_content("output_dir")) / f"{table_name}.md").read_text(encoding="utf-8")
    # which two rows the "changed" section compares, and what the method is called there (DMG's by default)
    before_row, after_row = parser.get_parsed_content("evaluate#compared", default=[BASELINE, GUIDED])
    method = parser.get_parsed_content("evaluate#method_name", default="guidance")
    if parser.get("evaluate#compared") is not None and not {before_row, after_row} <= set(rows):
        raise ValueError(f"evaluate#compared names rows {[before_row, after_row]}; evaluate#rows has {list(rows)}.")
    changed = _changed_cases(cases, logits, targets, tasks, classes, (before_row, after_row))
    explained = _concept_figures(rows[after_row][0], parser, out) if after_row in rows else []
    synthetic = not parser.get("dataset_dir")
    lines = [
        f"# medguide demo: {bundle}",
        "",
        ("Synthetic data in the public layout" if synthetic else "The data set given")
        + f", trained at CPU scale ({', '.join(p.name for p in overlays) or 'bundle defaults'}). The numbers show "
        "the pipeline works; they are not clinical results.",
        "",
        "## What was done",
        "",
        f"- **Cases**: {len(parser.get_parsed_content('train#datalist'))} for training, "
        f"{len(parser.get_parsed_content('validate#datalist'))} for validation (checkpoint selection), "
        f"{len(cases)} for test (the table; never used for selection).",
        f"- **Seeds**: {', '.join(map(str, seeds))}; each seed is a full training run of every stage.",
        f"- **Machine**: {torch.get_num_threads()} PyTorch threads ({os.cpu_count()} logical cores), device {device}.",
        "",
        "## Results on the test split",
        "",
        table,
        "## Confusion matrices",
        "",
        *[f"![{p.stem}]({p.name})" for p in figures],
        "",
        f"Test cases of seed {seeds[0]}; rows true class, columns predicted, shaded by the share of the row.",
        "",
        f"## Cases where {method} changed the prediction",
        "",
        *(
            [
                f"{before_row} is the {inferior} classifier without {method}, {after_row} the one with it "
                f"(probability of the predicted class in brackets); per task, how many test cases {method} fixed, "
                f"broke or changed while still wrong, and up to {SHOWN_CASES} examples taking each kind in turn; "
                f"seed {seeds[0]}.",
                "",
                f"| case | task | true | {before_row} | {after_row} | |",
                "|---|---|---|---|---|---|",
                *changed,
            ]
            if changed
            else [f"{method.capitalize()} changed no test prediction of this seed."]
        ),
        "",
        *(
            [
                f"## What {after_row} saw: the strongest concepts",
                "",
                f"The first test cases of seed {seeds[0]}, each beside the concepts its {inferior} is most similar to "
                "(cosine similarity with the concept's text embedding), the predicted and true class in the title.",
                "",
                *[f"![{p.stem}]({p.name})" for p in explained],
                "",
            ]
            if explained
            else []
        ),
        *real_case_lines(
            "Inference on a real case",
            f"The {after_row} model classified `{inference['sample']}` from its {inferior} alone; probabilities in "
            f"`{inference['predictions']}`. It was trained on synthetic data only: no measure of accuracy."
            if inference
            else "",
            inference,
            out,
            SHOWN_CASES,
        ),
        *report_closing_lines(bundle, out, [train, evaluate], overrides, timings, inference),
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
