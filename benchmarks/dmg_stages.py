"""Cost of a deep multimodal guidance (DMG) bundle's training stages: latent caching, time, memory, inference rate.

For ``--bundle`` ``dmg_brain_tumor_mri_classification`` (the default: 3D MRI, histology bags) or
``dmg_skin_lesion_classification`` (2D clinical and dermoscopic photos, eight tasks), which share their stage ids
and keys. Everything is built from the bundle's own config (``configs/train.json`` plus ``configs/cpu_scale.json``
unless ``--no_cpu_scale``; ``--quick`` adds ``demo.json``'s ``tiny`` settings) by MONAI's ``ConfigParser``, with
``bundle_root`` in a temporary folder and the bundle's synthetic data (``demo.json``'s ``synthetic.maker`` with the
config's ``synthetic`` arguments) written into one. The trainers are the config's, run without their handlers: no
validation (so stage b's per-epoch validation on the cached validation latents, ``guidance#evaluator``, and stage
c's, ``validate#evaluator``, are not timed, nor is their cache of the validation cases built), no checkpoint, no
``PartsLoader``, so every network keeps its random initialisation (the timings and memory do not depend on the
weights; the losses mean nothing). Each run of a trainer is one training epoch.

1. Stages b and c with cached latents against re-encoding every iteration, as a naive implementation would; the
   two interleaved epoch by epoch, after one warm-up epoch each, medians of ``--epochs`` epochs:

   - b cached: the config's ``guidance#trainer`` on ``guidance#cache`` (``LatentCache``, both frozen encoders run
     once; that one pass, its ``latents()``, is the "encode once" column). b re-encoding: the same network,
     optimizer and loss on the cache's loader's cases in batches of the same size, shuffled, both encoders run on
     every batch (``cache_latents`` on that batch, with the encoders, ``TaskBatch`` of each, device and precision
     that are ``guidance#cache``'s arguments).
   - c cached: the config's ``train#trainer`` as the bundle runs it (``GuidedClassifier.latent_head()``, the head on
     the ``z_I`` of stage b's cache, ``labelled_dataset()``; ``E_I`` does not run). Its "encode once" is what stage
     c run alone adds: a new ``LatentCache`` with ``guidance#cache``'s arguments reading the file stage b wrote
     (after loading the encoders from stage a's checkpoints, here the random weights saved by this script, and
     checking they made it); run after stage b in one process it adds nothing. c re-encoding: the whole
     ``@network`` (``GuidedClassifier``: frozen ``E_I`` and ``G`` run on every batch) on the images of
     ``train#dataloader`` with ``inferior_batch``, the same head optimizer and loss. For the skin bundle that loader
     also applies the random flips and rotations, which the cached latents (encoded once, unaugmented) do not see.

   "whole stage" is the encode-once time plus the config's number of epochs of the cached variant, against that
   many re-encoding epochs.
2. Each stage alone (stage a: each of the config's classifiers): the time to build it (data, networks; for b the
   latent cache, encoded; for c the latents read from section 1's stage b file, as ``train_guided_head`` run alone
   reads them), its median epoch over ``--epochs`` after a warm-up epoch, and the process's peak resident set
   (VmHWM), whole and above its start. Each runs in a fresh process forked from a server that has only imported
   this script's modules (``multiprocessing``'s forkserver), not new interpreters, which would import torch and
   MONAI again for each stage (over 10 s of CPU each here); a new interpreter gave the same peaks (645.6 against 646
   MiB for b, 666.3 against 666.0 MiB for a: fusion, brain, CPU scale). ``--quick`` runs them in this process
   instead, one after the other, and prints no memory figures: the forkserver's imports would take longer than the
   tiny stages.
3. The ``GuidedClassifier``'s inference rate from the inferior input alone (eval mode, no gradient), float32 against
   bfloat16 autocast (``resolve_precision("bfloat16")``, which falls back to float32 on a CPU without native
   bfloat16), on the first batch of the cache's loader (the training cases, preprocessed, unaugmented), batch 1 and
   the config's batch size; volumes per second for a 3D input (brain), images per second for a 2D one (skin).

Timings on a machine that other processes share vary by a factor of 2-10 from run to run (the load average is
printed); the ratios of interleaved epochs are the steadier figures. ``--precision`` is the training stages'
precision (default ``auto``, the bundle's); inference always compares float32 with bfloat16. ``--threads`` sets
torch's CPU threads (default torch's own; ``--quick`` uses one, see below).

    python benchmarks/dmg_stages.py                                          # brain, CPU scale, 3 epochs
    python benchmarks/dmg_stages.py --bundle dmg_skin_lesion_classification  # skin, CPU scale, 3 epochs
    python benchmarks/dmg_stages.py --quick    # demo.json's tiny settings and data, 1 epoch: a smoke run

Measured 2026-11-30 on an Intel(R) Xeon(R) Processor with AMX (amx_bf16, avx512_bf16), torch 2.13.0+cpu, 2 cores
(torch's 2 threads), nearly idle (load average 1.1), default runs (40 s brain, 53 s skin). Cached against
re-encoding, per epoch: brain b 9x (0.010 s against 0.089 s), c 9x (0.011 against 0.099); skin b 8x (0.017 against
0.129), c 30x (0.025 against 0.751). At CPU scale the encoders are so small (24^3 volumes, 64^2 photos, 28-d
latents) that a re-encoding epoch costs little more than the engine's own work per iteration, which the cached epoch
pays too, so three of the four ratios fall just short of 10x. At the bundles' default sizes the encoders dominate:
one forward of the brain bundle's DenseNet121 3D on a batch of 4 four-sequence 96^3 volumes takes 1.1 s, of the skin
bundle's ResNet50 on 16 photos at 224^2 4.7 s (bfloat16 autocast, same machine), against about 2 ms per cached
iteration, so caching saves two to three orders of magnitude there. Peak resident memory 630-690 MiB per stage
(150-210 MiB above the process's start). Inference float32 against bfloat16: brain 620 against 400 volumes/s at
batch 1, 2,700 against 2,100 at 12; skin 760 against 400 images/s at batch 1, 3,700 against 3,700 at 16 (at these
sizes bfloat16 autocast costs more than it saves). On the same machine with other processes holding the cores (load
4-6), every figure was 2-10 times worse and the ratios swung (b 7-65, c 4-31), which is why ``--quick`` uses one
thread.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pydoc
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
from memory_estimate import cpu_name
from monai.bundle import ConfigParser
from monai.data import DataLoader
from monai.engines.utils import PrepareBatch
from torch import nn

from medguide.engines import LatentCache, TaskBatch, Trainer, autocast, cache_latents, resolve_precision

REPO = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(device: torch.device, fn: Callable, *args) -> float:
    sync(device)
    start = time.perf_counter()
    fn(*args)
    sync(device)
    return time.perf_counter() - start


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def demo(args: argparse.Namespace) -> dict:
    return json.loads((REPO / "bundles" / args.bundle / "configs" / "demo.json").read_text(encoding="utf-8"))


def config(args: argparse.Namespace, **overrides) -> ConfigParser:
    """The bundle's training config with the benchmark's settings over it (nothing parsed yet)."""
    configs = REPO / "bundles" / args.bundle / "configs"
    parser = ConfigParser()
    parser.read_config(
        [str(configs / name) for name in ["train.json"] + ([] if args.no_cpu_scale else ["cpu_scale.json"])]
    )
    settings = demo(args)
    for key, value in {**(settings["tiny"] if args.quick else {}), **overrides}.items():
        parser[key] = value
    if args.quick:
        parser["synthetic"] = settings["tiny_data"]
    return parser


def stage_ids(parser: ConfigParser) -> dict[str, str]:
    """{row name: trainer id} of every stage: a's classifiers as the config lists them, then b and c."""
    ids = {
        f"a: {name}": f"classifiers#{name}#trainer"
        for name, section in parser["classifiers"].items()
        if isinstance(section, dict) and "trainer" in section
    }
    return {**ids, "b: guidance": "guidance#trainer", "c: guided head": "train#trainer"}


