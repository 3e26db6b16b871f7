"""The synthetic data sets: the real layouts, declared labels, seeded, and modalities that differ where they should."""

import functools
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

from medguide.data import (
    InputError,
    MissingInputError,
    brats_datalist,
    brats_label_values,
    dataset_dir_or_synthetic,
    decathlon_datalist,
    make_brats_dataset,
    make_liver_dataset,
)
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


def test_brats_modalities_show_different_parts(brats_2021):
    for item in brats_datalist(brats_2021):
        image, label = _load(item, (0, 1, 2, 4))
        t1, t1ce, t2, flair = (image[item["modalities"].index(m)] for m in ("t1", "t1ce", "t2", "flair"))
        brain = (label == 0) & (t1 > 0)

        def mean(channel, region, brain=brain):
            return channel[region].mean() / channel[brain].mean()

        necrosis, oedema, rim = label == 1, label == 2, label == 4
        assert mean(t1ce, rim) > 1.3 * mean(t1ce, necrosis)
        # ET stands out of the oedema on T1ce, hardly on FLAIR; the oedema stands out of the brain on FLAIR and
        # T2, hardly on T1ce; T1 shows little of anything.
        t1ce_rim_contrast = mean(t1ce, rim) - mean(t1ce, oedema)
        assert t1ce_rim_contrast > 3 * abs(mean(flair, rim) - mean(flair, oedema))
        assert mean(flair, oedema) - 1 > 3 * abs(mean(t1ce, oedema) - 1)
        assert mean(t2, oedema) > 1.4
        assert abs(mean(t1, oedema) - 1) < 0.15


def test_liver_phases_show_different_parts(liver):
    for item in decathlon_datalist(liver):
        image, label = _load(item, (0, 1, 2))
        arterial, venous = image
        liver_region, tumour = label == 1, label == 2
        assert arterial[tumour].mean() > arterial[liver_region].mean() + 25  # hyper-enhancing
        assert venous[tumour].mean() < venous[liver_region].mean()  # washout, sometimes nearly iso-dense
        assert venous[liver_region].mean() > arterial[liver_region].mean() + 20


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
    assert made.name == "medguide.data.liver.make_liver_dataset-num_cases1-num_test0-shape16x16x16"
    assert [item["case"] for item in decathlon_datalist(made)] == ["liver_000"]
    other = dataset_dir_or_synthetic("", make_liver_dataset, **settings, seed=1)
    assert sorted(p.name for p in made.parent.iterdir()) == sorted([made.name, other.name])  # no staging left
    umask = os.umask(0)
    os.umask(umask)
    assert made.stat().st_mode & 0o777 == 0o777 & ~umask


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
