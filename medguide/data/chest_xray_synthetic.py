"""Synthetic chest films with pneumonia-like opacities and the reports written about them, in the MIMIC-CXR-JPG layout
for training and the ChestX-ray8 layout (with boxes) for testing.

Report-guided pneumonia localisation (``docs`` of issue 11, METHODS.md section 4) trains on films and their free-text
reports (MIMIC-CXR) and is scored on boxes drawn on other films (ChestX-ray8). :func:`make_cxr_dataset` writes both
parts from one seeded draw, plus ``truth.csv``: what each film shows and what its report says about it, so that the
report extraction and the localisation can be checked against the truth. On a frontal film the patient's right is
the image's left: "right" in a report, in ``truth.csv`` and in the CheXpert columns always means the patient's right.
"""

from __future__ import annotations

import csv
import os
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medguide.data.chest_xray import CHEXPERT_LABELS
from medguide.data.splits import proportional_counts

__all__ = ["CXR_SIDES", "CXR_WORDINGS", "CXR_ZONES", "make_cxr_dataset"]


CXR_SIDES = ("right", "left", "bilateral")
"""Sides of an opacity, the patient's (``right`` lies on the image's left)."""

CXR_ZONES = ("upper", "middle", "lower")
"""Zones of a lung field: its upper, middle and lower thirds from apex to base."""

CXR_WORDINGS = ("stated", "hedged", "negated", "unmentioned")
"""How a report speaks of the finding: states it, hedges it ("cannot exclude", "possible", "versus"), negates it
("no focal consolidation", "lungs are clear") or does not mention it at all."""

SPLIT_HEADER = ("dicom_id", "study_id", "subject_id", "split")
METADATA_HEADER = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
DATA_ENTRY_HEADER = (
    "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]"
)
# as in the copy of the NIH release in ../shared/data/nih-chestxray14 (the Kaggle mirror adds ",,," to every line)
BBOX_HEADER = "Image Index,Finding Label,Bbox [x,y,w,h]"
TRUTH_HEADER = (
    "image",
    "split",
    "report",
    "view",
    "opacity",
    "side",
    "zone",
    "extensive",
    "faint",
    "boxes",
    "wording",
    "report_side",
    "report_zone",
)

# shares of the films with an opacity (MIMIC part), and of the test films
_PREVALENCE_TEST = 0.75
_SIDE_SHARES = (0.4, 0.3, 0.3)  # right, left, bilateral
_ZONE_SHARES = (0.25, 0.25, 0.5)  # upper, middle, lower: pneumonia is most often basal
_EXTENSIVE_SHARE = 0.3
# wordings of the reports of films with an opacity and of those without (CXR_WORDINGS order)
_POSITIVE_WORDINGS = (0.82, 0.15, 0.0, 0.03)
_NEGATIVE_WORDINGS = (0.0, 0.08, 0.8, 0.12)
_OMIT_SIDE, _OMIT_ZONE = 0.08, 0.12
_SPLIT = (0.8, 0.2)  # train, validate, by subject
_SECOND_STUDY = 0.2  # share of studies that are a subject's second one
_AP_SHARE = 0.3
_DEVICE_SHARE = 0.15
_CARDIOMEGALY_SHARE = 0.1
# the box of an opacity holds the pixels where its added brightness is above this share of its peak
_BOX_THRESHOLD = 0.3


