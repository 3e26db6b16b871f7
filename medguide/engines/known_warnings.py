"""Warnings a user can do nothing about, shown at most once per run instead of once per reader, run or worker.

Each entry says why it is harmless and why nobody running a bundle can act on it. A warning that a user or a
config can act on (MONAI's notice that a bundle config runs code, which MONAI shows before ``initialize`` anyway,
or a deprecated default a config can pin) is not listed here and is never hidden.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

__all__ = ["KNOWN_LOG_RECORDS", "KNOWN_WARNINGS", "show_known_warnings_once"]

# (category, start of the message as a regular expression)
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    # MONAI tries nvImageCodec's GPU DICOM decoder each time a LoadImage builds its readers (in every DataLoader
    # worker that loads images); without the optional CUDA library pydicom decodes DICOM, and NIfTI never uses it
    (UserWarning, r"NvImgCodecPydicomReader: nvImageCodec decoder plugin did not register"),
    # MONAI 1.6's own Hausdorff distance passes the argument it deprecates; nothing outside MONAI can change that
    (FutureWarning, r"monai\.metrics\.utils get_mask_edges:always_return_as_numpy"),
)

# (logger name, start of the message as a regular expression): the same nvImageCodec attempt, logged
KNOWN_LOG_RECORDS: tuple[tuple[str, str], ...] = (
    ("monai.data.nvimgcodec_pydicom_plugin", r"nvImageCodec is not available; skipping pydicom decoder plugin"),
)


class _FirstRecordOnly(logging.Filter):
    """Passes the first record whose message matches ``pattern``, drops the later ones, passes everything else."""

    def __init__(self, pattern: str) -> None:
        super().__init__()
        self.pattern = re.compile(pattern)
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.pattern.match(record.getMessage()):
            return True
        if self.seen:
            return False
        self.seen = True
        return True


_record_filters: list[_FirstRecordOnly] = []


def _silence_in_child() -> None:
    # a forked process (a DataLoader worker) is part of the same run: the main process shows these, once
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for record_filter in _record_filters:
        record_filter.seen = True


def show_known_warnings_once() -> None:
    """Show each of :data:`KNOWN_WARNINGS` and :data:`KNOWN_LOG_RECORDS` at most once in this run.

    In this process each is shown the first time it occurs and not again, also across several bundle runs in
    one process (``medguide demo``); processes forked from it afterwards (DataLoader workers) show none of them,
    so a warning raised only in workers is not shown. Calling it again changes nothing. Not covered: processes
    started with ``spawn`` or ``forkserver``, which begin afresh, and code that changes the warning filters in
    between (a ``warnings.catch_warnings`` block, for one), after which Python's ``"once"`` shows a warning
    again; a bundle run changes none. A bundle calls it first in ``initialize``::

        "initialize": ["$medguide.data.plain_input_errors()", "$medguide.engines.show_known_warnings_once()", ...]
    """
    for category, message in KNOWN_WARNINGS:
        # Python keeps what "once" has shown in a registry that any change of the filters clears: add only what
        # is missing, so a second bundle run in this process does not show them again
        if ("once", re.compile(message, re.IGNORECASE), category, None, 0) not in warnings.filters:
            warnings.filterwarnings("once", message=message, category=category)
    if _record_filters:
        return
    for name, message in KNOWN_LOG_RECORDS:
        record_filter = _FirstRecordOnly(message)
        logging.getLogger(name).addFilter(record_filter)
        _record_filters.append(record_filter)
    os.register_at_fork(after_in_child=_silence_in_child)
