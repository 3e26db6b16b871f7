"""Inference speed of the report-guided localisation bundle on 1024 x 1024 chest films, float32 against bfloat16.

The network is built from ``bundles/xattn_pneumonia_cxr_localization/configs/inference.json`` (the bundle's defaults:
ResNet-50 region encoder, films resized to 512 px; ``--cpu_scale`` adds ``cpu_scale.json``), with random weights (the
timing does not depend on them). The films are 1024 x 1024 8-bit PNGs, as ChestX-ray8 ships them: the real ones in
``$MEDGUIDE_SAMPLE_DATA/nih-chestxray14/images`` where present, else seeded synthetic films of that size.

1. **Network**: films read and preprocessed once by the config's ``preprocessing`` (``LoadChestFilmd``, resize,
   normalise), then ``network(x, with_maps=True)`` on batches of ``--batch_size`` under the autocast the bundle's
   ``Evaluator`` applies for each ``--precision`` (``resolve_precision``); precisions interleaved, one warm-up
   call, medians over ``--repeats``.
2. **Per film, end to end**: reading the 1024 px PNG, preprocessing, the network with its maps and the boxes of the
   opacity map at the original size (``map_to_boxes``), one film at a time: what ``inference.json`` does per film,
   without writing files.

``bfloat16`` falls back to float32 (with a warning) on a CPU without native bfloat16 or a GPU before Ampere; the
"autocast" column says what ran. The CPU is named beside the figures; the load average is printed.

    python benchmarks/xattn_speed.py                       # the bundle's defaults (ResNet-50 at 512 px)
    python benchmarks/xattn_speed.py --cpu_scale           # cpu_scale.json (tiny DenseNet at 96 px)
    python benchmarks/xattn_speed.py --device cuda         # on a GPU

Measured: see the bundle's ``docs/README.md`` ("Speed").
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from dmg_stages import timed
from memory_estimate import cpu_name
from monai.bundle import ConfigParser
from PIL import Image

from medguide.engines import autocast, resolve_precision
from medguide.transforms import map_to_boxes

CONFIGS = Path(__file__).resolve().parents[1] / "bundles" / "xattn_pneumonia_cxr_localization" / "configs"


def films(count: int, out: Path) -> list[Path]:
    """Up to ``count`` real 1024 px ChestX-ray8 PNGs where the sample data is here, else seeded synthetic ones."""
    real = Path(os.environ.get("MEDGUIDE_SAMPLE_DATA", CONFIGS.parents[3] / "shared" / "data"))
    found = sorted((real / "nih-chestxray14" / "images").glob("*.png"))[:count]
    if found:
        return found
    rng = np.random.default_rng(0)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = out / f"film_{index}.png"
        Image.fromarray(rng.integers(0, 256, (1024, 1024), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def build(args: argparse.Namespace, root: str) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(
        [str(CONFIGS / "inference.json"), *([str(CONFIGS / "cpu_scale.json")] if args.cpu_scale else [])]
    )
    parser["bundle_root"] = root
    parser["device"] = f"$torch.device({args.device!r})"
    return parser


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
    cli.add_argument("--batch_size", type=int, default=4)
    cli.add_argument("--films", type=int, default=8, help="films read (1024 px PNGs)")
    cli.add_argument("--repeats", type=int, default=5)
    cli.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    cli.add_argument("--cpu_scale", action="store_true", help="add cpu_scale.json (tiny network at 96 px)")
    args = cli.parse_args()
    device = torch.device(args.device)
    print(f"command: {shlex.join(['python', *sys.argv])}")
    load = [", ".join(f"{v:.2f}" for v in os.getloadavg())]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        parser = build(args, tmp)
        torch.manual_seed(0)
        network = parser.get_parsed_content("network").eval()
        preprocessing = parser.get_parsed_content("preprocessing")
        image_key = parser.get_parsed_content("image_key")
        paths = films(args.films, Path(tmp) / "films")
        items = [preprocessing({image_key: str(p), "case": p.stem}) for p in paths]
        x = torch.stack([torch.as_tensor(i[image_key]).as_subclass(torch.Tensor) for i in items])
        x = x.repeat(-(-args.batch_size // len(x)), 1, 1, 1)[: args.batch_size].to(device)
        dtypes = {p: resolve_precision(p, device) for p in args.precision}
        batch_times = {p: [] for p in dtypes}
        film_times = {p: [] for p in dtypes}
        with torch.no_grad():
            for repeat in range(args.repeats + 1):
                for precision, dtype in dtypes.items():
                    with autocast(dtype, device):
                        batch_times[precision].append(timed(device, lambda: network(x, with_maps=True)))

                        def one_film(path=paths[repeat % len(paths)]):
                            item = preprocessing({image_key: str(path), "case": path.stem})
                            film = item[image_key]
                            out = network(torch.as_tensor(film)[None].to(device), with_maps=True)
                            size = [int(s) for s in film.meta["spatial_shape"]]
                            return map_to_boxes(out.maps[0, 0].float().cpu(), spatial_size=size)

                        film_times[precision].append(timed(device, one_film))
    load.append(", ".join(f"{v:.2f}" for v in os.getloadavg()))
    size = list(parser.get_parsed_content("image_size"))
    where = f"{device}: " + (f"{torch.cuda.get_device_name(device)}; host " if device.type == "cuda" else "")
    where += f"{cpu_name()}"
    print(f"{where}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"load average (1, 5, 15 min) at the start {load[0]}, at the end {load[1]}")
    print(
        f"network {parser.get_parsed_content('encoder')} at {size[0]}x{size[1]} px from 1024x1024 films "
        f"({'real ChestX-ray8' if 'nih' in str(paths[0]) else 'synthetic'}), random weights\n"
    )
    print(
        "precision | autocast | batch | network films/s | vs float32 | end to end films/s (one at a time) | vs float32"
    )
    print("---|---|---|---|---|---|---")
    base = None
    for precision, dtype in dtypes.items():
        rate = args.batch_size / statistics.median(batch_times[precision][1:])
        whole = 1 / statistics.median(film_times[precision][1:])
        base = base or (rate, whole)
        print(
            f"{precision} | {dtype or 'none (float32)'} | {args.batch_size} | {rate:.2f} | {rate / base[0]:.2f} | "
            f"{whole:.2f} | {whole / base[1]:.2f}"
        )
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
