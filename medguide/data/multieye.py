"""MultiEYE: unpaired fundus photographs and OCT B-scans of 9 retinal classes; its reader, a label-matched OCT pairing
and a synthetic generator.

MultiEYE (Wang et al., "MultiEYE: Dataset and Benchmark for OCT-Enhanced Retinal Disease Recognition from Fundus
Images", IEEE TMI 2025, https://arxiv.org/abs/2412.09402, code https://github.com/xmed-lab/MultiEYE) assembles
public and private fundus and OCT sets into one 9-class task: train with both modalities, unpaired, and predict from
the fundus photograph alone (OCT-CoDA). Its release layout, as ``multieye_data/README.md`` and ``data/dataset.py`` of
the code read it::

    data_dir/assemble/{train,dev,test}/large9cls.txt      fundus lists: one "<image_id> <label>" per line
    data_dir/assemble/train/ImageData/cfp-clahe-224x224/<image_id>.png      every fundus image, of all three lists
    data_dir/assemble_oct/{train,dev,test}/large9cls.txt  OCT lists
    data_dir/assemble_oct/train/ImageData/oct-filter-448x448/<image_id>.png  every OCT B-scan, of all three lists

The path rule is the code's (``SingleLabelImageFolder.__getitem__``): the images of every section, ``dev`` and
``test`` included, lie under ``train/ImageData``, in the folder of the preprocessed copies (CLAHE-equalised fundus
photographs at 224 x 224, median-filtered B-scans at 448 x 448), named ``<image_id>`` plus ``".png"`` appended as it
is: an id may end with a dot (``1ffa9353-8d87-11e8-9daf-6045cb817f5b.`` is ``...5b..png``). Here, where
``<image_id>.png`` is missing, the one file ``<image_id>`` + another photo suffix (``.jpg``, ``.JPG``, ...) is taken,
so a set of one's own JPEGs in the layout reads too.

Classes (:data:`MULTIEYE_CLASSES`), as the code's ``alldiseases`` and ``cls_names`` in ``process/finetune.py``:
0 NOR normal, 1 dAMD dry AMD, 2 CSC central serous chorioretinopathy, 3 DR diabetic retinopathy, 4 GLC glaucoma,
5 MEM (macular) epiretinal membrane, 6 MYO myopia, 7 RVO retinal vein occlusion, 8 wAMD wet AMD. (The data README's
list leaves myopia out and numbers RVO 6 and wAMD 7; the code and its 9-class evaluation in ``test.ipynb`` have
the 9 classes in the order above. MultiEYE's printed tables call dAMD "AMD" and wAMD "WAMD".)

Training pairs each fundus photograph with a random OCT training image of the same class at every epoch
(``MultiModalSingleImageFolder``); :class:`RandLabelPairedOCTd` does so, and refuses a class without OCT images
where the code would silently take an OCT image of another class. :func:`make_multieye_dataset` writes a seeded
synthetic set in this layout (see its docstring for what each modality shows).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
from monai.transforms import Randomizable, Transform
from monai.utils import MAX_SEED
from PIL import Image
from scipy import ndimage

from medguide.data.checks import CaseList, check_label_values, keep_valid
from medguide.data.errors import InputError, InvalidCaseError, MissingInputError, flag
from medguide.data.files import PHOTO_SUFFIXES, is_hidden
from medguide.data.splits import proportional_counts, stratified_split

__all__ = [
    "MULTIEYE_CLASSES",
    "MULTIEYE_MODALITIES",
    "MULTIEYE_SECTIONS",
    "RandLabelPairedOCTd",
    "make_multieye_dataset",
    "multieye_datalist",
]

# short name (as MultiEYE's README abbreviates them): full name (as its code's cls_names); the i-th is class i
MULTIEYE_CLASSES = {
    "NOR": "normal",
    "dAMD": "dry age-related macular degeneration",
    "CSC": "central serous chorioretinopathy",
    "DR": "diabetic retinopathy",
    "GLC": "glaucoma",
    "MEM": "epiretinal membrane",
    "MYO": "myopia",
    "RVO": "retinal vein occlusion",
    "wAMD": "wet age-related macular degeneration",
}
MULTIEYE_SECTIONS = ("train", "dev", "test")
# modality: (its folder under data_dir, the folder of its images under train/ImageData)
MULTIEYE_MODALITIES = {
    "fundus": ("assemble", "cfp-clahe-224x224"),
    "oct": ("assemble_oct", "oct-filter-448x448"),
}
LIST_NAME = "large9cls.txt"
_IMAGE_SUFFIX = ".png"
_OTHER_SUFFIXES = tuple(s for suffix in PHOTO_SUFFIXES if suffix != _IMAGE_SUFFIX for s in (suffix, suffix.upper()))


def _class_name(label: int) -> str:
    names = list(MULTIEYE_CLASSES)
    return names[label] if 0 <= label < len(names) else "not a MultiEYE class"


def _image_file(folder: Path, image_id: str) -> Path:
    """``<image_id>.png`` as MultiEYE names it, else the one ``<image_id>.<photo suffix>`` there is (else the .png)."""
    png = folder / f"{image_id}{_IMAGE_SUFFIX}"
    if png.is_file():
        return png
    found: dict[tuple[int, int], Path] = {}
    for suffix in _OTHER_SUFFIXES:
        path = folder / f"{image_id}{suffix}"
        if path.is_file():
            stat = path.stat()  # one file, however a case-insensitive disk spells its suffix
            found.setdefault((stat.st_dev, stat.st_ino), path)
    if len(found) > 1:
        names = ", ".join(p.name for p in found.values())
        raise InvalidCaseError(image_id, png, f"no such image, and several others of this id: {names}; keep one")
    return next(iter(found.values()), png)


def _read_lines(list_file: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of every non-empty line of a UTF-8 list file."""
    try:
        text = list_file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(
            f"MultiEYE list '{list_file}' is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
        ) from error
    return [(number, line.strip()) for number, line in enumerate(text.splitlines(), 1) if line.strip()]


