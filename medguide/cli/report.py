"""The report ``medguide demo`` writes: what was done, the missing-modality table, a figure and how to reproduce it."""

from __future__ import annotations

import inspect
import json
import os
import platform
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from medguide.data import atomic_write_text, nonempty_subsets, resolve_maker
from medguide.engines import predict_subsets, trained_network
from medguide.engines.precision import autocast, resolve_precision
from medguide.metrics.conventions import dice
from medguide.transforms import LabelsToRegions
from medguide.visualize import label_overlay_figure

__all__ = ["run_facts", "what_was_done", "write_segmentation_report"]

PALETTE = ["#00000000", "#e41a1c", "#4daf4a", "#ffd92f", "#377eb8", "#984ea3"]
# the BraTS regions, spelled out once in the report; other bundles' regions are described by their labels
BRATS_REGIONS = {
    "TC": "tumour core = necrotic tumour core (NCR) + enhancing tumour (ET)",
    "WT": "whole tumour = NCR + peritumoural oedema (ED) + ET",
    "ET": "enhancing tumour",
}
# greyscale panels and the background of the label maps: FLAIR shows the whole tumour, T1ce the enhancing rim
BACKGROUNDS = ("flair", "t1ce")
MAX_SUBSETS = 15  # every subset of up to 4 modalities; more are a selection, the rest only in the table
COLUMNS = 6


def _backgrounds(names: Sequence[str]) -> list[str]:
    """Two modalities to show: FLAIR and T1ce where the case has them, else its first ones in order."""
    chosen = [m for m in BACKGROUNDS if m in names]
    return (chosen + [m for m in names if m not in chosen])[: min(2, len(names))]


def _shown_subsets(names: Sequence[str]) -> tuple[list[tuple[str, ...]], str]:
    """The subsets the figure shows (all of them up to :data:`MAX_SUBSETS`), and a sentence saying which."""
    subsets = nonempty_subsets(names)
    if len(subsets) <= MAX_SUBSETS:
        return subsets, f"all {len(subsets)} modality subsets"
    full = tuple(names)
    chosen = [s for s in subsets if len(s) in (1, len(names) - 1)] + [full]
    return chosen, (
        f"{len(chosen)} of the {len(subsets)} subsets (each modality alone, each leave-one-out and all); the table "
        "has every subset"
    )


def _rows(first: int, sizes: Sequence[int]) -> list[int]:
    """Panels per figure row: ``first`` panels, then one row per subset size (wrapped at :data:`COLUMNS`)."""
    rows = [first]
    for size in sorted(set(sizes)):
        count = sizes.count(size)
        rows += [min(COLUMNS, count - start) for start in range(0, count, COLUMNS)]
    return rows


def _source_slice(label: torch.Tensor, z: int) -> int:
    """Index in the loaded file of slice ``z`` of a cropped label (its ``original_affine`` is the file's)."""
    meta = getattr(label, "meta", {})
    if "original_affine" not in meta:
        return z
    voxel = np.linalg.inv(np.asarray(meta["original_affine"], float)) @ np.asarray(label.affine, float) @ [0, 0, z, 1]
    return round(float(voxel[2]))


