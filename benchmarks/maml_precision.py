"""bfloat16 vs float32 sliding-window inference of a trained MAML bundle: time and Dice on the synthetic cases.

Runs the bundle's validation inferer (sliding window, gaussian, 50 % overlap) over every validation case with all
modalities, once in float32 and once under the precision setting (CPU autocast in bfloat16), interleaved case by
case, and prints the median time per case, the speed ratio, and the mean Dice per region of each with its change.
On a CPU without native bfloat16 the setting falls back to float32 (with a warning) and the ratio is ~1.

    python benchmarks/maml_precision.py --bundle_root medguide-output/maml_brats_mri_segmentation
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from monai.metrics import DiceMetric
from monai.utils import CommonKeys

from medguide.engines import autocast, resolve_precision, trained_network

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="maml_brats_mri_segmentation")
    parser.add_argument("--bundle_root", required=True, help="a trained run (holds models/model.pt)")
    parser.add_argument("--precision", default="bfloat16")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no_cpu_scale", action="store_true", help="the run used the bundle defaults")
    args = parser.parse_args()
    configs = REPO / "bundles" / args.bundle / "configs"
    config_files = [str(configs / "train.json"), str(configs / "evaluate.json")]
    if not args.no_cpu_scale:
        config_files.append(str(configs / "cpu_scale.json"))
    cfg, network, device = trained_network(config_files, workflow_type="eval", bundle_root=args.bundle_root)
    inferer = cfg.get_parsed_content("validate#inferer")
    post = cfg.get_parsed_content("validate#postprocessing")
    regions = cfg.get_parsed_content("region_names")
    image_key, label_key, modality_key = (cfg.get_parsed_content(k) for k in ("image_key", "label_key", "modality_key"))
    dtype = resolve_precision(args.precision, device)
    variants = {"float32": None, args.precision: dtype}
    times = {k: [] for k in variants}
    dice = {k: DiceMetric(include_background=True, reduction="mean_batch") for k in variants}
    cases = list(cfg.get_parsed_content("validate#dataset"))
    with torch.no_grad():
        for item in cases:
            image = item[image_key].unsqueeze(0).to(device)
            names = list(item[modality_key])
            for name, variant in variants.items():
                with autocast(variant, device):
                    inferer(image, network, modalities=names)  # warm-up
                    spent = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        pred = inferer(image, network, modalities=names)
                        spent.append(time.perf_counter() - start)
                times[name].append(statistics.median(spent))
                # the post-processing reads the engine output's keys, which are MONAI's CommonKeys
                out = post({CommonKeys.PRED: pred[0].float(), CommonKeys.LABEL: item[label_key]})
                y_pred, y = out[CommonKeys.PRED].unsqueeze(0).cpu(), out[CommonKeys.LABEL].unsqueeze(0).cpu()
                dice[name](y_pred=y_pred, y=y)
    scores = {k: dict(zip(regions, m.aggregate().tolist())) for k, m in dice.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    low = args.precision
    result = {
        "cases": len(cases),
        "image_shape": list(cases[0][image_key].shape),
        "roi_size": cfg.get_parsed_content("patch_size"),
        "autocast_dtype": str(dtype),
        "median_seconds_per_case": {k: round(v, 4) for k, v in median.items()},
        "speedup": round(median["float32"] / median[low], 3),
        "dice": {k: {r: round(v, 4) for r, v in s.items()} for k, s in scores.items()},
        "dice_change": {r: round(scores[low][r] - scores["float32"][r], 4) for r in regions},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