def _list_entry(line: int, text: str, list_file: Path, images: Path, repeated: Sequence[int]) -> dict:
    """The datalist item of one list line, or ``{"case", "error"}`` when the line or its image is refused."""
    fields = text.split()
    case = fields[0] if fields else f"(line {line})"
    try:
        if len(fields) != 2:
            raise InvalidCaseError(case, list_file, f"line {line}: expected '<image_id> <label>', got {text!r}")
        if len(repeated) > 1:
            raise InvalidCaseError(case, list_file, f"listed in several lines: {list(repeated)}")
        try:
            label = int(fields[1])
        except ValueError:
            label = fields[1]
        where = f", in line {line}"
        check_label_values([label], range(len(MULTIEYE_CLASSES)), case, list_file, what="label", where=where)
        image = _image_file(images, case)
        if is_hidden(image):
            raise InvalidCaseError(case, image, f"is a hidden file, not an image (line {line} of {list_file.name})")
        if not image.is_file():
            what = "is a folder, not an image file" if image.exists() else "image not found"
            raise InvalidCaseError(case, image, f"{what} (listed in line {line} of '{list_file}')")
    except InvalidCaseError as error:
        return {"case": case, "error": error}
    return {"case": case, "image": str(image), "label": label, "label_file": str(list_file)}


def _raise_error(entry: Mapping) -> None:
    if "error" in entry:
        raise entry["error"]