def _figure(parser, network, device, classes: Mapping[str, str], out: Path) -> tuple[Path, str]:
    """First validation case: FLAIR and T1ce (or the first modalities), the reference and every subset's prediction,
    each with its Dice over the whole case. Returns the PNG and a caption."""
    inferer = parser.get_parsed_content("validate#inferer")
    prepare = parser.get_parsed_content("validate#prepare_batch")
    item = parser.get_parsed_content("validate#dataset")[0]
    names = list(item[prepare.modality_key])
    image = item[prepare.image_key]
    case = item.get("case") or image.meta.get("case", "?")
    region_names = list(parser.get_parsed_content("region_names"))
    to_regions = LabelsToRegions(parser.get_parsed_content("regions"))
    batch = {prepare.image_key: image.unsqueeze(0), prepare.modality_key: names}  # a batch of one, not collated
    label = item[prepare.label_key]
    reference = to_regions(label.as_tensor() if hasattr(label, "as_tensor") else label)[None]
    subsets, selection = _shown_subsets(names)
    preds, titles = [], []
    # the evaluator's precision, so each panel's Dice is the table's for this case
    with torch.no_grad(), autocast(_dtype(parser, device), device):
        for subset, logits in predict_subsets(network, inferer, batch, prepare, subsets, device):
            pred = logits.float().argmax(1).cpu()
            scores = dice(to_regions(pred)[None], reference)[0].tolist()
            per_region = ", ".join(f"{r} {d:.2f}" for r, d in zip(region_names, scores))
            name = "+".join(subset) if len(subset) < len(names) else f"all ({'+'.join(subset)})"
            preds.append(pred[0].numpy())
            titles.append(f"{name}\nDice {np.mean(scores):.2f} ({per_region})")
    label = label[0].cpu().numpy()
    # the slice that shows the most of the smallest region the case has (ET, tumour), where mistakes are seen
    sizes = reference[0].flatten(1).sum(1)
    smallest = int(torch.where(sizes > 0, sizes, float("inf")).argmin()) if sizes.any() else None
    shown_region = reference[0, smallest].numpy() if smallest is not None else label > 0
    z = int(np.argmax(shown_region.sum(axis=(0, 1))))
    source_z = _source_slice(item["label"], z)
    shown = _backgrounds(names)
    colors = {int(k): PALETTE[int(k) % len(PALETTE)] for k in classes if int(k) > 0}
    full = [i for i, s in enumerate(subsets) if len(s) == len(names)]
    rest = [i for i in range(len(subsets)) if i not in full]
    order = full + rest  # the prediction from every modality beside the reference, then by subset size
    figure = label_overlay_figure(
        images=[image[names.index(m), :, :, z].cpu().numpy() for m in shown],
        image_titles=shown,
        labels=[label[:, :, z]] + [preds[i][:, :, z] for i in order],
        label_titles=[f"reference (over {shown[0]})"] + [titles[i] for i in order],
        colors=colors,
        legend={k: classes[str(k)] for k in colors},
        path=out / "figure.png",
        title=f"validation case {case}, slice {source_z} along the third axis",
        rows=_rows(len(shown) + 1 + len(full), [len(subsets[i]) for i in rest]),
    )
    caption = (
        f"Validation case `{case}`, slice {source_z} along the third voxel axis of its files (the slice with the most "
        f"{region_names[smallest] if smallest is not None else 'label'} voxels). Grey: {' and '.join(shown)}; the "
        f"reference and the predictions are drawn over {shown[0]}. "
        f"Predictions from {selection}; over each, its Dice for this whole case (3D), the mean over regions and "
        "per region."
    )
    return figure, caption


def _first(pattern: str, texts: Sequence[object]) -> str | None:
    for text in texts:
        found = re.search(pattern, str(text))
        if found:
            return found.group(1)
    return None


def _dtype(parser, device: torch.device) -> torch.dtype | None:
    """The autocast dtype the bundle's engines run in (its ``precision`` on ``device``); ``None``: float32."""
    return resolve_precision(parser.get_parsed_content("precision"), device)


