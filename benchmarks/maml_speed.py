"""Speed and memory of MAMLNet against the plain reference, and the cost of missing modalities.

The reference is the same network run the plain way: one ordinary U-Net per modality called in a loop, default
memory layout (``MAMLNet(group_branches=False, channels_last=False)`` with the same weights). The script checks
that both give the same outputs, then times forward + backward (training) and forward alone (inference) in
one process, the two interleaved so that machine noise hits both, and prints medians and their ratio. Peak
memory is measured in a fresh process per variant (peak RSS on CPU, ``max_memory_allocated`` on CUDA).

``train_step_limits`` says how far the training step can go: both variants do the same convolution arithmetic
(``train_step_GFLOP``), so the time the fast variant spends inside convolutions bounds its speed-up however cheap
everything else becomes; it also gives the non-convolution time that a 1.3x speed-up would leave.

``every_subset_inference`` times the missing-modality evaluation of one case (all 15 subsets, as
:class:`medguide.engines.SubsetEvaluator` infers them): every subset from one pass of each branch
(:meth:`MAMLNet.subset_logits`) against one subset at a time, interleaved, with the largest difference between the
two predictions.

    python benchmarks/maml_speed.py                 # 4 modalities, 64^3, batch 1, CPU
    python benchmarks/maml_speed.py --device cuda   # the same on a GPU
    python benchmarks/maml_speed.py --only_subsets  # only the 15-subset inference: shared branch passes or not
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch
from memory_estimate import cpu_name
from monai.inferers import SimpleInferer
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from medguide.engines import ModalityBatch, predict_subsets
from medguide.networks import MAMLNet

MODALITIES = ("t1", "t1ce", "t2", "flair")


def build(args: argparse.Namespace) -> tuple[MAMLNet, MAMLNet]:
    torch.manual_seed(0)
    kwargs = {"modalities": MODALITIES, "out_channels": 4, "base_width": args.base_width, "num_stages": args.num_stages}
    fast = MAMLNet(**kwargs).to(args.device)
    plain = MAMLNet(**kwargs, group_branches=False, channels_last=False).to(args.device)
    plain.load_state_dict(fast.state_dict())
    return fast, plain


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train_step(net: MAMLNet, x: torch.Tensor) -> None:
    net.train()
    out = net(x)
    (out["fused"].sum() + sum(level.sum() for branch in out["branches"] for level in branch)).backward()
    net.zero_grad(set_to_none=True)


@torch.no_grad()
def infer(net: MAMLNet, x: torch.Tensor) -> torch.Tensor:
    net.eval()
    return net(x)


@torch.no_grad()
def infer_subset(net: MAMLNet, batch: dict, subset: tuple[str, ...]) -> torch.Tensor:
    """Inference from one subset of the batch's modalities, as the missing-modality evaluator runs it."""
    net.eval()
    ((_, pred),) = predict_subsets(net, SimpleInferer(), batch, ModalityBatch(), [subset])
    return pred


@torch.no_grad()
def infer_every_subset(net: MAMLNet, batch: dict, share: bool) -> list[torch.Tensor]:
    """The missing-modality evaluation's inference of one case: all 15 subsets, from one pass of each branch
    (``share``) or one subset at a time."""
    net.eval()
    return [pred for _, pred in predict_subsets(net, SimpleInferer(), batch, ModalityBatch(), share_branches=share)]


def every_subset(args: argparse.Namespace, net: MAMLNet, batch: dict) -> dict:
    """Time of predicting every subset of a case with shared branch passes against one subset at a time,
    interleaved, and the largest difference between their predictions."""
    shared, alone = infer_every_subset(net, batch, True), infer_every_subset(net, batch, False)  # also the warm-up
    max_diff = max((a - b).abs().max().item() for a, b in zip(shared, alone))
    del shared, alone
    times = {"one_subset_at_a_time": [], "shared_branches": []}
    for _ in range(args.repeats):
        times["one_subset_at_a_time"].append(timed(args.device, infer_every_subset, net, batch, False))
        times["shared_branches"].append(timed(args.device, infer_every_subset, net, batch, True))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {
        **{f"{k}_s": round(v, 4) for k, v in medians.items()},
        "speedup": round(medians["one_subset_at_a_time"] / medians["shared_branches"], 2),
        "max_abs_output_difference": max_diff,
    }


def timed(device: str, fn, *args) -> float:
    sync(device)
    start = time.perf_counter()
    fn(*args)
    sync(device)
    return time.perf_counter() - start


class ConvolutionTimer(TorchDispatchMode):
    """Splits the wall time of the operators run under it into convolutions (forward and backward) and the rest."""

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device = device
        self.seconds = {"convolution": 0.0, "other": 0.0}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        sync(self.device)
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        sync(self.device)
        self.seconds["convolution" if "convolution" in func.__name__ else "other"] += time.perf_counter() - start
        return out