def multieye_datalist(
    data_dir: str | os.PathLike,
    modality: str = "fundus",
    section: str = "train",
    skip_invalid: bool = False,
    image_folder: str | None = None,
) -> CaseList:
    """Read one list of a MultiEYE data set (layout, path rule and classes in the module docstring).

    Items are ``{"case": image id, "image": path, "label": class index 0-8, "label_file": the list}``, in the list's
    order. Nothing is decoded here: :class:`medguide.transforms.LoadPhotod` (``expect="rgb"`` for fundus
    photographs, ``"grey"`` for B-scans) names an image that does not decode or is of the wrong kind, and
    :func:`medguide.transforms.validate_loading` runs it over the list before training. Empty lines are passed over;
    fields may be separated by any run of spaces or tabs (MultiEYE's code splits its lists on one space, and a
    separately given test list on tabs).

    Example:
        >>> items = multieye_datalist("multieye_data", "oct", "dev")
        >>> items[0]
        {'case': '...', 'image': 'multieye_data/assemble_oct/train/ImageData/oct-filter-448x448/....png', 'label': 3,
         'label_file': 'multieye_data/assemble_oct/dev/large9cls.txt'}

    Args:
        data_dir: the MultiEYE folder holding ``assemble/`` and ``assemble_oct/``.
        modality: ``"fundus"`` or ``"oct"``.
        section: ``"train"``, ``"dev"`` or ``"test"``: whose ``large9cls.txt`` to read.
        skip_invalid: log and leave out a refused line, instead of raising (the result's ``skipped`` lists them).
        image_folder: the folder under ``train/ImageData`` holding the images (default: MultiEYE's preprocessed
            copies, ``cfp-clahe-224x224`` for fundus, ``oct-filter-448x448`` for OCT).

    Raises:
        InputError: an unknown modality or section; a list that is not UTF-8 text; no line left under
            ``skip_invalid``.
        MissingInputError: the list file is missing, or lists nothing.
        InvalidCaseError: naming the list file and line, without ``skip_invalid``: a line that is not
            ``<image_id> <label>``, a label that is not a class 0-8, an id listed in several lines; naming the case
            and the image: a listed image that does not exist (or is a hidden file).
    """
    if modality not in MULTIEYE_MODALITIES:
        raise InputError(f"MultiEYE modality must be one of {list(MULTIEYE_MODALITIES)}, got {modality!r}")
    if section not in MULTIEYE_SECTIONS:
        raise InputError(f"MultiEYE section must be one of {list(MULTIEYE_SECTIONS)}, got {section!r}")
    skip = flag(skip_invalid, "skip_invalid")
    data_dir = Path(data_dir)
    folder, default_images = MULTIEYE_MODALITIES[modality]
    list_file = data_dir / folder / section / LIST_NAME
    if not list_file.is_file():
        inside = (data_dir / section / LIST_NAME).is_file()
        hint = f"; '{data_dir}' looks like the {folder}/ folder itself: give its parent" if inside else ""
        raise MissingInputError(
            f"MultiEYE {modality} list not found: '{list_file}' (data_dir is the folder holding assemble/ and "
            f"assemble_oct/){hint}"
        )
    lines = _read_lines(list_file)
    if not lines:
        raise MissingInputError(f"MultiEYE list '{list_file}' lists no image")
    images = data_dir / folder / "train" / "ImageData" / (image_folder or default_images)
    repeated: dict[str, list[int]] = {}
    for line, text in lines:
        repeated.setdefault(text.split()[0], []).append(line)
    entries = [_list_entry(line, text, list_file, images, repeated[text.split()[0]]) for line, text in lines]
    return keep_valid(entries, _raise_error, skip)


