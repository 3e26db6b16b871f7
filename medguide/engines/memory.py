"""A memory check before training or inference starts: one clear message instead of the kernel's ``Killed``.

A 3D segmentation step's memory grows with the patch's voxels times the batch, and the official recipes
(128^3 patches, batch 2) need more than many CPU machines have. Left alone, the process grows until the
kernel's OOM killer ends it with nothing but ``Killed``. :class:`MemoryCheck` measures one small step of the
configured network before the engine's first iteration, scales it to the configured patch and batch, and stops
the run with one message when the estimate does not fit in the memory that is available.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from torch import nn

from medguide.engines.handler_errors import pass_own_error, passes_own_error
from medguide.engines.precision import autocast, resolve_precision

__all__ = ["MARGIN", "SAFETY", "MemoryCheck", "available_memory", "estimate_peak_memory"]

logger = logging.getLogger("medguide.engines")

GIB = 2**30

# Calibrated by benchmarks/memory_estimate.py (see its docstring): with these the estimate is at least the
# measured peak of three real training steps, or of inference, in every setting measured there, by 10 % or more
SAFETY = 1.3
MARGIN = 2**28

# cgroup limits at or above this are the kernel's way of writing "no limit"
_NO_LIMIT = 2**60


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_stat(path: Path, key: str) -> int:
    try:
        return next((int(line.split()[1]) for line in path.read_text().splitlines() if line.split()[0] == key), 0)
    except (OSError, ValueError, IndexError):
        return 0


def _cgroup_free() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2, else v1), or ``None`` where there is no limit.

    Reclaimable page cache (``inactive_file``) is not counted as used, as container runtimes do.
    """
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    paths = {}
    for line in lines:
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            paths[controller] = path.lstrip("/")
    candidates = []
    if "" in paths:  # v2: "0::/path"
        for folder in (Path("/sys/fs/cgroup") / paths[""], Path("/sys/fs/cgroup")):
            candidates.append(
                (folder / "memory.max", folder / "memory.current", folder / "memory.stat", "inactive_file")
            )
    if "memory" in paths:  # v1
        for folder in (Path("/sys/fs/cgroup/memory") / paths["memory"], Path("/sys/fs/cgroup/memory")):
            stat = folder / "memory.stat"
            candidates.append(
                (folder / "memory.limit_in_bytes", folder / "memory.usage_in_bytes", stat, "total_inactive_file")
            )
    for limit_file, usage_file, stat_file, inactive_key in candidates:
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is None or usage is None:
            continue
        if limit >= _NO_LIMIT:
            return None
        return max(limit - usage + _read_stat(stat_file, inactive_key), 0)
    return None


