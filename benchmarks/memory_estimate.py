"""Calibration of :func:`medguide.engines.estimate_peak_memory` against the memory real steps take.

For each setting (network, patch, batch, probe size, precision) two fresh processes run: one computes the estimate
as :class:`medguide.engines.MemoryCheck` does before training (one probe step at the probe size, scaled to the
patch and batch) without safety factor and margin; the other runs the real thing and measures its peak. Training is
three iterations as medguide's ``Trainer`` runs them (zeroed gradients, forward under the precision's autocast,
``MAMLLoss``, backward, gradient clipping, SGD with Nesterov momentum), on random inputs and labels made inside
the measured span; inference is two forwards in eval mode under ``torch.no_grad()``. The peak is the process's
peak resident set (``ru_maxrss``) minus its resident set just before, the network and optimizer already built;
the later iterations matter, as the heap keeps growing after the first one (by about a fifth over three at 64^3).

``raw`` is the scaled probe; the estimate MemoryCheck compares is ``SAFETY * raw + MARGIN``
(``medguide.engines.memory``). The two constants are the smallest round values for which the estimate is at least
the measured peak in every row: ``SAFETY`` for what the probe leaves out and that grows with the patch (loss,
optimizer step, heap growth), ``MARGIN`` for what does not (first use of those operators, noise of the resident
set figures). The official recipe (128^3, batch 2, 6 stages) is estimated only: a step of it needs about as much
memory as the machines the check is for have, and minutes of two cores.

Results (``python benchmarks/memory_estimate.py``, 194 s) on an ``Intel(R) Xeon(R) Processor`` with amx_bf16 and
avx512_bf16 (AMX: Sapphire Rapids or later), 2 threads, torch 2.13.0+cpu, SAFETY 1.3, MARGIN 0.25 GiB; 4 modalities and
4 classes, networks tiny (2 modalities, base width 4, 3 stages), cpu_scale (8, 4 stages), 5- and 6-stage (16);
memory in GiB, run-to-run spread of the figures about 10 %::

    network   | mode  | precision | patch | batch | probe | scale | raw   | estimate | measured | estimate/measured
    tiny      | train | float32   | 32^3  | 2     | 16^3  | 16    | 0.52  | 0.93     | 0.12     | 7.99
    cpu_scale | train | float32   | 48^3  | 2     | 64^3  | 1     | 0.80  | 1.29     | 0.90     | 1.44
    cpu_scale | train | bfloat16  | 48^3  | 2     | 64^3  | 1     | 0.50  | 0.90     | 0.64     | 1.42
    cpu_scale | infer | bfloat16  | 48^3  | 1     | 64^3  | 1     | 0.07  | 0.33     | 0.06     | 5.29
    5-stage   | train | float32   | 64^3  | 1     | 64^3  | 1     | 1.78  | 2.56     | 2.32     | 1.10
    5-stage   | train | float32   | 64^3  | 2     | 32^3  | 16    | 7.21  | 9.63     | 3.32     | 2.90
    5-stage   | train | bfloat16  | 64^3  | 1     | 32^3  | 8     | 1.29  | 1.93     | 1.29     | 1.50
    6-stage   | train | float32   | 96^3  | 1     | 64^3  | 3.375 | 6.19  | 8.30     | 6.20     | 1.34
    6-stage   | infer | float32   | 96^3  | 1     | 64^3  | 3.375 | 0.89  | 1.41     | 0.89     | 1.59
    6-stage   | train | float32   | 128^3 | 2     | 64^3  | 16    | 26.40 | 34.57    | -        | -

The estimate exceeds the measured peak by 10-50 % for training with a probe of the patch's size or a few times
smaller; more for inference (whose small figures the margin dominates) and for probes much smaller than the patch,
whose fixed costs are scaled with their activations (use probes of 64^3 or more). The 128^3 figure is likely high
by about a third: extrapolating the measured 6-stage steps (about 5.7 KiB per voxel and sample, 64^3-96^3) gives
about 24 GiB for the first step and some more after it, as the issue's run killed at 24 GB suggests.

    python benchmarks/memory_estimate.py            # the table above, about 4 minutes on 2 cores
    python benchmarks/memory_estimate.py --quick    # the small settings only
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from medguide.engines import autocast, estimate_peak_memory
from medguide.engines.memory import MARGIN, SAFETY
from medguide.losses import MAMLLoss
from medguide.networks import MAMLNet

MODALITIES = ("t1", "t1ce", "t2", "flair")
GIB = 2**30

# name: (modalities, base_width, num_stages)
NETWORKS = {"tiny": (2, 4, 3), "cpu_scale": (4, 8, 4), "5-stage": (4, 16, 5), "6-stage": (4, 16, 6)}

# (network, mode, precision, patch, batch, probe); the first QUICK rows take seconds
ROWS = [
    ("tiny", "train", "float32", 32, 2, 16),
    ("cpu_scale", "train", "float32", 48, 2, 64),
    ("cpu_scale", "train", "bfloat16", 48, 2, 64),
    ("cpu_scale", "infer", "bfloat16", 48, 1, 64),
    ("5-stage", "train", "float32", 64, 1, 64),
    ("5-stage", "train", "float32", 64, 2, 32),
    ("5-stage", "train", "bfloat16", 64, 1, 32),
    ("6-stage", "train", "float32", 96, 1, 64),
    ("6-stage", "infer", "float32", 96, 1, 64),
]
QUICK = 4
OFFICIAL = ("6-stage", "train", "float32", 128, 2, 64)


def cpu_name() -> str:
    """The CPU's model name and whether it has native bfloat16 (AMX, AVX512-BF16)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags] or ["no native bfloat16"]
    return f"{model} ({', '.join(native)}), {torch.get_num_threads()} threads"


