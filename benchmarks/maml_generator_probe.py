"""What each sequence (or CT phase) of a synthetic set supports on its own: a tiny 2D U-Net per input, and one on all.

Writes a small seeded set with the bundle's generator (:func:`medguide.data.make_brats_dataset` or
:func:`medguide.data.make_liver_dataset`), trains one small 2D U-Net on axial slices of each single sequence and one
on all sequences stacked, and prints the held-out Dice of each region per input as a markdown table, with the CPU and
the command that produced it. It checks the generator (which sequence carries which region, how much fusing adds),
not MAML: a few hundred iterations, minutes on 2 cores.

    python benchmarks/maml_generator_probe.py --dataset brats
    python benchmarks/maml_generator_probe.py --dataset liver --shape 64 64 32
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from memory_estimate import cpu_name
from monai.losses import DiceCELoss
from monai.networks.nets import UNet

from medguide.data import brats_datalist, decathlon_datalist, make_brats_dataset, make_liver_dataset

# per data set: its inputs, its regions as sets of classes, its number of classes and its lowest lesion class
SETS = {
    "brats": {
        "inputs": ["t1", "t1ce", "t2", "flair"],
        "regions": {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)},
        "classes": 4,
        "lesion": 1,
    },
    "liver": {
        "inputs": ["arterial", "venous"],
        "regions": {"liver": (1, 2), "tumour": (2,)},
        "classes": 3,
        "lesion": 2,
    },
}


def load(dataset: str, root: Path, num_cases: int, shape: list[int], seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(image [C, X, Y, Z] float32 normalised, label [X, Y, Z] classes) per case, channels in SETS order."""
    cases = []
    if dataset == "brats":
        for item in brats_datalist(make_brats_dataset(root, num_cases=num_cases, shape=shape, seed=seed)):
            image = np.stack([np.asarray(nib.load(f).dataobj, np.float32) for f in item["image"]])
            for channel in image:  # z-score inside the brain, as the bundle's NormalizeIntensityd(nonzero=True)
                inside = channel != 0
                channel[inside] = (channel[inside] - channel[inside].mean()) / (channel[inside].std() + 1e-8)
            label = np.asarray(nib.load(item["label"]).dataobj, np.int64)
            label[label == 4] = 3
            cases.append((image, label))
    else:
        made = make_liver_dataset(root, num_cases=num_cases, shape=shape, seed=seed, num_test=0)
        for item in decathlon_datalist(made):
            image = np.stack([np.asarray(nib.load(f).dataobj, np.float32) for f in item["image"]])
            image = (np.clip(image, -100, 300) + 100) / 400  # the bundle's ScaleIntensityRanged window
            cases.append((image, np.asarray(nib.load(item["label"]).dataobj, np.int64)))
    return cases


def train(cases, channels: list[int], spec: dict, iterations: int, batch: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = UNet(2, len(channels), spec["classes"], channels=(16, 32, 64), strides=(2, 2), num_res_units=1)
    optimizer = torch.optim.Adam(net.parameters(), 3e-3)
    loss = DiceCELoss(to_onehot_y=True, softmax=True)
    # half the slices through a lesion (as the bundle's positive/negative crop sampler), half anywhere
    slices = [(c, z) for c, (_, label) in enumerate(cases) for z in range(label.shape[2])]
    lesion = [(c, z) for c, z in slices if (cases[c][1][:, :, z] >= spec["lesion"]).any()]
    net.train()
    for _ in range(iterations):
        pool = [lesion, slices]
        picks = [pool[i % 2][rng.integers(len(pool[i % 2]))] for i in range(batch)]
        x = torch.from_numpy(np.stack([cases[c][0][channels, :, :, z] for c, z in picks]))
        y = torch.from_numpy(np.stack([cases[c][1][None, :, :, z] for c, z in picks]))
        optimizer.zero_grad()
        loss(net(x), y).backward()
        optimizer.step()
    return net.eval()


@torch.no_grad()
def dice(net, cases, channels: list[int], regions: dict) -> dict[str, float]:
    scores = {name: [] for name in regions}
    for image, label in cases:
        x = torch.from_numpy(np.moveaxis(image[channels], 3, 0))  # slices as the batch
        prediction = np.moveaxis(net(x).argmax(1).numpy(), 0, 2)
        for name, classes in regions.items():
            p, t = np.isin(prediction, classes), np.isin(label, classes)
            scores[name].append(1.0 if not (p.any() or t.any()) else 2 * (p & t).sum() / (p.sum() + t.sum()))
    return {name: float(np.mean(values)) for name, values in scores.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(SETS), default="brats")
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 48, 48])
    parser.add_argument("--train_cases", type=int, default=12)
    parser.add_argument("--test_cases", type=int, default=6)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    # one thread: on a 2-core machine shared with other work, two threads oversubscribe it and run ~10x slower
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = SETS[args.dataset]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        cases = load(args.dataset, Path(root), args.train_cases + args.test_cases, args.shape, args.seed)
    train_cases, test_cases = cases[: args.train_cases], cases[args.train_cases :]
    rows = [([i], name) for i, name in enumerate(spec["inputs"])]
    rows.append((list(range(len(spec["inputs"]))), "all"))
    results = {}
    for channels, name in rows:
        net = train(train_cases, channels, spec, args.iterations, args.batch_size, args.seed)
        results[name] = dice(net, test_cases, channels, spec["regions"])
        print(f"{name}: " + ", ".join(f"{r} {d:.3f}" for r, d in results[name].items()), flush=True)
    regions = list(spec["regions"])
    print()
    print(f"command: python {shlex.join(['benchmarks/maml_generator_probe.py', *(argv or sys.argv[1:])])}")
    print(f"CPU: {cpu_name()}; wall time {time.perf_counter() - start:.0f} s")
    print(
        f"{args.dataset} synthetic set, shape {args.shape}, {args.train_cases} training / {args.test_cases} held-out "
        f"cases, 2D U-Net on axial slices, {args.iterations} iterations x {args.batch_size}; held-out Dice:"
    )
    print()
    print("| input | " + " | ".join(regions) + " |")
    print("|---|" + "---|" * len(regions))
    for _, name in rows:
        print(f"| {name} | " + " | ".join(f"{results[name][r]:.3f}" for r in regions) + " |")


if __name__ == "__main__":
    main()
