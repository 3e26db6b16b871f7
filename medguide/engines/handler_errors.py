"""Letting a handler's own error end a run as it is, without Ignite swallowing or re-logging anybody's errors.

Ignite hands an exception to the engine's ``EXCEPTION_RAISED`` handlers and re-raises it only when there are none;
MONAI's ``StatsHandler`` logs it with its traceback and raises it again. A medguide handler that stops a run on
purpose (a missing model, a step too large for memory) registers :func:`pass_own_error` first, so its message goes
out alone; any other error goes on to the other handlers, and is raised here when no other handler would see it.
"""

from __future__ import annotations

from ignite.engine import Engine, Events

__all__ = ["pass_own_error", "passes_own_error"]


def _passes_errors_on(handler) -> bool:
    return getattr(getattr(handler, "__func__", handler), "_medguide_pass_own_error", False)


def pass_own_error(engine: Engine, error: BaseException, own: BaseException | None) -> None:
    """Body of an ``EXCEPTION_RAISED`` handler: raise ``error`` if it is ``own``, or if nothing else would see it.

    Args:
        engine: the engine whose run raised ``error``.
        error: the exception Ignite hands over.
        own: the exception the calling handler raised itself, if any.

    Raises:
        ``error``: when it is ``own``, or when every ``EXCEPTION_RAISED`` handler of ``engine`` is one that passes
        errors on (so none of them would raise it and Ignite would swallow it).
    """
    # Ignite has no public listing of an event's handlers; tests/engines/test_handler_errors.py pins this one
    handlers = [entry[0] for entry in engine._event_handlers.get(Events.EXCEPTION_RAISED, [])]
    if error is own or all(_passes_errors_on(h) for h in handlers):
        raise error


def passes_own_error(method):
    """Mark an ``EXCEPTION_RAISED`` handler method that calls :func:`pass_own_error` (and raises nothing else)."""
    method._medguide_pass_own_error = True
    return method
