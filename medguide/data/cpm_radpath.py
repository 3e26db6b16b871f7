"""Brain tumour MRI paired with a histology bag per case, labelled with the CPM-RadPath 2020 classes; and a generator.

CPM-RadPath 2020 pairs each glioma's pre-operative MRI (BraTS-preprocessed: co-registered, 1 mm, skull-stripped) with
its whole-slide histology and one diagnosis: G glioblastoma (IDH-wildtype, grade 4), A astrocytoma (IDH-mutant,
grade 2-3), O oligodendroglioma (IDH-mutant, 1p/19q codeleted). Deep multimodal guidance trains on both and
predicts from the MRI alone. The slides enter as bags of patch features, as CLAM extracts them.

Layout read by :func:`cpm_radpath_datalist` (and written by :func:`make_cpm_radpath_dataset`)::

    data_dir/labels.csv                          case_id,class   one row per case, class G, A or O
    data_dir/Radiology/<case>/<case>_t1.nii.gz   _t1ce, _t2, _flair: BraTS 2018-2021 names (2023 names
                                                 -t1n, -t1c, -t2w, -t2f are read too); as the CPM-RadPath release
    data_dir/features/<case>.pt                  the case's bag: CLAM's N x D float tensor, or <case>.h5 (datasets
                                                 features [N, D], coords [N, 2]), or pt_files/<case>.pt and
                                                 h5_files/<case>.h5 as CLAM's feature extraction writes them, or a
                                                 folder <case>/ of patch images (PNG, JPEG)

The case folders may also lie directly in ``data_dir`` (no ``Radiology/``); the bags folder beside them is then not
read as a case. The MRI files are found by :func:`medguide.data.brats_datalist`, so hidden files are passed over and
a folder that is not a case is named. What the reader checks is what it can see without loading: every case has
its sequences, its bag and its label row, and the labels CSV lists no case without MRI. Loading checks the rest
(:class:`~medguide.transforms.LoadCased` for the MRI, :class:`~medguide.transforms.LoadBagd` for the bag;
:func:`~medguide.transforms.validate_loading` runs both before training): sequences of one case must share one voxel
grid, as they do in BraTS-preprocessed data. Raw, unregistered scans (as TCGA-LGG's own series, whose sequences
differ in shape and affine) are refused naming the file, not resampled: stacking them needs a registration this
reader cannot guess; a single sequence (``modalities=("flair",)``) of such a case loads.

:func:`make_cpm_radpath_dataset` writes a seeded synthetic set in this layout, built so the histology carries the class
clearly and the MRI a weaker, noisier view of the same tumour (see its docstring).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from medguide.data.brats import BRATS_MODALITIES, brats_datalist
from medguide.data.checks import CaseList
from medguide.data.errors import InvalidCaseError, MissingInputError, flag
from medguide.data.labels import _rows, read_class_labels
from medguide.data.splits import proportional_counts
from medguide.data.synthetic import Shape, blob, brain_and_ventricles, render, save_nifti, smooth_field, unit_grid

__all__ = ["CPM_RADPATH_CLASSES", "cpm_radpath_datalist", "find_bag", "make_cpm_radpath_dataset"]

CPM_RADPATH_CLASSES = ("G", "A", "O")
RADIOLOGY = "Radiology"
BAGS = "features"
LABELS = "labels.csv"


def find_bag(bags_dir: str | Path, case: str) -> Path | None:
    """The bag of ``case`` in a bags folder, or ``None``.

    Looked for in this order: ``<case>.pt``, ``pt_files/<case>.pt``, ``<case>.h5``, ``h5_files/<case>.h5``, a folder
    ``<case>/`` of patch images. CLAM writes the same features to a ``.pt`` and an ``.h5`` file; the first found is
    taken.
    """
    bags_dir = Path(bags_dir)
    candidates = (
        bags_dir / f"{case}.pt",
        bags_dir / "pt_files" / f"{case}.pt",
        bags_dir / f"{case}.h5",
        bags_dir / "h5_files" / f"{case}.h5",
    )
    found = next((path for path in candidates if path.is_file()), None)
    return found or (bags_dir / case if (bags_dir / case).is_dir() else None)


def _listed_cases(labels_csv: Path, case_column: str) -> list[str]:
    """The case ids a labels CSV lists, in its order (its columns were checked by reading its labels)."""
    _, rows = _rows(labels_csv)
    return [cells[case_column] for _, cells, _ in rows if cells.get(case_column)]


def cpm_radpath_datalist(
    data_dir: str | Path,
    labels_csv: str | Path | None = None,
    modalities: Sequence[str] = BRATS_MODALITIES,
    bags_dir: str | Path | None = None,
    skip_invalid: bool = False,
    require_label: bool = True,
    require_bag: bool = True,
    case_column: str = "case_id",
    label_column: str = "class",
) -> CaseList:
    """Scan a brain tumour MRI + histology data set (layout in the module docstring) into datalist items.

    Items are ``{"case", "image": [MRI files in the order of modalities], "modalities": [names], "bag": path,
    "label": class index (G 0, A 1, O 2), "label_file": labels CSV}``, in the order of the case folders.

    Example:
        >>> items = cpm_radpath_datalist("CPM-RadPath_2020", modalities=("t1ce", "flair"))
        >>> items[0]["label"], items[0]["bag"]
        (0, 'CPM-RadPath_2020/features/CPM19_CBICA_AAB_1.pt')

    Args:
        data_dir: the data set folder.
        labels_csv: the labels CSV (default ``data_dir/labels.csv``); for the CPM-RadPath release's own file, set
            ``case_column="CPM_RadPath_2019_ID"``.
        modalities: the MRI sequences to read (``t1, t1ce, t2, flair``; BraTS 2023 aliases accepted).
        bags_dir: the folder of bags (default ``data_dir/features``).
        skip_invalid: log and leave out a case that lacks a file or a valid label row, instead of raising (the
            result's ``skipped`` lists them).
        require_label: read the labels CSV; false (inference) reads none.
        require_bag: every case must have a bag (training); false keeps cases without one (inference needs the MRI
            only), and ``bags_dir`` may then be absent.
        case_column: the labels CSV's column of case ids.
        label_column: the labels CSV's column of classes.

    Raises:
        MissingInputError: ``data_dir``, the bags folder (when required) or the labels CSV (when required) is
            missing, or no case is found.
        InvalidCaseError: naming the case and the file, without ``skip_invalid``: a missing MRI sequence, a case the
            labels CSV lists with no MRI folder, a missing bag, a missing or invalid label row (a class outside
            G, A, O).
        InputError: the labels CSV lacks a column or is not UTF-8 text.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise MissingInputError(f"data folder not found: '{data_dir}'")
    skip, need_bag = flag(skip_invalid, "skip_invalid"), flag(require_bag, "require_bag")
    radiology = data_dir / RADIOLOGY if (data_dir / RADIOLOGY).is_dir() else data_dir
    bags = Path(bags_dir) if bags_dir else data_dir / BAGS
    if need_bag and not bags.is_dir():
        raise MissingInputError(f"histology bags folder not found: '{bags}' (set bags_dir)")

    mri = brats_datalist(radiology, modalities, require_label=False, skip_invalid=skip, exclude=[bags.resolve()])
    items = CaseList(skipped=mri.skipped)
    errors = []
    for found in mri:
        item = {key: found[key] for key in ("case", "image", "modalities")}
        bag = find_bag(bags, item["case"]) if bags.is_dir() else None
        if bag is not None:
            items.append({**item, "bag": str(bag)})
        elif need_bag:
            reason = "missing histology bag: no .pt, .h5 or folder of patch images of this case"
            errors.append(InvalidCaseError(item["case"], bags / f"{item['case']}.pt", reason))
        else:
            items.append(item)
    if flag(require_label, "require_label"):
        labels_csv = Path(labels_csv) if labels_csv else data_dir / LABELS
        items = read_class_labels(
            labels_csv, CPM_RADPATH_CLASSES, case_column, label_column, datalist=items, skip_invalid=skip
        )
        seen = {item["case"] for item in mri} | {error.case for error in mri.skipped}
        reason = f"missing MRI: {labels_csv.name} lists the case, but there is no case folder of it"
        errors += [
            InvalidCaseError(case, radiology / case, reason)
            for case in _listed_cases(labels_csv, case_column)
            if case not in seen
        ]
    for error in errors:
        if not skip:
            raise error
        items.skip(error)
    return items


# Synthetic tumours: tissue indices, and each sequence's relative intensity of them. The enhancing rim's T1ce value
# is set per case from how aggressive the tumour is.
_BRAIN, _CSF, _OEDEMA, _TUMOUR, _RIM, _NECROSIS, _CALCIFICATION = range(1, 8)
_CONTRAST = {
    "t1": {_BRAIN: 1.0, _CSF: 0.4, _OEDEMA: 0.93, _TUMOUR: 0.86, _RIM: 0.9, _NECROSIS: 0.7, _CALCIFICATION: 0.55},
    "t1ce": {_BRAIN: 1.0, _CSF: 0.4, _OEDEMA: 0.96, _TUMOUR: 0.88, _RIM: 1.0, _NECROSIS: 0.55, _CALCIFICATION: 0.55},
    "t2": {_BRAIN: 1.0, _CSF: 2.0, _OEDEMA: 1.6, _TUMOUR: 1.55, _RIM: 1.5, _NECROSIS: 1.9, _CALCIFICATION: 0.35},
    "flair": {_BRAIN: 1.0, _CSF: 0.3, _OEDEMA: 1.7, _TUMOUR: 1.6, _RIM: 1.5, _NECROSIS: 0.9, _CALCIFICATION: 0.55},
}
# about the CPM-RadPath 2020 training set's class shares
_CLASS_SHARES = {"G": 0.6, "A": 0.25, "O": 0.15}
# per class: range of the tumour's aggressiveness (enhancement, necrosis, oedema) and the chance of calcifications
_AGGRESSIVENESS = {"G": (0.5, 1.0), "A": (0.1, 0.6), "O": (0.0, 0.55)}
_CALCIFIED = {"G": 0.1, "A": 0.15, "O": 0.7}


def _tumour_mri(rng: np.random.Generator, shape: Shape, aggressive: float, calcified: bool) -> dict[str, np.ndarray]:
    """{sequence: int16 image} of one brain with a glioma of the given aggressiveness (0-1)."""
    grid = unit_grid(shape)
    brain, ventricles = brain_and_ventricles(rng, grid)
    centre = rng.uniform(-0.35, 0.35, 3)
    radius = rng.uniform(0.2, 0.35)
    tumour = blob(rng, grid, centre, [radius * rng.uniform(0.8, 1.2) for _ in range(3)], 0.15)
    oedema = blob(rng, grid, centre, [radius * (1.2 + 0.9 * aggressive)] * 3, 0.25)
    distance = np.sqrt(((grid - centre.reshape(3, 1, 1, 1)) ** 2).sum(0)) / radius
    tissue = np.where(brain, _BRAIN, 0)
    tissue[ventricles & brain] = _CSF
    tissue[oedema & brain] = _OEDEMA
    tissue[tumour & brain] = _TUMOUR
    if aggressive > 0.5:
        tissue[tumour & brain & (distance > 0.55)] = _RIM
    if aggressive > 0.75:
        tissue[tumour & brain & (distance < 0.45)] = _NECROSIS
    if calcified:
        for _ in range(int(rng.integers(3, 6))):
            spot = centre + rng.uniform(-0.5, 0.5, 3) * radius
            tissue[tumour & brain & blob(rng, grid, spot, [0.11] * 3, 0.0)] = _CALCIFICATION
    texture = smooth_field(rng, shape, 0.04)
    images = {}
    for sequence, contrast in _CONTRAST.items():
        values = dict(contrast)
        if sequence == "t1ce":
            values[_RIM] = 1.0 + 1.5 * (aggressive - 0.35)  # ring enhancement grows with aggressiveness
        bias = np.exp(0.1 * smooth_field(rng, shape, 0.25))
        relative = render(tissue, values, blur=0.7) * (1 + 0.05 * texture) * bias
        relative += rng.uniform(0.08, 0.14) * rng.standard_normal(shape)
        image = np.clip(relative * rng.uniform(300.0, 1200.0), 0, None) * brain
        images[sequence] = np.round(image).astype(np.int16)
    return images


def _bag(
    rng: np.random.Generator, prototypes: dict[str, np.ndarray], label: str, aggressive: float, size: int
) -> np.ndarray:
    """N x D patch features: tumour patches near the class prototype (shifted by how aggressive the tumour is), the
    rest background tissue; one stain offset per slide."""
    dim = len(prototypes["background"])
    tumour = max(1, round(size * rng.uniform(0.3, 0.7)))
    stain = 0.2 * rng.standard_normal(dim)
    rows = np.concatenate(
        [
            prototypes[label] + aggressive * prototypes["aggressive"] + rng.standard_normal((tumour, dim)),
            prototypes["background"] + rng.standard_normal((size - tumour, dim)),
        ]
    )
    return (rng.permutation(rows) + stain).astype(np.float32)


def make_cpm_radpath_dataset(
    out_dir: str | Path,
    num_cases: int = 60,
    shape: Shape = (32, 32, 32),
    seed: int = 0,
    feature_dim: int = 64,
    bag_size: tuple[int, int] = (8, 32),
) -> Path:
    """Write a synthetic brain tumour MRI + histology data set in the layout of :func:`cpm_radpath_datalist`.

    ``Radiology/<case>/<case>_{t1,t1ce,t2,flair}.nii.gz`` (int16, 1 mm, BraTS's orientation),
    ``features/<case>.pt`` (float32 N x ``feature_dim``, as CLAM writes them) and ``labels.csv`` (``case_id,class``);
    cases ``CPM20_SYN_0000`` on, classes in about CPM-RadPath's shares (60 % G, 25 % A, 15 % O; every class present
    from 3 cases on).

    What each modality shows of a case's tumour, whose aggressiveness (0-1) is drawn from an overlapping range per
    class (G 0.45-1, A 0.1-0.65, O 0-0.6):

    - histology (superior), clearly: 30-70 % of the patches lie near their class's prototype (unit-variance noise
      per feature, prototypes about 4 apart), shifted along one direction by the aggressiveness; the others are
      background tissue shared by all classes; each slide has its own stain offset. A linear probe on the mean
      patch reads the class with a balanced accuracy above 0.9.
    - MRI (inferior), weakly: ring enhancement on T1ce above aggressiveness 0.5, central necrosis above 0.75,
      oedema growing with it, and calcifications (dark foci) in 60 % of O, 15 % of A and 10 % of G tumours; plus
      bias fields, noise and a per-case intensity scale. Since the ranges overlap, the MRI tells G from A/O only
      partly and A from O hardly (the same probe on a few MRI summaries: about 0.55); what it shows (the
      aggressiveness) is also in the bag, so guidance can map one onto the other.

    Args:
        out_dir: folder to write into (created).
        num_cases: number of cases.
        shape: MRI voxel grid.
        seed: random seed; the same seed writes byte-identical files.
        feature_dim: D, the length of each patch's feature vector.
        bag_size: (fewest, most) patches per bag.

    Returns:
        ``out_dir`` as a path, ready for :func:`cpm_radpath_datalist`.
    """
    out_dir = Path(out_dir)
    shape = tuple(int(n) for n in shape)
    low, high = (int(n) for n in bag_size)
    if not 1 <= low <= high:
        raise ValueError(f"bag_size must be (fewest, most) patches with 1 <= fewest <= most, got {bag_size}")
    rng = np.random.default_rng(seed)
    # prototypes of norm ~3, ~4 apart: a patch alone is sometimes ambiguous, a bag's tumour patches together are not
    unit = np.sqrt(feature_dim)
    prototypes = {name: 3.0 * rng.standard_normal(feature_dim) / unit for name in (*CPM_RADPATH_CLASSES, "background")}
    prototypes["aggressive"] = 1.5 * rng.standard_normal(feature_dim) / unit
    counts = proportional_counts(num_cases, list(_CLASS_SHARES.values()))
    labels = rng.permutation(np.repeat(list(_CLASS_SHARES), counts))

    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    (out_dir / BAGS).mkdir(parents=True, exist_ok=True)
    rows = ["case_id,class"]
    for index, label in enumerate(labels):
        case = f"CPM20_SYN_{index:04d}"
        case_rng = np.random.default_rng([seed, index])
        aggressive = case_rng.uniform(*_AGGRESSIVENESS[label])
        calcified = case_rng.random() < _CALCIFIED[label]
        for sequence, image in _tumour_mri(case_rng, shape, aggressive, calcified).items():
            save_nifti(image, affine, out_dir / RADIOLOGY / case / f"{case}_{sequence}.nii.gz")  # BraTS 2021 names
        bag = _bag(case_rng, prototypes, label, aggressive, int(case_rng.integers(low, high + 1)))
        torch.save(torch.from_numpy(bag), out_dir / BAGS / f"{case}.pt")
        rows.append(f"{case},{label}")
    (out_dir / LABELS).write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out_dir
