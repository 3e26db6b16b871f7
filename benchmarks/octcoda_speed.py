"""Training and inference speed of the OCT-CoDA fundus bundle, float32 against bfloat16, and whether its data
loading keeps up.

Everything is built from ``bundles/octcoda_fundus_classification``'s own config (``configs/train.json`` plus
``configs/cpu_scale.json`` unless ``--no_cpu_scale``; ``--quick`` adds ``demo.json``'s ``tiny`` settings and data) by
MONAI's ``ConfigParser`` (``benchmarks/dmg_stages.py``'s ``config``), once per ``--precision`` (the config's
``precision``), with ``bundle_root`` in a temporary folder and the bundle's synthetic MultiEYE set
(``demo.json``'s ``synthetic.maker`` with the config's ``synthetic`` arguments) written into one. The trainers are
the config's, run without their handlers: no validation, no learning-rate schedule, no ``PartsLoader``, so the
frozen teacher and the student keep their random initialisation (the timings do not depend on the weights; the
losses mean nothing). Each run of a trainer is one epoch (``--iterations N``: its first N batches).

1. Training images per second of two trainers: the student's ``train#trainer`` (``OCTCoDAIteration``: student on
   B fundus photos and the frozen teacher on their B label-paired OCT images, ``OCTCoDALoss``, backward, AdamW
   step; counted in fundus images) and the teacher's ``teacher#trainer`` (plain cross entropy on OCT images). Each
   runs on (a) its real ``DataLoader`` as configured (``train#dataloader``: the cached fundus preprocessing and
   ``RandLabelPairedOCTd`` drawing a cached OCT image per item; ``teacher#dataloader``; the config's
   ``num_workers``, ``--num_workers`` to change it) and (b) the same batches preloaded: the loader iterated once,
   its collated batches kept in a list, fed to the very same trainer (its ``data_loader`` swapped; batches still go
   to the device through its ``prepare_batch``, which augments them there, ``AugmentedBatch``, so both sources
   include the augmentation). After one warm-up epoch of each, all variants (both trainers, both precisions, both
   sources) are interleaved epoch by epoch, medians over ``--epochs``. "real / preloaded" is the ratio of the epoch
   (so iteration) times; within 10 % means data loading is not the bottleneck. "vs float32" is each rate against
   that of the first ``--precision`` (float32 by default). With ``--iterations`` and ``num_workers`` > 0 every
   short epoch leaves the workers' prefetched batches unused, so the real loader looks worse than over a whole
   epoch.
2. Inference images per second of the student alone (``@network``, eval mode, no gradient, fundus only, through
   the config's ``inferer``) at the configured image size, batch ``--batch_size`` (default the config's), under
   the autocast the bundle's ``Evaluator`` applies for each precision (``resolve_precision``; MONAI's CUDA AMP is
   the same ``torch.autocast``); inputs are the preloaded fundus batches' images (preprocessed), repeated
   to fill the batch. Precisions interleaved, one warm-up call, medians over ``--repeats`` calls.

``bfloat16`` falls back to float32 (with a warning) on a CPU without native bfloat16 or a GPU before Ampere; the
"autocast" column says what ran. Timings on a shared machine vary from run to run (the load average is printed);
the interleaved ratios are the steadier figures. ``--threads`` sets torch's CPU threads (default torch's own,
``--quick`` one, as in ``dmg_stages.py``); loader workers are separate processes.

    python benchmarks/octcoda_speed.py                  # CPU scale (DenseNet, 64 px, batch 16), 5 epochs
    python benchmarks/octcoda_speed.py --quick          # demo.json's tiny settings, 2 epochs: a smoke run
    python benchmarks/octcoda_speed.py --no_cpu_scale --iterations 3 --epochs 3    # ResNet-50, 224 px, batch 64
    python benchmarks/octcoda_speed.py --no_cpu_scale --batch_size 16 --iterations 2 --epochs 2   # same, batch 16
    python benchmarks/octcoda_speed.py --no_cpu_scale --device cuda                # the bundle's defaults on a GPU

Measured 2026-11-30 (``python benchmarks/octcoda_speed.py``, 51 s, Intel(R) Xeon(R) Processor with AMX and
avx512_bf16, 2 threads, load 0.6-1.2): with the augmentation on the batch (``AugmentedBatch``) the real loader is
within 10 % of preloaded batches at CPU scale (student 1.05 float32 / 1.03 bfloat16, teacher 0.93 / 0.99); with
MONAI's per-image augmentation in the loader it had been about 3 times (3.09 / 3.07, 2.78 / 2.63). bfloat16 trains
1.0-1.1x as fast as float32 there, and infers at 0.96x (3215 against 3359 images/s). The full-scale run
(``--no_cpu_scale``) does not finish in 10 minutes on such a CPU (ResNet-50 at 224 px trains about one image a
second); figures in the bundle's ``docs/README.md``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from dmg_stages import config, make_data, table, timed
from memory_estimate import cpu_name
from monai.bundle import ConfigParser

from medguide.engines import autocast, resolve_precision

TRAINERS = {"student (OCT-CoDA)": "train#trainer", "teacher (OCT, CE)": "teacher#trainer"}
SOURCES = ("real", "preloaded")


class Limited:
    """The first ``n`` batches of ``loader`` at every iteration (all of them for ``n=None``)."""

    def __init__(self, loader, n: int | None) -> None:
        self.loader, self.n = loader, n

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return len(self.loader) if self.n is None else min(self.n, len(self.loader))


def machine(device: torch.device) -> str:
    """The device in words, with ``cpu_name()`` (and torch's CPU threads) beside every figure."""
    gpu = f"{torch.cuda.get_device_name(device)}; host " if device.type == "cuda" else ""
    return f"{device}: {gpu}{cpu_name()}"


def measured_config(args: argparse.Namespace, root: str, precision: str) -> ConfigParser:
    """The config as measured: bundle_root in ``root``, the benchmark's data, one-epoch trainers without handlers."""
    overrides = {"bundle_root": root, "dataset_dir": args.data, "precision": precision}
    overrides["device"] = f"$torch.device({args.device!r})"
    if args.num_workers is not None:
        overrides["num_workers"] = args.num_workers
    if args.batch_size is not None:
        overrides["batch_size"] = args.batch_size
    parser = config(args, **overrides)
    for trainer in TRAINERS.values():
        parser[f"{trainer}#max_epochs"] = 1
        parser[f"{trainer}#train_handlers"] = []
    return parser


def training(args: argparse.Namespace, parsers: dict[str, ConfigParser]) -> tuple[list[str], dict]:
    """Section 1's rows, and the student's preloaded batches of the first precision (inputs for section 2)."""
    variants, first = {}, {}
    for precision, parser in parsers.items():
        label = parser.get_parsed_content("label_key")
        for stage, trainer_id in TRAINERS.items():
            trainer = parser.get_parsed_content(trainer_id)
            real = Limited(trainer.data_loader, args.iterations)
            batches = list(real)
            shape = f"{len(batches)} x {real.loader.batch_size} ({real.loader.num_workers} workers)"
            images = sum(len(batch[label]) for batch in batches)
            variants[stage, precision] = trainer, {"real": real, "preloaded": batches}, images, shape
            first.setdefault(stage, batches)
    times = {(key, source): [] for key in variants for source in SOURCES}
    for epoch in range(args.epochs + 1):  # epoch 0: warm-up
        for key, (trainer, loaders, _, _) in variants.items():
            for source in SOURCES if epoch % 2 else SOURCES[::-1]:
                trainer.data_loader = loaders[source]
                seconds = timed(trainer.state.device, trainer.run)
                if epoch:
                    times[key, source].append(seconds)
    rows, base = [], {}
    for (stage, precision), (trainer, _, images, shape) in variants.items():
        real, preloaded = (statistics.median(times[(stage, precision), source]) for source in SOURCES)
        rates = [images / real, images / preloaded]
        base.setdefault(stage, rates)
        dtype = resolve_precision(precision, trainer.state.device) or "none (float32)"
        ratio = real / preloaded
        rows.append(
            f"{stage} | {precision} | {dtype} | {shape} | {real:.3f} | {preloaded:.3f} | {rates[0]:.1f} | "
            f"{rates[1]:.1f} | {ratio:.3f} | {'yes' if ratio <= 1.1 else 'NO'} | "
            f"{rates[0] / base[stage][0]:.2f} | {rates[1] / base[stage][1]:.2f}"
        )
    return rows, first["student (OCT-CoDA)"]


def inference(args: argparse.Namespace, parser: ConfigParser, batches: list) -> list[str]:
    """Section 2's rows: the student alone, eval mode, no gradient, under each precision's autocast."""
    device = torch.device(args.device)
    network, inferer = parser.get_parsed_content("network").eval(), parser.get_parsed_content("inferer")
    images = torch.cat([batch[parser.get_parsed_content("image_key")] for batch in batches])
    images = images.as_tensor() if hasattr(images, "as_tensor") else images
    size = args.batch_size or parser.get_parsed_content("batch_size")
    x = images.repeat(-(-size // len(images)), *[1] * (images.ndim - 1))[:size].to(device)
    dtypes = {precision: resolve_precision(precision, device) for precision in args.precision}
    times = {precision: [] for precision in dtypes}
    with torch.no_grad():
        for _ in range(args.repeats + 1):
            for precision, dtype in dtypes.items():
                with autocast(dtype, device):
                    times[precision].append(timed(device, inferer, x, network))
    rows, base = [], None
    for precision, dtype in dtypes.items():
        rate = size / statistics.median(times[precision][1:])
        base = base or rate
        rows.append(f"{precision} | {dtype or 'none (float32)'} | {size} | {rate:.1f} | {rate / base:.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"], help="the config's precision(s)")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per variant (default 5, 2 with --quick)")
    parser.add_argument("--iterations", type=int, default=None, help="batches per epoch (default: the whole loader)")
    parser.add_argument(
        "--batch_size", type=int, default=None, help="training and inference batch (default: the config's)"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed inference calls per precision (10, 3 quick)")
    parser.add_argument("--num_workers", type=int, default=None, help="the loaders' workers (default: the config's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch's CPU threads (default torch's; 1 quick)")
    parser.add_argument("--quick", action="store_true", help="demo.json's tiny settings and data: a smoke run")
    parser.add_argument("--no_cpu_scale", action="store_true", help="the bundle's defaults, without cpu_scale.json")
    args = parser.parse_args()
    args.bundle = "octcoda_fundus_classification"
    args.epochs = args.epochs or (2 if args.quick else 5)
    args.repeats = args.repeats or (3 if args.quick else 10)
    torch.set_num_threads(args.threads or (1 if args.quick else torch.get_num_threads()))
    print(f"command: {shlex.join(['python', *sys.argv])}")
    load = [", ".join(f"{v:.2f}" for v in os.getloadavg())]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args.data = str(make_data(args, Path(tmp) / "data"))
        parsers = {p: measured_config(args, str(Path(tmp) / f"run_{p}"), p) for p in args.precision}
        torch.manual_seed(0)
        train_rows, batches = training(args, parsers)
        first = parsers[args.precision[0]]
        inference_rows = inference(args, first, batches)
    load.append(", ".join(f"{v:.2f}" for v in os.getloadavg()))
    where = machine(torch.device(args.device))
    scale = "demo.json's tiny (--quick)" if args.quick else "default" if args.no_cpu_scale else "cpu_scale"
    size = "x".join(map(str, first.get_parsed_content("image_size")))
    print(f"{where}; torch {torch.__version__}")
    print(f"load average (1, 5, 15 min) at the start {load[0]}, at the end {load[1]}")
    print(
        f"{args.bundle}, {scale} settings, encoder {first['encoder']} at {size} px, "
        f"{len(first.get_parsed_content('train#datalist'))} fundus training images, random weights"
    )
    base = args.precision[0]
    print(f"\n1. Training, images/s (student: fundus images), medians of {args.epochs} epochs; {where}\n")
    header = (
        "trainer | precision | autocast | batches x size | epoch s, real | epoch s, preloaded | images/s, real | "
        f"images/s, preloaded | real / preloaded | within 10 % | vs {base}, real | vs {base}, preloaded"
    )
    print(table(header, train_rows))
    print(f"\n2. Student inference, fundus only (eval, no gradient), images/s, medians of {args.repeats}; {where}\n")
    print(table(f"precision | autocast | batch | images/s | vs {base}", inference_rows))
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
