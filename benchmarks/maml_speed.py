"""Speed and memory of MAMLNet against the plain reference, and the cost of missing modalities.

The reference is the same network run the plain way: one ordinary U-Net per modality called in a loop, default
memory layout (``MAMLNet(group_branches=False, channels_last=False)`` with the same weights). The script checks
that both give the same outputs, then times forward + backward (training) and forward alone (inference) in
one process, the two interleaved so that machine noise hits both, and prints medians and their ratio. Peak
memory is measured in a fresh process per variant (peak RSS on CPU, ``max_memory_allocated`` on CUDA).

    python benchmarks/maml_speed.py                 # 4 modalities, 64^3, batch 1, CPU
    python benchmarks/maml_speed.py --device cuda   # the same on a GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

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
def infer(net: MAMLNet, x: torch.Tensor, modalities=None) -> torch.Tensor:
    net.eval()
    return net(x, modalities)


def timed(device: str, fn, *args) -> float:
    sync(device)
    start = time.perf_counter()
    fn(*args)
    sync(device)
    return time.perf_counter() - start


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
    for k in range(1, len(MODALITIES) + 1):
        names = MODALITIES[:k]
        t = statistics.median(timed(args.device, infer, fast, x[:, :k], names) for _ in range(args.repeats))
        subsets[f"{k}/{len(MODALITIES)}"] = round(t / full, 3)
    results["inference_cost_k_of_M"] = subsets
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
    parser.add_argument("--_memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._memory:
        _memory_child(args)
        return
    results = {"device": args.device, "threads": torch.get_num_threads(), "input": [args.batch, 4] + [args.size] * 3}
    results.update(compare(args))
    results["peak_memory_train_step_MiB"] = {v: round(peak_memory(args, v), 1) for v in ("plain", "medguide")}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