def build(row: tuple) -> tuple[MAMLNet, list[str], torch.dtype | None]:
    network, _, precision, *_ = row
    count, base_width, num_stages = NETWORKS[network]
    torch.manual_seed(0)
    modalities = list(MODALITIES[:count])
    net = MAMLNet(modalities, out_channels=4, spatial_dims=3, base_width=base_width, num_stages=num_stages)
    return net, modalities, None if precision == "float32" else getattr(torch, precision)


def estimate(row: tuple) -> int:
    """The raw estimate in bytes (no safety factor, no margin), as MemoryCheck computes it."""
    _, mode, _, patch, batch, probe = row
    net, modalities, dtype = build(row)
    return estimate_peak_memory(
        net,
        [patch] * 3,
        batch,
        len(modalities),
        [probe] * 3,
        {"modalities": modalities},
        training=mode == "train",
        dtype=dtype,
        safety=1.0,
        margin=0,
    )


def _rss() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


def measure(row: tuple) -> int:
    """Peak bytes above the resident set before, of three training iterations or two inference forwards."""
    _, mode, _, patch, batch, _ = row
    net, modalities, dtype = build(row)
    shape = (batch, len(modalities), *[patch] * 3)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.99, nesterov=True, weight_decay=3e-5)
    loss_function = MAMLLoss()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    before = _rss()
    if mode == "train":
        net.train()
        for _ in range(3):
            x, y = torch.randn(shape), torch.randint(0, 4, (batch, 1, *shape[2:])).float()
            optimizer.zero_grad(set_to_none=False)
            with autocast(dtype, "cpu"):
                output = net(x)
            loss_function(output, y).backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 12.0)
            optimizer.step()
            del x, y, output
    else:
        net.eval()
        with torch.no_grad(), autocast(dtype, "cpu"):
            for _ in range(2):
                net(torch.randn(shape))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before


def child(kind: str, row: tuple) -> int:
    cmd = [sys.executable, __file__, f"--_{kind}", json.dumps(row)]
    return int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small settings only")
    parser.add_argument("--_estimate", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_measure", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._estimate or args._measure:
        print((estimate if args._estimate else measure)(tuple(json.loads(args._estimate or args._measure))))
        return
    start = time.perf_counter()
    print(f"CPU: {cpu_name()}; torch {torch.__version__}; SAFETY {SAFETY}, MARGIN {MARGIN / GIB:.2f} GiB")
    print("raw: the scaled probe; estimate: SAFETY * raw + MARGIN, as MemoryCheck compares it; memory in GiB\n")
    header = (
        "network | mode | precision | patch | batch | probe | scale | raw | estimate | measured | estimate/measured"
    )
    print(header + "\n" + "|".join("---" for _ in header.split("|")))
    measured_cache, ratios = {}, []
    for row in ROWS[:QUICK] if args.quick else ROWS:
        network, mode, precision, patch, batch, probe = row
        raw = child("estimate", row)
        if row[:5] not in measured_cache:
            measured_cache[row[:5]] = child("measure", row)
        measured = measured_cache[row[:5]]
        ratios.append((SAFETY * raw + MARGIN) / measured)
        scale = max(patch**3 * batch / probe**3, 1)
        print(
            f"{network} | {mode} | {precision} | {patch}^3 | {batch} | {probe}^3 | {scale:g} | {raw / GIB:.2f} | "
            f"{(SAFETY * raw + MARGIN) / GIB:.2f} | {measured / GIB:.2f} | {ratios[-1]:.2f}"
        )
    raw = child("estimate", OFFICIAL)
    estimate_gib = (SAFETY * raw + MARGIN) / GIB
    print(f"{OFFICIAL[0]} | train | float32 | 128^3 | 2 | 64^3 | 16 | {raw / GIB:.2f} | {estimate_gib:.2f} | - | -")
    print(f"\nestimate/measured {min(ratios):.2f}-{max(ratios):.2f}; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
