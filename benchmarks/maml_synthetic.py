"""MAML on synthetic data against its baselines and ablations (METHODS.md), for every modality subset.

Trains, at the bundle's CPU scale (``configs/cpu_scale.json``), on the bundle's synthetic set:
- MAML as the bundle defines it (MA fusion, ``mutual_weight`` 0 as the official code, ``modality_dropout`` 0.5);
- the ablations: MA fusion with the mutual term (``--mutual_weight``), and the mutual term without MA (the fused
  logits are the mean of the branches' logits, ``fusion="mean"``);
- early fusion: one U-Net over the stacked modalities with the same total width (M x the branch width), missing
  modalities given as zeros, trained with the same modality dropout (``medguide.networks.ModalityUNet``);
- one single-modality U-Net per modality (the branch width), trained alone;
then scores on the validation split every model on every non-empty subset of modalities it can take, and, with
every modality present, each MAML branch's own deep-supervision head. Prints markdown tables and writes them to
``<work_dir>/results.md``. Runs already trained in ``work_dir`` are reused.

    python benchmarks/maml_synthetic.py --bundle maml_brats_mri_segmentation --work_dir /tmp/maml-bench
    python benchmarks/maml_synthetic.py --maml_root medguide-output/maml_brats_mri_segmentation   # reuse a demo run
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from monai.bundle import ConfigWorkflow, run
from monai.metrics import DiceMetric

from medguide.data import atomic_write_text, nonempty_subsets
from medguide.engines import predict_subsets, trained_network

REPO = Path(__file__).resolve().parents[1]


def files(bundle: str, *names: str) -> list[str]:
    configs = REPO / "bundles" / bundle / "configs"
    return [str(configs / n) for n in names] + [str(configs / "cpu_scale.json")]


def early_fusion(width_factor: int) -> dict:
    return {
        "_target_": "medguide.networks.ModalityUNet",
        "modalities": "@modalities",
        "out_channels": "@num_classes",
        "spatial_dims": 3,
        "base_width": f"$@base_width * {width_factor}",
        "num_stages": "@num_stages",
    }


def single_modality(modality: str) -> dict:
    return {
        "modalities": [modality],
        "network_def": {
            "_target_": "medguide.networks.ModalityUNet",
            "modalities": "@modalities",
            "out_channels": "@num_classes",
            "spatial_dims": 3,
            "base_width": "@base_width",
            "num_stages": "@num_stages",
        },
    }


def train(bundle: str, root: Path, **overrides) -> float:
    if (root / "models" / "model.pt").is_file():
        print(f"reusing {root / 'models' / 'model.pt'}")
        return float("nan")
    start = time.perf_counter()
    run(config_file=files(bundle, "train.json"), bundle_root=str(root), **overrides)
    return time.perf_counter() - start


def score(bundle: str, root: Path, **overrides) -> dict[str, dict[str, float]]:
    """Per subset (and per MAML branch head, key ``branch:<m>``), the mean Dice of each region."""
    parser, network, device = trained_network(
        files(bundle, "train.json", "evaluate.json"), workflow_type="eval", bundle_root=str(root), **overrides
    )
    inferer = parser.get_parsed_content("validate#inferer")
    prepare = parser.get_parsed_content("validate#prepare_batch")
    post = parser.get_parsed_content("validate#postprocessing")
    regions = parser.get_parsed_content("region_names")
    names = list(parser.get_parsed_content("modalities"))
    keys = ["+".join(s) for s in nonempty_subsets(names)]
    if hasattr(network, "branches"):
        keys += [f"branch:{m}" for m in names]
    metrics = {k: DiceMetric(include_background=True, reduction="mean_batch") for k in keys}

    def score_case(key: str, pred: torch.Tensor, label: torch.Tensor) -> None:
        out = post({"pred": pred[0].float(), "label": label})
        metrics[key](y_pred=out["pred"].unsqueeze(0).cpu(), y=out["label"].unsqueeze(0).cpu())

    with torch.no_grad():
        for item in parser.get_parsed_content("validate#dataset"):
            image = item[prepare.image_key].unsqueeze(0)
            batch = {prepare.image_key: image, prepare.modality_key: list(item[prepare.modality_key])}
            label = item[prepare.label_key]
            for subset, pred in predict_subsets(network, inferer, batch, prepare, device=device):
                score_case("+".join(subset), pred, label)
            for m, branch in enumerate(getattr(network, "branches", [])):
                score_case(f"branch:{names[m]}", inferer(image[:, m : m + 1].to(device), branch), label)
    return {k: dict(zip(regions, m.aggregate().tolist())) for k, m in metrics.items()}


def mean_table(results: dict[str, dict[str, dict[str, float]]], rows: list[str]) -> str:
    """Mean Dice over the regions: a row per subset, a column per model (``-`` where a model cannot take it)."""
    lines = ["| modalities | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for row in rows:
        cells = [f"{sum(r[row].values()) / len(r[row]):.3f}" if row in r else "-" for r in results.values()]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table(results: dict[str, dict[str, dict[str, float]]], rows: list[str], regions: list[str]) -> str:
    models = list(results)
    header = "| modalities | " + " | ".join(f"{m} {r}" for m in models for r in regions + ["mean"]) + " |"
    lines = [header, "|" + "---|" * (1 + len(models) * (len(regions) + 1))]
    for row in rows:
        cells = []
        for model in models:
            values = results[model].get(row)
            if values is None:
                cells += ["-"] * (len(regions) + 1)
            else:
                cells += [f"{values[r]:.3f}" for r in regions] + [f"{sum(values.values()) / len(values):.3f}"]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="maml_brats_mri_segmentation")
    parser.add_argument("--work_dir", default="medguide-output/maml-synthetic-benchmark")
    parser.add_argument("--maml_root", help="bundle root of an already trained MAML run (e.g. the demo's)")
    parser.add_argument("--mutual_weight", type=float, default=1.0, help="weight of the mutual term in the ablations")
    args = parser.parse_args()
    work = Path(args.work_dir).resolve()
    maml_root = Path(args.maml_root).resolve() if args.maml_root else work / "maml"
    names = list(
        ConfigWorkflow(config_file=files(args.bundle, "train.json"), workflow_type="train").parser["modalities"]
    )
    mutual = {"mutual_weight": args.mutual_weight}
    runs = {
        "MAML": (maml_root, {}),
        "MAML + mutual": (work / "maml_mutual", mutual),
        "mean fusion + mutual": (work / "mean_mutual", {**mutual, "network_def#fusion": "mean"}),
        "early fusion": (work / "early_fusion", {"network_def": early_fusion(len(names))}),
        **{f"U-Net {m}": (work / f"unet_{m}", single_modality(m)) for m in names},
    }
    seconds, results = {}, {}
    for name, (root, overrides) in runs.items():
        seconds[name] = train(args.bundle, root, **overrides)
        results[name] = score(args.bundle, root, **overrides)
    regions = list(next(iter(results["MAML"].values())))
    subsets = ["+".join(s) for s in nonempty_subsets(names)]
    fused = {k: v for k, v in results.items() if not k.startswith("U-Net")}
    single = {
        "MAML, only this modality": {m: results["MAML"][m] for m in names},
        "MAML branch head, all present": {m: results["MAML"][f"branch:{m}"] for m in names},
        "U-Net trained alone": {m: results[f"U-Net {m}"][m] for m in names},
    }
    text = (
        f"# {args.bundle}: synthetic validation split, Dice (CPU scale)\n\n"
        f"## Mean Dice over {', '.join(regions)} on every subset (mutual weight {args.mutual_weight:g})\n\n"
        + mean_table(fused, subsets)
        + "\n## Per region, every modality present\n\n"
        + table(fused, subsets[-1:], regions)
        + "\n## Single modality: MAML with one input, MAML's branch head, a U-Net trained alone\n\n"
        + table(single, names, regions)
        + "\nTraining time (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
        + "\n"
    )
    atomic_write_text(work / "results.md", text)
    print(text)


if __name__ == "__main__":
    main()
