"""What each modality alone tells of the class on the synthetic sets of the deep multimodal guidance bundles.

Deep multimodal guidance (DMG) trains a guidance model that maps the inferior modality's representation onto the
superior one's; that only helps if the superior modality carries the class signal clearly and the inferior a
weaker, noisier view of it. This probe checks that the synthetic makers deliver that ordering, with fixed features
and a linear classifier per modality (no training of networks):

- ``cpm_radpath`` (:func:`medguide.data.make_cpm_radpath_dataset`; class G / A / O): inferior = MRI (the four
  sequences, each z-scored over its non-zero voxels, average-pooled to ``MRI_GRID^3``, plus a ``HIST_BINS``-bin
  histogram of its non-zero voxels), superior = the histology bag (mean and max pooled patch features). Split
  60 / 20 / 20 by :func:`medguide.data.stratified_split` with the data seed.
- ``derm7pt`` (:func:`medguide.data.make_derm7pt_dataset`; the 8 tasks of
  :data:`medguide.data.derm7pt.DERM7PT_TASKS`): inferior = clinical photo, superior = dermoscopic photo (each
  average-pooled to ``PHOTO_GRID^2`` RGB, a ``HIST_BINS``-bin histogram per colour channel, and the same two of its
  detail, the absolute difference to its 5 x 5 mean, pooled to ``TEXTURE_GRID^2``: without the detail the probe is
  blind to the fine structures the dermoscopic photo draws, and reads streaks as badly from it as from the clinical
  photo, 0.42 in both). The
  release's train / valid / test sections.

``both`` concatenates the two modalities' features. Each classifier is scikit-learn's logistic regression on
standardised features with ``class_weight="balanced"``; its inverse regularisation ``C`` is chosen from ``C_GRID``
by balanced accuracy on the validation split (the smallest of tied values), then the model is refit on the train
split and scored by balanced accuracy on the test split. Each seed makes a new data set (the seed is the data seed
and, for cpm_radpath, the split seed); tables give mean ± sd over seeds. Chance is 1 / number of classes, what a
constant prediction scores; with few cases a test split may lack a class, and a constant then scores more.

Results (``python benchmarks/dmg_probe.py``, 94 s on an ``Intel(R) Xeon(R) Processor``, one thread, on 2 cores
shared with other jobs; 120 brain cases at 32^3, 300 skin cases at 64 px; balanced accuracy, mean ± sd over seeds
0 1 2)::

    cpm_radpath       | class
    inferior (MRI)    | 0.45 ± 0.08
    superior (bag)    | 1.00 ± 0.00
    both              | 0.94 ± 0.10
    chance            | 0.33

    derm7pt           | diagnosis   | pigment_network | blue_whitish_veil | vascular_structures | pigmentation
    inferior (clinic) | 0.47 ± 0.02 | 0.46 ± 0.06     | 0.76 ± 0.04       | 0.42 ± 0.10         | 0.46 ± 0.05
    superior (derm)   | 0.69 ± 0.04 | 0.61 ± 0.07     | 0.88 ± 0.06       | 0.48 ± 0.12         | 0.54 ± 0.03
    both              | 0.61 ± 0.09 | 0.64 ± 0.08     | 0.83 ± 0.08       | 0.46 ± 0.10         | 0.49 ± 0.02
    chance            | 0.20        | 0.33            | 0.50              | 0.33                | 0.33

    derm7pt           | streaks     | dots_and_globules | regression_structures
    inferior (clinic) | 0.42 ± 0.03 | 0.46 ± 0.10       | 0.70 ± 0.04
    superior (derm)   | 0.75 ± 0.04 | 0.64 ± 0.01       | 0.69 ± 0.08
    both              | 0.70 ± 0.07 | 0.62 ± 0.10       | 0.71 ± 0.07
    chance            | 0.33        | 0.33              | 0.50

The histology bag reads the class perfectly and the MRI little above chance, as the maker intends; the MRI's 320
features beside the bag's 128 cost the concatenation one seed of three (0.83 there, 1.00 with the bag alone). The
dermoscopic photo beats the clinical one by 0.12-0.33 on diagnosis, pigment network, veil, streaks and dots, by less
than a standard deviation on vascular structures and pigmentation, and not at all on regression structures: its
white and blue-grey areas are large enough to survive the clinical photo's blur. No task is at chance in both
photos; vascular structures comes closest.

    python benchmarks/dmg_probe.py                                    # both data sets, seeds 0 1 2
    python benchmarks/dmg_probe.py --dataset derm7pt --num_cases 600 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from memory_estimate import cpu_name
from monai.transforms import NormalizeIntensity
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from medguide.data import (
    cpm_radpath_datalist,
    derm7pt_datalist,
    make_cpm_radpath_dataset,
    make_derm7pt_dataset,
    stratified_split,
)
from medguide.data.derm7pt import DERM7PT_TASKS
from medguide.transforms import LoadCased, load_bag, read_photo

MRI_GRID = 4
PHOTO_GRID = 16
TEXTURE_GRID = 4
HIST_BINS = 16
# z-scored MRI intensities outside this range are rare; clipped into the end bins
MRI_HIST_RANGE = (-3.0, 5.0)
# photo minus its 5x5 mean, in 0-1 intensity units
DETAIL_HIST_RANGE = (0.0, 0.2)
C_GRID = (0.01, 0.1, 1.0)
ROWS = ("inferior", "superior", "both")
NAMES = {"cpm_radpath": ("MRI", "histology bag"), "derm7pt": ("clinical photo", "dermoscopic photo")}
DEFAULT_CASES = {"cpm_radpath": 120, "derm7pt": 300}

# one split: inferior features, superior features (a row per case), {task: labels}
Split = tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]


def histogram(values: torch.Tensor, low: float, high: float) -> torch.Tensor:
    counts = torch.histc(values.clamp(low, high), bins=HIST_BINS, min=low, max=high)
    return counts / counts.sum().clamp_min(1)


def mri_features(item: dict, load: LoadCased, normalize: NormalizeIntensity) -> np.ndarray:
    image = normalize(load(item)["image"]).as_tensor().float()
    pooled = F.adaptive_avg_pool3d(image[None], MRI_GRID)[0].flatten()
    hists = [histogram(channel[channel != 0], *MRI_HIST_RANGE) for channel in image]
    return torch.cat([pooled, *hists]).numpy()


def bag_features(item: dict) -> np.ndarray:
    bag = load_bag(item["bag"], item["case"])
    return torch.cat([bag.mean(0), bag.amax(0)]).numpy()


def photo_features(path: str, case: str) -> np.ndarray:
    photo = read_photo(path, case).as_tensor() / 255
    pooled = F.adaptive_avg_pool2d(photo[None], PHOTO_GRID)[0].flatten()
    hists = [histogram(channel.flatten(), 0.0, 1.0) for channel in photo]
    # the criteria are fine structures (network, streaks, dots) that pooling averages away; the high-pass keeps them
    blurred = F.avg_pool2d(photo[None], 5, stride=1, padding=2, count_include_pad=False)[0]
    detail = (photo - blurred).abs()
    detail_pooled = F.adaptive_avg_pool2d(detail[None], TEXTURE_GRID)[0].flatten()
    detail_hists = [histogram(channel.flatten(), *DETAIL_HIST_RANGE) for channel in detail]
    return torch.cat([pooled, *hists, detail_pooled, *detail_hists]).numpy()


def featurize(items: list[dict], inferior: Callable, superior: Callable, tasks: list[str], label: Callable) -> Split:
    return (
        np.stack([inferior(item) for item in items]),
        np.stack([superior(item) for item in items]),
        {task: np.array([label(item, task) for item in items]) for task in tasks},
    )


def cpm_radpath_splits(work_dir: str, num_cases: int, seed: int) -> tuple[list[Split], list[str], dict[str, int]]:
    data_dir = make_cpm_radpath_dataset(work_dir, num_cases, seed=seed)
    parts = stratified_split(cpm_radpath_datalist(data_dir), (0.6, 0.2, 0.2), seed=seed)
    load = LoadCased(keys=("image",))
    normalize = NormalizeIntensity(nonzero=True, channel_wise=True)
    splits = [
        featurize(
            part,
            lambda item: mri_features(item, load, normalize),
            bag_features,
            ["class"],
            lambda item, _: item["label"],
        )
        for part in parts
    ]
    return splits, ["class"], {"class": 3}


def derm7pt_splits(work_dir: str, num_cases: int, seed: int) -> tuple[list[Split], list[str], dict[str, int]]:
    data_dir = make_derm7pt_dataset(work_dir, num_cases, seed=seed)
    tasks = list(DERM7PT_TASKS)
    splits = [
        featurize(
            derm7pt_datalist(data_dir, section),
            lambda item: photo_features(item["clinic"], item["case"]),
            lambda item: photo_features(item["derm"], item["case"]),
            tasks,
            lambda item, task: item["label"][task],
        )
        for section in ("train", "valid", "test")
    ]
    return splits, tasks, {task: len(classes) for task, classes in DERM7PT_TASKS.items()}


def features(split: Split, row: str) -> np.ndarray:
    inferior, superior, _ = split
    return {"inferior": inferior, "superior": superior, "both": np.hstack([inferior, superior])}[row]


def probe(train: tuple, valid: tuple, test: tuple) -> float:
    """Balanced accuracy on ``test`` of the model fit on ``train`` with the ``C`` best on ``valid``; (x, y) each."""

    def fit(c: float):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=c, class_weight="balanced", max_iter=5000))
        return model.fit(*train)

    best = max(C_GRID, key=lambda c: balanced_accuracy_score(valid[1], fit(c).predict(valid[0])))
    return balanced_accuracy_score(test[1], fit(best).predict(test[0]))


def run_dataset(name: str, num_cases: int, seeds: list[int]) -> tuple[dict, list[str], dict[str, int]]:
    make_splits = {"cpm_radpath": cpm_radpath_splits, "derm7pt": derm7pt_splits}[name]
    scores = {row: {} for row in ROWS}
    for seed in seeds:
        with tempfile.TemporaryDirectory() as work_dir:
            splits, tasks, num_classes = make_splits(work_dir, num_cases, seed)
        for task in tasks:
            for row in ROWS:
                train, valid, test = ((features(split, row), split[2][task]) for split in splits)
                scores[row].setdefault(task, []).append(probe(train, valid, test))
    return scores, tasks, num_classes


def table(name: str, scores: dict, tasks: list[str], num_classes: dict[str, int]) -> str:
    inferior, superior = NAMES[name]
    labels = {"inferior": f"inferior ({inferior})", "superior": f"superior ({superior})", "both": "both"}
    lines = ["| modality | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for row in ROWS:
        cells = [f"{np.mean(scores[row][t]):.2f} ± {np.std(scores[row][t], ddof=1):.2f}" for t in tasks]
        lines.append(f"| {labels[row]} | " + " | ".join(cells) + " |")
    lines.append("| chance | " + " | ".join(f"{1 / num_classes[t]:.2f}" for t in tasks) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=("cpm_radpath", "derm7pt", "all"), default="all")
    parser.add_argument("--num_cases", type=int, default=None, help="cases per data set (default: 120 / 300)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data seeds, two or more")
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("--seeds needs two or more seeds for a standard deviation")
    names = list(DEFAULT_CASES) if args.dataset == "all" else [args.dataset]
    start = time.perf_counter()
    # one thread: at these sizes threads cost more than they give (on 2 busy cores 5-40x slower)
    torch.set_num_threads(1)
    threadpool_limits(1)
    for name in names:
        num_cases = args.num_cases or DEFAULT_CASES[name]
        scores, tasks, num_classes = run_dataset(name, num_cases, args.seeds)
        seeds = " ".join(map(str, args.seeds))
        print(f"\n### {name}: {num_cases} cases, balanced accuracy on the test split, mean ± sd over seeds {seeds}\n")
        print(table(name, scores, tasks, num_classes))
    print(f"\n{cpu_name()}; {time.perf_counter() - start:.0f} s")
    print("command: python " + " ".join(shlex.quote(arg) for arg in sys.argv))


if __name__ == "__main__":
    main()
