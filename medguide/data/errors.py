"""The errors medguide raises for bad input, and how a bundle run shows them to a person.

Every reader raises :class:`InvalidCaseError` for a bad case (a training run can name it or skip it), and every
other check of what the user gave (a folder, a setting) raises :class:`InputError`. Both are ``ValueError`` for
library callers. Inside ``python -m monai.bundle run`` MONAI wraps any error of a config expression in
``RuntimeError: Failed to evaluate ConfigExpression`` with a long traceback; a bundle's ``initialize`` calls
:func:`plain_input_errors` so that the last line a user sees is the message itself.
"""

from __future__ import annotations

import os
import sys
import traceback

__all__ = ["InputError", "InvalidCaseError", "MissingInputError", "flag", "plain_input_errors"]


class InputError(ValueError):
    """Something the user gave cannot be used as it is: the message says what, where, and what to change."""


class MissingInputError(InputError, FileNotFoundError):
    """A data folder, or the file that describes it, is missing or holds no case (a ``FileNotFoundError`` too)."""


class InvalidCaseError(InputError):
    """A case that cannot be used: a file is missing, unreadable, corrupted or inconsistent with the others.

    The message names the case, the file and why, e.g.
    ``case 'BraTS-GLI-00001-000': file '/data/x_t1.nii.gz': contains NaN or infinite voxels``.

    Args:
        case: the case id (the datalist item's ``"case"``, else the first file's stem).
        file: the offending file or DICOM folder.
        reason: what is wrong with it.
    """

    def __init__(self, case: str, file: str, reason: str) -> None:
        self.case = str(case)
        self.file = str(file)
        self.reason = reason
        super().__init__(f"case {self.case!r}: file {self.file!r}: {reason}")

    def __reduce__(self):
        # DataLoader workers pickle exceptions; the default would call __init__ with the message only.
        return type(self), (self.case, self.file, self.reason)


def flag(value: bool | str | int, setting: str) -> bool:
    """A yes/no setting as given on a command line: a bool, ``0``/``1``, or ``"true"``/``"false"`` in any case.

    ``python -m monai.bundle run --skip_invalid false`` hands the config the string ``'false'``, which Python takes
    for true; a setting read through this function means what the user typed.

    Raises:
        InputError: naming the setting, for any other value.
    """
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    if isinstance(value, bool | int) and value in (0, 1):
        return bool(value)
    raise InputError(f"{setting} must be true or false, got {value!r}")


def _input_error(error: BaseException | None) -> InputError | None:
    """The first :class:`InputError` in ``error``'s chain of causes and contexts."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, InputError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _excepthook(kind, error, tb, previous=sys.excepthook) -> None:
    found = _input_error(error)
    if found is None or os.environ.get("MEDGUIDE_TRACEBACK"):
        previous(kind, error, tb)
        return
    where = traceback.extract_tb(found.__traceback__)[-1:] if found.__traceback__ else []
    origin = f" (raised in {where[0].filename}:{where[0].lineno}; MEDGUIDE_TRACEBACK=1 shows the traceback)"
    print(f"{type(found).__name__}{origin if where else ''}:\n{found}", file=sys.stderr)


def plain_input_errors() -> None:
    """Make a run that ends on an :class:`InputError` print that message last instead of MONAI's wrapped traceback.

    Installs a ``sys.excepthook`` (for this process only) that finds an ``InputError`` anywhere in the chain of
    the uncaught exception and prints its type, where it was raised and its message; the exit code stays 1. Any
    other error, and every error when the environment variable ``MEDGUIDE_TRACEBACK`` is set, keeps Python's full
    traceback. Bundle configs call it first in ``initialize``.
    """
    if sys.excepthook is not _excepthook:
        sys.excepthook = _excepthook