class RandLabelPairedOCTd(Randomizable, Transform):
    """Give each fundus item a random OCT training image of its own class, drawn anew at every call (every epoch).

    OCT-CoDA trains on unpaired data: each fundus photograph meets a random OCT image of the same label
    (MultiEYE's ``MultiModalSingleImageFolder``). Placed in the fundus training transforms, after the cached
    loading, this adds the chosen OCT item's entries under new keys (by default ``oct``, ``oct_label``,
    ``oct_case``), so the batch holds ``B`` fundus images and ``B`` OCT images with equal labels.

    The ``pool`` is either the OCT training items (e.g. :func:`multieye_datalist` of ``"oct"``, ``"train"``: paths,
    loaded by a later ``LoadPhotod(keys="oct", expect="grey")``) or a MONAI ``Dataset``/``CacheDataset`` of them,
    whose ``pool[i]`` gives the loaded and augmented OCT image (its ``data`` give the labels, read once). Draws come
    from this transform's ``R`` (MONAI ``Randomizable``): ``set_random_state``, ``Compose.set_random_state`` and
    MONAI's ``DataLoader`` seeding make them repeatable, and a pool dataset's own random transforms are seeded from
    the same state.

    Example:
        >>> pair = RandLabelPairedOCTd(multieye_datalist(root, "oct", "train"), labels=[i["label"] for i in fundus])
        >>> item = pair({"case": "f1", "image": "f1.png", "label": 3})
        >>> item["oct_label"], item["oct"]
        (3, '.../oct-filter-448x448/o17.png')

    Args:
        pool: the OCT training items (mappings with ``pool_label_key`` and the keys of ``copy``), or a MONAI
            dataset of them.
        label_key: the fundus item's key of its class index.
        pool_label_key: the pool items' key of theirs.
        copy: ``{pool item key: fundus item key}``: what of the chosen OCT item is added, under which name.
        labels: the classes the pairing must serve (e.g. the fundus training labels), checked now, so a run stops
            before training; ``None`` checks each item when it is drawn.

    Raises:
        InputError: the pool is empty; a class of ``labels``, or of an item at call time, has no OCT image in the
            pool (naming the class, its name and the classes the pool holds).
    """

    def __init__(
        self,
        pool: Sequence[Mapping] | object,
        label_key: str = "label",
        pool_label_key: str = "label",
        copy: Mapping[str, str] | None = None,
        labels: Iterable[int] | None = None,
    ) -> None:
        self.pool = pool
        self.label_key = label_key
        self.copy = dict(copy) if copy is not None else {"image": "oct", "label": "oct_label", "case": "oct_case"}
        self.groups: dict[int, list[int]] = {}
        for index, item in enumerate(getattr(pool, "data", pool)):
            self.groups.setdefault(int(item[pool_label_key]), []).append(index)
        if not self.groups:
            raise InputError("RandLabelPairedOCTd: the OCT pool holds no image to pair with")
        for label in sorted({int(label) for label in labels or ()}):
            self._group(label, "")
        self._index = 0

    def _group(self, label: int, case: str) -> list[int]:
        group = self.groups.get(label)
        if group is None:
            held = ", ".join(f"{k} {_class_name(k)}" for k in sorted(self.groups))
            raise InputError(
                f"{case}no OCT training image of class {label} ({_class_name(label)}) to pair with; the OCT pool holds "
                f"classes {held}. Every fundus training class needs OCT images of its own (MultiEYE's code would "
                "pair it with an OCT image of another class)"
            )
        return group

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None):
        """Seed the draws (MONAI's ``Randomizable``), and the pool dataset's random transforms from them."""
        super().set_random_state(seed, state)
        transform = getattr(self.pool, "transform", None)
        if isinstance(transform, Randomizable):
            transform.set_random_state(seed=int(self.R.randint(MAX_SEED, dtype="uint32")))
        return self

    def randomize(self, group: Sequence[int]) -> None:
        self._index = group[self.R.randint(len(group))]

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        """``data`` with the entries of one random pool item of its label added under the keys of ``copy``.

        Args:
            data: a fundus item with its class index (an int or a one-element tensor) under ``label_key``.
        """
        d = dict(data)
        case = f"case {d['case']!r}: " if "case" in d else ""
        self.randomize(self._group(int(d[self.label_key]), case))
        chosen = self.pool[self._index]
        for source, target in self.copy.items():
            d[target] = chosen[source]
        return d


# ---------------------------------------------------------------------------------------------------------------------
# Synthetic MultiEYE

# The MultiEYE fundus test split's class counts (11,597 images), solved from the per-class precision, recall and
# specificity that the code's test.ipynb prints for the published checkpoint: 60 % NOR, 34 % DR, the others 0.2-1.4 %.
_FUNDUS_COUNTS = (6960, 136, 30, 3931, 138, 42, 101, 98, 161)
# OCT shares: not in MultiEYE's code or data README; chosen (normal most common, then the macular diseases OCT is
# taken for: wet and dry AMD, diabetic oedema)
_OCT_SHARES = (0.30, 0.12, 0.06, 0.15, 0.06, 0.06, 0.06, 0.06, 0.13)
# a synthetic set gives every class at least this share, so a small set trains and scores on every class
_FLOOR_SHARE = 0.045
_SPLIT = (0.6, 0.2, 0.2)
# from 5 images on, the commonest class has 3, one for each list
_FEWEST_IMAGES = 5
# the opacity scale of the fundus findings: a linear probe reads the class from the fundus photographs well above
# chance and far below what it reads from the B-scans (about 0.25 against 0.5-0.6 balanced accuracy on the default set)
_FUNDUS_VISIBILITY = 1.8


