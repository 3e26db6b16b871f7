"""The synthetic data sets: the real layouts, declared labels, seeded, and each modality carrying what it does on real
data (a fast statistical check of the images against their labels, not a training run)."""

import functools
import importlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from medguide.data import (
    BRATS_MODALITIES,
    InputError,
    MissingInputError,
    brats_datalist,
    brats_label_values,
    dataset_dir_or_synthetic,
    decathlon_datalist,
    make_brats_dataset,
    make_liver_dataset,
)
from medguide.data.brats import brats_synthetic_case
from medguide.data.liver import liver_synthetic_case
from medguide.data.synthetic import generator_version
from medguide.transforms import LoadCased

SHAPE = (32, 32, 32)


@pytest.fixture(scope="module")
def brats_2021(tmp_path_factory) -> Path:
    return make_brats_dataset(tmp_path_factory.mktemp("brats2021"), num_cases=3, shape=SHAPE, seed=1)


@pytest.fixture(scope="module")
def liver(tmp_path_factory) -> Path:
    return make_liver_dataset(tmp_path_factory.mktemp("liver"), num_cases=3, shape=SHAPE, seed=1, num_test=2)


def _load(item, label_values):
    loaded = LoadCased(label_values=label_values)(item)
    return loaded["image"].numpy(), loaded["label"][0].numpy()


@pytest.mark.parametrize(
    "naming, names",
    [
        ("2021", ["BraTS2021_00000_t1.nii.gz", "BraTS2021_00000_t1ce.nii.gz", "BraTS2021_00000_t2.nii.gz",
                  "BraTS2021_00000_flair.nii.gz", "BraTS2021_00000_seg.nii.gz"]),
        ("2023", ["BraTS-GLI-00000-000-t1n.nii.gz", "BraTS-GLI-00000-000-t1c.nii.gz",
                  "BraTS-GLI-00000-000-t2w.nii.gz", "BraTS-GLI-00000-000-t2f.nii.gz",
                  "BraTS-GLI-00000-000-seg.nii.gz"]),
    ],
)  # fmt: skip
def test_brats_layout_and_labels(tmp_path, naming, names):
    out = make_brats_dataset(tmp_path, num_cases=2, shape=(24, 24, 24), naming=naming)
    case_dir = out / names[0].rsplit("_" if naming == "2021" else "-", 1)[0]
    assert sorted(p.name for p in case_dir.iterdir()) == sorted(names)
    items = brats_datalist(out)
    assert [item["naming"] for item in items] == [naming, naming]
    image, label = _load(items[0], brats_label_values(naming))
    assert image.shape == (4, 24, 24, 24)
    assert set(np.unique(label)) == set(brats_label_values(naming))


def test_liver_layout(liver):
    spec = json.loads((liver / "dataset.json").read_text(encoding="utf-8"))
    assert spec["modality"] == {"0": "arterial", "1": "venous"}
    assert spec["training"][0] == {
        "image": ["./imagesTr/liver_000_0000.nii.gz", "./imagesTr/liver_000_0001.nii.gz"],
        "label": "./labelsTr/liver_000.nii.gz",
    }
    assert len(decathlon_datalist(liver, "test")) == 2
    for item in decathlon_datalist(liver):
        image, label = _load(item, (0, 1, 2))
        assert image.shape == (2, *SHAPE)
        assert set(np.unique(label)) == {0, 1, 2}
        assert image.min() >= -1024 and abs(image[:, 0, 0].mean() + 1000) < 20  # air outside the body


def test_seeded(tmp_path):
    first = make_liver_dataset(tmp_path / "a", num_cases=1, shape=(24, 24, 24), num_test=0, seed=3)
    second = make_liver_dataset(tmp_path / "b", num_cases=1, shape=(24, 24, 24), num_test=0, seed=3)
    other = make_liver_dataset(tmp_path / "c", num_cases=1, shape=(24, 24, 24), num_test=0, seed=4)
    a, b, c = (_load(decathlon_datalist(d)[0], None)[0] for d in (first, second, other))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def _separability(image: np.ndarray, inside: np.ndarray, outside: np.ndarray, two_sided: bool = False) -> float:
    """How well one intensity threshold tells ``inside`` from ``outside`` voxels: the ROC AUC, either way round.

    ``two_sided`` thresholds the distance from the median of ``outside`` instead, for a region both brighter and darker
    than its surroundings (the tumour core on T1ce: a bright enhancing wall around dark necrosis).
    """
    values = image.astype(float)
    if two_sided:
        values = np.abs(values - np.median(values[outside]))
    ranks = np.concatenate([values[inside], values[outside]]).argsort().argsort()
    n, m = inside.sum(), outside.sum()
    auc = (ranks[:n].sum() - n * (n - 1) / 2) / (n * m)
    return max(auc, 1 - auc)


