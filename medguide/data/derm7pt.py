"""Derm7pt skin lesions (a clinical and a dermoscopic photo per case, eight tasks) and a synthetic generator.

Derm7pt (Kawahara et al., "Seven-point checklist and skin lesion classification using multitask multimodal neural
nets", IEEE JBHI 2019, https://github.com/jeremykawahara/derm7pt) has 1,011 cases, each a clinical photo, a
dermoscopic photo, a diagnosis and the seven dermoscopic criteria of the 7-point checklist. Its release layout::

    data_dir/meta/meta.csv                     one row per case: case_num (1, 2, ...), diagnosis, seven_point_score,
                                               the seven criteria, ..., clinic, derm (image paths under images/), ...
    data_dir/meta/{train,valid,test}_indexes.csv   header "indexes", then 0-based row positions in meta.csv
    data_dir/images/<folder>/<name>.jpg        e.g. NEL/NEL025.JPG (clinic), NEL/Nel026.jpg (derm)

The index files hold row positions counted from 0, not ``case_num`` values (which count from 1): joining them on
``case_num`` shifts every case onto its neighbour's images and labels without any error, so they are read as
positions here. ``meta.csv`` and the index files may also lie directly in ``data_dir`` (beside ``images/``).

The eight tasks are those of the paper and of deep multimodal guidance (Mallya & Hamarneh, MICCAI 2022), grouped as
Kawahara's ``ArgenzianoDatasetGroupInfrequent`` groups them (:data:`DERM7PT_VALUES` lists every value of the real
``meta.csv`` and its class; counts are those of its 1,011 rows):

=====================  ===========================================================================================
diagnosis              BCC basal cell carcinoma (42); NEV every nevus: blue, clark, combined, congenital, dermal,
                       recurrent, reed or spitz (575); MEL every melanoma: in situ, < 0.76 mm, 0.76-1.5 mm, > 1.5 mm,
                       metastasis, unspecified (252); MISC dermatofibroma, lentigo, melanosis, miscellaneous, vascular
                       lesion (97); SK seborrheic keratosis (45)
pigment_network        absent (400), typical (381), atypical (230)
blue_whitish_veil      absent (816), present (195)
vascular_structures    absent (823); regular: arborizing, comma, hairpin, within regression, wreath (117);
                       irregular: dotted, linear irregular (71), the two that score on the 7-point checklist
pigmentation           absent (588); regular: diffuse or localized regular (118); irregular: diffuse or localized
                       irregular (305)
streaks                absent (653), regular (107), irregular (251)
dots_and_globules      absent (229), regular (334), irregular (448)
regression_structures  absent (758); present: blue areas, white areas, combinations (253)
=====================  ===========================================================================================

Cases without a clinical photo are left out, as the paper leaves them out (DMG's 413/203/395 split "minus pairs
without a clinical image"): in the release, nine rows' ``clinic`` names the dermoscopic photo (their notes say
"Clinical missing and replaced with derm" or "Replaced clinic ... with derm ..."), leaving 411 / 198 / 393 cases.

:func:`make_derm7pt_dataset` writes a seeded synthetic set in this layout (see its docstring for what each photo
shows).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from medguide.data.checks import CaseList
from medguide.data.errors import InputError, InvalidCaseError, MissingInputError, flag
from medguide.data.files import photo_datalist
from medguide.data.labels import _check_columns, _rows, read_class_labels
from medguide.data.splits import proportional_counts, stratified_split

__all__ = [
    "DERM7PT_SECTIONS",
    "DERM7PT_TASKS",
    "DERM7PT_VALUES",
    "clinical_photo_datalist",
    "derm7pt_datalist",
    "is_derm7pt",
    "make_derm7pt_dataset",
]

logger = logging.getLogger("medguide.data")

DERM7PT_SECTIONS = ("train", "valid", "test")
# task (the meta.csv column): class names, the i-th being class i
DERM7PT_TASKS = {
    "diagnosis": ("BCC", "NEV", "MEL", "MISC", "SK"),
    "pigment_network": ("absent", "typical", "atypical"),
    "blue_whitish_veil": ("absent", "present"),
    "vascular_structures": ("absent", "regular", "irregular"),
    "pigmentation": ("absent", "regular", "irregular"),
    "streaks": ("absent", "regular", "irregular"),
    "dots_and_globules": ("absent", "regular", "irregular"),
    "regression_structures": ("absent", "present"),
}
# task: {value in meta.csv: its class}; every value the released meta.csv holds, and no other
DERM7PT_VALUES = {
    "diagnosis": {
        "basal cell carcinoma": "BCC",
        "blue nevus": "NEV",
        "clark nevus": "NEV",
        "combined nevus": "NEV",
        "congenital nevus": "NEV",
        "dermal nevus": "NEV",
        "recurrent nevus": "NEV",
        "reed or spitz nevus": "NEV",
        "melanoma": "MEL",
        "melanoma (in situ)": "MEL",
        "melanoma (less than 0.76 mm)": "MEL",
        "melanoma (0.76 to 1.5 mm)": "MEL",
        "melanoma (more than 1.5 mm)": "MEL",
        "melanoma metastasis": "MEL",
        "dermatofibroma": "MISC",
        "lentigo": "MISC",
        "melanosis": "MISC",
        "miscellaneous": "MISC",
        "vascular lesion": "MISC",
        "seborrheic keratosis": "SK",
    },
    "pigment_network": {"absent": "absent", "typical": "typical", "atypical": "atypical"},
    "blue_whitish_veil": {"absent": "absent", "present": "present"},
    "vascular_structures": {
        "absent": "absent",
        "arborizing": "regular",
        "comma": "regular",
        "hairpin": "regular",
        "within regression": "regular",
        "wreath": "regular",
        "dotted": "irregular",
        "linear irregular": "irregular",
    },
    "pigmentation": {
        "absent": "absent",
        "diffuse regular": "regular",
        "localized regular": "regular",
        "diffuse irregular": "irregular",
        "localized irregular": "irregular",
    },
    "streaks": {"absent": "absent", "regular": "regular", "irregular": "irregular"},
    "dots_and_globules": {"absent": "absent", "regular": "regular", "irregular": "irregular"},
    "regression_structures": {
        "absent": "absent",
        "blue areas": "present",
        "white areas": "present",
        "combinations": "present",
    },
}
_CASE, _CLINIC, _DERM = "case_num", "clinic", "derm"


def _meta_dir(data_dir: Path) -> Path:
    """``data_dir/meta``, or ``data_dir`` itself when it holds ``meta.csv`` directly."""
    if not (data_dir / "meta" / "meta.csv").is_file() and (data_dir / "meta.csv").is_file():
        return data_dir
    return data_dir / "meta"


def _row_positions(index_csv: Path, num_rows: int) -> list[int]:
    """The 0-based meta.csv row positions an index file lists, checked to be rows of meta.csv, each once."""
    if not index_csv.is_file():
        raise MissingInputError(f"Derm7pt index file not found: '{index_csv}'")
    header, rows = _rows(index_csv)
    _check_columns(index_csv, header, ["indexes"])
    positions, lines = [], {}
    for line, cells, _ in rows:
        cell = cells["indexes"]
        if not cell.isdigit() or int(cell) >= num_rows:
            raise InputError(
                f"Derm7pt index file '{index_csv}', row {line}: {cell!r} is not a row position in meta.csv "
                f"(0 to {num_rows - 1}, counted from 0)"
            )
        if int(cell) in lines:
            raise InputError(
                f"Derm7pt index file '{index_csv}' lists row {cell} twice (rows {lines[int(cell)]}, {line})"
            )
        lines[int(cell)] = line
        positions.append(int(cell))
    return positions


def _image_path(images: Path, value: str) -> Path:
    # the release's paths use '/'; a copy edited on Windows may hold '\'
    return images / value.replace("\\", "/")


def derm7pt_datalist(
    data_dir: str | Path,
    section: str = "train",
    skip_invalid: bool = False,
    require_clinic: bool = True,
    require_derm: bool = True,
    require_label: bool = True,
) -> CaseList:
    """Read one section of a Derm7pt data set (layout and tasks in the module docstring) into datalist items.

    Items are ``{"case": case_num, "clinic": path, "derm": path, "label": {task: class index}, "label_file":
    meta.csv}`` in the index file's order, tasks and classes as :data:`DERM7PT_TASKS`. Cases without a clinical
    photo (``clinic`` empty, or naming the dermoscopic photo as in nine rows of the release) are left out and their
    number logged, as the paper leaves them out; this is not an error.

    Example:
        >>> items = derm7pt_datalist("release_v0", "train")
        >>> len(items), items[0]["case"]  # train_indexes.csv starts with row 16, which is case_num 17
        (411, '17')

    Args:
        data_dir: the data set folder (holding ``meta/`` and ``images/``).
        section: ``"train"``, ``"valid"`` or ``"test"``: which index file to read.
        skip_invalid: log and leave out a case with a missing photo or an invalid label, instead of raising (the
            result's ``skipped`` lists them).
        require_clinic: false keeps the cases without a clinical photo, with no ``clinic`` entry (e.g. to train a
            dermoscopic classifier on every case).
        require_derm: false leaves the dermoscopic photo out of the items (no ``derm`` entry, not checked): what
            inference from the clinical photo alone reads.
        require_label: false gives items without ``label``, the criteria columns not read (inference).

    Raises:
        MissingInputError: ``meta.csv`` or the section's index file is missing.
        InputError: an unknown section; ``meta.csv`` lacks a column; an index file without an ``indexes`` column,
            or listing a position that is not a row of ``meta.csv``, or one twice.
        InvalidCaseError: naming the case and the file, without ``skip_invalid``: a photo that does not exist, an
            empty ``derm`` cell, a value outside the table above (e.g. an unknown diagnosis), an empty cell.
    """
    data_dir = Path(data_dir)
    if section not in DERM7PT_SECTIONS:
        raise InputError(f"Derm7pt section must be one of {list(DERM7PT_SECTIONS)}, got {section!r}")
    meta_dir = _meta_dir(data_dir)
    meta_csv = meta_dir / "meta.csv"
    if not meta_csv.is_file():
        raise MissingInputError(f"Derm7pt meta.csv not found: '{meta_csv}' (expected <data_dir>/meta/meta.csv)")
    header, rows = _rows(meta_csv)
    _check_columns(meta_csv, header, [_CASE, _CLINIC, _DERM, *DERM7PT_TASKS])
    skip = flag(skip_invalid, "skip_invalid")
    images = data_dir / "images"

    items, errors, without_clinic = CaseList(), [], []
    for position in _row_positions(meta_dir / f"{section}_indexes.csv", len(rows)):
        line, cells, _ = rows[position]
        case = cells[_CASE] or f"(row {line})"
        if not cells[_DERM]:
            errors.append(InvalidCaseError(case, meta_csv, f"empty 'derm' cell in row {line}"))
            continue
        item = {"case": case, "derm": str(_image_path(images, cells[_DERM]))}
        if cells[_CLINIC] and _image_path(images, cells[_CLINIC]) != _image_path(images, cells[_DERM]):
            item = {"case": case, "clinic": str(_image_path(images, cells[_CLINIC])), **item}
        elif flag(require_clinic, "require_clinic"):
            without_clinic.append(case)
            continue
        if not flag(require_derm, "require_derm"):
            del item[_DERM]
        missing = next((key for key in (_CLINIC, _DERM) if key in item and not Path(item[key]).is_file()), None)
        if missing is not None:
            what = "clinical" if missing == _CLINIC else "dermoscopic"
            errors.append(InvalidCaseError(case, item[missing], f"missing {what} photo ({missing} of row {line})"))
            continue
        items.append(item)
    if without_clinic:
        logger.info(
            "Derm7pt %s: left out %d cases without a clinical photo (their clinic column is empty or names the "
            "dermoscopic photo): case_num %s",
            section,
            len(without_clinic),
            ", ".join(without_clinic),
        )
    for error in errors:
        if not skip:
            raise error
        items.skip(error)

    if not flag(require_label, "require_label"):
        return items
    declared = {task: list(values) for task, values in DERM7PT_VALUES.items()}
    labelled = read_class_labels(meta_csv, declared, case_column=_CASE, datalist=items, skip_invalid=skip)
    for item in labelled:
        item["label"] = {
            task: DERM7PT_TASKS[task].index(DERM7PT_VALUES[task][declared[task][raw]])
            for task, raw in item["label"].items()
        }
    return labelled


def is_derm7pt(data_dir: str | Path) -> bool:
    """Whether ``data_dir`` is in the Derm7pt layout: it holds ``meta/meta.csv`` (or ``meta.csv`` by ``images/``)."""
    return (_meta_dir(Path(data_dir)) / "meta.csv").is_file()


def clinical_photo_datalist(data_dir: str | Path, section: str = "test", skip_invalid: bool = False) -> CaseList:
    """The clinical photos to classify from the clinical photo alone: one section of a Derm7pt data set, or a folder
    of one's own photos.

    In the Derm7pt layout (:func:`is_derm7pt`), the section's cases with a clinical photo, as
    ``{"case": case_num, "clinic": path}`` (no dermoscopic photo, no labels read; cases without a clinical photo left
    out and logged, as in training). Otherwise every photograph in ``data_dir`` is a case named by its file name
    (:func:`medguide.data.files.photo_datalist`).

    Args:
        data_dir: a Derm7pt data set folder, or a folder of photos (JPEG, PNG, BMP, TIFF).
        section: the Derm7pt index file to read (``"train"``, ``"valid"`` or ``"test"``).
        skip_invalid: log and leave out a Derm7pt case whose clinical photo is missing, instead of raising.

    Raises:
        InvalidCaseError: a Derm7pt case whose clinical photo does not exist, naming the case and the file.
        MissingInputError: ``data_dir`` does not exist, or holds neither ``meta.csv`` nor a photo.
    """
    if is_derm7pt(data_dir):
        return derm7pt_datalist(data_dir, section, skip_invalid, require_derm=False, require_label=False)
    return CaseList(photo_datalist(data_dir, _CLINIC))


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic Derm7pt

_COLUMNS = (
    "case_num", "diagnosis", "seven_point_score", "pigment_network", "streaks", "pigmentation",
    "regression_structures", "dots_and_globules", "blue_whitish_veil", "vascular_structures",
    "level_of_diagnostic_difficulty", "elevation", "location", "sex", "management", "clinic", "derm", "case_id",
    "notes",
)  # fmt: skip
# the released diagnoses' counts, for the share of each class and of each value within it
_DIAGNOSIS_COUNTS = {
    "basal cell carcinoma": 42, "blue nevus": 28, "clark nevus": 399, "combined nevus": 13, "congenital nevus": 17,
    "dermal nevus": 33, "recurrent nevus": 6, "reed or spitz nevus": 79, "melanoma": 1, "melanoma (in situ)": 64,
    "melanoma (less than 0.76 mm)": 102, "melanoma (0.76 to 1.5 mm)": 53, "melanoma (more than 1.5 mm)": 28,
    "melanoma metastasis": 4, "dermatofibroma": 20, "lentigo": 24, "melanosis": 16, "miscellaneous": 8,
    "vascular lesion": 29, "seborrheic keratosis": 45,
}  # fmt: skip
# per criterion and diagnosis, the chance of each class (in DERM7PT_TASKS order): melanomas atypical and irregular,
# nevi typical and regular, BCCs with regular (arborizing) vessels, as the 7-point checklist expects
_CRITERIA = {
    "pigment_network": {"BCC": (.9, .1, 0), "NEV": (.3, .55, .15), "MEL": (.2, .15, .65), "MISC": (.6, .3, .1),
                        "SK": (.85, .1, .05)},
    "blue_whitish_veil": {"BCC": (.8, .2), "NEV": (.9, .1), "MEL": (.45, .55), "MISC": (.9, .1), "SK": (.9, .1)},
    "vascular_structures": {"BCC": (.2, .75, .05), "NEV": (.9, .07, .03), "MEL": (.65, .1, .25),
                            "MISC": (.7, .25, .05), "SK": (.6, .35, .05)},
    "pigmentation": {"BCC": (.8, .1, .1), "NEV": (.6, .2, .2), "MEL": (.25, .05, .7), "MISC": (.5, .25, .25),
                     "SK": (.7, .2, .1)},
    "streaks": {"BCC": (.95, .03, .02), "NEV": (.7, .15, .15), "MEL": (.35, .05, .6), "MISC": (.85, .1, .05),
                "SK": (.9, .05, .05)},
    "dots_and_globules": {"BCC": (.7, .2, .1), "NEV": (.15, .5, .35), "MEL": (.1, .2, .7), "MISC": (.5, .3, .2),
                          "SK": (.6, .3, .1)},
    "regression_structures": {"BCC": (.8, .2), "NEV": (.85, .15), "MEL": (.45, .55), "MISC": (.8, .2),
                              "SK": (.8, .2)},
}  # fmt: skip
# the regular vessels each diagnosis shows
_REGULAR_VESSELS = {"BCC": "arborizing", "NEV": "comma", "MEL": "within regression", "MISC": "wreath", "SK": "hairpin"}
# 7-point checklist: the major criteria score 2, the minor 1
_SCORES = {
    ("pigment_network", "atypical"): 2,
    ("blue_whitish_veil", "present"): 2,
    ("vascular_structures", "irregular"): 2,
    ("pigmentation", "irregular"): 1,
    ("streaks", "irregular"): 1,
    ("dots_and_globules", "irregular"): 1,
    ("regression_structures", "present"): 1,
}
# lesion colour (RGB 0-1) per diagnosis: nevi brown, melanomas dark, BCCs pink-grey, SKs tan, the rest reddish-brown
_LESION_RGB = {
    "BCC": (0.72, 0.52, 0.52),
    "NEV": (0.55, 0.36, 0.24),
    "MEL": (0.36, 0.22, 0.17),
    "MISC": (0.66, 0.38, 0.33),
    "SK": (0.66, 0.52, 0.36),
}
# border asymmetry per diagnosis (melanomas the most irregular)
_ASYMMETRY = {"BCC": 0.12, "NEV": 0.05, "MEL": 0.25, "MISC": 0.1, "SK": 0.1}
_BLUE_WHITE, _WHITE, _RED, _DARK = (0.5, 0.6, 0.75), (0.92, 0.88, 0.86), (0.78, 0.2, 0.25), (0.15, 0.09, 0.07)


def _raw_value(rng: np.random.Generator, task: str, group: str, diagnosis: str) -> str:
    """A value meta.csv holds for one class of a criterion."""
    if task == "vascular_structures" and group == "regular":
        return _REGULAR_VESSELS[diagnosis]
    values = [value for value, g in DERM7PT_VALUES[task].items() if g == group]
    return values[int(rng.integers(len(values)))]


def _draw_case(rng: np.random.Generator, diagnosis: str) -> dict[str, str]:
    """{meta.csv column: value} of one synthetic case of a diagnosis class."""
    raw = [v for v, g in DERM7PT_VALUES["diagnosis"].items() if g == diagnosis]
    weights = np.asarray([_DIAGNOSIS_COUNTS[v] for v in raw], float)
    row = {"diagnosis": raw[int(rng.choice(len(raw), p=weights / weights.sum()))]}
    groups = {"diagnosis": diagnosis}
    for task, chances in _CRITERIA.items():
        groups[task] = DERM7PT_TASKS[task][int(rng.choice(len(chances[diagnosis]), p=chances[diagnosis]))]
        row[task] = _raw_value(rng, task, groups[task], diagnosis)
    row["seven_point_score"] = str(sum(score for (task, group), score in _SCORES.items() if groups[task] == group))
    for column, choices in (
        ("level_of_diagnostic_difficulty", ("low", "medium", "high")),
        ("elevation", ("flat", "palpable", "nodular")),
        ("location", ("back", "lower limbs", "abdomen", "upper limbs", "chest", "head neck", "acral")),
        ("sex", ("female", "male")),
    ):
        row[column] = choices[int(rng.integers(len(choices)))]
    row["management"] = "excision" if diagnosis in ("MEL", "BCC") else "clinical follow up"
    return row


class _Lesion:
    """One lesion's look, drawn once and rendered at any position, scale and resolution (both photos show it).

    Coordinates are the lesion's own: its border lies near radius 1. Each criterion of the case draws its structure:
    a pigment network (regular lattice, or an atypical one of varying pitch, thickness and gaps), dark pigmentation
    (centred, or off-centre blotches), streaks at the border (all around, or in one or two sectors), dots and
    globules (evenly on a ring, or clustered and uneven), a blue-whitish veil, regression (white and blue-grey
    areas) and vessels (smooth red curves, or red dots and broken lines).
    """

    def __init__(self, rng: np.random.Generator, groups: dict[str, str]) -> None:
        self.groups = groups
        diagnosis = groups["diagnosis"]
        self.colour = np.clip(
            np.asarray(_LESION_RGB[diagnosis]) * rng.uniform(0.85, 1.15) + rng.normal(0, 0.02, 3), 0, 1
        )
        self.skin = np.clip(np.asarray((0.88, 0.72, 0.62)) + rng.normal(0, 0.04, 3), 0, 1)
        self.border = (_ASYMMETRY[diagnosis] * rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi),
                       rng.normal(0, 0.04 + 0.3 * _ASYMMETRY[diagnosis], 5), rng.uniform(0, 2 * np.pi, 5))  # fmt: skip
        self.warp = (rng.uniform(3, 7, 2), rng.uniform(0, 2 * np.pi, 2))
        self.pitch = rng.uniform(0.16, 0.22)
        self.blotches = rng.uniform(-0.5, 0.5, (3, 2))
        self.blotch_sizes = rng.uniform(0.15, 0.35, 3)
        self.sectors = rng.uniform(0, 2 * np.pi, 2)
        self.dots = 0.6 * rng.uniform(-0.7, 0.7, (14, 2)) + rng.uniform(-0.3, 0.3, 2)  # clustered off-centre
        self.dot_sizes = rng.uniform(0.03, 0.08, 14)
        self.ring_phase = rng.uniform(0, 2 * np.pi)
        self.veil = (rng.uniform(-0.35, 0.35, 2), rng.uniform(0.3, 0.45))
        self.regression = (rng.uniform(-0.4, 0.4, 2), rng.uniform(0.2, 0.35), rng.uniform(-0.4, 0.4, (10, 2)))
        self.vessels = (rng.uniform(0, np.pi, 4), rng.uniform(-0.5, 0.5, 4), rng.uniform(-0.6, 0.6, (16, 2)))

    def render(self, size: int, scale: float, centre: np.ndarray, angle: float) -> np.ndarray:
        """(size, size, 3) RGB in [0, 1]: the lesion at ``scale`` (its radius as a share of half the image),
        centred at ``centre`` (image coordinates in [-1, 1]), turned by ``angle``; rendered at twice the resolution
        and averaged down, so fine structures blur rather than alias."""
        fine = 2 * size
        axis = (np.arange(fine) + 0.5) / fine * 2 - 1
        y, x = np.meshgrid(axis - centre[0], axis - centre[1], indexing="ij")
        u = (np.cos(angle) * x + np.sin(angle) * y) / scale
        v = (-np.sin(angle) * x + np.cos(angle) * y) / scale
        radius, theta = np.hypot(u, v), np.arctan2(v, u)
        asym, phase, harmonics, phases = self.border
        edge = 1 + asym * np.cos(theta - phase)
        edge = edge + sum(a * np.cos(k * theta + p) for k, a, p in zip(range(3, 8), harmonics, phases, strict=True))
        inside = 1 / (1 + np.exp(-(edge - radius) / 0.04))
        image = self.skin + (self.colour - self.skin) * inside[..., None]
        for alpha, colour in self._structures(u, v, radius, theta, edge, inside):
            image = image + (np.asarray(colour) - image) * np.clip(alpha, 0, 1)[..., None]
        return image.reshape(size, 2, size, 2, 3).mean((1, 3))

    def _structures(self, u, v, radius, theta, edge, inside):
        """(opacity, colour) of each structure the case's criteria call for, in drawing order."""
        g = self.groups
        if g["pigmentation"] == "regular":
            yield 0.6 * inside * np.clip(1 - radius / (0.7 * edge), 0, 1), _DARK
        elif g["pigmentation"] == "irregular":
            for (bu, bv), s in zip(self.blotches[:2], self.blotch_sizes[:2], strict=True):
                yield 0.8 * inside * np.exp(-((u - bu) ** 2 + (v - bv) ** 2) / (2 * s**2)), _DARK
        if g["pigment_network"] != "absent":
            (fu, fv), (pu, pv) = self.warp
            pitch = self.pitch
            if g["pigment_network"] == "atypical":
                pitch = pitch * (1 + 0.45 * np.sin(fu * u + pu) * np.cos(fv * v + pv))
            lines = np.maximum(np.cos(np.pi * u / pitch) ** 8, np.cos(np.pi * v / pitch) ** 8)
            strength = 0.55 * inside * np.clip(1.2 - radius / edge, 0, 1)
            if g["pigment_network"] == "atypical":
                strength = strength * (0.9 + 0.6 * np.sin(1.7 * fu * u - pv)) * (np.sin(fv * v + fu * u) > -0.3)
            yield strength * lines, _DARK
        if g["streaks"] != "absent":
            rays = np.cos(18 * theta) ** 12 * np.exp(-((radius - edge) ** 2) / 0.02)
            if g["streaks"] == "irregular":
                rays = rays * sum(np.exp(-(np.angle(np.exp(1j * (theta - s))) ** 2) / 0.25) for s in self.sectors)
            yield 0.8 * rays, _DARK
        if g["dots_and_globules"] != "absent":
            if g["dots_and_globules"] == "regular":
                angles = self.ring_phase + np.linspace(0, 2 * np.pi, 12, endpoint=False)
                centres, sizes = 0.55 * np.stack([np.cos(angles), np.sin(angles)], 1), np.full(12, 0.05)
            else:
                centres, sizes = self.dots, self.dot_sizes
            dots = sum(
                np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * s**2))
                for (cu, cv), s in zip(centres, sizes, strict=True)
            )
            yield 0.9 * np.clip(1.5 * dots, 0, 1), _DARK
        if g["blue_whitish_veil"] == "present":
            (cu, cv), s = self.veil
            yield 0.75 * inside * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * s**2)), _BLUE_WHITE
        if g["regression_structures"] == "present":
            (cu, cv), s, pepper = self.regression
            yield 0.8 * inside * np.exp(-((u - cu) ** 2 + (v - cv) ** 2) / (2 * s**2)), _WHITE
            yield 0.6 * sum(np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / 0.002) for pu, pv in pepper), _BLUE_WHITE
        if g["vascular_structures"] == "regular":
            angles, offsets, _ = self.vessels
            curves = sum(np.exp(-((np.cos(a) * v - np.sin(a) * u - o - 0.1 * np.sin(6 * u)) ** 2) / 0.001)
                         for a, o in zip(angles, offsets, strict=True))  # fmt: skip
            yield 0.7 * inside * np.clip(curves, 0, 1), _RED
        elif g["vascular_structures"] == "irregular":
            _, _, points = self.vessels
            yield 0.8 * sum(np.exp(-((u - pu) ** 2 + (v - pv) ** 2) / 0.0015) for pu, pv in points), _RED