def measured_config(args: argparse.Namespace, root: str) -> ConfigParser:
    """The config as measured: bundle_root in ``root``, the benchmark's data, trainers of one epoch, no handlers
    and no checkpoint to load (random weights)."""
    parser = config(args, bundle_root=root, dataset_dir=args.data, precision=args.precision)
    for trainer in stage_ids(parser).values():
        parser[f"{trainer}#max_epochs"] = 1
        parser[f"{trainer}#train_handlers"] = []
    parser["guidance#cache#checkpoints"] = {}
    return parser


def epoch_lengths(args: argparse.Namespace) -> dict[str, int]:
    """The config's number of epochs of each stage."""
    parser = config(args)
    return {name: parser.get_parsed_content(f"{trainer}#max_epochs") for name, trainer in stage_ids(parser).items()}


def make_data(args: argparse.Namespace, out_dir: Path) -> Path:
    """The bundle's synthetic data set, with the config's ``synthetic`` arguments, written into ``out_dir``."""
    maker = pydoc.locate(demo(args)["synthetic"]["maker"])
    return Path(maker(out_dir, **config(args).get_parsed_content("synthetic")))


def cache_arguments(parser: ConfigParser) -> dict:
    """The arguments of the config's ``guidance#cache`` (a :class:`LatentCache`), parsed: its encoders, loader,
    ``TaskBatch`` of each, device, precision, checkpoints and cache file."""
    return {
        key: parser.get_parsed_content(f"guidance#cache#{key}") for key in parser["guidance#cache"] if key[0] != "_"
    }


