"""The ``medguide`` command: a bundle's demo end to end, predictions with a trained bundle, synthetic data sets.

  medguide demo --list                                  # every bundle, what its demo does and how long it takes
  medguide demo maml_brats_mri_segmentation             # synthetic data, CPU-scale training, evaluation, report
  medguide demo all --output_dir medguide-output        # every bundle in turn, one folder each, then a summary
  medguide predict TRAINED_DIR INPUT_DIR OUTPUT_DIR     # a trained bundle on a folder of your own cases
  medguide synthetic brats /tmp/brats --num_cases 8     # the kinds are those the bundles declare
  medguide concepts embed concepts.csv concepts.npz     # a concept list -> its text embedding matrix T [K, d]

The bundles are the package ``medguide.bundles``: the checkout's ``bundles/`` in an editable install, a copy inside
the installed package otherwise. A bundle is a folder there with a ``configs/demo.json`` that declares its demo:
``description`` and ``expected_time`` (for ``--list``), ``synthetic`` (its data ``kind`` and the dotted path of the
``maker``), ``overlays`` (short-run configs), ``report`` (the dotted path of the report writer), ``sample`` (a real
case to predict) and ``outputs`` (the files each step leaves under the bundle root). Each command is a thin layer over
``python -m monai.bundle run`` and prints the MONAI command it runs.
"""

from __future__ import annotations

import argparse
import importlib.resources
import json
import logging
import os
import pydoc
import shlex
import sys
import time
from pathlib import Path

__all__ = ["main"]

logger = logging.getLogger("medguide.cli")

# written by training beside model.pt (medguide.engines.checkpoints); read here without importing torch
SETTINGS = Path("models") / "network.json"
DECLARATION = Path("configs") / "demo.json"
REQUIRED = ("description", "expected_time", "synthetic", "report")
# the demo's steps: (label printed and timed, key of the declared outputs)
TRAIN, EVALUATE, INFERENCE = ("train", "train"), ("evaluate", "evaluate"), ("inference on a real case", "inference")


def bundles_root() -> Path:
    """The bundles' folder: package ``medguide.bundles`` wherever it is installed (setup.cfg maps it to bundles/)."""
    return Path(importlib.resources.files("medguide.bundles"))


def _read_json(path: Path, what: str):
    """``path``'s JSON content; where it cannot be read, a one-line ``SystemExit`` naming the file (a ``what``)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise SystemExit(f"{path}: the {what} cannot be read ({err.strerror or err})") from None
    except ValueError as err:
        raise SystemExit(f"{path}: the {what} is not valid JSON ({err})") from None


def _read_declaration(path: Path) -> dict:
    spec = _read_json(path, "demo declaration")
    if not isinstance(spec, dict):
        raise SystemExit(f"{path}: the demo declaration must be a JSON object, got {json.dumps(spec)[:80]}")
    missing = [key for key in REQUIRED if key not in spec]
    if "synthetic" in spec:
        synthetic = spec["synthetic"]
        if not isinstance(synthetic, dict):
            raise SystemExit(
                f"{path}: the demo declaration's synthetic must be an object with kind and maker, "
                f"got {json.dumps(synthetic)[:80]}"
            )
        missing += [f"synthetic.{key}" for key in ("kind", "maker") if key not in synthetic]
    if missing:
        raise SystemExit(f"{path}: the demo declaration lacks {', '.join(missing)}")
    return spec


def bundle_names() -> list[str]:
    """Every bundle's name (a folder with a ``configs/demo.json``), sorted, without reading the declarations."""
    return [path.parents[1].name for path in sorted(bundles_root().glob(f"*/{DECLARATION}")) if path.is_file()]


def bundle_spec(name: str) -> dict:
    """One bundle's demo declaration (its ``configs/demo.json``), checked."""
    return _read_declaration(bundle_configs(name) / DECLARATION.name)


def bundle_specs() -> dict[str, dict]:
    """Every bundle's demo declaration, by bundle name in sorted order."""
    return {name: bundle_spec(name) for name in bundle_names()}


def _no_bundle(name: str) -> SystemExit:
    return SystemExit(f"no bundle named {name!r} under {bundles_root()}; bundles: {', '.join(bundle_names())}")


def bundle_configs(name: str) -> Path:
    configs = bundles_root() / name / "configs"
    if not (configs / DECLARATION.name).is_file():
        raise _no_bundle(name)
    return configs


def declared(name: str, path: str, what: str):
    """The callable a bundle's declaration names by dotted ``path`` (``what`` says which entry, for the error)."""
    found = pydoc.locate(path)
    if not callable(found):
        raise SystemExit(f"bundle {name}: its {what} {path!r} in {DECLARATION} is not an importable callable")
    return found


