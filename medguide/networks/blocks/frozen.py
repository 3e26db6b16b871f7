"""A wrapper that keeps a trained part of a network frozen whatever the trainer does with the whole."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["Frozen"]

_WRAPPED = "module"


class Frozen(nn.Module):
    """Keeps ``module`` frozen: no gradient, eval mode, parameters and normalisation statistics unchanged.

    Multi-stage methods train a part, then train something on top of it with the part fixed (DMG's stage c trains
    the guided head on a frozen encoder and guidance model). A trainer calls ``network.train()`` every epoch and
    builds its optimizer from ``network.parameters()``; this wrapper makes both harmless:

    - the parameters get ``requires_grad=False``, and the forward runs under ``torch.no_grad()``, so no gradient
      reaches them (an optimizer skips a parameter without a gradient, so they stay unchanged even in its
      parameter groups). The output carries no gradient either: nothing flows back through the wrapper to its
      input;
    - the module stays in eval mode when ``.train()`` is called on any parent, so batch norm uses and keeps its
      running statistics and dropout is off.

    The state dict holds the wrapped module's own keys under the wrapper's attribute name (``encoder.features...``
    for ``self.encoder = Frozen(densenet)``, as if it were not wrapped), so a checkpoint of the unwrapped part loads
    into the wrapped one and back.

    Wrapping freezes ``module`` in place (its parameters' ``requires_grad`` and its mode), so do not wrap a
    module that is still to be trained elsewhere.

    Args:
        module: the part to keep frozen.

    Example:
        >>> net = nn.Sequential(Frozen(nn.BatchNorm1d(4)), nn.Linear(4, 2))
        >>> net.train()[0].training
        False
        >>> list(net.state_dict())[:2]
        ['0.weight', '0.bias']
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if isinstance(module, Frozen):
            module = module.module
        module.requires_grad_(False)
        self.module = module
        self.train(False)
        self.register_state_dict_post_hook(_unwrap_keys)
        self.register_load_state_dict_pre_hook(_wrap_keys)

    def train(self, mode: bool = True) -> Frozen:
        """Stays in eval mode whatever ``mode`` is (so a parent's ``train()`` leaves it frozen)."""
        return super().train(False)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module's output, computed without gradient (same arguments and shapes as the module)."""
        with torch.no_grad():
            return self.module(*args, **kwargs)


def _unwrap_keys(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    inner = prefix + _WRAPPED + "."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner) :]] = state_dict.pop(key)


def _wrap_keys(
    module: nn.Module,
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: list,
    unexpected_keys: list,
    error_msgs: list,
) -> None:
    for key in [k for k in state_dict if k.startswith(prefix)]:
        state_dict[prefix + _WRAPPED + "." + key[len(prefix) :]] = state_dict.pop(key)
