"""Readers, validation and synthetic generators for medguide's data sets, in the public datasets' own layouts."""

from medguide.data.brats import (
    BRATS_MODALITIES,
    brats_datalist,
    brats_label_map,
    brats_label_values,
    brats_output_labels,
    make_brats_dataset,
)
from medguide.data.checks import (
    CaseList,
    check_case,
    check_class_label,
    check_label_values,
    dicom_series_files,
    is_class_label,
    load_image_stack,
    load_label,
    read_volume,
    report_skipped_cases,
    validate_datalist,
)
from medguide.data.errors import InputError, InvalidCaseError, MissingInputError, flag, plain_input_errors
from medguide.data.files import atomic_target, atomic_write_text, check_output_dir, is_hidden
from medguide.data.labels import read_class_labels
from medguide.data.liver import decathlon_datalist, dicom_series_datalist, make_liver_dataset
from medguide.data.modalities import check_modalities, nonempty_subsets
from medguide.data.synthetic import dataset_dir_or_synthetic, resolve_maker
from medguide.data.writers import AtomicNibabelWriter, case_name_formatter

__all__ = [
    "AtomicNibabelWriter",
    "BRATS_MODALITIES",
    "CaseList",
    "InputError",
    "InvalidCaseError",
    "MissingInputError",
    "atomic_target",
    "atomic_write_text",
    "brats_datalist",
    "brats_label_map",
    "brats_label_values",
    "brats_output_labels",
    "case_name_formatter",
    "check_case",
    "check_class_label",
    "check_label_values",
    "check_modalities",
    "check_output_dir",
    "dataset_dir_or_synthetic",
    "decathlon_datalist",
    "dicom_series_datalist",
    "dicom_series_files",
    "flag",
    "is_class_label",
    "is_hidden",
    "load_image_stack",
    "load_label",
    "make_brats_dataset",
    "make_liver_dataset",
    "nonempty_subsets",
    "plain_input_errors",
    "read_class_labels",
    "read_volume",
    "report_skipped_cases",
    "resolve_maker",
    "validate_datalist",
]