# Films


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) pixel centres in [-1, 1], y down, each (size, size)."""
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(axis, axis, indexing="ij")


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Unit-variance smooth random field, (size, size), with about ``cells`` independent values across the film
    (drawn coarse and interpolated, so its look does not depend on ``size``)."""
    centres = (np.arange(size) + 0.5) / size * cells - 0.5
    weights = np.exp(-0.5 * ((centres[:, None] - np.arange(cells)) / 0.7) ** 2)
    weights /= weights.sum(1, keepdims=True)
    # einsum, not a BLAS product: these products are small, and BLAS threads cost more than they save on a busy CPU
    field = np.einsum("ik,lk->il", np.einsum("ij,jk->ik", weights, rng.standard_normal((cells, cells))), weights)
    return (field - field.mean()) / (field.std() + 1e-8)


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """``mask`` blurred by a gaussian of ``sigma`` pixels; a wide blur on a coarser grid, as fast on a 1024-pixel
    film as on a 256-pixel one."""
    image = mask.astype(float)
    factor = max(1, int(sigma // 4))
    if factor == 1:
        return ndimage.gaussian_filter(image, sigma)
    size = image.shape[0]
    cells = -(-size // factor)
    padded = np.pad(image, (0, cells * factor - size), mode="edge")
    coarse = ndimage.gaussian_filter(padded.reshape(cells, factor, cells, factor).mean((1, 3)), sigma / factor)
    return ndimage.zoom(coarse, factor, order=1, grid_mode=True, mode="nearest")[:size, :size]


@dataclass
class _Film:
    """One drawn film: ``image`` (size, size) in [0, 1]; ``added`` (size, size) the opacities' added brightness (0
    where none); ``boxes`` one (x, y, w, h) in pixels per opacity (one per lung), in ``CXR_SIDES`` order right, left."""

    image: np.ndarray
    added: np.ndarray
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)


def _curve_mask(size: int, start, end, bend: float) -> np.ndarray:
    """Pixels along a quadratic curve from ``start`` to ``end`` (unit (y, x) coordinates): a line or tube."""
    t = np.linspace(0, 1, 4 * size)[:, None]
    middle = (np.asarray(start) + np.asarray(end)) / 2 + np.array([0.0, bend])
    points = (1 - t) ** 2 * np.asarray(start) + 2 * t * (1 - t) * middle + t**2 * np.asarray(end)
    rows, cols = (np.clip((points + 1) / 2 * size, 0, size - 1).astype(int)).T
    mask = np.zeros((size, size))
    mask[rows, cols] = 1.0
    return mask


def _chest_film(
    rng: np.random.Generator,
    size: int,
    side: str = "",
    zone: str = "",
    extensive: bool = False,
    faint: bool = False,
    view: str = "PA",
    device: bool = False,
    cardiomegaly: bool = False,
) -> _Film:
    """A frontal chest film, (size, size) in [0, 1], with an opacity in ``zone`` of the ``side`` lung(s) (none when
    ``side`` is empty). See :func:`make_cxr_dataset` for what it shows."""
    y, x = _grid(size)
    blur = 0.012 * size
    scale = rng.uniform(0.82, 1.02)  # the thorax's size in the field
    cy, cx = rng.normal(0.03, 0.03), rng.normal(0.0, 0.03)
    u, v = (y - cy) / scale, (x - cx) / scale  # thorax coordinates
    body = (v / 0.9) ** 4 + ((u - 0.15) / 1.35) ** 4 < 1
    neck = (np.abs(v) < 0.3) & (u < -0.6)
    body = _soft(body | neck, 2 * blur)
    lungs = {}
    for name, sign, width in (("right", -1.0, rng.uniform(0.31, 0.34)), ("left", 1.0, rng.uniform(0.28, 0.31))):
        du = (u - rng.normal(-0.08, 0.02)) / rng.uniform(0.6, 0.68)
        dv = (v - sign * rng.uniform(0.38, 0.42)) / width
        # flatter on the mediastinal side, domed at the base (the diaphragm)
        shape = np.abs(dv) ** 2.2 + np.where(du > 0, du**2, np.abs(du) ** 1.8) + 0.06 * _noise(rng, size, 6)
        lungs[name] = shape < 1
    heart_size = (1.25 if cardiomegaly else 1.0) * (1.1 if view == "AP" else 1.0) * rng.uniform(0.92, 1.05)
    heart = ((v - 0.1) / (0.3 * heart_size)) ** 2 + ((u - 0.3) / (0.24 * heart_size)) ** 2 < 1
    fields = {name: lung & ~heart for name, lung in lungs.items()}
    mediastinum = (np.abs(v - 0.02 * u) < 0.1) & (u > -0.9) & (u < 0.5)
    spine = np.abs(v) < 0.06
    clavicles = np.exp(-(((u + 0.62 + 0.25 * np.abs(v) - 0.3 * v**2) / 0.03) ** 2))
    clavicles *= (np.abs(v) < 0.75) & (np.abs(v) > 0.05)
    rib_period = rng.uniform(0.14, 0.17)
    ribs = (0.5 + 0.5 * np.cos(2 * np.pi * (u + 0.45 * v**2) / rib_period)) ** 6
    chest = _soft(lungs["right"] | lungs["left"], 3 * blur)
    lung_fields = _soft(fields["right"] | fields["left"], blur)

    image = 0.08 + 0.5 * body + 0.18 * _soft(mediastinum | heart, blur) + 0.1 * _soft(spine, blur) * body
    image += 0.12 * clavicles + rng.uniform(0.04, 0.08) * ribs * chest
    image -= rng.uniform(0.28, 0.36) * lung_fields
    image += 0.025 * _noise(rng, size, 24) * lung_fields  # vessels and overlapping soft tissue
    abdomen = ~(lungs["right"] | lungs["left"] | heart) & (u > 0.3 + 0.3 * np.abs(v))  # under the diaphragm's domes
    image += 0.15 * _soft(abdomen, 2 * blur) * body
    if device:  # a central line from the neck into the superior vena cava
        start = (cy - 0.95 * scale, cx + rng.choice([-1, 1]) * 0.35 * scale)
        end = (cy + rng.uniform(-0.1, 0.05) * scale, cx - 0.05 * scale)
        line = _curve_mask(size, start, end, rng.uniform(-0.1, 0.1))
        image += 0.35 * np.clip(ndimage.gaussian_filter(line, 0.003 * size + 0.5) * (0.003 * size + 0.5) * 2.5, 0, 1)

    added = np.zeros((size, size))
    boxes = []
    for name in ("right", "left"):
        if side not in (name, "bilateral"):
            continue
        rows = np.flatnonzero(fields[name].any(1))
        top, height = rows[0], rows[-1] + 1 - rows[0]
        third = CXR_ZONES.index(zone)
        band = np.zeros(size, bool)
        band[top + third * height // 3 : top + (third + 1) * height // 3] = True
        place = fields[name] & band[:, None]
        inner = ndimage.binary_erosion(place, iterations=max(1, size // 64)) if place.sum() > 40 else place
        candidates = np.argwhere(inner if inner.any() else place)
        first = (candidates[rng.integers(len(candidates))] + 0.5) / size * 2 - 1
        radius = (rng.uniform(0.24, 0.34) if extensive else rng.uniform(0.13, 0.19)) * scale
        patch = np.zeros((size, size))
        for index in range(int(rng.integers(1, 4))):
            centre = first + (rng.normal(0, 0.8 * radius, 2) if index else 0)
            r = radius * rng.uniform(0.6, 1.0) * (1 + 0.25 * _noise(rng, size, 10))  # irregular outline
            patch = np.maximum(patch, np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * r**2)))
        # mottled, inside this lung: centred in the zone, it may reach into the next, as a lobar consolidation does
        patch *= _soft(fields[name], blur) * (0.8 + 0.2 * _noise(rng, size, 32))
        amplitude = rng.uniform(0.08, 0.11) if faint else rng.uniform(0.15, 0.25)
        patch = amplitude * np.clip(patch / max(patch.max(), 1e-8), 0, 1)
        rows, cols = np.nonzero(patch > _BOX_THRESHOLD * patch.max())
        boxes.append((int(cols.min()), int(rows.min()), int(np.ptp(cols) + 1), int(np.ptp(rows) + 1)))
        added += patch
    image += added

    image = ndimage.gaussian_filter(image, rng.uniform(0.3, 0.8) * size / 256)
    exposure = rng.uniform(0.85, 1.2)
    image = np.clip(image * exposure + rng.normal(0, 0.03), 0, 1) ** rng.uniform(0.8, 1.2)
    image = image + rng.normal(0, rng.uniform(0.01, 0.025), image.shape)
    return _Film(np.clip(image, 0, 1), added, boxes)


# Reports

# (adjective, noun phrase) places of each zone; {s} is the side word
_PLACES = {
    "upper": [("{s} upper lobe", "the {s} upper lobe"), ("{s} apical", "the {s} apex"),
              ("{s} upper zone", "the {s} upper zone")],
    "middle": [("{s} mid lung", "the {s} mid lung"), ("{s} perihilar", "the {s} perihilar region"),
               ("{s} mid zone", "the {s} mid lung zone")],
    "lower": [("{s} lower lobe", "the {s} lower lobe"), ("{s} basilar", "the {s} lung base"),
              ("{s} lower zone", "the {s} lower zone"), ("{s} basal", "the {s} base")],
}  # fmt: skip
_BILATERAL_PLACES = {
    "upper": [("bilateral upper lobe", "both upper lobes"), ("biapical", "both apices"),
              ("bilateral upper zone", "both upper zones")],
    "middle": [("bilateral perihilar", "both perihilar regions"), ("bilateral mid lung", "both mid lungs")],
    "lower": [("bibasilar", "both lung bases"), ("bilateral lower lobe", "both lower lobes"),
              ("bilateral lower zone", "both lower zones")],
}  # fmt: skip
_SIDE_ONLY = {
    "right": [("right lung", "the right lung"), ("right-sided", "the right hemithorax")],
    "left": [("left lung", "the left lung"), ("left-sided", "the left hemithorax")],
    "bilateral": [("bilateral", "both lungs"), ("bilateral", "both hemithoraces")],
}
_LARGE = ("extensive", "large", "dense", "widespread")
_SMALL = ("patchy", "small", "subtle", "focal", "mild", "")

# templates of the sentences about the finding, each with the CheXpert columns it speaks of; {a} the place as an
# adjective, {n} as a noun phrase, {z} a size word (may be empty)
_STATED = (
    ("{z} {a} consolidation consistent with pneumonia.", ("Consolidation", "Pneumonia")),
    ("There is {z} airspace opacity in {n}, concerning for pneumonia.", ("Lung Opacity", "Pneumonia")),
    ("{z} opacity at {n}.", ("Lung Opacity",)),
    ("New {z} {a} consolidation.", ("Consolidation",)),
    ("{z} {a} airspace opacities are present.", ("Lung Opacity",)),
    ("Interval development of {z} consolidation in {n}.", ("Consolidation",)),
)
_STATED_IMPRESSION = (
    ("{a} pneumonia.", ("Pneumonia",)),
    ("Findings consistent with {a} pneumonia.", ("Pneumonia",)),
    ("{z} {a} consolidation compatible with pneumonia in the appropriate clinical setting.",
     ("Consolidation", "Pneumonia")),
)  # fmt: skip
_HEDGED = (
    ("Cannot exclude early pneumonia in {n}.", ("Pneumonia",)),
    ("Possible {z} {a} opacity.", ("Lung Opacity",)),
    ("{a} opacity may reflect atelectasis versus pneumonia.", ("Lung Opacity", "Atelectasis", "Pneumonia")),
    ("{z} {a} opacity, which could represent early consolidation.", ("Lung Opacity", "Consolidation")),
    ("Questionable {z} consolidation in {n}.", ("Consolidation",)),
)
_HEDGED_IMPRESSION = (
    ("{a} atelectasis versus pneumonia.", ("Atelectasis", "Pneumonia")),
    ("Possible early pneumonia in {n}.", ("Pneumonia",)),
    ("Infection cannot be excluded in {n}.", ("Pneumonia",)),
)
_NEGATED = (
    ("No focal consolidation.", ("Consolidation",)),
    ("The lungs are clear.", ("Lung Opacity",)),
    ("There is no focal consolidation, pleural effusion or pneumothorax.",
     ("Consolidation", "Pleural Effusion", "Pneumothorax")),
    ("No focal airspace opacity to suggest pneumonia.", ("Lung Opacity", "Pneumonia")),
    ("Lungs are well expanded and clear without consolidation.", ("Lung Opacity", "Consolidation")),
)  # fmt: skip
_NEGATED_IMPRESSION = (
    ("No evidence of pneumonia.", ("Pneumonia",)),
    ("No acute cardiopulmonary process.", ()),
    ("No radiographic evidence of pneumonia.", ("Pneumonia",)),
)
# sentences about other things: (text, {column: value})
_HEART = (
    ("Heart size is normal.", {"Cardiomegaly": 0.0}),
    ("The cardiomediastinal silhouette is within normal limits.", {}),
    ("Normal heart size, mediastinal and hilar contours.", {"Cardiomegaly": 0.0}),
)
_ENLARGED_HEART = (
    ("The heart is moderately enlarged.", {"Cardiomegaly": 1.0}),
    ("Stable cardiomegaly.", {"Cardiomegaly": 1.0}),
)
_PLEURA = (
    ("No pleural effusion or pneumothorax.", {"Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
    ("There is no pneumothorax.", {"Pneumothorax": 0.0}),
    ("There is no pleural effusion.", {"Pleural Effusion": 0.0}),
)
_DEVICES = (
    ("A right internal jugular central venous catheter terminates in the mid SVC.", {"Support Devices": 1.0}),
    ("Left-sided central line tip projects over the cavoatrial junction.", {"Support Devices": 1.0}),
)
_OTHER = (
    ("No acute osseous abnormality.", {"Fracture": 0.0}),
    ("Mild degenerative changes of the thoracic spine.", {}),
    ("The imaged upper abdomen is unremarkable.", {}),
)
_INDICATIONS = (
    "___-year-old {g} with cough and fever, evaluate for pneumonia.",
    "___{G} with shortness of breath.",
    "History: ___{G} with hypoxia  // ? infiltrate",
    "___-year-old {g} with chest pain, assess for acute process.",
    "___{G} with leukocytosis, eval for PNA",
)


@dataclass
class _Report:
    """A report's text, the CheXpert labels it implies (column -> 1.0 / 0.0 / -1.0; blank when absent), and the side
    and zone it names ("" when it names none)."""

    text: str
    labels: dict[str, float]
    side: str = ""
    zone: str = ""


def _place(rng: np.random.Generator, side: str, zone: str) -> tuple[str, str]:
    """(adjective, noun phrase) naming ``side`` and ``zone``, either of which may be "" (left out)."""
    if not zone:
        return _SIDE_ONLY[side][rng.integers(len(_SIDE_ONLY[side]))]
    if side == "bilateral":
        options = _BILATERAL_PLACES[zone]
        return options[rng.integers(len(options))]
    options = _PLACES[zone]
    adjective, noun = options[rng.integers(len(options))]
    return adjective.format(s=side).strip(), " ".join(noun.format(s=side).split())


def _sentence(template: str, **words) -> str:
    text = " ".join(template.format(**words).split())
    return text[0].upper() + text[1:]


def _report(
    rng: np.random.Generator, wording: str, side: str, zone: str, extensive: bool, view: str, extras: dict
) -> _Report:
    """A MIMIC-style report whose finding is worded as ``wording`` at ``side`` and ``zone`` ("" = left out);
    ``extras`` says whether the film has a ``device`` and ``cardiomegaly`` (the report tells both)."""
    labels: dict[str, float] = {}
    finding, impression = [], []
    if wording in ("stated", "hedged"):
        value = 1.0 if wording == "stated" else -1.0
        sizes = _LARGE if extensive else _SMALL
        pools = (_STATED, _STATED_IMPRESSION) if wording == "stated" else (_HEDGED, _HEDGED_IMPRESSION)
        for pool, out in zip(pools, (finding, impression), strict=True):
            template, columns = pool[rng.integers(len(pool))]
            adjective, noun = _place(rng, side, zone)
            out.append(_sentence(template, a=adjective, n=noun, z=sizes[rng.integers(len(sizes))]))
            labels.update(dict.fromkeys(columns, value))
    elif wording == "negated":
        for pool, out in ((_NEGATED, finding), (_NEGATED_IMPRESSION, impression)):
            template, columns = pool[rng.integers(len(pool))]
            out.append(template)
            labels.update(dict.fromkeys(columns, 0.0))
    else:
        impression.append("No acute cardiopulmonary process." if not extras["opacity"] else "No change from prior.")
    heart = _ENLARGED_HEART if extras["cardiomegaly"] else _HEART
    others = [heart[rng.integers(len(heart))]]
    if "Pleural Effusion" not in labels:
        others.append(_PLEURA[rng.integers(len(_PLEURA))])
    if extras["device"]:
        others.append(_DEVICES[rng.integers(len(_DEVICES))])
    if rng.random() < 0.5:
        others.append(_OTHER[rng.integers(len(_OTHER))])
    for _, columns in others:
        labels.update(columns)
    if extras["cardiomegaly"] and rng.random() < 0.5:
        impression.append(others[0][0])
    order = [others[i][0] for i in rng.permutation(len(others))]
    cut = 0 if rng.random() < 0.6 else 1  # the finding first, or after one other sentence
    sentences = order[:cut] + finding + order[cut:]
    if all(labels.get(column) not in (1.0, -1.0) for column in CHEXPERT_LABELS if column != "Support Devices"):
        labels["No Finding"] = 1.0

    gender = rng.choice(["M", "F"])
    indication = _INDICATIONS[rng.integers(len(_INDICATIONS))].format(G=gender, g="man" if gender == "M" else "woman")
    exam, technique = (
        ("CHEST (PA AND LAT)", "Chest PA and lateral") if view == "PA" else ("CHEST (PORTABLE AP)", "Portable AP chest")
    )
    lines = [" " * 33 + "FINAL REPORT", f" EXAMINATION:  {exam}", " ", f" INDICATION:  {indication}", " "]
    lines += [f" TECHNIQUE:  {technique}", " ", " COMPARISON:  None.", " "]
    if rng.random() < 0.9:
        lines += [" FINDINGS: ", " "] + _wrap(" ".join(sentences)) + [" "]
    else:  # some reports have an impression only
        impression = finding + impression
    lines += [" IMPRESSION: ", " "] + _wrap(" ".join(impression))
    mentioned = wording in ("stated", "hedged")
    return _Report("\n".join(lines) + "\n", labels, side if mentioned else "", zone if mentioned else "")


def _wrap(text: str) -> list[str]:
    """Lines of at most 78 characters, each led by a space, as the MIMIC-CXR reports are wrapped."""
    return [" " + line for line in textwrap.wrap(text, 77)]


# The data set


def _square_side(image_size: int, shape: int | Sequence[int] | None) -> int:
    """The films' side length: ``image_size``, or ``shape`` as the CLI and configs pass it (``n``, ``(n, n)`` or
    ``(n, n, 1)``)."""
    if shape is None:
        return int(image_size)
    sides = [int(shape)] if isinstance(shape, int | np.integer) else [int(n) for n in shape]
    if not sides or len(sides) > 3 or (len(sides) == 3 and sides[2] != 1) or len(set(sides[:2])) != 1:
        raise ValueError(
            f"synthetic chest films are square and grey: shape must be n, (n, n) or (n, n, 1), got {shape}"
        )
    return sides[0]


def _shuffled(rng: np.random.Generator, values: Sequence[str], shares: Sequence[float], total: int) -> list[str]:
    """``total`` values in proportion to ``shares`` (largest remainders), in random order."""
    counts = proportional_counts(total, np.asarray(shares) / np.sum(shares))
    return [str(value) for value in rng.permutation(np.repeat(np.asarray(values), counts))]


def _draw_findings(rng: np.random.Generator, total: int, prevalence: float, with_reports: bool) -> list[dict]:
    """What each of ``total`` films shows and, with ``with_reports``, how its report words it."""
    positives = int(proportional_counts(total, [prevalence, 1 - prevalence])[0]) if total else 0
    opacity = rng.permutation(np.arange(total) < positives)
    sides = iter(_shuffled(rng, CXR_SIDES, _SIDE_SHARES, positives))
    zones = iter(_shuffled(rng, CXR_ZONES, _ZONE_SHARES, positives))
    extent = iter(rng.permutation(np.arange(positives) < round(_EXTENSIVE_SHARE * positives)))
    wordings = {
        True: iter(_shuffled(rng, CXR_WORDINGS, _POSITIVE_WORDINGS, positives)),
        False: iter(_shuffled(rng, CXR_WORDINGS, _NEGATIVE_WORDINGS, total - positives)),
    }
    films = []
    for present in opacity:
        film = {"opacity": bool(present), "side": "", "zone": "", "extensive": False, "faint": False, "wording": ""}
        if present:
            film.update(side=next(sides), zone=next(zones), extensive=bool(next(extent)))
        if with_reports:
            film["wording"] = next(wordings[bool(present)])
        elif present:  # test films: some subtle ones, as the hedged training films
            film["faint"] = not film["extensive"] and rng.random() < 0.15
        films.append(film)
    for film in films:
        if film["wording"] == "hedged":
            # a hedge is the radiologist's doubt over a subtle finding: the film has a faint, small opacity, or
            # (on films without one) the report names a place where the film shows nothing
            film["extensive"] = False
            film["faint"] = film["opacity"]
    return films


def _write_csv(path: Path, header: Sequence[str] | str, rows: list[Sequence], lineterminator: str = "\n") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator=lineterminator)
        if isinstance(header, str):
            handle.write(header + lineterminator)
        else:
            writer.writerow(header)
        writer.writerows(rows)


def _grey(image: np.ndarray) -> Image.Image:
    return Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8), mode="L")


def _boxes_text(boxes: list[tuple[int, int, int, int]]) -> str:
    return ";".join(" ".join(map(str, box)) for box in boxes)


def _label(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def make_cxr_dataset(
    out_dir: str | os.PathLike,
    num_cases: int = 400,
    image_size: int = 256,
    seed: int = 0,
    num_test: int = 100,
    test_size: int | None = None,
    prevalence: float = 0.5,
    shape: int | Sequence[int] | None = None,
) -> Path:
    """Write a synthetic chest X-ray set: MIMIC-CXR-JPG films with reports (train, validate) and ChestX-ray8 films
    with pneumonia boxes (test), for report-guided pneumonia localisation.

    Files under ``out_dir``::

        mimic-cxr/files/p10/p<subject>/s<study>/<dicom_id>.jpg   one frontal film per study, 8-bit grey JPEG
                                                                 (quality 95), image_size x image_size
        mimic-cxr/files/p10/p<subject>/s<study>.txt              the study's free-text report, beside its folder
        mimic-cxr/mimic-cxr-2.0.0-split.csv      dicom_id,study_id,subject_id,split (train / validate, by subject;
                                                 no test: the test films are the ChestX-ray8 part)
        mimic-cxr/mimic-cxr-2.0.0-chexpert.csv   subject_id,study_id and the 14 CheXpert columns (CHEXPERT_LABELS):
                                                 1.0 stated, 0.0 negated, -1.0 hedged, blank unmentioned, each
                                                 column as the report's findings and impression speak of it
        mimic-cxr/mimic-cxr-2.0.0-metadata.csv   dicom_id,subject_id,study_id,...,ViewPosition (PA / AP),Rows,
                                                 Columns,... (the release's 12 columns)
        chestxray8/images/<patient 8 digits>_<follow-up 3 digits>.png   8-bit grey PNG, test_size x test_size
        chestxray8/Data_Entry_2017.csv           the release's header; Finding Labels "Pneumonia" or "No Finding"
        chestxray8/BBox_List_2017.csv            Image Index,Finding Label,Bbox [x,y,w,h]: one row per opacity
                                                 ("Pneumonia"; x, y the top-left corner, in the image's pixels)
        truth.csv                                one row per film (both parts), columns below

    A fifth of the studies are a subject's later study (subject ids ``10xxxxxx`` under ``p10``, study ids
    ``5xxxxxxx``, dicom ids of five 8-digit hex groups, as in the release); a share ``prevalence`` of the MIMIC
    films and 75 % of the test films have an opacity (exact counts, largest remainders). Every file is written in a
    fixed order from generators seeded by ``seed`` and the film's index, so the same arguments give the same bytes.

    What a film shows (each drawn on its own, so no two are alike): a bright body, mediastinum, heart, spine and
    clavicles, two darker lung fields (the patient's right lung on the image's left, slightly wider), faint ribs and
    vessel texture, under a random thorax size and position (about 0.8-1.0 of the field, shifted by about 3 %),
    exposure, contrast curve, blur and noise. AP films (30 %) have a larger heart; some films (15 %) carry a central
    line, some (10 %) an enlarged heart, both said in the report. An opacity is 1-3 irregular, mottled blobs that
    add 0.15-0.25 (faint ones 0.08-0.11) to a [0, 1] image, centred in one zone (upper, middle or lower third from
    apex to base) of one lung field, or the same zone of both (bilateral), and kept inside the lung field, into
    whose next zone it may reach; extensive opacities are about 1.8 times as wide. Sides 40 % right, 30 % left, 30 %
    bilateral; zones 50 % lower, 25 % each other; 30 % extensive. The box of an opacity (one per lung) is the
    bounding box of the pixels where it adds more than 30 % of its peak. Box sizes follow ChestX-ray8's pneumonia
    boxes: their width and height are a median 0.19 and 0.23 of the film's (10th-90th percentiles 0.13-0.27 and
    0.15-0.37); the release's 120 pneumonia boxes measure a median 0.22 and 0.27 (0.16-0.57 and 0.16-0.50), the
    widest ones spanning both lungs, which here get a box per lung.

    How a report speaks of the finding (``wording`` in ``truth.csv``), in MIMIC's layout (``FINAL REPORT``,
    ``EXAMINATION``, ``INDICATION``, ``TECHNIQUE``, ``COMPARISON``, ``FINDINGS`` (left out in 10 %), ``IMPRESSION``,
    wrapped at 78 characters):

    - films with an opacity: 82 % stated ("Right lower lobe consolidation consistent with pneumonia", "patchy
      opacity at the left base"), 15 % hedged ("Cannot exclude early pneumonia in the right lower lobe", "left
      basilar atelectasis versus pneumonia"), 3 % unmentioned (a missed finding). A stated or hedged finding leaves
      its side out in 8 % and its zone in 12 % (``report_side`` / ``report_zone`` empty). Extensive opacities are
      always told as such ("extensive", "large", "dense", "widespread"), smaller ones never.
    - films without: 80 % negated ("No focal consolidation", "The lungs are clear", "No evidence of pneumonia"),
      12 % unmentioned, 8 % hedged.
    - the hedging rule: a hedge is doubt over a subtle finding, so a hedged film with an opacity always has a
      faint, small one (``faint`` 1); a hedged film without one names a side and zone where the film shows nothing.
    - other sentences: heart size, pleural effusion and pneumothorax negated, bones, a central line (which names a
      side: the finding's side must be read from the sentences about the finding), and an indication that may ask
      about pneumonia ("evaluate for pneumonia"): only FINDINGS and IMPRESSION tell the finding.

    ``truth.csv`` columns: ``image`` (path under ``out_dir``), ``split`` (train / validate / test), ``report`` (path
    of the report, empty for test films), ``view`` (PA / AP), ``opacity`` (0/1), ``side`` (right / left /
    bilateral, the patient's; empty without opacity), ``zone`` (upper / middle / lower), ``extensive`` (0/1),
    ``faint`` (0/1), ``boxes`` (``x y w h`` per opacity, ``;``-separated, in the film's pixels; written for every
    film, the test films' also in ``BBox_List_2017.csv``), ``wording`` (stated / hedged / negated / unmentioned;
    empty for test films), ``report_side`` and ``report_zone`` (what the report names; empty when it names none).

    Args:
        out_dir: folder to write into (created).
        num_cases: number of MIMIC-CXR studies (one frontal film each), split 80 : 20 into train and validate by
            subject (validate gets a subject once there are two).
        image_size: side length of the MIMIC films, in pixels.
        seed: random seed; the same arguments write byte-identical files.
        num_test: number of ChestX-ray8 test films (0 for none: the ChestX-ray8 CSVs then hold their headers only).
        test_size: side length of the test films (the real ones are 1024); default ``image_size``.
        prevalence: share of the MIMIC films with an opacity, in [0, 1].
        shape: another way to give ``image_size`` (``n``, ``(n, n)`` or ``(n, n, 1)``), as ``medguide synthetic
            --shape`` and ``dataset_dir_or_synthetic(..., shape=...)`` pass it.

    Returns:
        ``out_dir`` as a path.

    Raises:
        ValueError: ``num_cases`` below 1, ``num_test`` below 0, a side length below 32, a ``prevalence`` outside
            [0, 1], or a ``shape`` that is not square.
    """
    out_dir = Path(out_dir)
    size = _square_side(image_size, shape)
    test_size = size if test_size is None else int(test_size)
    if num_cases < 1 or num_test < 0:
        raise ValueError(f"num_cases must be at least 1 and num_test at least 0, got {num_cases} and {num_test}")
    if min(size, test_size) < 32:
        raise ValueError(f"chest films need at least 32 pixels a side, got image_size {size}, test_size {test_size}")
    if not 0 <= prevalence <= 1:
        raise ValueError(f"prevalence must be in [0, 1], got {prevalence}")
    rng = np.random.default_rng([seed, 0])
    truth = []

    # MIMIC-CXR: subjects with one or two studies, split by subject
    first = np.ones(num_cases, bool)
    first[1:] = rng.random(num_cases - 1) >= _SECOND_STUDY
    subject_of = np.cumsum(first) - 1
    subjects = 10_000_000 + np.sort(rng.choice(1_000_000, subject_of[-1] + 1, replace=False))
    studies = 50_000_000 + rng.choice(10_000_000, num_cases, replace=False)
    train_count = int(proportional_counts(len(subjects), _SPLIT)[0]) if len(subjects) > 1 else 1
    train_subjects = set(rng.permutation(len(subjects))[:train_count].tolist())
    films = _draw_findings(rng, num_cases, prevalence, with_reports=True)
    mimic = out_dir / "mimic-cxr"
    split_rows, chexpert_rows, metadata_rows = [], [], []
    for index, film in enumerate(films):
        case_rng = np.random.default_rng([seed, 1, index])
        subject, study = int(subjects[subject_of[index]]), int(studies[index])
        dicom_id = "-".join(f"{value:08x}" for value in case_rng.integers(0, 2**32, 5))
        view = "AP" if case_rng.random() < _AP_SHARE else "PA"
        extras = {"device": case_rng.random() < _DEVICE_SHARE, "cardiomegaly": case_rng.random() < _CARDIOMEGALY_SHARE}
        drawn = _chest_film(
            case_rng, size, film["side"], film["zone"], film["extensive"], film["faint"], view, **extras
        )
        extras["opacity"] = film["opacity"]
        report_side, report_zone = film["side"], film["zone"]
        if film["wording"] == "hedged" and not film["opacity"]:
            report_side = CXR_SIDES[case_rng.choice(3, p=_SIDE_SHARES)]
            report_zone = CXR_ZONES[case_rng.choice(3, p=_ZONE_SHARES)]
        omit = case_rng.random()
        if omit < _OMIT_SIDE:
            report_side = ""
        elif omit < _OMIT_SIDE + _OMIT_ZONE:
            report_zone = ""
        report = _report(case_rng, film["wording"], report_side, report_zone, film["extensive"], view, extras)
        study_dir = mimic / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study}"
        study_dir.mkdir(parents=True, exist_ok=True)
        _grey(drawn.image).save(study_dir / f"{dicom_id}.jpg", quality=95)
        (study_dir.parent / f"s{study}.txt").write_text(report.text, encoding="utf-8")
        split = "train" if subject_of[index] in train_subjects else "validate"
        split_rows.append((dicom_id, study, subject, split))
        chexpert_rows.append((subject, study, *(_label(report.labels.get(column)) for column in CHEXPERT_LABELS)))
        exam = "CHEST (PA AND LAT)" if view == "PA" else "CHEST (PORTABLE AP)"
        date, time = 2110_00_00 + int(case_rng.integers(1, 13)) * 100 + int(case_rng.integers(1, 29)), "120000.000"
        orientation = "postero-anterior" if view == "PA" else "antero-posterior"
        metadata_rows.append((dicom_id, subject, study, exam, view, size, size, date, time, exam, orientation, "Erect"))
        truth.append(
            {
                **film,
                "image": (study_dir / f"{dicom_id}.jpg").relative_to(out_dir).as_posix(),
                "split": split,
                "report": (study_dir.parent / f"s{study}.txt").relative_to(out_dir).as_posix(),
                "view": view,
                "boxes": drawn.boxes,
                "report_side": report.side,
                "report_zone": report.zone,
            }
        )
    _write_csv(mimic / "mimic-cxr-2.0.0-split.csv", SPLIT_HEADER, split_rows)
    _write_csv(mimic / "mimic-cxr-2.0.0-chexpert.csv", ("subject_id", "study_id", *CHEXPERT_LABELS), chexpert_rows)
    _write_csv(mimic / "mimic-cxr-2.0.0-metadata.csv", METADATA_HEADER, metadata_rows)

    # ChestX-ray8: test films with boxes
    chestxray8 = out_dir / "chestxray8"
    (chestxray8 / "images").mkdir(parents=True, exist_ok=True)
    entries, bbox_rows = [], []
    for index, film in enumerate(_draw_findings(rng, num_test, _PREVALENCE_TEST, with_reports=False)):
        case_rng = np.random.default_rng([seed, 2, index])
        follow_up = int(case_rng.integers(0, 4))
        name = f"{index + 1:08d}_{follow_up:03d}.png"
        view = "AP" if case_rng.random() < _AP_SHARE else "PA"
        extras = {"device": case_rng.random() < _DEVICE_SHARE, "cardiomegaly": case_rng.random() < _CARDIOMEGALY_SHARE}
        drawn = _chest_film(
            case_rng, test_size, film["side"], film["zone"], film["extensive"], film["faint"], view, **extras
        )
        _grey(drawn.image).save(chestxray8 / "images" / name, optimize=False)
        age, gender = int(case_rng.integers(18, 90)), str(case_rng.choice(["M", "F"]))
        spacing = f"{350 / test_size:.3f}"  # a 35 cm field
        label = "Pneumonia" if film["opacity"] else "No Finding"
        entries.append((name, label, follow_up, index + 1, age, gender, view, test_size, test_size, spacing, spacing))
        bbox_rows += [(name, "Pneumonia", *(float(value) for value in box)) for box in drawn.boxes]
        truth.append(
            {
                **film,
                "image": f"chestxray8/images/{name}",
                "split": "test",
                "report": "",
                "view": view,
                "boxes": drawn.boxes,
                "report_side": "",
                "report_zone": "",
            }
        )
    _write_csv(chestxray8 / "Data_Entry_2017.csv", DATA_ENTRY_HEADER, entries, lineterminator="\r\n")
    _write_csv(chestxray8 / "BBox_List_2017.csv", BBOX_HEADER, bbox_rows)

    rows = [
        [
            *(row[key] for key in ("image", "split", "report", "view")),
            int(row["opacity"]),
            row["side"],
            row["zone"],
            int(row["extensive"]),
            int(row["faint"]),
            _boxes_text(row["boxes"]),
            *(row[key] for key in ("wording", "report_side", "report_zone")),
        ]
        for row in truth
    ]
    _write_csv(out_dir / "truth.csv", TRUTH_HEADER, rows)
    return out_dir
