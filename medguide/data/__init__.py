"""Readers, validation and synthetic generators for medguide's data sets, in the public datasets' own layouts."""

from medguide.data.brats import (
    BRATS_MODALITIES,
    brats_datalist,
    brats_label_map,
    brats_label_values,
    brats_output_labels,
)
from medguide.data.checks import check_case, load_image_stack, load_label, read_volume, validate_datalist
from medguide.data.errors import InvalidCaseError
from medguide.data.liver import decathlon_datalist, dicom_series_datalist
from medguide.data.synthetic import dataset_dir_or_synthetic, make_brats_dataset, make_dataset, make_liver_dataset
from medguide.data.writers import AtomicNibabelWriter, case_name_formatter

__all__ = [
    "AtomicNibabelWriter",
    "case_name_formatter",
    "dataset_dir_or_synthetic",
    "BRATS_MODALITIES",
    "InvalidCaseError",
    "brats_datalist",
    "brats_label_map",
    "brats_label_values",
    "brats_output_labels",
    "check_case",
    "decathlon_datalist",
    "dicom_series_datalist",
    "load_image_stack",
    "load_label",
    "make_brats_dataset",
    "make_dataset",
    "make_liver_dataset",
    "read_volume",
    "validate_datalist",
]
