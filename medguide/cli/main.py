"""The ``medguide`` command: run a bundle's demo end to end, or write a synthetic data set.

medguide demo maml_brats_mri_segmentation      # synthetic data, CPU-scale training, evaluation, report
medguide synthetic brats /tmp/brats --num_cases 8
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("medguide.cli")

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"


def bundle_configs(name: str) -> Path:
    configs = BUNDLES / name / "configs"
    if not configs.is_dir():
        known = sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir()) if BUNDLES.is_dir() else []
        raise SystemExit(f"no bundle named {name!r} under {BUNDLES}; bundles here: {known}")
    return configs


def run_bundle(config_files: list[Path], **overrides) -> None:
    """``python -m monai.bundle run`` in this process, with the bundle's own configs."""
    from monai.bundle import run

    run(config_file=[str(f) for f in config_files], **overrides)


def demo(args: argparse.Namespace) -> Path:
    """Synthetic data -> CPU-scale training -> missing-modality evaluation -> figure and report."""
    from medguide.cli.report import write_segmentation_report

    configs = bundle_configs(args.bundle)
    out = Path(args.output_dir or Path("medguide-output") / args.bundle).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scale = [configs / "cpu_scale.json"] if (configs / "cpu_scale.json").is_file() else []
    overrides = {"bundle_root": str(out), "output_dir": str(out / "eval")}
    if args.max_epochs:
        overrides["max_epochs"] = args.max_epochs
    if args.dataset_dir:
        overrides["dataset_dir"] = args.dataset_dir
    timings = {}
    steps = [
        ("train", [configs / "train.json", *scale]),
        ("evaluate", [configs / "train.json", configs / "evaluate.json", *scale]),
    ]
    for step, files in steps:
        logger.info("medguide demo: %s (%s)", step, ", ".join(f.name for f in files))
        start = time.perf_counter()
        run_bundle(files, **overrides)
        timings[step] = time.perf_counter() - start
    report = write_segmentation_report(args.bundle, configs, scale, overrides, out, timings)
    print(f"medguide demo finished: report at {report}")
    return report


def synthetic(args: argparse.Namespace) -> None:
    from medguide.data import make_dataset

    kwargs = {"num_cases": args.num_cases, "seed": args.seed}
    if args.shape:
        kwargs["shape"] = tuple(args.shape)
    print(make_dataset(args.kind, args.out_dir, **kwargs))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="medguide", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="train and evaluate a bundle on synthetic data and write a report")
    p.add_argument("bundle", help="bundle name, e.g. maml_brats_mri_segmentation")
    p.add_argument("--output_dir", help="where models, tables and the report go (default medguide-output/<bundle>)")
    p.add_argument("--max_epochs", type=int, help="override the CPU-scale number of epochs")
    p.add_argument("--dataset_dir", help="use this data set instead of the synthetic one")
    p.set_defaults(func=demo)
    p = commands.add_parser("synthetic", help="write a synthetic data set in a public layout")
    p.add_argument("kind", choices=["brats", "liver"])
    p.add_argument("out_dir")
    p.add_argument("--num_cases", type=int, default=8)
    p.add_argument("--shape", type=int, nargs=3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=synthetic)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
