"""MAML against its baselines and ablations on a bundle's synthetic data: several seeds, a held-out test split.

Every model is trained with the bundle's ``train.json`` at CPU scale (``configs/cpu_scale.json``, for half its
epochs: 10 x 25 iterations; ``--max_epochs`` and ``--iterations_per_epoch`` set them) once per seed, on one seeded
synthetic set split into train, validation and test (``--split``, the same split for every model and seed).
Training keeps the checkpoint with the best validation mean Dice, as the bundle does; the single-modality route of
the MAML models is chosen on validation too; the test split is scored once, at the end, and chooses nothing. The
models (``--models``, ``../shared/METHODS.md`` section 1, issue 12):

- ``maml``: the bundle's default (MA fusion, ``modality_dropout`` 0.5, no mutual term);
- ``maml_official``: the official setting, no modality dropout (every iteration sees every sequence), scored with
  all sequences and along both single-modality routes like the others;
- ``maml_mutual``: with the mutual term, one-way (``fused_to_branches``: the fused prediction, detached, teaches
  each branch), ramped up over the first ``--mutual_ramp_up`` of training (the bundle's ``TrainingProgress``
  handler tells the loss how far it is), weight ``--mutual_weight`` (0.1);
- ``mean_mutual``: the same mutual term without MA (fused logits = the mean of the branches' logits);
- ``early_branch_width``: early fusion (one U-Net over the stacked sequences, missing ones as zeros, same modality
  dropout) at one branch's width, as the official code's baseline trainer;
- ``early_equal_params``: early fusion at the width whose parameter count is closest to MAML's
  (:func:`medguide.networks.equal_parameter_width`);
- ``unet_<m>``: one single-sequence U-Net per sequence at the branch width, trained alone.

Printed (and written to ``<work_dir>/results.md``), each table with the command that produced it: parameters and
FLOPs per patch of every model (:func:`medguide.networks.complexity`); test Dice per subset as mean ± sd over the
seeds (each seed's value is the mean over the test cases), the mean over all subsets per region, as
missing-modality papers report it; every sequence alone along the fusion head (``fused``) and along its own branch
(``branch``, each branch's own Dice) beside the U-Nets trained alone; the route each MAML model's validation split
prefers; training times. Runs already trained in ``work_dir`` are reused (their training time is kept beside them).

``--mode precision`` trains the bundle's MAML in bfloat16 autocast and in float32 with the same seeds and prints the
wall time of each training and its final test Dice (issue 12: bfloat16 stays the default of CPUs with AMX only if
its Dice is within the seed spread; on other CPUs ``auto`` is float32, see
:func:`medguide.engines.precision.resolve_precision`).

    python benchmarks/maml_synthetic.py --bundle maml_brats_mri_segmentation --work_dir /tmp/maml-bench
    python benchmarks/maml_synthetic.py --mode precision --work_dir /tmp/maml-precision
    python benchmarks/maml_synthetic.py --seeds 0 --max_epochs 1 --iterations_per_epoch 2 --num_cases 12 \\
        --split 4 4 4 --work_dir /tmp/maml-smoke                                                  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import pydoc
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from memory_estimate import cpu_name
from monai.bundle import ConfigParser, run

from medguide.data import atomic_write_text, nonempty_subsets
from medguide.engines import autocast, predict_subsets, resolve_precision, trained_network
from medguide.metrics.conventions import dice
from medguide.metrics.tables import markdown_table, mean_sd_cell, sample_sd
from medguide.networks import complexity, equal_parameter_width

REPO = Path(__file__).resolve().parents[1]
ROUTES = ("fused", "branch")
# half of cpu_scale.json's 20 x 25 iterations, so that ten models x three seeds fit 90 minutes on 2 cores (measured
# 2026-12-01 on the 64 x 76 x 64 volumes: 85 min 44 s on an idle 2-core Xeon with AMX, bfloat16; a CPU without AMX
# trains in float32 and takes longer)
ABLATION_SCHEDULE = {"max_epochs": 10, "val_interval": 2}

Scores = dict[tuple[str, str | None], list[float]]
"""Per ``(subset, route)`` the mean Dice of each region over the cases of a split; route ``None`` for networks
without routes (and for MAML's subsets of two or more sequences, which use the fusion head)."""


def config_files(bundle: str, *names: str) -> list[str]:
    configs = REPO / "bundles" / bundle / "configs"
    return [str(configs / n) for n in names] + [str(configs / "cpu_scale.json")]


def unet() -> dict:
    """A :class:`medguide.networks.ModalityUNet` over the config's modalities and ``base_width``: early fusion, or
    one sequence."""
    return {
        "_target_": "medguide.networks.ModalityUNet",
        "modalities": "@modalities",
        "out_channels": "@num_classes",
        "spatial_dims": 3,
        "base_width": "@base_width",
        "num_stages": "@num_stages",
    }


def parsed(bundle: str, overrides: dict) -> ConfigParser:
    """The bundle's training config at CPU scale with ``overrides``, parsed without running anything."""
    parser = ConfigParser()
    parser.read_config(config_files(bundle, "train.json"))
    parser.update(overrides)
    return parser


def ablation_models(bundle: str, args: argparse.Namespace, common: dict) -> dict[str, tuple[str, dict]]:
    """``{slug: (row name, overrides)}`` of every model of the ablation."""
    parser = parsed(bundle, common)
    names = list(parser["modalities"])
    maml = parser.get_parsed_content("network_def")
    width = equal_parameter_width(
        maml,
        names,
        parser.get_parsed_content("num_classes"),
        num_stages=parser.get_parsed_content("num_stages"),
    )
    mutual = {
        "mutual_weight": args.mutual_weight,
        "mutual_direction": args.mutual_direction,
        "mutual_ramp_up": args.mutual_ramp_up,
        "mutual_temperature": args.mutual_temperature,
    }
    models = {
        "maml": ("MAML", {}),
        "maml_official": ("MAML, no modality dropout (official)", {"modality_dropout": 0.0}),
        "maml_mutual": (f"MAML + mutual ({args.mutual_direction}, {args.mutual_weight:g})", mutual),
        "mean_mutual": ("mean fusion + mutual", {**mutual, "network_def#fusion": "mean"}),
        "early_branch_width": ("early fusion, branch width", {"network_def": unet()}),
        "early_equal_params": (
            f"early fusion, equal parameters (width {width})",
            {"network_def": unet(), "base_width": width},
        ),
        **{f"unet_{m}": (f"U-Net {m} alone", {"modalities": [m], "network_def": unet()}) for m in names},
    }
    return models


def train(bundle: str, root: Path, overrides: dict) -> float:
    """Train into ``root`` (or reuse what is there); the training's wall time in seconds."""
    timing = root / "train_seconds.json"
    if (root / "models" / "model.pt").is_file() and timing.is_file():
        print(f"reusing {root / 'models' / 'model.pt'}", flush=True)
        return json.loads(timing.read_text(encoding="utf-8"))["seconds"]
    start = time.perf_counter()
    run(config_file=config_files(bundle, "train.json"), bundle_root=str(root), **overrides)
    seconds = time.perf_counter() - start
    atomic_write_text(timing, json.dumps({"seconds": seconds}) + "\n")
    return seconds


def score(bundle: str, root: Path, overrides: dict, split: int, precision: str, one_sequence: bool = False) -> Scores:
    """Mean Dice per region of ``root``'s model on split ``split`` (1 validation, 2 test), for every subset of
    sequences the model takes (only the one-sequence subsets with ``one_sequence``), MAML's one-sequence subsets
    along both routes. Kept in ``root`` beside the model, and reused while the model is unchanged."""
    cache = root / f"scores_split{split}_{precision}{'_one' if one_sequence else ''}.json"
    model = root / "models" / "model.pt"
    if cache.is_file() and cache.stat().st_mtime > model.stat().st_mtime:
        return {(k, r): v for k, r, v in json.loads(cache.read_text(encoding="utf-8"))}
    values = {**overrides, "validate#datalist": f"$@split[{split}]"}
    parser, network, device = trained_network(
        config_files(bundle, "train.json", "evaluate.json"), workflow_type="eval", bundle_root=str(root), **values
    )
    inferer = parser.get_parsed_content("validate#inferer")
    prepare = parser.get_parsed_content("validate#prepare_batch")
    post = parser.get_parsed_content("validate#postprocessing")
    names = list(parser.get_parsed_content("modalities"))
    routes = ROUTES if hasattr(network, "single_modality") else (None,)
    per_case: dict[tuple[str, str | None], list[torch.Tensor]] = {}
    dtype = resolve_precision(precision, device)
    with torch.no_grad(), autocast(dtype, device):
        for item in parser.get_parsed_content("validate#dataset"):
            batch = {prepare.image_key: item[prepare.image_key][None], prepare.modality_key: names}
            label = item[prepare.label_key]
            for route in routes:
                subsets = [
                    s for s in nonempty_subsets(names) if len(s) == 1 or (route == routes[0] and not one_sequence)
                ]
                for subset, pred in predict_subsets(network, inferer, batch, prepare, subsets, device, route):
                    out = post({"pred": pred[0].float(), "label": label})
                    key = ("+".join(subset), route if len(subset) == 1 else None)
                    per_case.setdefault(key, []).append(dice(out["pred"][None].cpu(), out["label"][None].cpu())[0])
    scores = {key: torch.stack(v).double().mean(0).tolist() for key, v in per_case.items()}
    atomic_write_text(cache, json.dumps([[k, r, v] for (k, r), v in scores.items()]) + "\n")
    return scores


def cell(values: Sequence[float], digits: int = 3) -> str:
    """Mean ± sample sd over the seeds."""
    tensor = torch.tensor(values, dtype=torch.float64)
    return mean_sd_cell(tensor.mean().item(), sample_sd(tensor[:, None]).item(), digits)


def region_means(seeds: list[Scores], key: tuple[str, str | None]) -> list[float]:
    """Per seed, the mean over regions of ``key``'s Dice."""
    return [sum(s[key]) / len(s[key]) for s in seeds]


def subset_mean(seeds: list[Scores], subsets: list[str], route: str | None, region: int | None) -> list[float]:
    """Per seed, the mean over every subset (one-sequence ones along ``route``) of one region's Dice, or of the
    region mean (``region=None``)."""
    values = []
    for s in seeds:
        rows = [s.get((k, route), s.get((k, None))) for k in subsets]
        values.append(sum(r[region] if region is not None else sum(r) / len(r) for r in rows) / len(rows))
    return values


def results_text(
    names: list[str],
    regions: list[str],
    rows: dict[str, str],
    test: dict[str, list[Scores]],
    validation: dict[str, list[Scores]],
    costs: dict[str, tuple[int, int]],
    seconds: dict[str, list[float]],
    header: str,
) -> str:
    subsets = ["+".join(s) for s in nonempty_subsets(names)]
    maml = [slug for slug in rows if slug in test and (names[0], "fused") in test[slug][0]]
    fused = [slug for slug in rows if slug in test and not slug.startswith("unet_")]
    seeds = len(next(iter(test.values())))
    out = [header]

    out += [
        "## Size and cost",
        "",
        "Parameters and floating-point operations of one forward pass on one patch "
        "(every sequence present; convolutions and matrix products, `torch.utils.flop_counter`).",
        "",
    ]
    out += markdown_table(
        ["model", "parameters", "GFLOPs per patch"],
        [[rows[s], f"{costs[s][0]:,}", f"{costs[s][1] / 1e9:.2f}"] for s in rows if s in costs],
    )

    def with_route(slug: str, subset: str) -> tuple[str, str | None]:
        return (subset, "fused") if slug in maml and "+" not in subset else (subset, None)

    out += [
        "",
        f"## Test Dice, mean over {', '.join(regions)}, every subset (mean ± sd over {seeds} seed{'s' * (seeds > 1)})",
        "",
        "One-sequence rows of the MAML models use the fusion head (`fused` route); the next table has their "
        "branch route. The last rows are the mean over all subsets, with each route for MAML's one-sequence rows.",
        "",
    ]
    body = [[k] + [cell(region_means(test[s], with_route(s, k))) for s in fused] for k in subsets]
    for route in ROUTES:
        body.append(
            [f"**mean of {len(subsets)} subsets ({route} route)**"]
            + [cell(subset_mean(test[s], subsets, route if s in maml else None, None)) for s in fused]
        )
    out += markdown_table(["modalities"] + [rows[s] for s in fused], body)

    out += ["", f"## Test Dice per region: every sequence, and the mean of the {len(subsets)} subsets", ""]
    body = []
    for s in fused:
        full = [cell([seed[(subsets[-1], None)][r] for seed in test[s]]) for r in range(len(regions))]
        body.append([rows[s], "all sequences"] + full + [cell(region_means(test[s], (subsets[-1], None)))])
        for route in ROUTES if s in maml else (None,):
            means = [cell(subset_mean(test[s], subsets, route, r)) for r in range(len(regions))]
            label = f"mean of {len(subsets)} subsets" + (f" ({route} route)" if route else "")
            body.append([rows[s], label] + means + [cell(subset_mean(test[s], subsets, route, None))])
    out += markdown_table(["model", "rows"] + regions + ["mean"], body)

    out += [
        "",
        "## One sequence: the fusion head, each branch's own output, a U-Net trained alone (test Dice, "
        "mean over regions)",
        "",
        "`fused`: MAML given only that sequence, through the fusion head; `branch`: that sequence's own branch "
        "(the same output whether or not the others are present, as the branches share nothing before the "
        "fusion); beside it the fused prediction with every sequence.",
        "",
    ]
    body = []
    for s in maml:
        full = cell(region_means(test[s], (subsets[-1], None)))
        for route in ROUTES:
            body.append([rows[s], route] + [cell(region_means(test[s], (m, route))) for m in names] + [full])
    alone = [cell(region_means(test[f"unet_{m}"], (m, None))) if f"unet_{m}" in test else "-" for m in names]
    body.append(["U-Net trained alone", "-"] + alone + ["-"])
    out += markdown_table(["model", "route"] + names + ["every sequence, fused"], body)

    if maml:
        out += [
            "",
            "## The single-modality route the validation split chooses",
            "",
            "Mean validation Dice over the one-sequence rows and regions, mean ± sd over the seeds; the higher "
            "is the route to ship as the bundle's `single_modality` default.",
            "",
        ]
        body = []
        for s in maml:
            per_route = {
                r: [sum(region_means([v], (m, r))[0] for m in names) / len(names) for v in validation[s]]
                for r in ROUTES
            }
            totals = {r: sum(per_route[r]) for r in ROUTES}
            best = "either (the same output)" if len(set(totals.values())) == 1 else max(totals, key=totals.get)
            body.append([rows[s]] + [cell(per_route[r]) for r in ROUTES] + [best])
        out += markdown_table(["model", "fused", "branch", "chosen"], body)

    out += ["", "## Training time (s per run, mean ± sd over seeds)", ""]
    out += markdown_table(["model", "seconds"], [[rows[s], cell(seconds[s], 0)] for s in rows if s in seconds])
    return "\n".join(out) + "\n"


# volumes larger than the CPU-scale patch, so cropping, foreground sampling and the sliding window matter (the
# generators' check: the brain measures about 50-56 x 58-72 x 50-58 voxels at 64 x 76 x 64, the liver about
# 55 x 40-48 x 22-25 at 112 x 112 x 40, measured before z was set to 48)
BENCHMARK_SHAPES = {
    "maml_brats_mri_segmentation": [64, 76, 64],
    "maml_liver_tumor_ct_segmentation": [112, 112, 48],
}


def machine() -> str:
    return f"{cpu_name()}, torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="maml_brats_mri_segmentation")
    parser.add_argument("--mode", choices=["ablation", "precision"], default="ablation")
    parser.add_argument("--work_dir", default="medguide-output/maml-synthetic-benchmark")
    parser.add_argument("--models", nargs="+", help="model slugs to run (default: all of the mode)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds, the same per model")
    parser.add_argument("--num_cases", type=int, default=40, help="synthetic cases, split by --split")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        help="synthetic volume shape (default: larger than cpu_scale.json's 48^3 patch, as a real brain or liver is "
        "against the full-scale patch: BraTS 64 x 76 x 64, liver 112 x 112 x 48)",
    )
    parser.add_argument("--data_seed", type=int, default=0, help="seed of the synthetic set")
    parser.add_argument("--split", type=float, nargs=3, default=[20, 8, 12], help="train, validation, test ratios")
    parser.add_argument(
        "--max_epochs",
        type=int,
        help=f"default: {ABLATION_SCHEDULE['max_epochs']} (ablation), cpu_scale.json's (precision)",
    )
    parser.add_argument("--iterations_per_epoch", type=int, help="default: cpu_scale.json's")
    parser.add_argument(
        "--val_interval", type=int, help=f"default: {ABLATION_SCHEDULE['val_interval']} (ablation), cpu_scale.json's"
    )
    parser.add_argument("--num_workers", type=int, help="data loader workers (default: the bundle's)")
    parser.add_argument("--precision", default="auto", help="training and scoring precision (ablation mode)")
    parser.add_argument("--mutual_weight", type=float, default=0.1)
    parser.add_argument("--mutual_direction", default="fused_to_branches", choices=["fused_to_branches", "symmetric"])
    parser.add_argument("--mutual_ramp_up", type=float, default=0.25, help="share of training the weight ramps over")
    parser.add_argument("--mutual_temperature", type=float, default=1.0)
    args = parser.parse_args()
    started = time.perf_counter()
    command = "python " + shlex.join(["benchmarks/maml_synthetic.py", *sys.argv[1:]])
    work = Path(args.work_dir).resolve()
    configs = REPO / "bundles" / args.bundle / "configs"
    demo = json.loads((configs / "demo.json").read_text(encoding="utf-8"))
    data = work / "data"
    if not data.is_dir():
        maker = pydoc.locate(demo["synthetic"]["maker"])
        shape = args.shape or BENCHMARK_SHAPES.get(args.bundle) or parsed(args.bundle, {})["synthetic"].get("shape")
        maker(data, **{"shape": shape} if shape else {}, num_cases=args.num_cases, seed=args.data_seed)
    common: dict = {
        "dataset_dir": str(data),
        "split": f"$monai.data.partition_dataset(@datalist, ratios={list(args.split)}, shuffle=True, seed=0)",
    }
    if args.mode == "ablation":
        common.update(ABLATION_SCHEDULE)
    for key in ("max_epochs", "iterations_per_epoch", "val_interval", "num_workers"):
        if getattr(args, key) is not None:
            common[key] = getattr(args, key)

    if args.mode == "precision":
        rows = {f"maml_{p}": (f"MAML, {p} training", {"precision": p}) for p in ("bfloat16", "float32")}
    else:
        rows = ablation_models(args.bundle, args, {**common, "precision": args.precision})
        rows = {slug: (name, {"precision": args.precision, **values}) for slug, (name, values) in rows.items()}
    if args.models:
        unknown = set(args.models) - set(rows)
        if unknown:
            parser.error(f"unknown models {sorted(unknown)}; known: {sorted(rows)}")
        rows = {slug: rows[slug] for slug in args.models}

    seconds: dict[str, list[float]] = {}
    test: dict[str, list[Scores]] = {}
    validation: dict[str, list[Scores]] = {}
    costs: dict[str, tuple[int, int]] = {}
    for slug, (_, overrides) in rows.items():
        values = {**common, **overrides}
        config = parsed(args.bundle, values)
        network = config.get_parsed_content("network_def")
        channels = len(config.get_parsed_content("modalities"))
        costs[slug] = complexity(network, (channels, *config.get_parsed_content("patch_size")))
        for seed in args.seeds:
            root = work / slug / f"seed{seed}"
            seeded = {**values, "seed": seed}
            seconds.setdefault(slug, []).append(train(args.bundle, root, seeded))
            # the precision mode scores both in float32: only their training precision differs
            scoring = "float32" if args.mode == "precision" else args.precision
            if hasattr(network, "single_modality"):
                # validation chooses the single-modality route of the MAML models: their one-sequence rows only
                validation.setdefault(slug, []).append(score(args.bundle, root, seeded, 1, scoring, True))
            test.setdefault(slug, []).append(score(args.bundle, root, seeded, 2, scoring))

    train_parser = parsed(args.bundle, common)
    names = list(train_parser["modalities"])
    regions = list(train_parser["region_names"])
    header = (
        f"# {args.bundle}: synthetic data, {args.mode}\n\n"
        f"Command: `{command}`\n\n"
        f"Machine: {machine()}. Data: {args.num_cases} synthetic cases (seed {args.data_seed}), split "
        f"{' / '.join(f'{r:g}' for r in args.split)} (train / validation / test, seed 0); seeds {args.seeds}; "
        f"checkpoints and routes chosen on validation, every table on test.\n"
    )
    names_by_slug = {slug: name for slug, (name, _) in rows.items()}
    if args.mode == "precision":
        bf16 = resolve_precision("bfloat16", train_parser.get_parsed_content("device"))
        full = "+".join(names)
        header += (
            f"\n`bfloat16` trains under {bf16} autocast"
            if bf16
            else "\nThis CPU has no native bfloat16: `bfloat16` falls back to float32 and the two runs are alike"
        ) + "; both are scored in float32, so only the training precision differs.\n\n## bfloat16 vs float32\n\n"
        header += (
            "\n".join(
                markdown_table(
                    ["training", "wall time (s)", "test Dice, all sequences", "test Dice, mean of the subsets (fused)"],
                    [
                        [
                            names_by_slug[s],
                            cell(seconds[s], 0),
                            cell(region_means(test[s], (full, None))),
                            cell(subset_mean(test[s], ["+".join(k) for k in nonempty_subsets(names)], "fused", None)),
                        ]
                        for s in rows
                    ],
                )
            )
            + "\n"
        )
    text = results_text(names, regions, names_by_slug, test, validation, costs, seconds, header)
    text += f"\nWall time of the whole command: {time.perf_counter() - started:.0f} s.\n"
    atomic_write_text(work / f"results_{args.mode}.md", text)
    print(text)


if __name__ == "__main__":
    main()
