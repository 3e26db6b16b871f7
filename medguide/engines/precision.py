"""The one precision setting of medguide's engines, reports and benchmarks, and what it means on a device.

A config writes ``precision``: ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"``. :func:`resolve_precision`
is the one place that turns it into an autocast dtype for a device; :func:`engine_precision` turns that into the
arguments MONAI's engines take (``amp``, ``amp_kwargs``) plus the CPU autocast MONAI's engines do not do.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import warnings
from typing import NamedTuple

import torch

__all__ = ["PRECISIONS", "AutocastCall", "EnginePrecision", "autocast", "engine_precision", "resolve_precision"]

PRECISIONS = ("float32", "bfloat16", "float16", "auto")


@functools.cache
def _cpu_bfloat16() -> str:
    """``"amx"``: native bfloat16 with usable AMX tiles (trusted for training); ``"native"``: native bfloat16 without
    AMX (AVX512-BF16 alone, or a non-x86 CPU that oneDNN runs bfloat16 on); ``"none"``: emulated, tens of times
    slower than float32."""
    # oneDNN's own check; on x86 it also says yes for AVX512 without BF16 instructions, so those are asked for too,
    # and AMX counts only where the operating system grants its tiles (torch asks, as oneDNN does before using them)
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return "none"
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "native"
    if torch.cpu._is_amx_tile_supported() and torch.cpu._init_amx():
        return "amx"
    return "native" if torch.cpu._is_avx512_bf16_supported() else "none"


def _gpu_has_native_bfloat16(device: str | torch.device) -> bool:
    # compute capability 8 (Ampere) brought bfloat16 tensor cores; torch.cuda.is_bf16_supported() also says yes
    # for older GPUs, which emulate it slowly, and asks about the current device rather than this one
    major, _ = torch.cuda.get_device_capability(torch.device(device))
    return major >= 8


def resolve_precision(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype that ``precision`` means on ``device``; ``None`` means plain float32.

    ``"float32"`` is exact float32 on every device (no autocast). ``"auto"`` is float16 on CUDA and bfloat16 on
    CPUs with AMX (Intel Sapphire Rapids and later), float32 elsewhere. A precision the device cannot run fast
    (float16 on CPU, bfloat16 on a CPU without native support or on a GPU of compute capability below 8, before
    Ampere) falls back to float32 with a warning.

    CPUs with AVX512-BF16 but no AMX (e.g. AMD EPYC Zen 4), and non-x86 CPUs with native bfloat16, run bfloat16
    natively, and ``"bfloat16"`` runs there, with a warning, but ``"auto"`` gives float32: on an AVX512-BF16 CPU
    (torch 2.13.0+cpu) the bfloat16 autocast backward of small 3D convolutions gave non-finite gradients
    intermittently (in 1 to 11 steps in 100 in our runs); their forward was not affected. AMX CPUs ran every test
    and benchmark clean in bfloat16.

    Example:
        >>> resolve_precision("float32", "cuda") is None
        True
        >>> resolve_precision("auto", "cuda")
        torch.float16

    Args:
        precision: one of ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"``.
        device: the device the computation runs on.

    Raises:
        ValueError: ``precision`` is not one of those.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    kind = torch.device(device).type
    if precision == "float32":
        return None
    if kind == "cuda":
        if precision in ("auto", "float16"):
            return torch.float16
        if _gpu_has_native_bfloat16(device):
            return torch.bfloat16
    elif kind == "cpu" and precision in ("auto", "bfloat16"):
        native = _cpu_bfloat16()
        if native == "amx":
            return torch.bfloat16
        if native == "native" and precision == "bfloat16":
            warnings.warn(
                "bfloat16 on a CPU without AMX: on one with AVX512-BF16 alone, training gradients of 3D convolutions "
                "were intermittently non-finite (inference was not affected); prefer precision 'float32' for "
                "training ('auto' gives float32 here).",
                stacklevel=1,
            )
            return torch.bfloat16
    if precision == "auto":  # float32 wherever no reduced precision is trusted above
        return None
    # stacklevel 1: the engine, the memory check and the report resolve the same setting; said once per process
    warnings.warn(f"precision {precision!r} is not supported on this {kind} device; running in float32.", stacklevel=1)
    return None


class EnginePrecision(NamedTuple):
    """How an engine runs a precision setting: MONAI's own CUDA AMP, or medguide's autocast around the forward.

    Attributes:
        amp: MONAI's ``amp`` argument: ``torch.autocast("cuda")`` around the forward (and, in a trainer, a
            GradScaler, which :class:`medguide.engines.Trainer` keeps for float16 only).
        amp_kwargs: MONAI's ``amp_kwargs`` argument: ``{"dtype": ...}`` with ``amp``, else empty.
        cpu_dtype: the autocast dtype medguide applies around the forward where MONAI's ``amp`` does not reach (it
            autocasts only CUDA); ``None`` with ``amp`` and for float32.
    """

    amp: bool
    amp_kwargs: dict
    cpu_dtype: torch.dtype | None


def engine_precision(precision: str, device: str | torch.device) -> EnginePrecision:
    """What ``precision`` means for a MONAI engine on ``device`` (see :func:`resolve_precision`).

    Example:
        >>> engine_precision("auto", "cuda")
        EnginePrecision(amp=True, amp_kwargs={'dtype': torch.float16}, cpu_dtype=None)
        >>> engine_precision("float32", "cuda")
        EnginePrecision(amp=False, amp_kwargs={}, cpu_dtype=None)
    """
    dtype = resolve_precision(precision, device)
    if dtype is not None and torch.device(device).type == "cuda":
        return EnginePrecision(amp=True, amp_kwargs={"dtype": dtype}, cpu_dtype=None)
    return EnginePrecision(amp=False, amp_kwargs={}, cpu_dtype=dtype)


def autocast(dtype: torch.dtype | None, device: str | torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op for float32 (``dtype=None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


class AutocastCall:
    """Calls ``fn`` under :func:`autocast` for ``dtype`` on ``device``: an inferer or network in reduced precision.

    Args:
        fn: the callable to wrap, e.g. a MONAI inferer.
        dtype: autocast dtype, ``None`` for float32.
        device: the device the call runs on.
    """

    def __init__(self, fn, dtype: torch.dtype | None, device: str | torch.device) -> None:
        self.fn, self.dtype, self.device = fn, dtype, device

    def __call__(self, *args, **kwargs):
        with autocast(self.dtype, self.device):
            return self.fn(*args, **kwargs)