def like(trainer: Trainer, loader, network: nn.Module | None = None, prepare_batch=None) -> Trainer:
    """A one-epoch trainer with ``trainer``'s network (or ``network``), optimizer, loss and precision on ``loader``."""
    kwargs = {} if prepare_batch is None else {"prepare_batch": prepare_batch}
    return Trainer(
        trainer.state.device,
        max_epochs=1,
        train_data_loader=loader,
        network=trainer.network if network is None else network,
        optimizer=trainer.optimizer,
        loss_function=trainer.loss_function,
        precision=trainer.precision,
        grad_clip=trainer.grad_clip,
        **kwargs,
    )


class ReEncodingBatch(PrepareBatch):
    """``prepare_batch`` of a naive stage b: the batch's ``(z_I, z_S)`` from both frozen encoders, every iteration,
    as the config's ``guidance#cache`` encodes them (its arguments, :func:`cache_arguments`)."""

    def __init__(self, cache: dict) -> None:
        self.encoders = [cache["inferior"], cache["superior"]]
        self.batches = [cache["inferior_batch"], cache["superior_batch"]]
        self.device, self.precision = cache["device"], cache["precision"]

    def __call__(self, batchdata, device=None, non_blocking: bool = False, **kwargs):
        z_inferior, z_superior, _ = cache_latents(self.encoders, [batchdata], self.batches, self.device, self.precision)
        return z_inferior.to(device), z_superior.to(device)


def stage_b(parser: ConfigParser) -> tuple[float, Trainer, Trainer]:
    """Encode-once time, and stage b's trainer on the cache and a re-encoding one."""
    cache, arguments = parser.get_parsed_content("guidance#cache"), cache_arguments(parser)
    encode_once = timed(torch.device(arguments["device"]), cache.latents)  # its data sets encode on first read
    cached = parser.get_parsed_content("guidance#trainer")
    source = arguments["loader"]
    loader = DataLoader(
        source.dataset,
        batch_size=cached.data_loader.batch_size,
        shuffle=True,
        num_workers=source.num_workers,
        collate_fn=source.collate_fn,
    )
    return encode_once, cached, like(cached, loader, prepare_batch=ReEncodingBatch(arguments))


def save_stage_a(parser: ConfigParser) -> dict[str, str]:
    """The cache's encoders (random weights) saved as stage a's checkpoints under ``bundle_root``: ``{"inferior":
    path, "superior": path}``, the weights stage b's latent file was made with."""
    folder = Path(parser.get_parsed_content("bundle_root")) / "stage_a"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: str(folder / f"{name}.pt") for name in ("inferior", "superior")}
    for name, path in paths.items():
        torch.save(parser.get_parsed_content(f"guidance#cache#{name}").state_dict(), path)
    return paths


