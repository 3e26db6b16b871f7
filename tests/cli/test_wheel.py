"""``medguide`` from a wheel: the bundles ship inside it, so an installed ``medguide`` finds them without a checkout.

The wheel is built offline from a copy of the checkout (a build in place would leave ``build/`` in the repository,
whose stale files can end up in the next wheel), installed without dependencies into a fresh venv that has neither
torch nor MONAI, and run from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_INPUTS = ("setup.cfg", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "medguide", "bundles")
# what a checkout may hold beside the sources (bundles/*/models etc. are produced by training, never shipped)
NOT_SOURCES = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "models", "eval", "output", "runs")

# builds a wheel and a venv: an install end to end
pytestmark = pytest.mark.slow


def _run(args: list, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV") and "MEDGUIDE" not in k}
    env["PIP_NO_INDEX"] = "1"
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the built wheel, the ``bin`` folder of a fresh venv with only that wheel installed)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=NOT_SOURCES)
        elif (REPO / name).is_file():
            shutil.copy2(REPO / name, source / name)
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", tmp / "dist", source], tmp)
    (wheel,) = (tmp / "dist").glob("medguide-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    _run([*pip, "--python", bin_dir / "python", "install", "--no-deps", "--no-index", "-q", wheel], tmp)
    return wheel, bin_dir


def _declared_bundles() -> dict[str, str]:
    """The checkout's bundles and their demo descriptions."""
    return {
        path.parents[1].name: json.loads(path.read_text(encoding="utf-8"))["description"]
        for path in REPO.glob("bundles/*/configs/demo.json")
    }


def test_the_wheel_holds_every_package_and_each_bundle_without_its_outputs(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "medguide").rglob("__init__.py")}
    missing = sorted(p for p in packages if f"{p}/__init__.py" not in names)
    assert not missing, f"packages not in the wheel (list them in setup.cfg's [options] packages): {missing}"
    assert "medguide/bundles/__init__.py" in names
    for bundle in _declared_bundles():
        root = REPO / "bundles" / bundle
        files = [root / "LICENSE", *(root / "configs").rglob("*"), *(root / "docs").rglob("*")]
        shipped = {f"medguide/{f.relative_to(REPO).as_posix()}" for f in files if f.is_file()}
        assert shipped <= names, sorted(shipped - names)
    assert not [n for n in names if n.split("/")[3:4] == ["models"] or n.endswith((".pyc", ".pt"))]


def test_the_installed_command_lists_the_bundles_outside_the_repository(installed, tmp_path):
    _, bin_dir = installed
    medguide = bin_dir / ("medguide.exe" if os.name == "nt" else "medguide")
    listing = _run([medguide, "demo", "--list"], tmp_path).stdout
    bundles = _declared_bundles()
    assert {"maml_brats_mri_segmentation", "maml_liver_tumor_ct_segmentation"} <= set(bundles)
    for name, description in bundles.items():
        assert f"{name}\n    {description}\n" in listing
    assert "predict" in _run([medguide, "--help"], tmp_path).stdout
    where = _run([bin_dir / "python", "-c", "import medguide.cli.main as m; print(m.bundles_root())"], tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(bin_dir.parent), "the installed package should use its own copy"
