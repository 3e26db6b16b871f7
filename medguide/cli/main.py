"""The ``medguide`` command: a bundle's demo end to end, predictions with a trained bundle, synthetic data sets.

  medguide demo --list                                  # every bundle, what its demo does and how long it takes
  medguide demo maml_brats_mri_segmentation             # synthetic data, CPU-scale training, evaluation, report
  medguide predict TRAINED_DIR INPUT_DIR OUTPUT_DIR     # a trained bundle on a folder of your own cases
  medguide synthetic brats /tmp/brats --num_cases 8

Each command is a thin layer over ``python -m monai.bundle run`` and prints the MONAI command it runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("medguide.cli")

REPO = Path(__file__).resolve().parents[2]
BUNDLES = REPO / "bundles"
# written by training beside model.pt (medguide.engines.checkpoints); read here without importing torch
SETTINGS = Path("models") / "network.json"


def bundle_names() -> list[str]:
    return sorted(p.name for p in BUNDLES.iterdir() if (p / "configs").is_dir()) if BUNDLES.is_dir() else []


def bundle_configs(name: str) -> Path:
    configs = BUNDLES / name / "configs"
    if not configs.is_dir():
        raise SystemExit(f"no bundle named {name!r} under {BUNDLES}; bundles here: {bundle_names()}")
    return configs


def demo_spec(configs: Path) -> dict:
    """The bundle's ``configs/demo.json``: what its demo runs, how long it takes, its real sample case."""
    path = configs / "demo.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def sample_data() -> Path:
    """The real sample files (``MEDGUIDE_SAMPLE_DATA``, default ``../shared/data`` beside the checkout)."""
    return Path(os.environ.get("MEDGUIDE_SAMPLE_DATA", REPO.parent / "shared" / "data"))


def command_line(config_files: list[Path], overrides: dict) -> str:
    """The ``python -m monai.bundle run`` command equivalent to an in-process run, quoted for a POSIX shell."""
    files = str(config_files[0]) if len(config_files) == 1 else json.dumps([str(f) for f in config_files])
    args = ["python", "-m", "monai.bundle", "run", "--config_file", files]
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return shlex.join(args)


def run_bundle(config_files: list[Path], **overrides) -> None:
    """``python -m monai.bundle run`` in this process, with the bundle's own configs."""
    from monai.bundle import run

    run(config_file=[str(f) for f in config_files], **overrides)


def _sample_input(spec: dict, out: Path) -> tuple[Path, dict] | None:
    """(input folder, inference overrides) for the demo's real sample case, or ``None`` where it is not here."""
    sample = spec.get("sample")
    if not sample:
        return None
    source = sample_data() / sample["path"]
    if not source.exists():
        logger.info("medguide demo: no real sample at %s; skipping inference on it", source)
        return None
    if "layout" not in sample:
        return source, dict(sample.get("overrides", {}))
    # the reader wants <case>/<phase>: lay the sample out that way with a link
    folder = out / "sample_input"
    link = folder / sample["layout"]
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink():
        link.symlink_to(source.resolve(), target_is_directory=source.is_dir())
    return folder, dict(sample.get("overrides", {}))


def demo(args: argparse.Namespace) -> Path | None:
    """Synthetic data -> CPU-scale training -> evaluation -> inference on a real case -> figure and report."""
    if args.list or not args.bundle:
        for name in bundle_names():
            spec = demo_spec(bundle_configs(name))
            print(f"{name}\n    {spec.get('description', '')}\n    expected time: {spec.get('expected_time', '?')}")
        return None
    from medguide.cli.report import write_segmentation_report
    from medguide.data import plain_input_errors

    plain_input_errors()
    configs = bundle_configs(args.bundle)
    spec = demo_spec(configs)
    out = Path(args.output_dir or Path("medguide-output") / args.bundle).resolve()
    out.mkdir(parents=True, exist_ok=True)
    scale = [configs / name for name in spec.get("overlays", ["cpu_scale.json"]) if (configs / name).is_file()]
    overrides = {"bundle_root": str(out), "output_dir": str(out / "eval")}
    if args.max_epochs:
        overrides["max_epochs"] = args.max_epochs
    if args.dataset_dir:
        overrides["dataset_dir"] = args.dataset_dir
    timings = {}
    steps = [
        ("train", [configs / "train.json", *scale], overrides),
        ("evaluate", [configs / "train.json", configs / "evaluate.json", *scale], overrides),
    ]
    sample = None if args.no_sample else _sample_input(spec, out)
    inference = None
    if sample is not None:
        predictions = out / "predictions"
        infer = {"bundle_root": str(out), "dataset_dir": str(sample[0]), "output_dir": str(predictions), **sample[1]}
        steps.append(("inference on a real case", [configs / "inference.json"], infer))
        inference = {
            "command": command_line([configs / "inference.json"], infer),
            "predictions": str(predictions),
            "sample": str(sample[0]),
        }
    for step, files, values in steps:
        print(f"medguide demo: {step}\n  {command_line(files, values)}", flush=True)
        start = time.perf_counter()
        run_bundle(files, **values)
        timings[step] = time.perf_counter() - start
    report = write_segmentation_report(args.bundle, configs, scale, overrides, out, timings, inference=inference)
    if inference is not None:
        print(f"medguide demo: predictions on the real case are in {inference['predictions']}")
    print(f"medguide demo finished: report at {report}")
    return report


