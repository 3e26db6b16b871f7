"""What fundus photographs and OCT B-scans each tell of the class on OCT-CoDA's synthetic MultiEYE set.

OCT-CoDA distils an OCT teacher into a fundus student; that only has something to transfer if OCT shows each class
more clearly than fundus does. This probe checks that :func:`medguide.data.make_multieye_dataset` delivers that
ordering, with the fixed photo features of ``benchmarks/dmg_probe.py`` (a pooled thumbnail, colour histograms, and
the same two of the image's detail; a B-scan is read as three equal channels) and its linear probe (scikit-learn's
logistic regression on standardised features, ``class_weight="balanced"``, ``C`` chosen on the dev list by balanced
accuracy, refit on train, scored on test). The two modalities are unpaired, as in MultiEYE, so there is no "both"
row. Each seed makes a new data set; the table gives mean ± sd over seeds, and chance is 1 / 9.

Measured 2026-11-30 (``python benchmarks/octcoda_probe.py``, 9 s on an Intel(R) Xeon(R) Processor with AMX, one
thread): fundus 0.25 ± 0.06, OCT 0.57 ± 0.03, chance 0.11, over seeds 0 1 2 with 180 images per modality at 64 px.
OCT tells the class about twice as well as fundus, so the teacher has something to teach.

    python benchmarks/octcoda_probe.py                     # 180 fundus + 180 OCT images at 64 px, seeds 0 1 2
    python benchmarks/octcoda_probe.py --num_images 360 --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time

import numpy as np
import torch
from dmg_probe import photo_features, probe
from memory_estimate import cpu_name
from threadpoolctl import threadpool_limits

from medguide.data.multieye import MULTIEYE_CLASSES, MULTIEYE_SECTIONS, make_multieye_dataset, multieye_datalist

MODALITIES = {"fundus": "fundus photograph (student)", "oct": "OCT B-scan (teacher)"}


def modality_score(data_dir, modality: str) -> float:
    """The probe's balanced accuracy on ``modality``'s test list."""
    parts = []
    for section in MULTIEYE_SECTIONS:
        items = multieye_datalist(data_dir, modality, section)
        features = np.stack([photo_features(item["image"], item["case"]) for item in items])
        parts.append((features, np.array([item["label"] for item in items])))
    return probe(*parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=180, help="images per modality (default 180)")
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="data seeds, two or more")
    args = parser.parse_args()
    if len(args.seeds) < 2:
        parser.error("--seeds needs two or more seeds for a standard deviation")
    start = time.perf_counter()
    torch.set_num_threads(1)  # at these sizes threads cost more than they give (see dmg_probe.py)
    threadpool_limits(1)
    scores = {modality: [] for modality in MODALITIES}
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as work_dir:
            data_dir = make_multieye_dataset(
                work_dir, num_fundus=args.num_images, num_oct=args.num_images, image_size=args.image_size, seed=seed
            )
            for modality in MODALITIES:
                scores[modality].append(modality_score(data_dir, modality))
    seeds = " ".join(map(str, args.seeds))
    print(f"\n### MultiEYE synthetic: {args.num_images} images per modality at {args.image_size} px, balanced accuracy")
    print(f"on the test list, mean ± sd over seeds {seeds}\n")
    print("| modality | 9 classes |\n|---|---|")
    for modality, name in MODALITIES.items():
        print(f"| {name} | {np.mean(scores[modality]):.2f} ± {np.std(scores[modality], ddof=1):.2f} |")
    print(f"| chance | {1 / len(MULTIEYE_CLASSES):.2f} |")
    print(f"\n{cpu_name()}; {time.perf_counter() - start:.0f} s")
    print("command: python " + " ".join(shlex.quote(arg) for arg in sys.argv))


if __name__ == "__main__":
    main()
