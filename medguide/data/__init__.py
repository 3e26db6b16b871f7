"""Readers, validation and synthetic generators for medguide's data sets, in the public datasets' own layouts.

Each name loads its submodule on first use (``from medguide.data import make_brats_dataset``, or
``$medguide.data.make_brats_dataset(...)`` in a bundle config), so a network that needs only the modality names
(:mod:`medguide.data.modalities`) does not load the readers and their libraries (nibabel, SimpleITK, pydicom,
scipy).
"""

import importlib
import importlib.util

_EXPORTS = {
    "brats": (
        "BRATS_MODALITIES",
        "brats_datalist",
        "brats_label_map",
        "brats_label_values",
        "brats_output_labels",
        "make_brats_dataset",
    ),
    "checks": (
        "CaseList",
        "check_case",
        "check_class_label",
        "check_label_values",
        "dicom_series_files",
        "is_class_label",
        "load_image_stack",
        "load_label",
        "read_volume",
        "report_skipped_cases",
        "validate_datalist",
    ),
    "chest_xray": (
        "CHESTXRAY8_FINDINGS",
        "CHESTXRAY8_SIDE",
        "CHEXPERT_LABELS",
        "MIMIC_CXR_SPLITS",
        "boxes_to_grid",
        "chestxray8_boxes",
        "chestxray8_datalist",
        "mimic_cxr_datalist",
        "read_chest_film",
    ),
    "chest_xray_synthetic": ("make_cxr_dataset",),
    "concepts": (
        "TEXT_ENCODERS",
        "ConceptList",
        "HuggingFaceEncoder",
        "TextEncoder",
        "TfidfEncoder",
        "embed_concepts",
        "load_concepts",
        "read_concepts",
        "save_concepts",
        "text_encoder",
    ),
    "cpm_radpath": ("CPM_RADPATH_CLASSES", "cpm_radpath_datalist", "find_bag", "make_cpm_radpath_dataset"),
    "derm7pt": (
        "DERM7PT_TASKS",
        "clinical_photo_datalist",
        "derm7pt_datalist",
        "is_derm7pt",
        "make_derm7pt_dataset",
    ),
    "errors": ("InputError", "InvalidCaseError", "MissingInputError", "flag", "plain_input_errors"),
    "files": ("atomic_target", "atomic_write_text", "check_output_dir", "is_hidden", "photo_datalist"),
    "labels": ("read_class_labels",),
    "liver": ("decathlon_datalist", "dicom_series_datalist", "make_liver_dataset"),
    "modalities": ("check_modalities", "distinct_modalities", "nonempty_subsets"),
    "multieye": (
        "MULTIEYE_CLASSES",
        "MULTIEYE_MODALITIES",
        "MULTIEYE_SECTIONS",
        "RandLabelPairedOCTd",
        "make_multieye_dataset",
        "multieye_datalist",
    ),
    "reports": (
        "REPORT_ATTRIBUTES",
        "ReportAttributesd",
        "ReportSections",
        "ReportVocabulary",
        "attribute_targets",
        "extract_attributes",
        "read_report",
        "split_report",
    ),
    "sampling": ("class_balanced_sampler",),
    "splits": ("proportional_counts", "stratified_split"),
    "synthetic": ("dataset_dir_or_synthetic", "resolve_maker"),
    "writers": ("AtomicNibabelWriter", "case_name_formatter"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
        globals()[name] = value
        return value
    # a submodule asked for as an attribute (``medguide.data.geometry.spacing_of``), as when they all loaded here
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
