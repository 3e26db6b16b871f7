"""Chest X-ray readers: films from PNG, JPEG and DICOM (MONOCHROME1 inverted, LUTs applied, spacing kept, 16-bit and
grey-as-RGB converted, colour and undecodable files named), the MIMIC-CXR tree with its reports and CSV files, the
ChestX-ray8 box list and Data_Entry (bad lines named by file and line), boxes back on the original grid, and the real
ChestX-ray8 films and box list. Films are MONAI's ``[1, W, H]`` (x, the file's columns, first), spacings ``(x, y)``."""

import gzip
from collections import Counter
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

from medguide.data import (
    CHESTXRAY8_SIDE,
    InputError,
    InvalidCaseError,
    MissingInputError,
    boxes_to_grid,
    chestxray8_boxes,
    chestxray8_datalist,
    mimic_cxr_datalist,
    read_chest_film,
)
from medguide.transforms import LoadChestFilmd, read_photo, validate_loading

RAMP = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48) % 4096  # 12-bit values, 64 rows of 48 columns


def write_film_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", bits: int = 12, **tags) -> Path:
    """A one-frame digital X-ray DICOM file as a modality writes it; ``tags`` are set as given."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "DX"
    ds.set_pixel_data(pixels, photometric_interpretation=photometric, bits_stored=bits)
    for name, value in tags.items():
        setattr(ds, name, value)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_png(path: Path, pixels: np.ndarray, mode: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode).save(path)
    return path


def test_dicom_monochrome1_is_inverted_and_spacing_kept(tmp_path):
    mono2 = read_chest_film(write_film_dicom(tmp_path / "m2.dcm", RAMP, ImagerPixelSpacing=[0.139, 0.143]))
    mono1 = read_chest_film(write_film_dicom(tmp_path / "m1.dcm", RAMP, "MONOCHROME1", PixelSpacing=[0.2, 0.25]))
    assert mono2.shape == (1, 48, 64) and mono2.dtype == torch.float32  # [1, W, H]: 48 columns, 64 rows
    np.testing.assert_allclose(mono2[0].numpy(), RAMP.T / 4095, atol=1e-6)  # no window: the 12-bit stored range
    np.testing.assert_allclose(mono1[0].numpy(), 1 - RAMP.T / 4095, atol=1e-6)  # 0 was white: bone bright again
    np.testing.assert_allclose(mono2.meta["pixel_spacing"], [0.143, 0.139])  # DICOM's (row, column) as (x, y)
    np.testing.assert_allclose(mono1.meta["pixel_spacing"], [0.25, 0.2])
    assert mono2.meta["bits"] == 12 and list(mono2.meta["original_shape"]) == [48, 64]
    assert list(mono2.meta["spatial_shape"]) == [48, 64]
    both = write_film_dicom(tmp_path / "b.dcm", RAMP, PixelSpacing=[0.1, 0.1], ImagerPixelSpacing=[0.2, 0.2])
    np.testing.assert_allclose(read_chest_film(both).meta["pixel_spacing"], [0.1, 0.1])  # calibrated one first


def test_dicom_rescale_then_window_applied(tmp_path):
    path = write_film_dicom(
        tmp_path / "w.dcm", RAMP, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=1000, WindowWidth=1001
    )
    film = read_chest_film(path)[0].numpy().T
    value = 2.0 * RAMP - 100  # the rescale, then DICOM's LINEAR window over it, the window's width spanning 0 to 1
    np.testing.assert_allclose(film, np.clip((value - 999.5) / 1000 + 0.5, 0, 1), atol=1e-6)
    assert film.min() == 0 and film.max() == 1


def test_dicom_voi_lut_taken_before_a_window(tmp_path):
    lut = Dataset()
    lut.add_new(0x00283002, "US", [4096, 0, 12])  # LUT Descriptor: entries, first value mapped, bits
    lut.add_new(0x00283006, "US", [(v * 2) % 4096 for v in range(4096)])  # LUT Data
    path = write_film_dicom(tmp_path / "lut.dcm", RAMP, VOILUTSequence=[lut], WindowCenter=10, WindowWidth=2)
    np.testing.assert_allclose(read_chest_film(path)[0].numpy(), (RAMP.T * 2 % 4096) / 4095, atol=1e-6)


@pytest.mark.parametrize(
    ("tags", "photometric", "said"),
    [({"NumberOfFrames": 2}, "MONOCHROME2", "2 frames"), ({}, "RGB", "colour DICOM")],
)
def test_multiframe_and_colour_dicom_refused(tmp_path, tags, photometric, said):
    pixels = np.zeros((2, 8, 8) if tags else (8, 8, 3), dtype=np.uint8)
    path = write_film_dicom(tmp_path / "x.dcm", pixels, photometric, 8, **tags)
    with pytest.raises(InvalidCaseError, match=said) as caught:
        read_chest_film(path, "c1")
    assert caught.value.file == str(path) and caught.value.case == "c1"


def test_16bit_png_scaled_by_its_depth_and_8bit_by_255(tmp_path):
    deep = (np.arange(32 * 16, dtype=np.uint16).reshape(32, 16) * 128).astype(np.uint16)
    film = read_chest_film(write_png(tmp_path / "deep.png", deep))
    np.testing.assert_allclose(film[0].numpy(), deep.T / 65535, atol=1e-7)
    assert film.meta["bits"] == 16 and np.isnan(film.meta["pixel_spacing"]).all()
    grey = (np.arange(32 * 16).reshape(32, 16) % 256).astype(np.uint8)
    film = read_chest_film(write_png(tmp_path / "grey.png", grey), pixel_spacing=(0.5, 0.4))  # (x, y)
    np.testing.assert_allclose(film[0].numpy(), grey.T / 255, atol=1e-7)
    assert film.meta["bits"] == 8 and list(film.meta["pixel_spacing"]) == [0.5, 0.4]


def test_grey_film_saved_as_rgb_is_read_and_a_colour_image_refused(tmp_path):
    grey = (np.arange(40 * 30).reshape(40, 30) % 256).astype(np.uint8)
    as_rgb = write_png(tmp_path / "rgb.png", np.stack([grey] * 3, -1))
    as_rgba = write_png(tmp_path / "rgba.png", np.stack([grey] * 3 + [np.full_like(grey, 255)], -1))
    for path in (as_rgb, as_rgba):
        np.testing.assert_allclose(read_chest_film(path)[0].numpy(), grey.T / 255, atol=1e-7)
    colour = np.stack([grey, 255 - grey, np.zeros_like(grey)], -1)
    path = write_png(tmp_path / "photo.png", colour)
    with pytest.raises(InvalidCaseError, match="colour image") as caught:
        read_chest_film(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".dcm"])
def test_undecodable_films_are_named(tmp_path, suffix):
    whole = tmp_path / f"whole{suffix}"
    if suffix == ".dcm":
        write_film_dicom(whole, RAMP)
    else:
        Image.fromarray((RAMP % 256).astype(np.uint8)).save(whole)
    truncated, garbage = tmp_path / f"truncated{suffix}", tmp_path / f"garbage{suffix}"
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    garbage.write_bytes(b"not an image at all" * 10)
    for path in (truncated, garbage):
        with pytest.raises(InvalidCaseError) as caught:
            read_chest_film(path, "case 7")
        assert caught.value.file == str(path) and caught.value.case == "case 7"
    with pytest.raises(InvalidCaseError, match="file not found"):
        read_chest_film(tmp_path / f"absent{suffix}")


def test_film_axes_are_monais_x_then_y(tmp_path):
    pixels = np.zeros((40, 60), dtype=np.uint8)  # 40 rows of 60 columns: left half bright, right half dark
    pixels[:, :30] = 255
    pixels[5:12, 35:50] = 128  # a grey patch in the dark half, box [35, 5, 50, 12] in the file's pixels
    path = write_png(tmp_path / "left_bright.png", pixels)
    film = read_chest_film(path)
    assert film.shape == (1, 60, 40) and list(film.meta["original_shape"]) == [60, 40]
    assert (film[0, :30] == 1).all() and (film[0, 30:] < 1).all()  # x (first spatial axis) 0..29 bright
    x0, y0, x1, y1 = 35, 5, 50, 12
    assert (film[0, x0:x1, y0:y1] == 128 / 255).all() and int((film == 128 / 255).sum()) == (x1 - x0) * (y1 - y0)
    photo = read_photo(path, "left_bright", mode="L")  # MONAI's PILReader, as every other 2D image is loaded
    assert photo.shape == film.shape and torch.equal(photo.float() / 255, film.as_tensor())


FILMS = {  # dicom_id: (subject, study, suffix, split, view)
    "aaa": (10000032, 50414267, ".jpg", "train", "PA"),
    "bbb": (10000032, 50414267, ".jpg", "train", "LATERAL"),
    "ccc": (10000032, 53189527, ".dcm", "validate", "AP"),
    "ddd": (11000011, 51111111, ".jpg", "test", "PA"),
}


def _mimic_tree(root: Path, csv_files: bool = True, gz: bool = False) -> Path:
    for dicom_id, (subject, study, suffix, _, _) in FILMS.items():
        folder = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        if suffix == ".dcm":
            write_film_dicom(folder / f"{dicom_id}.dcm", RAMP, "MONOCHROME1", ImagerPixelSpacing=[0.139, 0.139])
        else:
            write_png(folder / f"{dicom_id}.jpg", (RAMP % 256).astype(np.uint8))  # PIL writes JPEG for .jpg
        (folder.parent / f"s{study}.txt").write_text(f"FINDINGS: study {study}.\n", encoding="utf-8")
        (folder / f"._{dicom_id}{suffix}").write_bytes(b"\x00\x05\x16\x07")  # a Mac disk's resource fork
        (folder / ".DS_Store").write_bytes(b"\x00")
        (folder / "index.html").write_text("<html></html>", encoding="utf-8")  # PhysioNet's wget leaves these
    if csv_files:
        tables = {
            "mimic-cxr-2.0.0-split.csv": "dicom_id,study_id,subject_id,split\n"
            + "".join(f"{d},{st},{su},{sp}\n" for d, (su, st, _, sp, _) in FILMS.items()),
            "mimic-cxr-2.0.0-metadata.csv": "dicom_id,subject_id,study_id,Rows,ViewPosition\n"
            + "".join(f"{d},{su},{st},3056,{v}\n" for d, (su, st, _, _, v) in FILMS.items()),
            "mimic-cxr-2.0.0-chexpert.csv": "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,"
            "Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,"
            "Pneumonia,Pneumothorax,Support Devices\n"
            "10000032,50414267,,,,,,,,1.0,,,,1.0,,\n10000032,53189527,,,,,,,,-1.0,,,,0.0,,\n",
        }
        for name, text in tables.items():
            if gz:
                with gzip.open(root / f"{name}.gz", "wt", encoding="utf-8") as f:
                    f.write(text)
            else:
                (root / name).write_text(text, encoding="utf-8")
    return root


@pytest.mark.parametrize("gz", [False, True])
def test_mimic_cxr_items_splits_views_and_labels(tmp_path, gz):
    root = _mimic_tree(tmp_path / "mimic", gz=gz)
    items = mimic_cxr_datalist(root)
    assert [item["case"] for item in items] == [
        "10000032/50414267/aaa",
        "10000032/53189527/ccc",
        "11000011/51111111/ddd",
    ]
    first = items[0]  # the lateral film left out by the default PA/AP views; hidden files and index.html passed over
    assert first["report"] == str(root / "files/p10/p10000032/s50414267.txt") and first["image"].endswith("aaa.jpg")
    assert (first["subject"], first["study"], first["split"], first["view"]) == (10000032, 50414267, "train", "PA")
    assert first["chexpert"]["Pneumonia"] == 1.0 and first["chexpert"]["Consolidation"] is None
    assert items[1]["chexpert"]["Lung Opacity"] == -1.0 and items[1]["format"] == "dcm"
    assert set(items[2]["chexpert"].values()) == {None}  # a study the label file leaves out: all unmentioned
    assert [i["case"][-3:] for i in mimic_cxr_datalist(root, split="train", views=None)] == ["aaa", "bbb"]
    assert [i["case"][-3:] for i in mimic_cxr_datalist(root, split="validate", views="AP")] == ["ccc"]
    assert "chexpert" not in mimic_cxr_datalist(root, labels=False)[0]
    assert [i["case"][-3:] for i in mimic_cxr_datalist(root, image_format="dcm")] == ["ccc"]


def test_mimic_cxr_without_csv_files_is_all_train_unfiltered(tmp_path):
    items = mimic_cxr_datalist(_mimic_tree(tmp_path / "mimic", csv_files=False))
    assert len(items) == 4 and {i["split"] for i in items} == {"train"} and {i["view"] for i in items} == {""}
    assert all("chexpert" not in i for i in items)
    with pytest.raises(MissingInputError, match="every film is 'train'"):
        mimic_cxr_datalist(tmp_path / "mimic", split="test")


def test_mimic_cxr_film_without_report_named_or_skipped(tmp_path):
    root = _mimic_tree(tmp_path / "mimic")
    report = root / "files/p11/p11000011/s51111111.txt"
    report.unlink()
    with pytest.raises(InvalidCaseError) as caught:
        mimic_cxr_datalist(root)
    assert caught.value.case == "11000011/51111111/ddd" and caught.value.file.endswith("ddd.jpg")
    assert str(report) in str(caught.value)
    items = mimic_cxr_datalist(root, skip_invalid=True)
    assert len(items) == 2 and [e.case for e in items.skipped] == ["11000011/51111111/ddd"]


def test_mimic_cxr_film_as_jpeg_and_dicom_refused_unless_one_format_chosen(tmp_path):
    root = _mimic_tree(tmp_path / "mimic")
    write_film_dicom(root / "files/p11/p11000011/s51111111/ddd.dcm", RAMP)
    with pytest.raises(InvalidCaseError, match="a second file of this film beside 'ddd.dcm'; keep one"):
        mimic_cxr_datalist(root)
    assert [i["case"][-3:] for i in mimic_cxr_datalist(root, image_format="jpg")] == ["aaa", "ddd"]


def test_mimic_cxr_missing_root_or_no_films(tmp_path):
    with pytest.raises(MissingInputError, match="folder not found"):
        mimic_cxr_datalist(tmp_path / "absent")
    (tmp_path / "empty/files/p10/p10000032/s1").mkdir(parents=True)
    with pytest.raises(MissingInputError, match="no MIMIC-CXR film"):
        mimic_cxr_datalist(tmp_path / "empty")
    with pytest.raises(InputError, match="split"):
        mimic_cxr_datalist(tmp_path / "empty", split="val")


def test_load_chest_film_checks_a_mimic_list_before_training(tmp_path):
    root = _mimic_tree(tmp_path / "mimic")
    items = mimic_cxr_datalist(root, views=None)
    load = LoadChestFilmd(keys="image")
    loaded = load(items[2])  # the MONOCHROME1 DICOM film
    assert loaded["image"].shape == (1, 48, 64) and loaded["image"].meta["case"] == items[2]["case"]
    np.testing.assert_allclose(loaded["image"].meta["pixel_spacing"], [0.139, 0.139])
    broken = Path(items[1]["image"])
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(InvalidCaseError) as caught:
        validate_loading(items, load)
    assert caught.value.file == str(broken) and caught.value.case == items[1]["case"]
    kept = validate_loading(items, load, skip_invalid=True)
    assert len(kept) == 3 and kept.skipped[0].case == items[1]["case"]


DATA_ENTRY = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
    "00000001_000.png,Pneumonia|Infiltration,0,1,57,M,PA,2048,2500,0.143,0.168,\n"
    "00000002_000.png,No Finding,0,2,80,M,AP,2500,2048,0.171,0.171,\n"
    "00000003_000.png,Effusion,0,3,81,F,PA,2048,2048,0.143,0.143,\n"
)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"  # the real file's unquoted header, 3 empty columns


def _chestxray8_tree(root: Path, boxes: str, side: int = 64) -> Path:
    for name in ("00000001_000", "00000002_000", "00000003_000"):
        write_png(root / "images" / f"{name}.png", np.zeros((side, side), dtype=np.uint8))
    (root / "images/._00000001_000.png").write_bytes(b"\x00")
    (root / "Data_Entry_2017.csv").write_text(DATA_ENTRY, encoding="utf-8")
    (root / "BBox_List_2017.csv").write_text(BBOX_HEADER + boxes, encoding="utf-8")
    return root


BOXES = (
    "00000001_000.png,Pneumonia,10.5,20.25,8.0,16.0,,,\n"
    "00000001_000.png,Infiltrate,1,2,3,4,,,\n"
    "00000003_000.png,Effusion,30,30,10,10,,,\n"
)


def test_chestxray8_boxes_as_corners_with_data_entrys_names(tmp_path):
    root = _chestxray8_tree(tmp_path / "cxr8", BOXES)
    boxes = chestxray8_boxes(root / "BBox_List_2017.csv", image_size=64)
    assert boxes["00000001_000.png"] == [
        {"label": "Pneumonia", "box": [10.5, 20.25, 18.5, 36.25], "line": 2},
        {"label": "Infiltration", "box": [1.0, 2.0, 4.0, 6.0], "line": 3},
    ]
    tall = root / "tall_box.csv"
    tall.write_text(BBOX_HEADER + "00000001_000.png,Pneumonia,10,20,8,40,,,\n", encoding="utf-8")
    assert chestxray8_boxes(tall, image_size=(20, 64))["00000001_000.png"][0]["box"] == [10.0, 20.0, 18.0, 60.0]
    with pytest.raises(InputError, match=r"outside the 64 x 20 \(W x H\)"):  # image_size is (W, H): y1 = 60 > 20
        chestxray8_boxes(tall, image_size=(64, 20))
    infiltrate = chestxray8_boxes(root / "BBox_List_2017.csv", finding="Infiltrate")
    assert infiltrate == {"00000001_000.png": [{"label": "Infiltration", "box": [1.0, 2.0, 4.0, 6.0], "line": 3}]}
    with pytest.raises(InputError, match="finding must be one of"):
        chestxray8_boxes(root / "BBox_List_2017.csv", finding="pneumonia")


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("00000002_000.png,Pneumonia,60,10,8,8,,,", "lies outside the 64 x 64"),
        ("00000002_000.png,Pneumonia,10,10,0,8,,,", "width 0.0 and height 8.0"),
        ("00000002_000.png,Pneumonia,10,10,8", "fields where the header has 6"),
        ("00000002_000.png,Pneumonia,ten,10,8,8,,,", "Bbox x is 'ten', not a number"),
        ("00000002_000.png,Pneumonia,-1,10,8,8,,,", "lies outside"),
    ],
)
def test_bad_box_line_named_by_file_and_line(tmp_path, line, said):
    root = _chestxray8_tree(tmp_path / "cxr8", BOXES + line + "\n")
    with pytest.raises(InputError, match=said) as caught:
        chestxray8_datalist(root, image_size=64)
    assert f"'{root / 'BBox_List_2017.csv'}', line 5" in str(caught.value)


def test_chestxray8_datalist_box_protocol_and_all_images(tmp_path):
    root = _chestxray8_tree(tmp_path / "cxr8", BOXES)
    (item,) = chestxray8_datalist(root, image_size=64)
    assert item["case"] == "00000001_000" and item["image"] == str(root / "images/00000001_000.png")
    assert item["labels"] == ["Pneumonia", "Infiltration"] and item["label"] == 1 and item["view"] == "PA"
    assert item["boxes"] == [[10.5, 20.25, 18.5, 36.25]] and item["box_labels"] == ["Pneumonia"]
    assert item["original_size"] == (2048, 2500) and item["subject"] == 1
    assert item["pixel_spacing"] == pytest.approx((0.143 * 2048 / 64, 0.168 * 2500 / 64))  # (x, y) mm
    every = chestxray8_datalist(root, finding="Effusion", boxed_only=False, image_size=64)
    assert [i["case"] for i in every] == ["00000001_000", "00000002_000", "00000003_000"]
    assert every[1]["labels"] == [] and every[2]["boxes"] == [[30.0, 30.0, 40.0, 40.0]] and every[0]["boxes"] == []
    (root / "images/00000002_000.png").unlink()  # a partial download: left out
    assert len(chestxray8_datalist(root, boxed_only=False, bbox_list=None)) == 2


def test_chestxray8_boxed_image_missing_named_or_skipped(tmp_path):
    root = _chestxray8_tree(tmp_path / "cxr8", BOXES)
    (root / "images/00000001_000.png").unlink()
    with pytest.raises(InvalidCaseError, match="image not found") as caught:
        chestxray8_datalist(root, image_size=64)
    assert caught.value.file == str(root / "images/00000001_000.png")
    assert len(chestxray8_datalist(root, finding="Effusion", image_size=64, skip_invalid=True)) == 1
    with pytest.raises(InputError, match="no valid case"):
        chestxray8_datalist(root, image_size=64, skip_invalid=True)


def test_boxes_round_trip_to_a_256_grid_and_back():
    boxes = np.array([[225.0847458, 547.0192168, 311.86440682, 626.20565636], [0.0, 0.0, 1024.0, 1024.0]])
    small = boxes_to_grid(boxes, (1024, 1024), (256, 256))
    np.testing.assert_array_equal(small, boxes / 4)
    np.testing.assert_array_equal(boxes_to_grid(small, (256, 256), (1024, 1024)), boxes)
    odd = boxes_to_grid(boxes, (1024, 1024), (300, 200))  # (W, H): x scales by the first size, y by the second
    np.testing.assert_allclose(odd[1], [0, 0, 300, 200])
    np.testing.assert_allclose(boxes_to_grid(odd, (300, 200), (1024, 1024)), boxes, rtol=1e-14)
    tensor = boxes_to_grid(torch.tensor(boxes), (1, 1024, 1024), (1, 256, 256))
    assert tensor.dtype == torch.float64 and torch.equal(tensor, torch.tensor(boxes / 4))


def test_real_chestxray8_films_load(sample_data):
    folder = sample_data / "nih-chestxray14"
    items = chestxray8_datalist(folder, boxed_only=False, data_entry="Data_Entry_2017_subset_for_included_images.csv")
    assert len(items) == 12 and items[0]["original_size"] == (2682, 2749) and items[0]["labels"] == ["Cardiomegaly"]
    load = LoadChestFilmd(keys="image")
    for item in items:
        film = load(item)["image"]
        assert film.shape == (1, CHESTXRAY8_SIDE, CHESTXRAY8_SIDE) and film.dtype == torch.float32
        assert 0 <= film.min() < film.max() <= 1 and film.meta["bits"] == 8


def test_real_box_list_reads_and_round_trips(sample_data):
    boxes = chestxray8_boxes(sample_data / "nih-chestxray14/BBox_List_2017.csv", image_size=CHESTXRAY8_SIDE)
    labels = Counter(box["label"] for image in boxes.values() for box in image)
    assert sum(labels.values()) == 984 and len(boxes) == 880
    assert labels == {
        "Atelectasis": 180,
        "Effusion": 153,
        "Cardiomegaly": 146,
        "Infiltration": 123,
        "Pneumonia": 120,
        "Pneumothorax": 98,
        "Mass": 85,
        "Nodule": 79,
    }
    assert boxes["00013118_008.png"][0]["box"] == [
        225.0847458,
        547.0192168,
        225.0847458 + 86.77966102,
        547.0192168 + 79.18644068,
    ]
    corners = np.array([box["box"] for image in boxes.values() for box in image])
    back = boxes_to_grid(boxes_to_grid(corners, (1024, 1024), (256, 256)), (256, 256), (1024, 1024))
    np.testing.assert_array_equal(back, corners)


def test_real_signed_rescaled_dicom_reads_as_one_frame(sample_data):
    film = read_chest_film(sample_data / "dicom-small/pydicom/CT_small.dcm")
    ds = pydicom.dcmread(sample_data / "dicom-small/pydicom/CT_small.dcm")
    assert film.shape == (1, ds.Columns, ds.Rows) and 0 <= film.min() and film.max() <= 1
