"""Reduced-precision settings shared by medguide's engines and benchmarks."""

from __future__ import annotations

import contextlib
import warnings

import torch

__all__ = ["PRECISIONS", "AutocastCall", "autocast", "resolve_precision"]

PRECISIONS = ("float32", "bfloat16", "float16", "auto")


def _cpu_has_fast_bfloat16() -> bool:
    # oneDNN reports bf16 support only where the CPU has native instructions (AVX512-BF16 or AMX)
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: str | torch.device) -> torch.dtype | None:
    """The autocast dtype that ``precision`` means on ``device``; ``None`` means plain float32.

    ``"auto"`` is float16 on CUDA and bfloat16 on CPUs with native bfloat16, float32 elsewhere. A precision
    the device cannot run fast (float16 on CPU, bfloat16 on a CPU without native support or an old GPU) falls
    back to float32 with a warning.

    Args:
        precision: one of ``"float32"``, ``"bfloat16"``, ``"float16"``, ``"auto"``.
        device: the device the computation runs on.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    kind = torch.device(device).type
    if precision == "float32":
        return None
    if kind == "cuda":
        if precision in ("auto", "float16"):
            return torch.float16
        if torch.cuda.is_bf16_supported():
            return torch.bfloat16
    elif kind == "cpu" and precision in ("auto", "bfloat16") and _cpu_has_fast_bfloat16():
        return torch.bfloat16
    elif precision == "auto":
        return None
    warnings.warn(f"precision {precision!r} is not supported on this {kind} device; running in float32.", stacklevel=2)
    return None


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
