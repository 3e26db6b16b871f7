"""LoadBagd: CLAM's .pt and .h5 bags and folders of patch images load as float32; every bad bag names case and file."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from monai.transforms import Compose
from PIL import Image

from medguide.data import InputError, InvalidCaseError
from medguide.transforms import LoadBagd, load_bag, validate_loading

CASE = "CPM19_CBICA_AAB_1"


def _h5(path: Path, features, coords=None) -> Path:
    with h5py.File(path, "w") as f:
        f["features"] = features
        if coords is not None:
            f["coords"] = coords
    return path


def _invalid(path: Path, reason: str, **kwargs) -> None:
    with pytest.raises(InvalidCaseError, match=reason) as caught:
        LoadBagd(**kwargs)({"case": CASE, "bag": str(path)})
    assert caught.value.case == CASE and caught.value.file == str(path)


def test_pt_tensor(tmp_path):
    torch.save(torch.randn(7, 16, dtype=torch.float64), tmp_path / f"{CASE}.pt")
    bag = LoadBagd(feature_dim=16)({"case": CASE, "bag": str(tmp_path / f"{CASE}.pt")})["bag"]
    assert bag.shape == (7, 16) and bag.dtype == torch.float32


@pytest.mark.parametrize(
    "saved",
    [
        {"features": torch.ones(3, 4)},  # a dict whose features are the bag
        [torch.ones(4), torch.zeros(4), torch.ones(4)],  # a list of patch vectors
        torch.ones(3, 4, dtype=torch.int64),
    ],
)
def test_pt_forms(tmp_path, saved):
    torch.save(saved, tmp_path / "bag.pt")
    bag = load_bag(tmp_path / "bag.pt", CASE)
    assert bag.shape == (3, 4) and bag.dtype == torch.float32


def test_h5_as_clam_writes_it(tmp_path):
    features = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    path = _h5(tmp_path / f"{CASE}.h5", features, coords=np.zeros((5, 2), np.int64))
    np.testing.assert_array_equal(load_bag(path, CASE).numpy(), features)


def test_patch_folder(tmp_path):
    folder = tmp_path / CASE
    folder.mkdir()
    rng = np.random.default_rng(0)
    for index in range(3):
        Image.fromarray(rng.integers(0, 255, (12, 12, 3), np.uint8)).save(folder / f"patch_{index}.png")
    Image.fromarray(rng.integers(0, 255, (12, 12), np.uint8)).save(folder / "patch_3.jpg")  # grey: made RGB
    (folder / "._patch_0.png").write_bytes(b"\0\5\26\7")  # a macOS resource fork, not a patch
    (folder / "notes.txt").write_text("slide 1", encoding="utf-8")
    bag = load_bag(folder, CASE)
    assert bag.shape == (4, 3, 12, 12) and bag.dtype == torch.float32


def test_missing_bag(tmp_path):
    _invalid(tmp_path / f"{CASE}.pt", "bag not found")


@pytest.mark.parametrize(
    "bag, reason",
    [
        (torch.zeros(0, 16), "empty bag: 0 patches"),
        (torch.randn(16), r"N x D .* shape \(16,\)"),
        (torch.randn(1, 5, 16), r"N x D .* shape \(1, 5, 16\)"),
        ([torch.randn(16), torch.randn(12)], "ragged bag: patch 1 has features of shape \\(12,\\)"),
        (torch.tensor([[1.0, 2.0], [float("nan"), 0.0], [float("inf"), 1.0]]), "NaN or infinite values in 2 of 3 "),
        (torch.ones(2, 2, dtype=torch.bool), "torch.bool"),
        ({"weights": torch.ones(2)}, r"holds keys \['weights'\], not a tensor"),
    ],
)
def test_bad_pt(tmp_path, bag, reason):
    path = tmp_path / f"{CASE}.pt"
    torch.save(bag, path)
    _invalid(path, reason)


def test_feature_dim_mismatch(tmp_path):
    torch.save(torch.randn(4, 512), tmp_path / "bag.pt")
    _invalid(tmp_path / "bag.pt", "dimension 512 where 1024 are expected", feature_dim=1024)


def test_corrupted_files(tmp_path):
    torch.save(torch.randn(40, 16), tmp_path / "bag.pt")
    data = (tmp_path / "bag.pt").read_bytes()
    (tmp_path / "bag.pt").write_bytes(data[: len(data) // 2])
    _invalid(tmp_path / "bag.pt", "unreadable or corrupted")
    (tmp_path / "bag.h5").write_bytes(b"not an HDF5 file")
    _invalid(tmp_path / "bag.h5", "unreadable or corrupted")
    (tmp_path / "bag.npy").write_bytes(b"")
    _invalid(tmp_path / "bag.npy", "is not a bag")


def test_bad_h5(tmp_path):
    with h5py.File(tmp_path / "none.h5", "w") as f:
        f["coords"] = np.zeros((3, 2))
    _invalid(tmp_path / "none.h5", r"no 'features' dataset \(datasets: \['coords'\]\)")
    _invalid(_h5(tmp_path / "empty.h5", np.zeros((0, 8), np.float32)), "empty bag")
    _invalid(_h5(tmp_path / "coords.h5", np.ones((4, 8), np.float32), np.zeros((3, 2))), "'coords' has shape")
    with h5py.File(tmp_path / "ragged.h5", "w") as f:
        rows = f.create_dataset("features", (2,), dtype=h5py.vlen_dtype(np.float32))
        rows[0], rows[1] = np.ones(8, np.float32), np.ones(6, np.float32)
    _invalid(tmp_path / "ragged.h5", "ragged bag")


def test_bad_patch_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_bytes(b"")
    _invalid(empty, "empty bag: no patch image")
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    Image.new("RGB", (8, 8)).save(sizes / "a.png")
    Image.new("RGB", (8, 6)).save(sizes / "b.png")
    with pytest.raises(InvalidCaseError, match=r"patch of shape \(3, 8, 6\) where a.png has") as caught:
        load_bag(sizes, CASE)
    assert caught.value.file == str(sizes / "b.png")
    broken = tmp_path / "broken"
    broken.mkdir()
    Image.new("RGB", (8, 8)).save(broken / "a.jpg")
    (broken / "b.jpg").write_bytes((broken / "a.jpg").read_bytes()[:100])
    with pytest.raises(InvalidCaseError, match="unreadable or corrupted image") as caught:
        load_bag(broken, CASE)
    assert caught.value.case == CASE and caught.value.file == str(broken / "b.jpg")


def test_validate_loading_skips_bad_bags_through_compose(tmp_path):
    torch.save(torch.randn(3, 4), tmp_path / "good.pt")
    torch.save(torch.zeros(0, 4), tmp_path / "empty.pt")
    items = [{"case": "good", "bag": str(tmp_path / "good.pt")}, {"case": "empty", "bag": str(tmp_path / "empty.pt")}]
    load = Compose([LoadBagd("bag")])  # MONAI wraps a transform's error in a RuntimeError
    with pytest.raises(InvalidCaseError, match="case 'empty'.*empty bag"):
        validate_loading(items, load)
    kept = validate_loading(items, load, skip_invalid=True)
    assert kept == items[:1] and [error.case for error in kept.skipped] == ["empty"]
    with pytest.raises(InputError, match="no valid case left"):
        validate_loading(items[1:], load, skip_invalid="true")