def stage_c(parser: ConfigParser, stage_a: dict[str, str]) -> tuple[float, Trainer, Trainer]:
    """Time to read stage b's latents, and stage c's trainer (on them) and the whole guided classifier on images."""
    cached = parser.get_parsed_content("train#trainer")
    # stage c run alone reads the latents stage b wrote, after loading stage a's encoders to check they made them
    reader = LatentCache(**{**cache_arguments(parser), "checkpoints": stage_a})
    read = timed(cached.state.device, reader.latents)
    images, batch = parser.get_parsed_content("train#dataloader"), parser.get_parsed_content("inferior_batch")
    return read, cached, like(cached, images, network=parser.get_parsed_content("network"), prepare_batch=batch)


def compare(args: argparse.Namespace, parser: ConfigParser, epochs: dict[str, int]) -> tuple[list[str], dict]:
    """Section 1's rows, and the overrides that let a stage c elsewhere read this run's stage b latents."""
    b = stage_b(parser)
    stage_a = save_stage_a(parser)
    variants = {"b: guidance": b, "c: guided head": stage_c(parser, stage_a)}
    rows = []
    for name, (encode_once, cached, re_encoding) in variants.items():
        device = cached.state.device
        times = {"cached": [], "re-encoding": []}
        for trainer in (cached, re_encoding):  # warm-up
            trainer.run()
        for _ in range(args.epochs):
            times["re-encoding"].append(timed(device, re_encoding.run))
            times["cached"].append(timed(device, cached.run))
        t_cached, t_encoding = (statistics.median(times[k]) for k in ("cached", "re-encoding"))
        n = epochs[name]
        whole_cached, whole_encoding = encode_once + n * t_cached, n * t_encoding
        rows.append(
            f"{name} | {len(cached.data_loader)} x {cached.data_loader.batch_size} | {t_cached:.4f} | "
            f"{t_encoding:.3f} | {t_encoding / t_cached:.0f} | {encode_once:.3f} | {n} | {whole_cached:.2f} | "
            f"{whole_encoding:.1f} | {whole_encoding / whole_cached:.1f}"
        )
    stage_b_files = {
        "guidance#cache#checkpoints": stage_a,
        "guidance#cache#cache_file": str(cache_arguments(parser)["cache_file"]),
    }
    return rows, stage_b_files


def inference(args: argparse.Namespace, parser: ConfigParser) -> tuple[list[str], str]:
    """Section 3's rows, and the unit: volumes or images, as the inferior input is 3D or 2D."""
    network, device = parser.get_parsed_content("network").eval(), parser.get_parsed_content("device")
    batch: TaskBatch = parser.get_parsed_content("inferior_batch")
    x, _ = batch.inputs(next(iter(parser.get_parsed_content("guidance#encode_loader"))), device)
    x = x.as_tensor() if hasattr(x, "as_tensor") else x
    variants = {"float32": None, "bfloat16": resolve_precision("bfloat16", device)}
    rows, rates = [], {}
    with torch.no_grad():
        for size in sorted({1, len(x)}):
            inputs = x[:size]
            times = {k: [] for k in variants}
            for _ in range(args.repeats + 1):
                for name, dtype in variants.items():
                    with autocast(dtype, device):
                        times[name].append(timed(device, network, inputs))
            for name, dtype in variants.items():
                rates[name] = size / statistics.median(times[name][1:])
                speedup = rates[name] / rates["float32"]
                rows.append(f"{name} | {dtype or 'none (float32)'} | {size} | {rates[name]:.1f} | {speedup:.2f}")
    return rows, "volumes" if x.ndim == 5 else "images"


def run_stage(args: argparse.Namespace, stage: str, overrides: dict) -> dict:
    """One stage: build time, median epoch, peak resident set (whole, and above the start)."""
    torch.set_num_threads(args.threads)
    start_kib = _status_kib("VmRSS")
    with tempfile.TemporaryDirectory() as root:
        parser = measured_config(args, root)
        for key, value in overrides.items():
            parser[key] = value
        torch.manual_seed(0)
        start = time.perf_counter()
        trainer = parser.get_parsed_content(stage_ids(parser)[stage])
        build = time.perf_counter() - start
        trainer.run()  # warm-up
        epoch = statistics.median(timed(trainer.state.device, trainer.run) for _ in range(args.epochs))
    peak_kib = _status_kib("VmHWM")
    return {"build": build, "epoch": epoch, "peak": peak_kib / 1024, "above_start": (peak_kib - start_kib) / 1024}