def _jpeg(image: np.ndarray, path: Path, quality: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path, quality=quality)


def _photos(rng: np.random.Generator, lesion: _Lesion, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(clinical, dermoscopic) photos of one lesion."""
    derm = lesion.render(size, rng.uniform(0.55, 0.7), rng.uniform(-0.08, 0.08, 2), rng.uniform(0, 2 * np.pi))
    axis = np.linspace(-1, 1, size)
    vignette = np.clip(1.25 - 0.9 * np.hypot(*np.meshgrid(axis, axis)) ** 4 / 2, 0, 1)  # the dermoscope's round field
    derm = derm * vignette[..., None] + rng.normal(0, 0.01, derm.shape)
    # the clinical photo: farther away, out of focus, unevenly lit, with a colour cast and sensor noise
    clinic = lesion.render(size, rng.uniform(0.25, 0.4), rng.uniform(-0.3, 0.3, 2), rng.uniform(0, 2 * np.pi))
    clinic = ndimage.gaussian_filter(clinic, sigma=(size / 48, size / 48, 0))
    light = 1 + 0.15 * np.add.outer(axis * rng.uniform(-1, 1), axis * rng.uniform(-1, 1))
    clinic = clinic * light[..., None] * rng.uniform(0.85, 1.1, 3) + rng.normal(0, 0.03, clinic.shape)
    return clinic, derm


def _image_size(image_size: int, shape: int | Sequence[int] | None) -> int:
    """The photos' side length: ``image_size``, or ``shape`` as the CLI and configs pass it (``n``, ``(n, n)`` or
    ``(n, n, 3)``)."""
    if shape is None:
        return int(image_size)
    sides = [int(shape)] if isinstance(shape, int | np.integer) else [int(n) for n in shape]
    if not sides or len(sides) > 3 or (len(sides) == 3 and sides[2] != 3) or len(set(sides[:2])) != 1:
        raise ValueError(f"Derm7pt synthetic photos are square RGB: shape must be n, (n, n) or (n, n, 3), got {shape}")
    return sides[0]


def make_derm7pt_dataset(
    out_dir: str | Path,
    num_cases: int = 120,
    image_size: int = 64,
    seed: int = 0,
    shape: int | Sequence[int] | None = None,
) -> Path:
    """Write a synthetic Derm7pt data set in the release's layout, for :func:`derm7pt_datalist`.

    ``meta/meta.csv`` with the release's 19 columns and value strings, ``meta/{train,valid,test}_indexes.csv``
    (0-based row positions, split about 413 : 203 : 395 and stratified by diagnosis) and ``images/Syn/SynNNNN.JPG``
    (clinical) + ``images/Syn/SynNNNN.jpg`` (dermoscopic) JPEG photos. Diagnoses come in the release's shares
    (NEV 57 %, MEL 25 %, MISC 10 %, SK and BCC 4 % each; every class at least 3 cases from 15 cases on), each
    criterion from a distribution that depends on the diagnosis (melanomas mostly atypical and irregular, nevi
    typical and regular), and ``seven_point_score`` is the checklist's score of the criteria. Every 20th NEV case
    has no clinical photo (``clinic`` names the dermoscopic photo), as nine cases of the release.

    What the photos show of one lesion, drawn once:

    - dermoscopic photo (superior), clearly: the lesion fills the field, and each criterion draws its structure
      (pigment network, streaks, dots, veil, regression, vessels; regular or irregular as the criterion says).
    - clinical photo (inferior), weakly: the same lesion about half as large, out of focus (the network, dots and
      vessels mostly blur away), unevenly lit, with a colour cast and noise. Its colour, size and outline (melanomas
      darker and more asymmetric) still tell part of the diagnosis.

    Args:
        out_dir: folder to write into (created).
        num_cases: number of cases (rows of meta.csv).
        image_size: side length of the square photos, in pixels.
        seed: random seed; the same seed writes byte-identical files.
        shape: another way to give the side length (``n``, ``(n, n)`` or ``(n, n, 3)``), as
            ``medguide synthetic --shape`` and ``dataset_dir_or_synthetic(..., shape=...)`` pass it.

    Returns:
        ``out_dir`` as a path.
    """
    out_dir = Path(out_dir)
    size = _image_size(image_size, shape)
    rng = np.random.default_rng(seed)
    shares = {name: 0.0 for name in DERM7PT_TASKS["diagnosis"]}
    for value, count in _DIAGNOSIS_COUNTS.items():
        shares[DERM7PT_VALUES["diagnosis"][value]] += count / sum(_DIAGNOSIS_COUNTS.values())
    counts = proportional_counts(num_cases, list(shares.values()))
    if num_cases >= 15:  # at least 3 of each class, so each split part has one
        while counts.min() < 3:
            counts[int(np.argmin(counts))] += 1
            counts[int(np.argmax(counts))] -= 1
    diagnoses = rng.permutation(np.repeat(list(shares), counts))

    rows, nevi = [], 0
    for index, diagnosis in enumerate(diagnoses):
        case_rng = np.random.default_rng([seed, index])
        row = {column: "" for column in _COLUMNS}
        row.update(_draw_case(case_rng, str(diagnosis)), case_num=str(index + 1))
        groups = {task: DERM7PT_VALUES[task][row[task]] for task in DERM7PT_TASKS}
        clinic, derm = _photos(case_rng, _Lesion(case_rng, groups), size)
        row["clinic"], row["derm"] = f"Syn/Syn{2 * index + 1:04d}.JPG", f"Syn/Syn{2 * index + 2:04d}.jpg"
        nevi += diagnosis == "NEV"
        if diagnosis == "NEV" and nevi % 20 == 0:
            row["clinic"], row["notes"] = row["derm"], "Clinical missing and replaced with derm"
        else:
            _jpeg(clinic, out_dir / "images" / row["clinic"], quality=80)
        _jpeg(derm, out_dir / "images" / row["derm"], quality=92)
        rows.append(row)

    meta = out_dir / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (meta / "meta.csv").write_text(text.getvalue(), encoding="utf-8")
    positions = [{"case": str(i), "label": DERM7PT_VALUES["diagnosis"][row["diagnosis"]]} for i, row in enumerate(rows)]
    parts = stratified_split(positions, (413, 203, 395), seed=seed)
    for section, part in zip(DERM7PT_SECTIONS, parts, strict=True):
        lines = ["indexes", *sorted((item["case"] for item in part), key=int)]
        (meta / f"{section}_indexes.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out_dir