def predict(args: argparse.Namespace) -> None:
    """A trained bundle folder on a folder of cases: ``inference.json`` with that folder as ``bundle_root``."""
    trained = Path(args.trained_dir).resolve()
    settings = trained / SETTINGS
    if not settings.is_file():
        raise SystemExit(
            f"'{trained}' holds no trained bundle (no {SETTINGS}): run `medguide demo BUNDLE --output_dir {trained}`, "
            f"or train a bundle with --bundle_root {trained}; bundles: {', '.join(bundle_names())}"
        )
    bundle = json.loads(settings.read_text(encoding="utf-8"))["bundle"]
    configs = bundle_configs(bundle)
    values = {"bundle_root": str(trained), "dataset_dir": str(Path(args.input_dir).resolve())}
    values["output_dir"] = str(Path(args.output_dir).resolve())
    values.update(_overrides(args.overrides))
    print(f"medguide predict ({bundle}):\n  {command_line([configs / 'inference.json'], values)}", flush=True)
    from medguide.data import plain_input_errors

    plain_input_errors()
    run_bundle([configs / "inference.json"], **values)


def _overrides(extra: list[str]) -> dict:
    """``--key value`` pairs after the positional arguments, handed to the bundle as MONAI overrides."""
    if len(extra) % 2 or any(not key.startswith("--") for key in extra[::2]):
        raise SystemExit(f"expected --setting value pairs after the folders (MONAI overrides), got {extra}")
    values = {}
    for key, value in zip(extra[::2], extra[1::2], strict=True):
        try:
            values[key[2:]] = json.loads(value)
        except ValueError:
            values[key[2:]] = value
    return values


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
    p = commands.add_parser(
        "demo",
        help="train and evaluate a bundle on synthetic data, predict a real case, write a report",
        description="Bundles: " + ", ".join(bundle_names()) + " (`medguide demo --list` says what each takes).",
    )
    p.add_argument("bundle", nargs="?", help="bundle name, e.g. maml_brats_mri_segmentation")
    p.add_argument("--list", action="store_true", help="list the bundles, what their demos do and how long they take")
    p.add_argument("--output_dir", help="where models, tables and the report go (default medguide-output/<bundle>)")
    p.add_argument("--max_epochs", type=int, help="override the CPU-scale number of epochs")
    p.add_argument("--dataset_dir", help="use this data set instead of the synthetic one")
    p.add_argument("--no_sample", action="store_true", help="skip the inference on the real sample case")
    p.set_defaults(func=demo)
    p = commands.add_parser(
        "predict",
        help="predict a folder of your own cases with a trained bundle folder",
        description="Runs the trained bundle's inference.json with --bundle_root TRAINED_DIR --dataset_dir INPUT_DIR "
        "--output_dir OUTPUT_DIR and any further --setting value pairs, and prints that MONAI command first.",
    )
    p.add_argument("trained_dir", help="a folder a bundle was trained into (medguide demo's output, --bundle_root)")
    p.add_argument("input_dir", help="your cases, in the bundle's data layout (see its docs/README.md)")
    p.add_argument("output_dir", help="where the predictions go (outside input_dir)")
    p.add_argument(
        "overrides",
        nargs=argparse.REMAINDER,
        help="settings of the bundle's inference.json, as for python -m monai.bundle run: --skip_invalid True, "
        "--input_format dicom (liver), --dicom_series NAME, --patch_size '[160, 192, 160]', ...",
    )
    p.set_defaults(func=predict)
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