def in_fresh_process(args: argparse.Namespace, stage: str, overrides: dict) -> dict:
    """:func:`run_stage` in a new process forked from a server that has only imported this script's modules (not
    a new interpreter per stage: the imports take seconds of CPU each)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__"])
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(run_stage, args, stage, overrides).result()


def table(header: str, rows: list[str]) -> str:
    return "\n".join([header, "|".join("---" for _ in header.split("|")), *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", default="dmg_brain_tumor_mri_classification", help="a DMG bundle in bundles/")
    parser.add_argument("--epochs", type=int, default=None, help="timed epochs per variant (default 3, 1 with --quick)")
    parser.add_argument("--precision", default="auto", help="the training stages' precision (the config's setting)")
    parser.add_argument("--repeats", type=int, default=None, help="timed inference calls per variant and batch (10)")
    parser.add_argument("--quick", action="store_true", help="demo.json's tiny settings and data: a smoke run")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch's CPU threads (default torch's; 1 with --quick)"
    )
    parser.add_argument("--no_cpu_scale", action="store_true", help="the bundle's defaults, without cpu_scale.json")
    args = parser.parse_args()
    args.epochs = args.epochs or (1 if args.quick else 3)
    args.repeats = args.repeats or (3 if args.quick else 10)
    args.threads = args.threads or (1 if args.quick else torch.get_num_threads())
    torch.set_num_threads(args.threads)
    command = shlex.join(["python", *sys.argv])
    load = [", ".join(f"{v:.2f}" for v in os.getloadavg())]
    start = time.perf_counter()
    epochs = epoch_lengths(args)
    with tempfile.TemporaryDirectory() as tmp:
        args.data = str(make_data(args, Path(tmp) / "data"))
        config_parser = measured_config(args, str(Path(tmp) / "run"))
        device = config_parser.get_parsed_content("device")
        cases = len(config_parser.get_parsed_content("train#datalist"))
        torch.manual_seed(0)
        cached_rows, stage_b_files = compare(args, config_parser, epochs)
        inference_rows, unit = inference(args, config_parser)
        # --quick runs the stages here: a fresh process per stage costs more than the tiny stages themselves
        run = run_stage if args.quick else in_fresh_process
        stages = {
            name: run(args, name, stage_b_files if name == "c: guided head" else {})
            for name in stage_ids(config_parser)
        }
    load.append(", ".join(f"{v:.2f}" for v in os.getloadavg()))
    scale = "demo.json's tiny (--quick)" if args.quick else "default" if args.no_cpu_scale else "cpu_scale"
    inferior = config_parser.get_parsed_content("inferior_batch").image_key
    print(f"CPU: {cpu_name()}; device {device}; torch {torch.__version__}")
    print(f"load average (1, 5, 15 min) at the start {load[0]}, at the end {load[1]}")
    print(f"{args.bundle}, {scale} settings, {cases} training cases, precision {args.precision}, random weights")
    print(f"\n1. Epoch time (s), cached latents against re-encoding every iteration; medians of {args.epochs} epochs\n")
    header = (
        "stage | batches x size | epoch, cached | epoch, re-encoding | ratio | encode once | config epochs | "
        "whole stage, cached | whole stage, re-encoding | ratio"
    )
    print(table(header, cached_rows))
    where = "in this process (--quick; no memory figures)" if args.quick else "alone in a fresh process"
    print(f"\n2. Each stage {where}; time in s, memory in MiB (peak resident set, VmHWM)\n")
    header = "stage | build | epoch | config epochs | build + config epochs | peak RSS | above the start"
    rows = []
    for name, s in stages.items():
        memory = "- | -" if args.quick else f"{s['peak']:.0f} | {s['above_start']:.0f}"
        total = s["build"] + epochs[name] * s["epoch"]
        rows.append(f"{name} | {s['build']:.1f} | {s['epoch']:.3f} | {epochs[name]} | {total:.1f} | {memory}")
    print(table(header, rows))
    print(
        f"\n3. GuidedClassifier inference from the inferior input '{inferior}' alone (eval, no gradient); "
        f"{unit} per second, medians\n"
    )
    print(table(f"precision | autocast dtype | batch | {unit}/s | vs float32", inference_rows))
    print(f"\n{time.perf_counter() - start:.0f} s; command: {command}")


if __name__ == "__main__":
    main()