class _DeclaredKinds:
    """``synthetic``'s choices, read from the declarations only when that command is parsed or its help shown.

    So a bad declaration fails the commands that read it, not every command.
    """

    def __contains__(self, kind: object) -> bool:
        return kind in synthetic_makers()

    def __iter__(self):
        return iter(sorted(synthetic_makers()))


def synthetic_makers() -> dict[str, tuple[str, str]]:
    """Each declared synthetic data ``kind``: (the first bundle declaring it, the dotted path of its maker).

    Bundles may share a kind (one data set, two methods) as long as they name the same maker.
    """
    makers = {}
    for name, spec in bundle_specs().items():
        kind, maker = spec["synthetic"]["kind"], spec["synthetic"]["maker"]
        first, known = makers.setdefault(kind, (name, maker))
        if known != maker:
            raise SystemExit(f"bundles {first} and {name} declare synthetic kind {kind!r} with different makers")
    return makers


def sample_data() -> Path:
    """The real sample files (``MEDGUIDE_SAMPLE_DATA``, default ``../shared/data`` beside the bundles' checkout)."""
    return Path(os.environ.get("MEDGUIDE_SAMPLE_DATA", bundles_root().parents[1] / "shared" / "data"))


def command_line(config_files: list[Path], overrides: dict) -> str:
    """The ``python -m monai.bundle run`` command equivalent to an in-process run, quoted for a POSIX shell."""
    files = str(config_files[0]) if len(config_files) == 1 else json.dumps([str(f) for f in config_files])
    args = ["python", "-m", "monai.bundle", "run", "--config_file", files]
    for key, value in overrides.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return shlex.join(args)


def real_case_lines(title: str, sentence: str, inference: dict | None, out: Path, shown: int = 4) -> list[str]:
    """A demo report's section on the trained bundle's inference on real data: ``title``, ``sentence``, the command
    and up to ``shown`` of the figures it wrote (relative to ``out``); nothing without ``inference``."""
    if not inference:
        return []
    figures = sorted(Path(inference["predictions"]).rglob("*.png"))[:shown]
    return [
        f"## {title}",
        "",
        sentence,
        "",
        "```",
        inference["command"],
        "```",
        "",
        *[f"![{p.stem}]({os.path.relpath(p, out)})" for p in figures],
        "",
    ]


def report_closing_lines(
    bundle: str, out: Path, steps: list[list[Path]], overrides: dict, timings: dict, inference: dict | None
) -> list[str]:
    """The end every demo report shares: the timings, then the ``medguide demo`` command that redoes it all and the
    MONAI commands of its ``steps`` (config file lists), run with ``overrides``, plus the inference command."""
    demo = ["medguide", "demo", bundle, "--output_dir", str(out)]
    demo += [
        arg for key in ("max_epochs", "dataset_dir") if key in overrides for arg in (f"--{key}", str(overrides[key]))
    ]
    return [
        "## Timings (this machine)",
        "",
        *[f"- {step}: {seconds:.0f} s" for step, seconds in timings.items()],
        "",
        "## Reproduce",
        "",
        "Everything above, in one command:",
        "",
        "```",
        shlex.join(demo + ([] if inference else ["--no_sample"])),
        "```",
        "",
        "Step by step, the MONAI bundle commands it runs:",
        "",
        "```",
        *[command_line(files, overrides) for files in steps],
        *([inference["command"]] if inference else []),
        "```",
        "",
    ]


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


def _check_outputs(name: str, spec: dict, step: tuple[str, str], out: Path) -> str:
    """The files the declaration says ``step`` leaves under ``out``, as one line; an error where one is missing."""
    found = []
    for pattern in spec.get("outputs", {}).get(step[1], []):
        count = len(list(out.glob(pattern)))
        if not count:
            raise RuntimeError(f"medguide demo {name}: the {step[0]} step left no {pattern} in {out}")
        found.append(pattern if count == 1 else f"{pattern} ({count} files)")
    return ", ".join(found)


