"""show_known_warnings_once: a known harmless warning appears once per run, also with DataLoader workers."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from monai.data.nvimgcodec_pydicom_plugin import is_nvimgcodec_available

from medguide.engines.known_warnings import KNOWN_LOG_RECORDS, KNOWN_WARNINGS

pytestmark = pytest.mark.skipif(is_nvimgcodec_available(), reason="MONAI warns about nvImageCodec only without it")

# Each phase raises the known warnings with MONAI's own calls, plus one warning that is not listed. Phases:
# "workers": only in two forked DataLoader workers; "main": twice in this process, with show_known_warnings_once
# called again in between, as the next bundle run of `medguide demo` does.
SCRIPT = r"""
import logging, sys, warnings
import torch
from torch.utils.data import DataLoader

logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
install = sys.argv[1] == "install"
if install:
    from medguide.engines import show_known_warnings_once
    show_known_warnings_once()

def raise_all(index=0):
    from monai.data.image_reader import NvImgCodecPydicomReader
    from monai.metrics.utils import get_mask_edges
    NvImgCodecPydicomReader()
    empty = torch.zeros(4, 4, dtype=torch.bool)
    get_mask_edges(empty, empty, always_return_as_numpy=False)
    warnings.warn("an unlisted warning")
    return index

for phase in sys.argv[2:]:
    print("PHASE", phase, file=sys.stderr, flush=True)
    if phase == "workers":
        loader = DataLoader([0, 1], num_workers=2, multiprocessing_context="fork", collate_fn=lambda b: raise_all(*b))
        list(loader)
    else:
        raise_all()
        if install:
            show_known_warnings_once()
        raise_all()
"""

PATTERNS = {
    "plugin warning": KNOWN_WARNINGS[0][1],
    "edges warning": KNOWN_WARNINGS[1][1],
    "plugin log": KNOWN_LOG_RECORDS[0][1],
    "unlisted": "an unlisted warning",
}


def counts(install: bool, *phases: str) -> list[dict[str, int]]:
    """How often each pattern appears on stderr, per phase."""
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, "install" if install else "plain", *phases],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    sections = result.stderr.split("PHASE ")[1:]
    return [{name: len(re.findall(pattern, text)) for name, pattern in PATTERNS.items()} for text in sections]


def test_without_it_known_warnings_repeat():
    workers, main = counts(False, "workers", "main")
    assert workers == {"plugin warning": 2, "edges warning": 2, "plugin log": 2, "unlisted": 2}
    # Python's default shows a warning once per place it is raised from; MONAI logs its record every time
    assert main == {"plugin warning": 1, "edges warning": 1, "plugin log": 2, "unlisted": 1}


def test_known_warnings_show_once_per_run_and_never_in_workers():
    main, workers = counts(True, "main", "workers")
    assert main == {"plugin warning": 1, "edges warning": 1, "plugin log": 1, "unlisted": 1}
    # the workers are forked after the main process showed them; an unlisted warning is left alone
    assert workers == {"plugin warning": 0, "edges warning": 0, "plugin log": 0, "unlisted": 2}


def test_warnings_raised_only_in_workers_are_not_repeated_there():
    (workers,) = counts(True, "workers")
    assert workers == {"plugin warning": 0, "edges warning": 0, "plugin log": 0, "unlisted": 2}


def test_patterns_match_monai_messages():
    """MONAI's wording is what the filters match; a MONAI update that rewords a warning fails here.

    In a fresh process: MONAI logs the nvImageCodec record only the first time a process builds that reader.
    """
    probe = (
        "import json, logging, warnings, torch\n"
        "from monai.data.image_reader import NvImgCodecPydicomReader\n"
        "from monai.metrics.utils import get_mask_edges\n"
        "records = []\n"
        "class Keep(logging.Handler):\n"
        "    def emit(self, record):\n"
        "        records.append([record.name, record.getMessage()])\n"
        "logging.getLogger().addHandler(Keep())\n"
        "logging.getLogger().setLevel(logging.INFO)\n"
        "empty = torch.zeros(4, 4, dtype=torch.bool)\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    NvImgCodecPydicomReader()\n"
        "    get_mask_edges(empty, empty, always_return_as_numpy=False)\n"
        "print(json.dumps({'warnings': [[w.category.__name__, str(w.message)] for w in caught], 'records': records}))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    for category, pattern in KNOWN_WARNINGS:
        assert any(c == category.__name__ and re.match(pattern, m) for c, m in seen["warnings"]), (pattern, seen)
    for name, pattern in KNOWN_LOG_RECORDS:
        assert any(n == name and re.match(pattern, m) for n, m in seen["records"]), (pattern, seen)