@pytest.fixture(scope="module")
def brats_cases():
    return [brats_synthetic_case(SHAPE, seed=11, index=i) for i in range(8)]


def test_brats_sequences_carry_what_they_do_on_real_brats(brats_cases):
    """FLAIR and T2 show the whole tumour best, T1ce the enhancing tumour and the core, T1 a little of each."""
    scores = {m: [] for m in BRATS_MODALITIES}
    for case in brats_cases:
        label = case.label
        brain = (label > 0) | np.any([image > 0 for image in case.images.values()], axis=0)
        whole, core, enhancing = label > 0, (label == 1) | (label == 4), label == 4
        for m, image in case.images.items():
            scores[m].append(
                [
                    _separability(image, whole, brain & ~whole),
                    _separability(image, core, whole & ~core, two_sided=True),
                    _separability(image, enhancing, whole & ~enhancing),
                ]
            )
    mean = {m: np.mean(s, 0) for m, s in scores.items()}
    wt, tc, et = ({m: v[i] for m, v in mean.items()} for i in range(3))
    assert min(wt["flair"], wt["t2"]) > max(wt["t1"], wt["t1ce"]) + 0.05
    assert et["t1ce"] > max(et["flair"], et["t2"], et["t1"]) + 0.15
    assert tc["t1ce"] > max(tc["flair"], tc["t2"], tc["t1"]) + 0.05
    assert 0.6 < wt["t1"] < wt["flair"]  # T1: weakest, not blind


def test_brats_lesions_and_their_enhancement_vary(brats_cases):
    patterns = {lesion["pattern"] for case in brats_cases for lesion in case.lesions}
    assert len(patterns) >= 3
    thickness = [lesion["rim_thickness"] for case in brats_cases for lesion in case.lesions]
    assert np.std(thickness) > 0.2 * np.mean(thickness)
    # the share of the core that enhances changes from case to case, as the rim's thickness and extent do
    enhancing_share = [(c.label == 4).sum() / np.isin(c.label, (1, 4)).sum() for c in brats_cases]
    assert np.ptp(enhancing_share) > 0.3
    assert any(len(c.lesions) > 1 for c in brats_cases)


def test_brats_brain_is_larger_than_a_patch_of_a_larger_grid():
    shape, patch = (48, 56, 48), (32, 32, 32)
    case = brats_synthetic_case(shape, seed=0, index=0)
    brain = np.any([image > 0 for image in case.images.values()], axis=0)
    extent = [np.ptp(np.nonzero(brain)[axis]) + 1 for axis in range(3)]
    assert all(e > p for e, p in zip(extent, patch))
    assert all(e <= s for e, s in zip(extent, shape))
    assert case.label.shape == shape and all(image.shape == shape for image in case.images.values())


def test_brats_same_seed_writes_the_same_files(tmp_path):
    first = make_brats_dataset(tmp_path / "a", num_cases=1, shape=(24, 24, 24), seed=3)
    second = make_brats_dataset(tmp_path / "b", num_cases=1, shape=(24, 24, 24), seed=3)
    other = make_brats_dataset(tmp_path / "c", num_cases=1, shape=(24, 24, 24), seed=4)
    a, b, c = (_load(brats_datalist(d)[0], None)[0] for d in (first, second, other))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_liver_phases_show_different_parts(liver):
    for item in decathlon_datalist(liver):
        image, label = _load(item, (0, 1, 2))
        arterial, venous = image
        assert venous[label == 1].mean() > arterial[label == 1].mean() + 20  # the liver enhances in the venous phase


def test_liver_tumours_enhance_each_in_their_own_way():
    cases = [liver_synthetic_case((24, 24, 24), seed=5, index=i, fault_rate=0.0) for i in range(16)]
    tumours = [t for case in cases for t in case.lesions]
    assert {t["kind"] for t in tumours} == {"hypervascular", "venous_iso", "arterial_iso", "hypovascular", "rim"}
    # neither phase shows every tumour: some are near iso-dense in one phase, some in the other
    assert any(abs(t["arterial"]) < 10 for t in tumours) and any(abs(t["venous"]) < 10 for t in tumours)
    assert {np.sign(t["arterial"]) for t in tumours if t["kind"] != "rim"} >= {-1.0, 1.0}
    # measured on the images: the arterial tumour-to-liver contrast changes sign between cases
    contrast = [c.images["arterial"][c.label == 2].mean() - c.images["arterial"][c.label == 1].mean() for c in cases]
    assert min(contrast) < 0 and max(contrast) > 15