def run_demo(
    name: str,
    spec: dict,
    out: Path,
    *,
    max_epochs: int | None = None,
    dataset_dir: str | None = None,
    sample: bool = True,
) -> Path:
    """One bundle's demo into ``out``: train and evaluate with its overlays, predict its real sample case where it
    is here, then call its declared report writer. Returns the report's path."""
    configs = bundle_configs(name)
    overlays = [configs / overlay for overlay in spec.get("overlays", [])]
    if missing := [str(f) for f in overlays if not f.is_file()]:
        raise SystemExit(f"bundle {name}: overlays declared in {DECLARATION} are not there: {', '.join(missing)}")
    write_report = declared(name, spec["report"], "report writer")
    out.mkdir(parents=True, exist_ok=True)
    overrides = {"bundle_root": str(out), "output_dir": str(out / "eval")}
    if max_epochs:
        overrides["max_epochs"] = max_epochs
    if dataset_dir:
        overrides["dataset_dir"] = dataset_dir
    train, evaluate = configs / "train.json", configs / "evaluate.json"
    steps = [(TRAIN, [train, *overlays], overrides), (EVALUATE, [train, evaluate, *overlays], overrides)]
    real = _sample_input(spec, out) if sample else None
    inference = None
    if real is not None:
        predictions = out / "predictions"
        infer = {"bundle_root": str(out), "dataset_dir": str(real[0]), "output_dir": str(predictions), **real[1]}
        steps.append((INFERENCE, [configs / "inference.json"], infer))
        inference = {
            "command": command_line([configs / "inference.json"], infer),
            "predictions": str(predictions),
            "sample": str(real[0]),
        }
    timings = {}
    for step, files, values in steps:
        print(f"medguide demo {name}: {step[0]}\n  {command_line(files, values)}", flush=True)
        start = time.perf_counter()
        run_bundle(files, **values)
        timings[step[0]] = time.perf_counter() - start
        print(f"  wrote {_check_outputs(name, spec, step, out) or 'no declared outputs'} in {out}", flush=True)
    report = Path(write_report(name, configs, overlays, overrides, out, timings, inference=inference))
    if inference is not None:
        print(f"medguide demo {name}: predictions on the real case are in {inference['predictions']}")
    print(f"medguide demo {name} finished: report at {report}", flush=True)
    return report


