"""The shared file helpers: image stems and suffixes, and folders that appear whole or not at all."""

import os

import pytest

from medguide.data.files import atomic_folder, image_stem, image_suffix


@pytest.mark.parametrize(
    "name, stem, suffix",
    [
        ("BraTS2021_00000_t1.nii.gz", "BraTS2021_00000_t1", ".nii.gz"),
        ("Flair_subtrMeanDivStd.NII.GZ", "Flair_subtrMeanDivStd", ".NII.GZ"),
        ("scan.v2.nii", "scan.v2", ".nii"),
        ("ct.mha", "ct", ".mha"),
        ("dicom folder", "dicom folder", ""),
    ],
)
def test_image_stem_and_suffix(name, stem, suffix):
    assert (image_stem(f"/data/{name}"), image_suffix(name)) == (stem, suffix)


def test_atomic_folder_appears_whole_with_the_umask_mode(tmp_path):
    target = tmp_path / "sets" / "brats"
    with atomic_folder(target) as staging:
        (staging / "case.txt").write_text("x", encoding="utf-8")
        assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == ["brats"]
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask


def test_atomic_folder_keeps_the_first_of_two_and_cleans_up_after_errors(tmp_path):
    target = tmp_path / "set"
    with atomic_folder(target) as first:
        (first / "a").write_text("first", encoding="utf-8")
    with atomic_folder(target) as second:  # another process finishing later
        (second / "a").write_text("second", encoding="utf-8")
    assert (target / "a").read_text(encoding="utf-8") == "first"
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "broken") as staging:
        (staging / "a").write_text("half", encoding="utf-8")
        raise RuntimeError
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