def _class_counts(total: int, shares: np.ndarray) -> np.ndarray:
    """Largest-remainder counts of ``shares``, where every class gets at least ``_FLOOR_SHARE`` of ``total`` (and 3,
    so each of the three sections gets one, while there are as many images): the raised classes' images are taken
    from the others in proportion to their shares, so the common classes keep their order."""
    floor = min(max(3, round(_FLOOR_SHARE * total)), total // len(shares))
    raised = np.zeros(len(shares), dtype=bool)
    while True:
        counts = np.full(len(shares), floor)
        if raised.all():
            return counts
        rest = shares[~raised] / shares[~raised].sum()
        counts[~raised] = proportional_counts(total - floor * int(raised.sum()), rest)
        below = ~raised & (counts < floor)
        if not below.any():
            return counts
        raised |= below


def _side_length(image_size: int, shape: int | Sequence[int] | None) -> int:
    """The images' side length: ``image_size``, or ``shape`` as the CLI and configs pass it (``n``, ``(n, n)``, or
    ``(n, n, 3)`` / ``(n, n, 1)``)."""
    if shape is None:
        return int(image_size)
    sides = [int(shape)] if isinstance(shape, int | np.integer) else [int(n) for n in shape]
    if not sides or len(sides) > 3 or (len(sides) == 3 and sides[2] not in (1, 3)) or len(set(sides[:2])) != 1:
        raise ValueError(f"MultiEYE synthetic images are square: shape must be n, (n, n) or (n, n, 3), got {shape}")
    return sides[0]


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) pixel centres in [-1, 1], each (size, size)."""
    axis = (np.arange(size) + 0.5) / size * 2 - 1
    return np.meshgrid(axis, axis, indexing="ij")


def _spot(y, x, centre, radius) -> np.ndarray:
    return np.exp(-((y - centre[0]) ** 2 + (x - centre[1]) ** 2) / (2 * radius**2))


def _paint(image: np.ndarray, alpha: np.ndarray, colour: Sequence[float]) -> np.ndarray:
    return image + (np.asarray(colour) - image) * np.clip(alpha, 0, 1)[..., None]


def _vessel_distance(y, x, start, angle, length, wiggle, rng) -> np.ndarray:
    """Distance of every pixel to a curved vessel leaving ``start`` at ``angle`` (a polyline of 24 points)."""
    t = np.linspace(0, length, 24)
    bend = rng.uniform(-1.2, 1.2)
    heading = angle + bend * t + wiggle * np.sin(t * rng.uniform(14, 20) + rng.uniform(0, 6.3))
    steps = np.stack([np.sin(heading), np.cos(heading)], 1) * (length / 24)
    points = start + np.cumsum(steps, 0)
    return np.sqrt((y[..., None] - points[:, 0]) ** 2 + (x[..., None] - points[:, 1]) ** 2).min(-1)


def _fundus(rng: np.random.Generator, label: int, size: int, severity: float) -> np.ndarray:
    """(size, size, 3) RGB in [0, 1]: a fundus photograph of class ``label``, its findings faint (see
    :func:`make_multieye_dataset`)."""
    name = list(MULTIEYE_CLASSES)[label]
    faint = _FUNDUS_VISIBILITY * severity
    y, x = _grid(size)
    side = rng.choice([-1.0, 1.0])  # right or left eye: the disc to one side of the macula
    disc = np.array([rng.normal(0, 0.04), side * rng.uniform(0.38, 0.48)])
    disc_radius = rng.uniform(0.1, 0.13)
    base = np.array([0.78, 0.36, 0.16]) * rng.uniform(0.8, 1.15, 3)
    light = 1 - 0.35 * ((y - rng.normal(0, 0.2)) ** 2 + (x - rng.normal(0, 0.2)) ** 2)
    image = np.clip(base * light[..., None], 0, 1)
    if name == "MYO":  # tessellation and a paler, thinner fundus
        stripes = 0.5 + 0.5 * np.sin(14 * (np.cos(rng.uniform(0, 3.1)) * x + np.sin(rng.uniform(0, 3.1)) * y))
        image = _paint(image, 0.22 * faint * stripes, (0.85, 0.5, 0.3))
    image = _paint(image, 0.35 * _spot(y, x, (0.0, 0.0), 0.13), (0.45, 0.16, 0.08))  # the macula
    vessels = np.full(y.shape, np.inf)
    for angle in np.linspace(0, 2 * np.pi, 7, endpoint=False) + rng.uniform(0, 0.9):
        vein = name == "RVO" and np.cos(angle - rng.uniform(-0.5, 0.5)) > 0.3
        wiggle = 0.25 * faint if vein else 0.04
        distance = _vessel_distance(y, x, disc, angle, rng.uniform(0.7, 1.1), wiggle, rng)
        vessels = np.minimum(vessels, distance / (1.6 if vein else 1.0))
    image = _paint(image, 0.55 * np.exp(-((vessels / 0.022) ** 2)), (0.45, 0.05, 0.05))
    cup = rng.uniform(0.3, 0.45) + (0.25 * faint if name == "GLC" else 0.0)
    image = _paint(image, _spot(y, x, disc, disc_radius) ** 0.6, (0.96, 0.78, 0.5))
    image = _paint(image, 0.6 * _spot(y, x, disc, cup * disc_radius), (1.0, 0.95, 0.8))
    findings = {
        "dAMD": lambda: [(0.35 * faint * _spot(y, x, rng.normal(0, 0.12, 2), 0.03), (0.95, 0.85, 0.45))
                         for _ in range(int(rng.integers(4, 8)))],
        "CSC": lambda: [(0.2 * faint * _spot(y, x, rng.normal(0, 0.05, 2), 0.14), (0.9, 0.55, 0.3))],
        "DR": lambda: [(0.45 * faint * _spot(y, x, rng.uniform(-0.6, 0.6, 2), 0.018), colour)
                       for colour in [(0.5, 0.02, 0.02)] * int(rng.integers(5, 10)) + [(0.95, 0.9, 0.4)] * 3],
        "MEM": lambda: [(0.15 * faint * np.exp(-((np.hypot(y, x) - 0.16) ** 2) / 0.002), (0.95, 0.8, 0.7))],
        "MYO": lambda: [(0.5 * faint * _spot(y, x, disc + (0, -0.1 * side), disc_radius), (0.95, 0.85, 0.7))],
        "RVO": lambda: [(0.4 * faint * _spot(y, x, disc + rng.uniform(-0.45, 0.45, 2), 0.04), (0.5, 0.03, 0.03))
                        for _ in range(int(rng.integers(3, 7)))],
        "wAMD": lambda: [(0.3 * faint * _spot(y, x, rng.normal(0, 0.05, 2), 0.1), (0.45, 0.42, 0.25)),
                         (0.3 * faint * _spot(y, x, rng.normal(0, 0.1, 2), 0.04), (0.45, 0.03, 0.03))],
    }  # fmt: skip
    for alpha, colour in findings.get(name, list)():
        image = _paint(image, alpha, colour)
    image = ndimage.gaussian_filter(image, sigma=(rng.uniform(0.4, 1.0), rng.uniform(0.4, 1.0), 0))
    image = image * rng.uniform(0.85, 1.1, 3) + rng.normal(0, 0.03, image.shape)
    return image * (np.hypot(y, x) < 0.96)[..., None]  # the camera's round field of view


def _layer_profile(depth: np.ndarray, nerve_fibres: np.ndarray | float = 0.12) -> np.ndarray:
    """Reflectivity by relative depth in the retina (0 = its surface, 1 = the photoreceptors above the RPE): the
    nerve fibre layer (its share ``nerve_fibres``), ganglion cells and plexiform layers, nuclear layers, the
    ellipsoid zone."""
    bands = ((0.0, 0.8), (nerve_fibres, 0.5), (0.35, 0.22), (0.47, 0.45), (0.57, 0.15), (0.88, 0.7))
    values = np.full(depth.shape, 0.04)
    for top, value in bands:
        values = np.where(depth >= top, value, values)
    return np.where((depth < 0) | (depth > 1), 0.04, values)


def _oct(rng: np.random.Generator, label: int, size: int, severity: float) -> np.ndarray:
    """(size, size) grey in [0, 1]: an OCT B-scan through the fovea of class ``label``, its findings clear (see
    :func:`make_multieye_dataset`)."""
    name = list(MULTIEYE_CLASSES)[label]
    z, x = _grid(size)  # z: depth, down the image
    curve = rng.uniform(0.05, 0.15) + (0.35 * severity if name == "MYO" else 0.0)
    # the eye's back wall is a bowl: the RPE rises towards the scan's edges
    rpe = 0.25 + rng.normal(0, 0.04) - curve * x**2 + rng.uniform(-0.08, 0.08) * x
    thickness = rng.uniform(0.42, 0.5) * (0.65 if name == "MYO" else 1.0)
    pit = rng.uniform(0.16, 0.22) * np.exp(-(x**2) / 0.03) * (0.1 if name == "MEM" else 1.0)
    nerve = np.zeros_like(x)  # RNFL thinning: the inner retina thinner away from the fovea
    if name == "GLC":
        nerve = 0.12 * severity * (1 - np.exp(-(x**2) / 0.05))
    swelling = {"DR": 0.1, "RVO": 0.2, "MEM": 0.1}.get(name, 0.0) * severity * np.exp(-(x**2) / 0.25)
    lift = np.zeros_like(x)  # subretinal fluid: the retina lifted off the RPE
    if name in ("CSC", "wAMD"):
        lift = rng.uniform(0.1, 0.16) * severity * np.exp(-((x - rng.normal(0, 0.1)) ** 2) / 0.05)
    bumps = np.zeros_like(x)  # drusen and pigment epithelial detachments: the RPE raised
    if name == "dAMD":
        for _ in range(int(rng.integers(3, 6))):
            bumps += rng.uniform(0.05, 0.08) * severity * np.exp(-((x - rng.uniform(-0.6, 0.6)) ** 2) / 0.004)
    if name == "wAMD":
        bumps += 0.14 * severity * np.exp(-((x - rng.normal(0, 0.1)) ** 2) / 0.02)
    rpe_top = rpe - bumps
    bottom = rpe_top - lift  # the retina's outer boundary
    surface = bottom - thickness - swelling + pit + nerve
    if name == "MEM":
        surface = surface + 0.03 * severity * np.sin(x * rng.uniform(18, 26))
    image = _layer_profile((z - surface) / (bottom - surface), 0.12 * (1 - nerve / 0.13))
    if name == "MEM":  # the membrane: a bright line on the retina's surface
        image = np.maximum(image, 0.95 * np.exp(-(((z - surface) / 0.015) ** 2)))
    if name in ("DR", "RVO"):  # intraretinal cysts, small and many (DR) or large (RVO); DR's bright exudate dots
        for _ in range(int(rng.integers(4, 9)) if name == "DR" else int(rng.integers(2, 4))):
            cx = rng.uniform(-0.5, 0.5)
            cz = np.interp(cx, x[0], surface[0]) + rng.uniform(0.35, 0.6) * np.interp(cx, x[0], (bottom - surface)[0])
            radius = rng.uniform(0.03, 0.05) if name == "DR" else rng.uniform(0.07, 0.1)
            image = np.where((z - cz) ** 2 + ((x - cx) / 1.6) ** 2 < radius**2, 0.03, image)
        if name == "DR":
            for _ in range(int(rng.integers(4, 8))):
                image = np.maximum(image, 0.95 * _spot(z, x, (rng.uniform(0, 0.3), rng.uniform(-0.6, 0.6)), 0.015))
    image = np.where((z >= bottom) & (z < rpe_top), 0.03, image)  # the fluid under the lifted retina
    image = np.where((z >= rpe_top) & (z < rpe_top + 0.05), 0.95, image)  # the RPE band
    if name == "wAMD":  # the fibrovascular tissue filling the detachment
        image = np.where((z >= rpe_top + 0.05) & (z < rpe), 0.55 + 0.2 * rng.random(image.shape), image)
    choroid = 0.04 if name == "MYO" else rng.uniform(0.12, 0.18)
    image = np.where((z >= np.maximum(rpe, rpe_top + 0.05)) & (z < rpe + 0.05 + choroid), 0.42, image)
    image = ndimage.gaussian_filter(image, 0.6) * rng.exponential(1.0, image.shape) ** 0.5  # speckle
    image = ndimage.gaussian_filter(image, 0.5) * rng.uniform(0.85, 1.15)
    return image + rng.normal(0, 0.02, image.shape)


def _png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path, optimize=False)


def make_multieye_dataset(
    out_dir: str | os.PathLike,
    num_fundus: int = 180,
    num_oct: int = 180,
    image_size: int = 64,
    seed: int = 0,
    shape: int | Sequence[int] | None = None,
    num_cases: int | None = None,
) -> Path:
    """Write a synthetic MultiEYE data set in the release's layout, for :func:`multieye_datalist`.

    ``assemble/{train,dev,test}/large9cls.txt`` and ``assemble_oct/...`` (``<image_id> <label>`` lines, a
    stratified 60 : 20 : 20 split), images under ``train/ImageData/cfp-clahe-224x224/syn-cfp-NNNN.png`` (RGB) and
    ``train/ImageData/oct-filter-448x448/syn-oct-NNNN.png`` (8-bit grey): PNG, as MultiEYE stores them, at
    ``image_size`` pixels whatever the folder's name says. Fundus and OCT images are unpaired: each is drawn on its
    own. Fundus classes come in about the MultiEYE fundus test split's shares (NOR 60 %, DR 34 %, the others
    0.2-1.4 %; counted from the per-class table the code's ``test.ipynb`` prints), OCT classes in shares chosen here
    (NOR 30 %, DR 15 %, wAMD 13 %, dAMD 12 %, the others 6 %; MultiEYE publishes none in its code); every class gets
    at least 4.5 % (and 3 images) of each modality, so a small set trains and scores on all nine (from 27 images of
    a modality on; fewer hold the commonest classes only).

    What each modality shows of a class, with a severity drawn per image (0.5-1):

    - OCT (the teacher's modality), clearly, in a layered retina with a foveal pit, RPE band, choroid and speckle:
      dAMD drusen (3-5 bumps of the RPE), CSC a dark dome of subretinal fluid under the lifted retina, DR a
      thickened retina with small dark cysts and bright dots, GLC a thin nerve fibre layer away from the fovea, MEM
      a bright wrinkled line on the surface and no pit, MYO a thin retina and choroid on a strongly curved eye, RVO
      a much thickened retina with large cysts, wAMD a raised, filled pigment epithelial detachment under fluid.
    - fundus (the student's), faintly, among changes in pigmentation, illumination, eye side, vessel layout, blur,
      colour cast and noise:
      dAMD pale yellow specks at the macula, CSC a faint round orange patch, DR small red dots and yellow specks,
      GLC a larger pale cup in the disc, MEM a faint sheen ring, MYO a tessellated, striped background with a pale
      crescent by the disc, RVO tortuous, wider veins with red blotches, wAMD a grey-green patch with a small bleed.

    Args:
        out_dir: folder to write into (created).
        num_fundus: number of fundus photographs (over the three lists).
        num_oct: number of OCT B-scans.
        image_size: side length of the square images, in pixels.
        seed: random seed; the same seed writes byte-identical files.
        shape: another way to give the side length (``n``, ``(n, n)`` or ``(n, n, 3)``), as
            ``medguide synthetic --shape`` and ``dataset_dir_or_synthetic(..., shape=...)`` pass it.
        num_cases: when given, the number of images of each modality (``num_fundus`` and ``num_oct`` both), as
            ``medguide synthetic --num_cases`` passes it.

    Returns:
        ``out_dir`` as a path.

    Raises:
        ValueError: fewer than 5 images of a modality (every list needs one), or a ``shape`` that is not square.
    """
    out_dir = Path(out_dir)
    size = _side_length(image_size, shape)
    if num_cases is not None:
        num_fundus = num_oct = num_cases
    draw = {
        "fundus": (int(num_fundus), _FUNDUS_COUNTS, "cfp", _fundus),
        "oct": (int(num_oct), _OCT_SHARES, "oct", _oct),
    }
    for offset, (modality, (total, shares, prefix, render)) in enumerate(draw.items()):
        if total < _FEWEST_IMAGES:
            raise ValueError(f"num_{modality} must be at least {_FEWEST_IMAGES} (each list needs one), got {total}")
        counts = _class_counts(total, np.asarray(shares, dtype=float) / np.sum(shares))
        labels = np.random.default_rng([seed, offset]).permutation(np.repeat(np.arange(len(counts)), counts))
        folder, image_folder = MULTIEYE_MODALITIES[modality]
        images = out_dir / folder / "train" / "ImageData" / image_folder
        items = []
        for index, label in enumerate(labels):
            rng = np.random.default_rng([seed, offset, index])
            case = f"syn-{prefix}-{index:04d}"
            _png(render(rng, int(label), size, rng.uniform(0.5, 1.0)), images / f"{case}{_IMAGE_SUFFIX}")
            items.append({"case": case, "label": int(label)})
        for section, part in zip(MULTIEYE_SECTIONS, stratified_split(items, _SPLIT, seed=seed), strict=True):
            lines = "".join(f"{item['case']} {item['label']}\n" for item in part)
            (out_dir / folder / section).mkdir(parents=True, exist_ok=True)
            (out_dir / folder / section / LIST_NAME).write_text(lines, encoding="utf-8")
    return out_dir
