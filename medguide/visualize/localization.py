"""A localisation on one film: the film with its heat map overlaid and its boxes drawn.

:class:`medguide.engines.LocalizationWriter` writes one per image when asked (report-guided pneumonia localisation's
inference).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from medguide.data.chest_xray import boxes_to_grid
from medguide.visualize.concepts import display_image
from medguide.visualize.figures import save_figure

__all__ = ["localization_figure", "write_localization_report"]

SHOWN_CASES = 3
"""How many boxed test films the demo report shows, each under every model."""


def localization_figure(
    image,
    heat_map,
    boxes,
    path: str | os.PathLike,
    box_grid: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
    title: str = "",
    alpha: float = 0.4,
    dpi: int = 110,
) -> Path:
    """The image in grey, the heat map over it (``jet``, scaled to its own maximum) and a rectangle per box.

    Everything is drawn in the image's grid, in MONAI's layout (``[C, W, H]``, x along the first spatial axis; shown
    transposed, so it looks like the file, see :func:`display_image`): the heat map is upsampled bilinearly to it and
    the boxes are scaled to it from ``box_grid`` (:func:`medguide.data.boxes_to_grid`), e.g. from the original film's
    pixel grid to the resized film the network saw. A box ``[x0, y0, x1, y1]`` is in pixel corners, so it is drawn
    around the pixels ``image[:, x0:x1, y0:y1]``.

    Args:
        image: the image, as :func:`display_image` takes it (``[C, W, H]`` or ``[W, H]``).
        heat_map: ``[w, h]`` or ``[1, w, h]`` real values in the image's axis order (an attention map, a CAM).
        boxes: ``[K, 4]`` ``[x0, y0, x1, y1]`` (``K`` may be 0).
        path: the PNG to write (atomically; its folder is created).
        box_grid: ``(W, H)`` of the grid the boxes are in; ``None``: the image's.
        scores: a score per box, written at its corner; ``None``: none.
        title: the figure's title (e.g. the case and its probability).
        alpha: the heat map's opacity.
        dpi: resolution.

    Returns:
        ``path``.

    Raises:
        ValueError: a heat map not ``[w, h]`` or ``[1, w, h]``, boxes not ``[K, 4]``, or ``scores`` not one per box.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    shown = display_image(image)
    height, width = shown.shape[:2]
    heat = torch.as_tensor(np.asarray(heat_map.detach().cpu() if isinstance(heat_map, torch.Tensor) else heat_map))
    heat = heat.float().squeeze(0) if heat.ndim == 3 and heat.shape[0] == 1 else heat.float()
    if heat.ndim != 2:
        raise ValueError(f"localization_figure: the heat map must be [w, h] or [1, w, h], got {tuple(heat.shape)}.")
    heat = F.interpolate(heat[None, None], size=(width, height), mode="bilinear", align_corners=False)[0, 0]
    peak = heat.max()
    heat = (heat / peak if peak > 0 else torch.zeros_like(heat)).numpy().T
    corners = np.asarray(boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64)
    if corners.size and (corners.ndim != 2 or corners.shape[1] != 4):
        raise ValueError(f"localization_figure: boxes must be [K, 4], got shape {corners.shape}.")
    corners = boxes_to_grid(corners.reshape(-1, 4), box_grid or (width, height), (width, height))
    labels = [float(s) for s in scores] if scores is not None else None
    if labels is not None and len(labels) != len(corners):
        raise ValueError(f"localization_figure: {len(labels)} scores for {len(corners)} boxes.")

    fig, ax = plt.subplots(figsize=(5, 5 * height / width + 0.4))
    # extent in pixel corners: pixel (x, y) covers [x, x + 1) x [y, y + 1), as the boxes do
    extent = (0, width, height, 0)
    ax.imshow(shown, cmap="gray" if shown.ndim == 2 else None, vmin=0, vmax=1, extent=extent)
    ax.imshow(heat, cmap="jet", alpha=alpha, vmin=0, vmax=1, extent=extent)
    for k, (x0, y0, x1, y1) in enumerate(corners.tolist()):
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="lime", linewidth=1.5))
        if labels is not None:
            ax.text(x0, y0, f"{labels[k]:.3g}", color="lime", fontsize=7, va="bottom")
    ax.axis("off")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi, format="png")