def available_memory(device: str | torch.device) -> int | None:
    """Bytes that a computation on ``device`` can still allocate, or ``None`` where that is unknown.

    CUDA: the device's free memory (``torch.cuda.mem_get_info``), which does not count what PyTorch already holds.
    CPU: ``MemAvailable`` of ``/proc/meminfo``, capped by what is left under a cgroup (v2 or v1) memory limit,
    as in a container. Either way, memory the process already uses (the network's weights, cached data) is not
    part of the figure. Other devices and non-Linux systems give ``None``.

    Args:
        device: the device the computation runs on.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    figures = [_read_stat(Path("/proc/meminfo"), "MemAvailable:") * 1024 or None, _cgroup_free()]
    figures = [f for f in figures if f is not None]
    return min(figures) if figures else None


def _release_cached(device: torch.device) -> None:
    """Give memory that is free but still held back to the system, so that it counts as available again.

    glibc keeps freed blocks below its mmap threshold in the heap; a probe run on top of them would grow the
    resident set less than it uses, and the scaled estimate would be too low.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def _measure_peak(fn: Callable[[], None], device: torch.device) -> int | None:
    """Bytes by which ``fn()`` raises the peak memory above the memory in use when it starts, or ``None``.

    CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``. CPU (Linux): the peak resident
    set size (``VmHWM``), reset by writing ``5`` to ``/proc/self/clear_refs``, minus the resident set (``VmRSS``)
    before. ``fn`` runs either way; where neither applies, nothing is measured.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = _status_bytes("VmRSS")
    except (OSError, StopIteration):
        fn()
        return None
    fn()
    return max(_status_bytes("VmHWM") - before, 0)


def _scalar(output) -> torch.Tensor:
    """Sum of the means of every tensor in ``output`` (a tensor, or lists / tuples / dicts of them)."""
    if isinstance(output, torch.Tensor):
        return output.float().mean()
    values = output.values() if isinstance(output, dict) else output
    return sum((_scalar(v) for v in values), torch.zeros(()))


def _probe_shape(patch_size: Sequence[int], batch_size: int, probe_size: Sequence[int]) -> tuple[list[int], int]:
    """Spatial size and batch of the probe: ``probe_size`` with batch 1, or the configuration itself if smaller."""
    if math.prod(patch_size) * batch_size <= math.prod(probe_size):
        return list(patch_size), batch_size
    return list(probe_size), 1


def _optimizer_buffers(optimizer: torch.optim.Optimizer | None) -> int:
    """Tensors of parameter size an optimizer keeps per parameter: SGD 1 with momentum, Adam-like 2 (3 AMSGrad)."""
    if optimizer is None:
        return 0
    defaults = optimizer.defaults
    if isinstance(optimizer, torch.optim.SGD):
        return int(bool(defaults.get("momentum")))
    return 3 if defaults.get("amsgrad") else 2


def estimate_peak_memory(
    network: nn.Module,
    patch_size: Sequence[int],
    batch_size: int,
    in_channels: int,
    probe_size: Sequence[int],
    network_kwargs: dict | None = None,
    training: bool = True,
    optimizer_buffers: int = 1,
    dtype: torch.dtype | None = None,
    safety: float = SAFETY,
    margin: int = MARGIN,
) -> int | None:
    """Bytes that one step of ``network`` on a ``[batch_size, in_channels, *patch_size]`` input adds to memory.

    The probe runs ``network`` once on zeros of shape ``[1, in_channels, *probe_size]`` (or on the configured
    shape itself when that is smaller) on the network's device, in the autocast ``dtype``: in training mode a
    forward and a backward of the sum of the means of the outputs, in eval mode a forward under
    ``torch.no_grad()``. Its peak memory above what was in use before (peak resident set on CPU,
    ``max_memory_allocated`` on CUDA) is scaled to the configuration:

    ``estimate = safety * (state + (probe peak - probe gradients) * patch voxels * batch / probe voxels) + margin``

    where ``state`` is what training keeps besides activations, the gradients and ``optimizer_buffers`` tensors
    of the parameters' size (1 for SGD with momentum), and 0 for inference. Activations scale with voxels times
    batch; the probe's small fixed part beyond its gradients is scaled with them, which errs on the high side.
    The weights already in memory are not counted. ``safety`` covers what the probe leaves out and that grows
    with the patch (the loss, the optimizer step, heap growth over the first iterations), ``margin`` what does not
    (first use of the operators of the loss and optimizer, the noise of the resident-set figures); both defaults
    come from ``benchmarks/memory_estimate.py``, where on a CPU the estimate exceeded the measured peak of training by
    10-50 % with a probe of the patch's size or a few times smaller, and by more for inference and for probes much
    smaller than the patch.

    The probe leaves no trace: the network's mode, gradients, buffers and the random number generators are as
    before. Its input is zeros, so with the generators restored a training run stays reproducible.

    Args:
        network: the network, on its device.
        patch_size: spatial size of one input (the training patch, or the sliding window's ``roi_size``).
        batch_size: inputs per step (the training batch, or the sliding window's ``sw_batch_size``).
        in_channels: input channels.
        probe_size: spatial size of the probe; the network must accept it. The larger it is, the smaller the share
            of fixed costs that get scaled with it: 64^3 or more where the patch is larger.
        network_kwargs: keyword arguments of the forward, e.g. ``{"modalities": [...]}`` for ``MAMLNet``.
        training: estimate a training step; ``False`` estimates inference.
        optimizer_buffers: parameter-sized tensors the optimizer keeps per parameter (training only).
        dtype: autocast dtype of the forward (``None``: float32), as the engine runs it.
        safety: factor on the scaled estimate.
        margin: bytes added to the estimate.

    Returns:
        the estimate in bytes, or ``None`` where the device's peak memory cannot be measured.

    Raises:
        whatever ``network`` raises for the probe's input, e.g. a ``probe_size`` it does not accept.
    """
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    shape, probe_batch = _probe_shape(patch_size, batch_size, probe_size)
    kwargs = network_kwargs or {}
    trainable = [p for p in network.parameters() if p.requires_grad]
    gradient_bytes = sum(p.numel() * p.element_size() for p in trainable) if training else 0

    def step() -> None:
        x = torch.zeros(probe_batch, in_channels, *shape, device=device)  # counted: the real step has its batch too
        with autocast(dtype, device):
            if not training:
                with torch.no_grad():
                    network(x, **kwargs)
                return
            loss = _scalar(network(x, **kwargs))
        loss.backward()

    was_training = network.training
    gradients = [p.grad for p in trainable]
    buffers = [b.detach().clone() for b in network.buffers()]
    cuda = [device] if device.type == "cuda" else []
    _release_cached(device)
    try:
        with torch.random.fork_rng(devices=cuda):
            for p in trainable:
                p.grad = None
            network.train(training)
            peak = _measure_peak(step, device)
    finally:
        network.train(was_training)
        for p, g in zip(trainable, gradients):
            p.grad = g
        with torch.no_grad():
            for b, saved in zip(network.buffers(), buffers):
                b.copy_(saved)
        _release_cached(device)
    if peak is None:
        return None
    per_voxel = max(peak - gradient_bytes, 0) / (math.prod(shape) * probe_batch)
    state = gradient_bytes * (1 + optimizer_buffers)
    return int(safety * (state + per_voxel * math.prod(patch_size) * batch_size) + margin)


def _engine_dtype(engine: Engine) -> torch.dtype | None:
    """The autocast dtype of an engine's forward: its ``precision`` on its device; float32 for an engine without one.

    A plain MONAI engine with ``amp`` is thus estimated in float32, which errs on the high side.
    """
    return resolve_precision(getattr(engine, "precision", "float32"), engine.state.device)


class MemoryCheck:
    """Stops a run before its first iteration when the configured step does not fit in memory.

    On ``Events.STARTED`` (once per engine) it measures the memory available on the engine's device, estimates a
    step of ``engine.network`` at the configured patch and batch with :func:`estimate_peak_memory`, in the
    engine's ``precision`` (see :func:`medguide.engines.precision.resolve_precision`), and compares the two. When the
    estimate is larger it raises ``SystemExit`` with one message, for example::

        medguide: training needs about 35.8 GiB (estimated from a measured step at 64x64x64: patch [128, 128, 128],
        batch 2, on cpu, float32), but 21.9 GiB is available. Add configs/cpu_scale.json to --config_file, or lower
        patch_size or batch_size.

    ``SystemExit`` rather than an exception, because MONAI wraps exceptions raised in config expressions into
    long tracebacks; ``SystemExit`` ends the process with exit code 1 and prints the message last. When the step
    fits, the estimate is logged at INFO; where nothing can be measured (another device, no ``/proc``), the check
    logs at DEBUG and lets the run go on.

    Attach it before ``StatsHandler``: Ignite hands an exception to the first ``EXCEPTION_RAISED`` handler only,
    and this one passes its own message on without the traceback that ``StatsHandler`` would log.

    Args:
        patch_size: spatial size of one input: the training patch, or the sliding window's ``roi_size``.
        batch_size: the training batch, or the sliding window's ``sw_batch_size``.
        in_channels: input channels (the number of modalities for ``MAMLNet``).
        probe_size: spatial size of the measured step; the network must accept it (for a U-Net of ``S`` stages,
            a multiple of ``2 ** (S - 1)`` at least twice that). Larger probes estimate better and take longer.
        network_kwargs: keyword arguments of the network's forward, e.g. ``{"modalities": [...]}``.
        training: check a training step (the engine's optimizer is read for its state); ``False`` checks
            inference.
        limit: memory to allow in GiB; ``None`` uses :func:`available_memory` of the engine's device.
        hint: the settings to change, ending the message.
        safety: factor on the estimate (see :func:`estimate_peak_memory`).

    Raises:
        ValueError: ``limit`` is not positive.
        SystemExit: on ``Events.STARTED``, when the estimate exceeds the limit or the memory available.
    """

    def __init__(
        self,
        patch_size: Sequence[int],
        batch_size: int,
        in_channels: int,
        probe_size: Sequence[int],
        network_kwargs: dict | None = None,
        training: bool = True,
        limit: float | None = None,
        hint: str = "Lower patch_size or batch_size.",
        safety: float = SAFETY,
    ) -> None:
        if limit is not None and limit <= 0:
            raise ValueError(f"limit must be a positive number of GiB or None, got {limit}.")
        self.patch_size = [int(s) for s in patch_size]
        self.batch_size = int(batch_size)
        self.in_channels = int(in_channels)
        self.probe_size = [int(s) for s in probe_size]
        self.network_kwargs = dict(network_kwargs or {})
        self.training = training
        self.limit = limit
        self.hint = hint
        self.safety = safety
        self._checked: weakref.WeakSet = weakref.WeakSet()
        self._refusal: SystemExit | None = None

    def attach(self, engine: Engine) -> None:
        """Register the check on ``Events.STARTED`` and the pass-through of its message on ``EXCEPTION_RAISED``."""
        if not engine.has_event_handler(self, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self)
            engine.add_event_handler(Events.EXCEPTION_RAISED, self.exception_raised)

    @passes_own_error
    def exception_raised(self, engine: Engine, e: BaseException) -> None:
        """Re-raise this check's own ``SystemExit`` as it is; leave other exceptions to the other handlers."""
        pass_own_error(engine, e, self._refusal)

    def __call__(self, engine: Engine) -> None:
        if engine in self._checked:
            return
        self._checked.add(engine)
        network = engine.network
        if isinstance(network, nn.parallel.DistributedDataParallel):
            # the plain module: its backward does not trigger DDP's gradient all-reduce
            network = network.module
        device = torch.device(engine.state.device)
        _release_cached(device)
        limit = self.limit * GIB if self.limit is not None else available_memory(device)
        if limit is None:
            logger.debug("memory check skipped: the memory available on %s is unknown.", device)
            return
        dtype = _engine_dtype(engine)
        estimate = estimate_peak_memory(
            network,
            self.patch_size,
            self.batch_size,
            self.in_channels,
            self.probe_size,
            self.network_kwargs,
            training=self.training,
            optimizer_buffers=_optimizer_buffers(getattr(engine, "optimizer", None)) if self.training else 0,
            dtype=dtype,
            safety=self.safety,
        )
        if estimate is None:
            logger.debug("memory check skipped: peak memory cannot be measured on %s.", device)
            return
        shape, batch = _probe_shape(self.patch_size, self.batch_size, self.probe_size)
        precision = str(dtype or torch.float32).removeprefix("torch.")
        setting = f"patch {self.patch_size}, batch {self.batch_size}, on {device}, {precision}"
        if shape == self.patch_size and batch == self.batch_size:
            what = f"measured: {setting}"
        else:
            what = f"estimated from a measured step at {'x'.join(map(str, shape))}: {setting}"
        room = f"{limit / GIB:.1f} GiB is available"
        if self.limit is not None:
            room = f"the limit set is {limit / GIB:.1f} GiB"
        if estimate > limit:
            self._refusal = SystemExit(
                f"medguide: {'training' if self.training else 'inference'} needs about {estimate / GIB:.1f} GiB "
                f"({what}), but {room}. {self.hint}"
            )
            raise self._refusal
        logger.info("memory check: about %.1f GiB needed, %s (%s).", estimate / GIB, room, what)
