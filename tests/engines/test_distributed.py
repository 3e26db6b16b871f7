from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from medguide.engines import ddp_process_group, finish_distributed

TASKS = Path("/proc/self/task")


def gloo_workers() -> int:
    names = []
    for task in TASKS.iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except FileNotFoundError:  # a thread (of an earlier test, say) that ended while we counted
            continue
    return names.count("pt_gloo_runloop")


@pytest.mark.skipif(not TASKS.is_dir(), reason="counting threads needs Linux /proc")
def test_finish_joins_the_metrics_group_workers_although_ddp_lives_on(tmp_path):
    """The default group's gloo workers (they run the metrics' all_gather) are gone before Python shuts down."""
    finish_distributed()  # no group yet: nothing to end, and no error
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    try:
        group = ddp_process_group()
        assert group is not None and group != dist.group.WORLD
        network = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 2), process_group=group)
        network(torch.ones(4, 3)).sum().backward()
        gathered = [torch.zeros(1)]
        dist.all_gather(gathered, torch.ones(1))
        workers = gloo_workers()
        finish_distributed()
        assert not dist.is_initialized()
        # DDP keeps its own group's workers until exit; the default group's were joined
        assert gloo_workers() < workers
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