def _test_figures(parser, rows: dict, seed_dir: Path, out: Path) -> list[tuple[str, list[Path]]]:
    """The first ``SHOWN_CASES`` boxed test films under each row's model (its opacity map and boxes), with the
    ground-truth boxes named in the caption."""
    from medguide.engines.dmg import evaluating, load_parts
    from medguide.transforms.boxes import map_to_boxes

    device = parser.get_parsed_content("device")
    for network, path in parser.get_parsed_content("evaluate#checkpoints"):
        load_parts(network, {"": seed_dir / path}, map_location=device)
    dataset = parser.get_parsed_content("evaluate#dataset")
    threshold = parser.get_parsed_content("map_threshold")
    image_key = parser.get_parsed_content("image_key")
    shown = []
    boxed = [i for i, item in enumerate(parser.get_parsed_content("evaluate#datalist")) if len(item.get("boxes", []))]
    with evaluating(rows.values()):
        for index in boxed[:SHOWN_CASES]:
            item = dataset[index]
            film, size = item[image_key], [int(s) for s in item[image_key].meta["spatial_shape"]]
            truth = [[round(float(v)) for v in box] for box in item["boxes"]]
            figures = []
            for row, network in rows.items():
                outputs = network(torch.as_tensor(film)[None].to(device), with_maps=True)
                heat_map = outputs.maps[0, 0].float().cpu()
                boxes, scores = map_to_boxes(heat_map, spatial_size=size, threshold=threshold)
                probability = float(torch.sigmoid(outputs.logits[0, 0]))
                name = f"test_{index}_{row.split()[0].lower()}.png"
                figures.append(
                    localization_figure(
                        film,
                        heat_map,
                        boxes,
                        out / name,
                        box_grid=size,
                        scores=scores.tolist(),
                        title=f"{row}: opacity {probability:.2f}",
                    )
                )
            shown.append((f"{item['case']}, true box(es) {truth} (x0, y0, x1, y1 in the film's pixels)", figures))
    return shown


def write_localization_report(
    bundle: str,
    configs: Path,
    overlays: list[Path],
    overrides: dict,
    out: Path,
    timings: dict[str, float],
    inference: dict | None = None,
) -> Path:
    """Write ``report.md`` into ``out`` (the box table of every row, a few test films under each model, the real
    films' overlays from inference, timings, commands) for the report-guided localisation bundle; returns its path.

    Args:
        bundle: the bundle's name.
        configs: its ``configs`` folder.
        overlays: overlay configs the run used (e.g. ``cpu_scale.json``).
        overrides: the config overrides the run used (``bundle_root``, ``output_dir``, ...).
        out: the folder the run wrote into; ``report.md`` and the figures go there.
        timings: seconds per step.
        inference: where the trained bundle also predicted real films: ``command``, ``predictions``, ``sample``.
    """
    from monai.bundle import ConfigWorkflow

    from medguide.cli.main import real_case_lines, report_closing_lines
    from medguide.data.files import atomic_write_text

    train = [configs / "train.json", *overlays]
    evaluate = [configs / "train.json", configs / "evaluate.json", *overlays]
    workflow = ConfigWorkflow(config_file=[str(f) for f in evaluate], workflow_type="train", **overrides)
    workflow.initialize()
    parser = workflow.parser
    seeds, seed_dirs = list(parser.get_parsed_content("seeds")), list(parser.get_parsed_content("seed_dirs"))
    rows = parser.get_parsed_content("evaluate#rows")
    table_name = parser.get_parsed_content("evaluate#name")
    table = (Path(parser.get_parsed_content("output_dir")) / f"{table_name}.md").read_text(encoding="utf-8")
    tests = parser.get_parsed_content("evaluate#datalist")
    shown = _test_figures(parser, rows, Path(seed_dirs[0]), out)
    synthetic = not parser.get("dataset_dir")
    lines = [
        f"# medguide demo: {bundle}",
        "",
        ("Synthetic data in the public layouts" if synthetic else "The data set given")
        + f", trained at CPU scale ({', '.join(p.name for p in overlays) or 'bundle defaults'}). The numbers show "
        "the pipeline works; they are not clinical results.",
        "",
        "## What was done",
        "",
        f"- **Films**: {len(parser.get_parsed_content('train#datalist'))} MIMIC-CXR-layout films with reports for "
        f"training, {len(parser.get_parsed_content('validate#datalist'))} for validation (checkpoint selection by "
        f"the mean attribute AUC), {len(tests)} ChestX-ray8-layout films for test "
        f"({sum(1 for t in tests if len(t.get('boxes', [])))} with pneumonia boxes; never used for selection).",
        f"- **Models**: {', '.join(rows)}; seeds {', '.join(map(str, seeds))}.",
        f"- **Machine**: {torch.get_num_threads()} PyTorch threads ({os.cpu_count()} logical cores).",
        "",
        "## ChestX-ray8 protocol on the test films",
        "",
        "A predicted box is correct at threshold T when its intersection with a true box covers more than T of the "
        "predicted box (IoBB); accuracy is the share of boxed films with a correct box, afp the mean number of "
        "predicted boxes matching no true box.",
        "",
        table,
        "## Test films",
        "",
        *[
            line
            for caption, figures in shown
            for line in (caption, "", *[f"![{p.stem}]({p.name})" for p in figures], "")
        ],
        *real_case_lines(
            "Inference on real films",
            f"The text-guided model localised `{inference['sample']}` from the films alone (boxes, attributes and "
            f"overlays in `{inference['predictions']}`). It was trained on synthetic films only: no measure of "
            "accuracy."
            if inference
            else "",
            inference,
            out,
        ),
        *report_closing_lines(bundle, out, [train, evaluate], overrides, timings, inference),
    ]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
