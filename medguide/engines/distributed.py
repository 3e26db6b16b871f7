"""torchrun on CPU: keep the collectives that carry Python tensors on a process group that is really destroyed.

``DistributedDataParallel`` holds its process group until the interpreter exits, so gloo's worker threads outlive
``destroy_process_group()``. A worker releases the tensors of the collective it ran a moment after that
collective returns, and releasing a tensor that Python has seen takes the GIL. When that moment fell after Python
had begun to shut down (the validation metrics' ``all_gather`` is the last collective of a run), the rank aborted
with "terminate called without an active exception" (3 of 62 two-rank CPU runs on a loaded 2-core machine).
Giving DDP a group of its own leaves the default group, which the metrics use, free to be destroyed: its workers
are joined there, while Python is still whole (0 aborts in 110 runs). A barrier first is not enough: the
barrier's own work keeps the earlier ones alive and has the same race (1 in 57).
"""

from __future__ import annotations

import torch.distributed as dist

__all__ = ["ddp_process_group", "finish_distributed"]


def ddp_process_group():
    """The process group for ``DistributedDataParallel``: a separate group of all ranks under gloo, else the default.

    Call it on every rank, in the same order as the other collectives (``new_group`` is collective). NCCL keeps
    the default group: its work is not run by gloo's worker threads, and a second communicator costs GPU memory.
    """
    if dist.get_backend() == dist.Backend.GLOO:
        return dist.new_group()
    return None


def finish_distributed() -> None:
    """Destroy the process groups; nothing to do when none was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
