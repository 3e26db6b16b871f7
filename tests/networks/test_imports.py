"""Importing the networks loads the modality names of ``medguide.data`` but none of its readers' libraries."""

from __future__ import annotations

import json
import subprocess
import sys

from monai.bundle import ConfigParser

import medguide
import medguide.data

READERS = {"nibabel", "SimpleITK", "pydicom", "scipy", "medguide.data.checks", "medguide.data.synthetic"}


def test_importing_the_networks_does_not_load_the_readers():
    # MONAI's own import loads nibabel, pydicom and scipy (its image readers); the networks must add none
    script = """import json, sys
import monai, torch
by_monai = set(sys.modules)
import medguide.networks
medguide.networks.MAMLNet(["t1", "t2"], 2, num_stages=2)
print(json.dumps({"added": sorted(set(sys.modules) - by_monai)}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, encoding="utf-8")
    assert result.returncode == 0, result.stderr
    added = set(json.loads(result.stdout.splitlines()[-1])["added"])
    assert "medguide.data.modalities" in added
    assert not added & READERS, sorted(added & READERS)


def test_every_name_of_the_data_package_still_loads():
    for name in medguide.data.__all__:
        assert getattr(medguide.data, name) is not None, name
    assert set(medguide.data.__all__) <= set(dir(medguide.data))
    from medguide.data import make_brats_dataset, nonempty_subsets  # noqa: F401

    assert medguide.data.geometry.spacing_of is not None  # a submodule, as an attribute
    # a bundle config's expression, with only ``$import medguide``
    parser = ConfigParser({"imports": ["$import medguide"], "subsets": "$medguide.data.nonempty_subsets(['a', 'b'])"})
    assert parser.get_parsed_content("subsets") == [("a",), ("b",), ("a", "b")]
