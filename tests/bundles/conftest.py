"""The tiny runs that several bundle tests read, made once per session and bundle."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.bundles.helpers import TinyRun, run_tiny


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Callable[[str], TinyRun]:
    """``tiny_run(name)``: the bundle trained, evaluated and run for inference in process on its tiny data."""
    runs: dict[str, TinyRun] = {}

    def get(name: str) -> TinyRun:
        if name not in runs:
            runs[name] = run_tiny(name, tmp_path_factory.mktemp(name))
        return runs[name]

    return get