def _precision(parser, device: torch.device) -> str:
    """What the config's ``precision`` means on ``device``, as ``medguide.engines`` resolves it."""
    dtype = _dtype(parser, device)
    kind = "automatic mixed precision" if device.type == "cuda" else "autocast on the CPU"
    means = "float32" if dtype is None else f"{str(dtype).removeprefix('torch.')} {kind}"
    return f"`{parser.get_parsed_content('precision')}`: {means}"


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    try:
        model = _first(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        model = None
    return f"CPU {model or platform.processor() or platform.machine()}"


def _region_descriptions(names: Sequence[str], regions: Sequence[Sequence[int]], classes: Mapping[str, str]):
    """(name, description) per region: the BraTS regions spelled out, others by the labels they join."""
    described = []
    for name, values in zip(names, regions):
        if name in BRATS_REGIONS:
            described.append((name, BRATS_REGIONS[name]))
        else:
            labels = [classes.get(str(v), str(v)) for v in values]
            described.append((name, f"label{'s' if len(labels) > 1 else ''} {' + '.join(labels)}"))
    return described


def run_facts(parser, classes: Mapping[str, str]) -> dict:
    """What a bundle run did, read from its parsed configs and this process: the input of :func:`what_was_done`.

    Args:
        parser: the bundle's ``ConfigParser`` (train and evaluate configs, overlays, the run's overrides).
        classes: the label names (metadata ``network_data_format.outputs.pred.channel_def``).
    """
    dataset_dir = parser.get("dataset_dir")
    data_dir = str(parser.get_parsed_content("data_dir"))
    if dataset_dir:
        data = f"the folder `{dataset_dir}`"
    else:
        name = _first(r"dataset_dir_or_synthetic\(\s*@dataset_dir\s*,\s*['\"]?([\w.]+)", [parser.get("data_dir")])
        maker = resolve_maker(name) if name else None
        seed = {"seed": inspect.signature(maker).parameters["seed"].default} if maker else {}
        arguments = {**seed, **parser.get_parsed_content("synthetic")}
        listed = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
        data = f"synthetic, in the public layout: `{name}({listed})`, kept in `{data_dir}`"
    device = torch.device(parser.get_parsed_content("device"))
    names = list(parser.get_parsed_content("region_names"))
    return {
        "data": data,
        "train_cases": len(parser.get_parsed_content("train#datalist")),
        "validation_cases": len(parser.get_parsed_content("validate#datalist")),
        "split_seed": _first(r"seed\s*=\s*(\d+)", [parser.get("split")]),
        # a seed id (the configs' "seed"), else a literal in set_determinism(seed=N)
        "seed": str(parser["seed"])
        if "seed" in parser
        else _first(r"set_determinism\(\s*seed\s*=\s*(\d+)", parser.get("initialize", [])),
        "max_epochs": parser.get_parsed_content("train#trainer#max_epochs"),
        "iterations_per_epoch": parser.get_parsed_content("iterations_per_epoch"),
        "batch_size": parser.get_parsed_content("batch_size"),
        "patch_size": list(parser.get_parsed_content("patch_size")),
        "precision": _precision(parser, device),
        "threads": torch.get_num_threads(),
        "cores": os.cpu_count(),
        "machine": _machine(device),
        "regions": _region_descriptions(names, parser.get_parsed_content("regions"), classes),
    }


def what_was_done(facts: Mapping) -> list[str]:
    """The report's "What was done" section, as markdown lines, from :func:`run_facts`' dict.

    Example:
        >>> lines = what_was_done({"data": "the folder `/data/brats`", "train_cases": 8, "validation_cases": 2,
        ...     "split_seed": "0", "seed": "0", "max_epochs": 20, "iterations_per_epoch": 25, "batch_size": 2,
        ...     "patch_size": [48, 48, 48], "precision": "`float32`: float32", "threads": 2, "cores": 2,
        ...     "machine": "CPU Intel Xeon", "regions": [("ET", "enhancing tumour")]})
        >>> lines[4]
        '- **Training**: 20 epochs x 25 iterations = 500 iterations, batch 2, patches of 48 x 48 x 48 voxels.'
    """
    iterations = facts["max_epochs"] * facts["iterations_per_epoch"]
    regions = "; ".join(f"**{name}**, {description}" for name, description in facts["regions"])
    return [
        "## What was done",
        "",
        f"- **Data**: {facts['data']}.",
        f"- **Cases**: {facts['train_cases']} for training, {facts['validation_cases']} for validation "
        f"(`monai.data.partition_dataset`, seed {facts['split_seed']}). The checkpoint with the best validation "
        "Dice is kept, and the table and figure are on the same validation cases; no test split is used here.",
        f"- **Training**: {facts['max_epochs']} epoch{'s' * (facts['max_epochs'] != 1)} x "
        f"{facts['iterations_per_epoch']} iterations = {iterations} "
        f"iterations, batch {facts['batch_size']}, patches of {' x '.join(map(str, facts['patch_size']))} voxels.",
        f"- **Seed**: {facts['seed']} (`monai.utils.set_determinism`); one training run, so the spread in the table "
        "is over validation cases, not over seeds.",
        f"- **Precision**: {facts['precision']}.",
        f"- **Machine**: {facts['machine']}; {facts['threads']} PyTorch threads ({facts['cores']} logical cores).",
        f"- **Regions**: {regions}.",
        "",
    ]


def _inference_lines(inference: Mapping[str, str]) -> list[str]:
    predictions = Path(inference["predictions"])
    files = sorted(str(p.relative_to(predictions)) for p in predictions.rglob("*.nii*")) if predictions.is_dir() else []
    listed = ", ".join(f"`{f}`" for f in files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    return [
        "## Inference on a real case",
        "",
        f"The trained model segmented the real case in `{inference['sample']}` (used neither in training nor in "
        f"validation) and wrote its prediction, on the input's grid, to `{predictions}`"
        + (f": {listed}." if files else "."),
        "The model saw only synthetic data, so this shows the bundle reading and writing a real case; it is no "
        "measure of accuracy.",
        "",
        "```",
        inference["command"],
        "```",
        "",
    ]


def write_segmentation_report(
    bundle: str,
    configs: Path,
    scale: list[Path],
    overrides: dict,
    out: Path,
    timings: dict[str, float],
    inference: dict | None = None,
) -> Path:
    """Write ``report.md`` (what was done, table, figure, timings, the commands to reproduce it) into ``out``.

    Args:
        bundle: the bundle's name.
        configs: its ``configs`` folder.
        scale: overlay configs the run used (e.g. ``cpu_scale.json``).
        overrides: the config overrides the run used (``bundle_root``, ``output_dir``, ``max_epochs``, ...).
        out: the folder the run wrote into; ``report.md`` and ``figure.png`` go there.
        timings: seconds per step.
        inference: where the trained bundle also predicted a real case: ``command`` (the shell command),
            ``predictions`` (its output folder) and ``sample`` (its input folder).
    """
    from medguide.cli.main import report_closing_lines

    train, evaluate = [configs / "train.json", *scale], [configs / "train.json", configs / "evaluate.json", *scale]
    parser, network, device = trained_network(evaluate, workflow_type="eval", **overrides)
    classes = json.loads((configs / "metadata.json").read_text(encoding="utf-8"))["network_data_format"]["outputs"][
        "pred"
    ]
    classes = classes["channel_def"]
    facts = run_facts(parser, classes)
    figure, caption = _figure(parser, network, device, classes, out)
    table = (Path(overrides["output_dir"]) / "missing_modality_table.md").read_text(encoding="utf-8")
    synthetic = not parser.get("dataset_dir")
    lines = [
        f"# medguide demo: {bundle}",
        "",
        ("Synthetic data in the public layout" if synthetic else "The data set given")
        + f", trained at CPU scale ({', '.join(p.name for p in scale) or 'bundle defaults'}). The numbers show the "
        "pipeline works and how modalities complement each other on this data; they are not clinical results.",
        "",
        *what_was_done(facts),
        "## Missing-modality table (validation split)",
        "",
        f"Dice and HD95 (millimetres) per region for every non-empty subset of modalities, over all "
        f"{facts['validation_cases']} validation cases: each cell is the mean ± the standard deviation over the cases. "
        "A region empty in the reference or the prediction is scored by the BraTS convention stated under the table.",
        "",
        table,
        "## Figure",
        "",
        f"![first validation case]({figure.name})",
        "",
        caption,
        "",
        *(_inference_lines(inference) if inference else []),
        *report_closing_lines(bundle, out, [train, evaluate], overrides, timings, inference),
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
