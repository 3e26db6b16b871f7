"""Running bundle commands in tests: ``python -m monai.bundle ...`` in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO.parent / "shared" / "monai" / "meta_schema_20240725.json"


def configs(bundle: str) -> Path:
    return REPO / "bundles" / bundle / "configs"


def overrides(values: dict) -> list[str]:
    """Command-line overrides for ``monai.bundle``: each value as JSON, so lists and numbers keep their type."""
    args = []
    for key, value in values.items():
        args += [f"--{key}", value if isinstance(value, str) else json.dumps(value)]
    return args


def bundle(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle <args>`` from the repository root; fail with its output when it fails."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"monai.bundle {args[0]} failed:\n{result.stdout[-4000:]}\n{result.stderr[-6000:]}"
    return result


def config_list(*paths: Path) -> str:
    return "[" + ",".join(f"'{p}'" for p in paths) + "]"