def test_liver_is_larger_than_a_patch_of_a_larger_grid():
    shape, patch = (96, 96, 32), (40, 40, 32)
    case = liver_synthetic_case(shape, seed=0, index=0, fault_rate=0.0)
    extent = [np.ptp(np.nonzero(case.label)[axis]) + 1 for axis in range(2)]
    assert all(e > p for e, p in zip(extent, patch))


def test_makers_refuse_unknown_names(tmp_path):
    with pytest.raises(ValueError, match="unknown \\['portal'\\]"):
        make_liver_dataset(tmp_path, phases=("venous", "portal"))
    with pytest.raises(ValueError, match="naming must be one of"):
        make_brats_dataset(tmp_path, naming="2019")


def test_synthetic_set_is_made_once_per_maker_and_settings(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    settings = {"num_cases": 1, "shape": [16, 16, 16], "num_test": 0}
    made = dataset_dir_or_synthetic("", make_liver_dataset, **settings)
    # the dotted path, as a config or a bundle's demo.json names it, finds the same set
    assert dataset_dir_or_synthetic(None, "medguide.data.make_liver_dataset", **settings) == made
    assert made.parent == tmp_path / "medguide-synthetic"
    version = generator_version(make_liver_dataset)
    assert made.name == f"medguide.data.liver.make_liver_dataset-num_cases1-num_test0-shape16x16x16-v{version}"
    assert [item["case"] for item in decathlon_datalist(made)] == ["liver_000"]
    other = dataset_dir_or_synthetic("", make_liver_dataset, **settings, seed=1)
    assert sorted(p.name for p in made.parent.iterdir()) == sorted([made.name, other.name])  # no staging left
    umask = os.umask(0)
    os.umask(umask)
    assert made.stat().st_mode & 0o777 == 0o777 & ~umask


def test_a_set_from_an_older_generator_is_not_reused(tmp_path, monkeypatch):
    # the same maker and settings after the generator's source changed: a new set, not the stale one
    package = tmp_path / "makers"
    package.mkdir()
    module = package / "stale_maker.py"

    def write(value: str) -> None:
        module.write_text(
            "from pathlib import Path\n\n\ndef make(out_dir, num_cases=1):\n"
            f"    (Path(out_dir) / 'v.txt').write_text({value!r})\n",
            encoding="utf-8",
        )

    write("old")
    monkeypatch.syspath_prepend(str(package))
    maker = importlib.import_module("stale_maker")
    first = dataset_dir_or_synthetic("", maker.make, root=tmp_path / "sets")
    write("new")
    maker = importlib.reload(maker)
    second = dataset_dir_or_synthetic("", maker.make, root=tmp_path / "sets")
    assert first != second
    assert (second / "v.txt").read_text(encoding="utf-8") == "new"
    assert dataset_dir_or_synthetic("", maker.make, root=tmp_path / "sets") == second  # still made once


def test_given_dataset_dir_is_used_as_is(tmp_path):
    assert dataset_dir_or_synthetic(str(tmp_path), "no.such.maker") == tmp_path
    with pytest.raises(MissingInputError, match="does not exist"):
        dataset_dir_or_synthetic(tmp_path / "absent", make_brats_dataset)


def test_unknown_or_nameless_maker_is_named(tmp_path):
    with pytest.raises(InputError, match="'medguide.data.make_retina_dataset' is not a function"):
        dataset_dir_or_synthetic("", "medguide.data.make_retina_dataset", root=tmp_path)
    with pytest.raises(InputError, match="no name"):
        dataset_dir_or_synthetic("", functools.partial(make_brats_dataset, naming="2023"), root=tmp_path)


def test_failed_maker_leaves_nothing(tmp_path):
    def broken(out_dir, **kwargs):
        (Path(out_dir) / "half.nii.gz").write_bytes(b"")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        dataset_dir_or_synthetic("", broken, root=tmp_path)
    assert list(tmp_path.iterdir()) == []