def _duration(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s" if seconds >= 60 else f"{seconds:.0f} s"


def demo_all(specs: dict[str, dict], output_dir: Path, **options) -> list[tuple[str, float, Path | BaseException]]:
    """Every bundle's demo in turn, each into ``output_dir/<bundle>``; a failing bundle is logged and the next runs.

    Returns (bundle, seconds, report path or the error) per bundle, after printing them as a summary.
    """
    results = []
    for name, spec in specs.items():
        start = time.perf_counter()
        try:
            outcome = run_demo(name, spec, output_dir / name, **options)
        except (Exception, SystemExit) as err:
            logger.error("medguide demo all: %s failed", name, exc_info=True)
            outcome = err
        results.append((name, time.perf_counter() - start, outcome))
    width = max(map(len, specs), default=0)
    print(f"medguide demo all: {len(results)} bundles")
    for name, seconds, outcome in results:
        what = f"FAILED: {type(outcome).__name__}: {outcome}" if isinstance(outcome, BaseException) else outcome
        print(f"  {name:<{width}}  {_duration(seconds):>12}  {what}")
    return results


def demo(args: argparse.Namespace) -> Path | None:
    """Synthetic data -> CPU-scale training -> evaluation -> inference on a real case -> the declared report."""
    if args.list or not args.bundle:
        for name, spec in bundle_specs().items():
            print(f"{name}\n    {spec['description']}\n    expected time: {spec['expected_time']}")
        return None
    from medguide.data import plain_input_errors

    plain_input_errors()
    options = {"max_epochs": args.max_epochs, "dataset_dir": args.dataset_dir, "sample": not args.no_sample}
    if args.bundle != "all":
        out = Path(args.output_dir or Path("medguide-output") / args.bundle).resolve()
        return run_demo(args.bundle, bundle_spec(args.bundle), out, **options)
    if args.dataset_dir:
        raise SystemExit("--dataset_dir is one bundle's data set: give that bundle's name instead of `all`")
    results = demo_all(bundle_specs(), Path(args.output_dir or "medguide-output").resolve(), **options)
    if failed := [name for name, _, outcome in results if isinstance(outcome, BaseException)]:
        raise SystemExit(f"medguide demo all: {len(failed)} of {len(results)} bundles failed: {', '.join(failed)}")
    return None


def predict(args: argparse.Namespace) -> None:
    """A trained bundle folder on a folder of cases: ``inference.json`` with that folder as ``bundle_root``."""
    trained = Path(args.trained_dir).resolve()
    settings = trained / SETTINGS
    if not settings.is_file():
        raise SystemExit(
            f"'{trained}' holds no trained bundle (no {SETTINGS}): run `medguide demo BUNDLE --output_dir {trained}`, "
            f"or train a bundle with --bundle_root {trained}; bundles: {', '.join(bundle_names())}"
        )
    written = _read_json(settings, "network settings file")
    bundle = written.get("bundle") if isinstance(written, dict) else None
    if not isinstance(bundle, str) or not bundle:
        raise SystemExit(
            f'{settings}: the network settings file names no bundle (training writes {{"bundle": NAME, '
            f'"settings": {{...}}}}); train the bundle into {trained} again'
        )
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
    """The maker a bundle declares for ``args.kind``, called as ``maker(out_dir, num_cases=, seed=[, shape=])``."""
    maker = declared(*synthetic_makers()[args.kind], "synthetic data maker")
    kwargs = {"num_cases": args.num_cases, "seed": args.seed}
    if args.shape:
        kwargs["shape"] = tuple(args.shape)
    print(maker(args.out_dir, **kwargs))


def concepts_embed(args: argparse.Namespace) -> None:
    """A concept list (CSV ``concept,class``) -> its text embeddings, unit rows, in an ``.npz`` file
    (:mod:`medguide.data.concepts`)."""
    from medguide.data import embed_concepts, plain_input_errors, read_concepts, save_concepts, text_encoder

    plain_input_errors()
    if args.classes:
        classes = args.classes
    else:
        from medguide.data import MULTIEYE_CLASSES

        classes = list(MULTIEYE_CLASSES)
    encoder = text_encoder(args.encoder, args.dim)
    concepts = read_concepts(args.concept_list, classes)
    embeddings = embed_concepts(concepts, encoder)
    out = save_concepts(args.out, concepts, embeddings, encoder.description)
    counts = ", ".join(f"{name} {concepts.classes.count(name)}" for name in classes)
    print(f"medguide concepts embed: wrote {out}: {embeddings.shape[0]} concepts x {embeddings.shape[1]}")
    print(f"  per class: {counts}\n  encoder: {encoder.description}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="medguide", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "demo",
        help="train and evaluate a bundle on synthetic data, predict a real case, write a report",
        description="Bundles: " + ", ".join(bundle_names()) + ", or `all` for each in turn "
        "(`medguide demo --list` says what each takes).",
    )
    p.add_argument("bundle", nargs="?", help="bundle name, e.g. maml_brats_mri_segmentation, or all")
    p.add_argument("--list", action="store_true", help="list the bundles, what their demos do and how long they take")
    p.add_argument(
        "--output_dir",
        help="where models, tables and the report go (default medguide-output/<bundle>); with all, the folder "
        "that gets one subfolder per bundle (default medguide-output)",
    )
    p.add_argument("--max_epochs", type=int, help="override the CPU-scale number of epochs")
    p.add_argument("--dataset_dir", help="use this data set instead of the synthetic one (one bundle only)")
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
    p = commands.add_parser(
        "synthetic",
        help="write a synthetic data set in a public layout",
        description="The kinds are the synthetic data sets the bundles declare in their configs/demo.json.",
    )
    # set after add_argument, which would list the choices (reading every declaration) to check the metavar
    p.add_argument("kind").choices = _DeclaredKinds()
    p.add_argument("out_dir")
    p.add_argument("--num_cases", type=int, default=8)
    p.add_argument("--shape", type=int, nargs=3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=synthetic)
    p = commands.add_parser("concepts", help="make the concept embedding matrix a concept-bottleneck bundle reads")
    p = p.add_subparsers(dest="action", required=True).add_parser(
        "embed",
        help="embed each concept of a list into a unit row of T [K, d], written as an .npz file",
        description="Reads a CSV with columns concept,class (a finding in plain words, the class it belongs to) and "
        "writes its arrays concepts, classes, embeddings [K, d] and encoder to an .npz file. Encoders: tfidf (the "
        "offline default: TF-IDF of word and character n-grams of the list, truncated SVD; wording, not meaning) or "
        "hf:DIR (a local Hugging Face model folder, mean-pooled; needs the transformers package).",
    )
    p.add_argument("concept_list", help="the CSV, e.g. bundles/octcoda_fundus_classification/concepts/concepts.csv")
    p.add_argument("out", help="the matrix file to write (.npz)")
    p.add_argument("--encoder", help="tfidf (default) or hf:/path/to/local/model")
    p.add_argument("--dim", type=int, help="embedding width (tfidf: default 64, below the number of concepts)")
    p.add_argument("--classes", nargs="+", help="the class names a row may give (default: MultiEYE's 9 classes)")
    p.set_defaults(func=concepts_embed)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