def breakdown(args: argparse.Namespace, nets: dict[str, MAMLNet], x: torch.Tensor, plain_s: float) -> dict:
    """Where a training step's time goes, and the best speed-up left once the convolutions are fixed.

    The convolutions' arithmetic is the same in both variants, so the time the fast variant spends in them bounds
    the speed-up: even if everything else cost nothing, it could not beat ``plain time / its convolution time``.
    """
    with FlopCounterMode(display=False) as flops:
        train_step(nets["medguide"], x)
    result = {"train_step_GFLOP": round(flops.get_total_flops() / 1e9, 1)}
    split = {}
    for name, net in nets.items():
        split[name] = {"convolution": [], "other": []}
        for _ in range(max(1, args.repeats // 2)):
            with ConvolutionTimer(args.device) as timer:
                train_step(net, x)
            for part, seconds in timer.seconds.items():
                split[name][part].append(seconds)
    split = {name: {part: round(statistics.median(v), 4) for part, v in parts.items()} for name, parts in split.items()}
    conv = split["medguide"]["convolution"]
    result["train_step_split_s"] = split
    result["convolution_GFLOP_per_s"] = round(result["train_step_GFLOP"] / conv, 1)
    result["speedup_bound_if_non_convolution_free"] = round(plain_s / conv, 3)
    result["non_convolution_s_allowed_for_1.3x"] = round(plain_s / 1.3 - conv, 4)
    return result


def compare(args: argparse.Namespace) -> dict:
    fast, plain = build(args)
    x = torch.randn(args.batch, len(MODALITIES), *([args.size] * 3), device=args.device)
    fast.train(), plain.train()
    out_fast, out_plain = fast(x), plain(x)
    max_diff = max(
        (out_fast["fused"] - out_plain["fused"]).abs().max().item(),
        *[
            (a - b).abs().max().item()
            for fa, fp in zip(out_fast["branches"], out_plain["branches"])
            for a, b in zip(fa, fp)
        ],
    )
    del out_fast, out_plain
    results = {"max_abs_output_difference": max_diff}
    for name, step in (("train_step", train_step), ("inference", infer)):
        times = {"plain": [], "medguide": []}
        for net in (plain, fast):  # warm-up
            step(net, x)
        for _ in range(args.repeats):
            times["plain"].append(timed(args.device, step, plain, x))
            times["medguide"].append(timed(args.device, step, fast, x))
        medians = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {
            **{f"{k}_s": round(v, 4) for k, v in medians.items()},
            "speedup": medians["plain"] / medians["medguide"],
        }
    full = statistics.median(timed(args.device, infer, fast, x) for _ in range(args.repeats))
    subsets = {}
    batch = {"image": x, "modalities": list(MODALITIES)}
    for k in range(1, len(MODALITIES) + 1):
        names = MODALITIES[:k]
        t = statistics.median(timed(args.device, infer_subset, fast, batch, names) for _ in range(args.repeats))
        subsets[f"{k}/{len(MODALITIES)}"] = round(t / full, 3)
    results["inference_cost_k_of_M"] = subsets
    results["every_subset_inference"] = every_subset(args, fast, batch)
    results["train_step_limits"] = breakdown(
        args, {"plain": plain, "medguide": fast}, x, results["train_step"]["plain_s"]
    )
    return results


def peak_memory(args: argparse.Namespace, variant: str) -> float:
    """Peak memory in MiB of one training step of ``variant``, measured in a fresh process."""
    cmd = [sys.executable, __file__, "--_memory", variant] + [
        f"--{k}={v}" for k, v in vars(args).items() if k in ("device", "size", "batch", "base_width", "num_stages")
    ]
    return float(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])


def _rss_high_water_kib() -> int:
    """This process's peak resident memory so far (VmHWM), in KiB."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM"))


def _memory_child(args: argparse.Namespace) -> None:
    fast, plain = build(args)
    net = fast if args._memory == "medguide" else plain
    net.train()
    x = torch.randn(args.batch, len(MODALITIES), *([args.size] * 3), device=args.device)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step(net, x)
        print((torch.cuda.max_memory_allocated() - base) / 2**20)
    else:
        del fast, plain  # only the measured variant stays
        base = _rss_high_water_kib()
        train_step(net, x)
        print((_rss_high_water_kib() - base) / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--base_width", type=int, default=16)
    parser.add_argument("--num_stages", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--only_subsets", action="store_true", help="only the every-subset inference (shared branches vs one at a time)"
    )
    parser.add_argument("--_memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory:
        _memory_child(args)
        return
    results = {"device": args.device, "cpu": cpu_name(), "input": [args.batch, 4] + [args.size] * 3}
    if args.only_subsets:
        net, _ = build(args)
        x = torch.randn(args.batch, len(MODALITIES), *([args.size] * 3), device=args.device)
        results["every_subset_inference"] = every_subset(args, net, {"image": x, "modalities": list(MODALITIES)})
    else:
        results.update(compare(args))
        results["peak_memory_train_step_MiB"] = {v: round(peak_memory(args, v), 1) for v in ("plain", "medguide")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
