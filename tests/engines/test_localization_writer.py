"""MapInferer and LocalizationWriter (report-guided localisation's image-only inference): attribute probabilities,
boxes in the ORIGINAL film's pixel grid whatever size the network saw, an overlay per image when asked; and the real
1024 x 1024 ChestX-ray14 films through the readers, a tiny AttributeLocalizer and the writer."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from monai.data import DataLoader, Dataset, MetaTensor
from monai.transforms import Compose, NormalizeIntensityd, Resized
from torch import nn

from medguide.data import REPORT_ATTRIBUTES, boxes_to_grid
from medguide.engines import ConceptInferer, Evaluator, LocalizationWriter, MapInferer
from medguide.networks import AttributeLocalizer, LocalizerOutputs, region_encoder
from medguide.transforms import LoadChestFilmd

ATTRIBUTES = list(REPORT_ATTRIBUTES)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAP_SIZE = (8, 8)
BLOB = [2.0, 4.0, 4.0, 7.0]  # map cells x 2..3, y 4..6, in pixel corners of the 8 x 8 map


class FixedLocalizer(nn.Module):
    """Logits 0 for every attribute but opacity, whose logit is the image's value at [0, 0, 0]; the opacity map is 1
    on :data:`BLOB` and 0 elsewhere, the other maps uniform."""

    def forward(self, image: torch.Tensor, with_maps: bool = False):
        logits = torch.zeros(len(image), len(ATTRIBUTES))
        logits[:, 0] = image[:, 0, 0, 0]
        if not with_maps:
            return logits
        maps = torch.full((len(image), len(ATTRIBUTES), *MAP_SIZE), 1.0 / 64)
        maps[:, 0] = 0
        maps[:, 0, 2:4, 4:7] = 1.0
        return LocalizerOutputs(logits, maps, torch.zeros(len(image), 64, 4), maps.log())


def film(original: tuple[int, int], opacity_logit: float) -> MetaTensor:
    """A film as the preprocessing leaves it: [1, 32, 32], its original (W, H) in the meta, as LoadChestFilmd says."""
    image = torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(sum(original)))
    image[0, 0, 0] = opacity_logit
    shape = np.array(original)
    return MetaTensor(image, meta={"original_shape": shape, "spatial_shape": shape.copy()})


# non-square originals, the second taller than wide; the third one the model calls negative
ITEMS = [
    ("film/1", (300, 200), 2.0),
    ("film:1", (160, 480), 1.0),
    ("negative", (250, 250), -3.0),
]


def items() -> list[dict]:
    return [{"case": case, "image": film(size, logit)} for case, size, logit in ITEMS]


def run(writer: LocalizationWriter, inferer, data, batch_size: int = 2, network: nn.Module | None = None) -> None:
    Evaluator(
        device=torch.device("cpu"),
        val_data_loader=DataLoader(data, batch_size=batch_size),
        network=network or FixedLocalizer(),
        inferer=inferer,
        val_handlers=[writer],
    ).run()


def read(path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_boxes_are_the_blob_in_the_original_grid_and_attributes_are_sigmoids(tmp_path):
    inferer = MapInferer()
    writer = LocalizationWriter(tmp_path, ATTRIBUTES, inferer, threshold=0.5, min_probability=0.5)
    run(writer, inferer, items())

    attributes = read(tmp_path / "attributes.csv")
    assert list(attributes[0]) == ["case", *ATTRIBUTES]
    assert [row["case"] for row in attributes] == [case for case, _, _ in ITEMS]  # boxless images too
    for row, (_, _, logit) in zip(attributes, ITEMS):
        assert float(row["opacity"]) == pytest.approx(torch.sigmoid(torch.tensor(logit)).item(), abs=1e-6)
        assert [float(row[a]) for a in ATTRIBUTES[1:]] == [0.5] * (len(ATTRIBUTES) - 1)

    boxes = read(tmp_path / "boxes.csv")
    assert list(boxes[0]) == ["case", "box", "x0", "y0", "x1", "y1", "score", "opacity"]
    assert [row["case"] for row in boxes] == ["film/1", "film:1"]  # one box each; none for the negative film
    predictions = json.loads((tmp_path / "boxes.json").read_text(encoding="utf-8"))
    assert list(predictions) == [case for case, _, _ in ITEMS]
    for row, (case, size, logit) in zip(boxes, ITEMS):
        # the blob's box scaled from the map to the original film: x by W / 8, y by H / 8
        expected = boxes_to_grid([BLOB], MAP_SIZE, size)[0].tolist()
        corners = [float(row[k]) for k in ("x0", "y0", "x1", "y1")]
        assert corners == expected
        assert row["box"] == "1" and float(row["score"]) == pytest.approx(1.0)
        assert float(row["opacity"]) == pytest.approx(torch.sigmoid(torch.tensor(logit)).item(), abs=1e-6)
        # round trip: the box back on the network's grid is the blob
        assert boxes_to_grid([corners], size, MAP_SIZE)[0].tolist() == pytest.approx(BLOB, abs=8 / min(size))
        entry = predictions[case]
        assert entry["image_size"] == list(size)
        assert [b["box"] for b in entry["boxes"]] == [[int(c) for c in corners]]
        assert entry["opacity"] == pytest.approx(float(row["opacity"]), abs=1e-6)
    assert predictions["negative"]["boxes"] == [] and predictions["negative"]["image_size"] == [250, 250]
    assert not (tmp_path / "overlays").exists()  # overlays only when asked


def test_default_min_probability_boxes_every_image_and_max_boxes_caps_them(tmp_path):
    inferer = MapInferer()
    writer = LocalizationWriter(tmp_path, ATTRIBUTES, inferer, max_boxes=1)
    run(writer, inferer, items(), batch_size=3)
    assert [row["case"] for row in read(tmp_path / "boxes.csv")] == [case for case, _, _ in ITEMS]
    # the default threshold (0.7 of the peak) keeps a box inside the blob's
    for case, size, _ in ITEMS:
        (box,) = [b["box"] for b in json.loads((tmp_path / "boxes.json").read_text(encoding="utf-8"))[case]["boxes"]]
        outer = boxes_to_grid([BLOB], MAP_SIZE, size)[0]
        assert outer[0] <= box[0] < box[2] <= outer[2] and outer[1] <= box[1] < box[3] <= outer[3]


def test_overlays_when_asked_are_pngs_and_colliding_names_are_numbered(tmp_path):
    inferer = MapInferer()
    writer = LocalizationWriter(tmp_path, ATTRIBUTES, inferer, figures="True", max_figures=2)
    run(writer, inferer, items())
    names = [p.name for p in writer.figure_paths]
    assert names == ["film_1.png", "film_1_2.png"]  # "film/1" and "film:1" make one file name
    written = sorted((tmp_path / "overlays").iterdir())
    assert [p.name for p in written] == sorted(names)
    assert all(p.read_bytes()[:8] == PNG_SIGNATURE for p in written)
    assert len(read(tmp_path / "attributes.csv")) == 3  # every image in the table, overlays for the first two


def test_settings_a_missing_size_and_a_foreign_inferer_are_named(tmp_path):
    with pytest.raises(ValueError, match="attribute 'pneumonia' is not one of"):
        LocalizationWriter(tmp_path, ATTRIBUTES, MapInferer(), attribute="pneumonia")
    with pytest.raises(ValueError, match="min_probability must be in"):
        LocalizationWriter(tmp_path, ATTRIBUTES, MapInferer(), min_probability=2)
    with pytest.raises(ValueError, match="relative threshold"):
        LocalizationWriter(tmp_path, ATTRIBUTES, MapInferer(), threshold=70)
    inferer = MapInferer()
    plain = [{"case": "plain", "image": torch.rand(1, 32, 32)}]
    with pytest.raises(ValueError, match="case 'plain' has no original_shape or spatial_shape"):
        run(LocalizationWriter(tmp_path, ATTRIBUTES, inferer), inferer, plain)
    with pytest.raises(RuntimeError, match="MapInferer holds no attribute maps for this batch"):
        run(LocalizationWriter(tmp_path, ATTRIBUTES, MapInferer()), inferer, items())
    with pytest.raises(RuntimeError, match="ConceptInferer holds no concept similarities"):
        ConceptInferer().take()
    assert not (tmp_path / "boxes.json").exists()  # nothing written by a run that failed


def test_real_films_load_and_their_boxes_lie_in_the_1024_grid(sample_data, tmp_path):
    folder = sample_data / "nih-chestxray14" / "images"
    if not folder.is_dir():
        pytest.skip(f"no ChestX-ray14 films at {folder}")
    files = sorted(folder.glob("*.png"))
    assert len(files) == 12
    preprocessing = Compose(
        [
            LoadChestFilmd("image"),
            Resized("image", (64, 64), mode="area"),
            NormalizeIntensityd("image"),
        ]
    )
    data = Dataset([{"case": f.stem, "image": str(f)} for f in files], preprocessing)
    torch.manual_seed(0)
    encoder = region_encoder("densenet", 1, init_features=4, growth_rate=4, block_config=(1, 1))
    network = AttributeLocalizer(encoder.module, encoder.channels, ATTRIBUTES, dim=8).eval()
    inferer = MapInferer()
    run(LocalizationWriter(tmp_path, ATTRIBUTES, inferer, figures=True, max_figures=1), inferer, data, 4, network)
    predictions = json.loads((tmp_path / "boxes.json").read_text(encoding="utf-8"))
    assert sorted(predictions) == [f.stem for f in files]
    assert len(read(tmp_path / "attributes.csv")) == 12
    rows = read(tmp_path / "boxes.csv")
    assert {row["case"] for row in rows} == set(predictions)  # min_probability 0: every film gets its boxes
    for row in rows:
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        assert 0 <= x0 < x1 <= 1024 and 0 <= y0 < y1 <= 1024
    assert all(entry["image_size"] == [1024, 1024] for entry in predictions.values())
    assert [p.name for p in (tmp_path / "overlays").iterdir()] == [f"{files[0].stem}.png"]
