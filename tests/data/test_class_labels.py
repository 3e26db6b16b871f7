"""Class labels from a CSV: one class per case (CPM-RadPath) or several tasks (Derm7pt), checked as label images are."""

import re
from collections import Counter

import nibabel as nib
import numpy as np
import pytest

from medguide.data import (
    CaseList,
    InputError,
    InvalidCaseError,
    MissingInputError,
    read_class_labels,
    validate_datalist,
)
from medguide.transforms import LoadCased

GAO = ["G", "A", "O"]  # CPM-RadPath: glioblastoma, astrocytoma, oligodendroglioma
CRITERIA = {
    "pigment_network": ["absent", "typical", "atypical"],
    "streaks": ["absent", "regular", "irregular"],
    "pigmentation": ["absent", "diffuse regular", "localized regular", "diffuse irregular", "localized irregular"],
    "regression_structures": ["absent", "blue areas", "white areas", "combinations"],
    "dots_and_globules": ["absent", "regular", "irregular"],
    "blue_whitish_veil": ["absent", "present"],
    "vascular_structures": [
        "absent",
        "arborizing",
        "comma",
        "hairpin",
        "within regression",
        "wreath",
        "dotted",
        "linear irregular",
    ],
}

# Derm7pt's diagnoses and how many of its 1011 cases have each, as its meta/meta.csv gives them
DIAGNOSES = {
    "basal cell carcinoma": 42,
    "blue nevus": 28,
    "clark nevus": 399,
    "combined nevus": 13,
    "congenital nevus": 17,
    "dermal nevus": 33,
    "dermatofibroma": 20,
    "lentigo": 24,
    "melanoma": 1,
    "melanoma (0.76 to 1.5 mm)": 53,
    "melanoma (in situ)": 64,
    "melanoma (less than 0.76 mm)": 102,
    "melanoma (more than 1.5 mm)": 28,
    "melanoma metastasis": 4,
    "melanosis": 16,
    "miscellaneous": 8,
    "recurrent nevus": 6,
    "reed or spitz nevus": 79,
    "seborrheic keratosis": 45,
    "vascular lesion": 29,
}
VASCULAR_COUNTS = {
    "absent": 823,
    "arborizing": 31,
    "comma": 23,
    "hairpin": 15,
    "within regression": 46,
    "wreath": 2,
    "dotted": 53,
    "linear irregular": 18,
}


def _csv(path, text, encoding="utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def _invalid(error: InvalidCaseError, case: str, file, *pieces: str) -> None:
    """The error names the case, the file and every piece (the offending value, the row)."""
    assert (error.case, error.file) == (case, str(file))
    message = str(error)
    assert message.startswith(f"case {case!r}: file {str(file)!r}: ")
    for piece in pieces:
        assert piece in message, message


def test_one_class_per_case(tmp_path):
    labels = _csv(tmp_path / "labels.csv", "case_id,class\nTCGA-02-0001,G\nTCGA-02-0002, O \nTCGA-02-0003,A\n")
    items = read_class_labels(labels, GAO)
    assert items == [
        {"case": "TCGA-02-0001", "label": 0, "label_file": str(labels)},
        {"case": "TCGA-02-0002", "label": 2, "label_file": str(labels)},
        {"case": "TCGA-02-0003", "label": 1, "label_file": str(labels)},
    ]
    assert isinstance(items, CaseList) and items.skipped == []


def test_several_tasks_with_quoted_values(tmp_path):
    labels = _csv(
        tmp_path / "meta.csv",
        'case_num,diagnosis,streaks,notes\n1,"melanoma (in situ)",irregular,\n2,clark nevus,absent,"a, b"\n',
    )
    classes = {"diagnosis": ["clark nevus", "melanoma (in situ)"], "streaks": CRITERIA["streaks"]}
    items = read_class_labels(labels, classes, case_column="case_num")
    assert [(item["case"], item["label"]) for item in items] == [
        ("1", {"diagnosis": 1, "streaks": 2}),
        ("2", {"diagnosis": 0, "streaks": 0}),
    ]


def test_integer_classes_accept_spreadsheet_floats(tmp_path):
    labels = _csv(tmp_path / "grades.csv", "case_id,grade\nc1,2\nc2,3.0\nc3,4\n")
    with pytest.raises(InvalidCaseError) as caught:
        read_class_labels(labels, [2, 3], label_column="grade")
    _invalid(caught.value, "c3", labels, "column 'grade' value [4] outside the declared set [2, 3], in row 4")
    items = read_class_labels(labels, [2, 3, 4], label_column="grade")
    assert [item["label"] for item in items] == [0, 1, 2]


def test_value_outside_the_declared_set_names_case_file_value_and_row(tmp_path):
    labels = _csv(tmp_path / "labels.csv", "case_id,class\nc1,G\nc2,GBM\nc3,O\n")
    with pytest.raises(InvalidCaseError) as caught:
        read_class_labels(labels, GAO)
    _invalid(
        caught.value, "c2", labels, "column 'class' value ['GBM'] outside the declared set ['G', 'A', 'O']", "row 3"
    )


def test_skip_invalid_keeps_the_good_cases_and_lists_the_others(tmp_path):
    labels = _csv(tmp_path / "labels.csv", "case_id,class\nc1,G\nc2,X\nc3,\nc4,O\n")
    items = read_class_labels(labels, GAO, skip_invalid="true")
    assert [(item["case"], item["label"]) for item in items] == [("c1", 0), ("c4", 2)]
    assert [error.case for error in items.skipped] == ["c2", "c3"]
    _invalid(items.skipped[1], "c3", labels, "empty 'class' cell in row 4")


def test_datalist_cases_get_their_rows_and_a_missing_row_is_named(tmp_path):
    labels = _csv(tmp_path / "labels.csv", "case_id,class\nc1,G\nc2,A\nc9,O\n")
    earlier = InvalidCaseError("c0", "c0_t1.nii.gz", "file not found")
    datalist = CaseList([{"case": "c2", "image": ["c2.nii.gz"]}, {"case": "c5", "image": ["c5.nii.gz"]}], [earlier])
    with pytest.raises(InvalidCaseError) as caught:
        read_class_labels(labels, GAO, datalist=datalist)
    _invalid(caught.value, "c5", labels, "no row with case_id 'c5'")
    items = read_class_labels(labels, GAO, datalist=datalist, skip_invalid=True)
    assert items == [{"case": "c2", "image": ["c2.nii.gz"], "label": 1, "label_file": str(labels)}]
    assert [error.case for error in items.skipped] == ["c0", "c5"]


def test_duplicate_case_ids_are_refused(tmp_path):
    labels = _csv(tmp_path / "labels.csv", "case_id,class\nc1,G\nc2,A\nc1,G\n")
    with pytest.raises(InvalidCaseError) as caught:
        read_class_labels(labels, GAO)
    _invalid(caught.value, "c1", labels, "listed in several rows: [2, 4]")
    items = read_class_labels(labels, GAO, skip_invalid=True)
    assert [item["case"] for item in items] == ["c2"] and [e.case for e in items.skipped] == ["c1"]


def test_missing_columns_are_named_with_the_columns_found(tmp_path):
    labels = _csv(tmp_path / "labels.csv", "case,class\nc1,G\n")
    with pytest.raises(InputError, match=re.escape("no column 'case_id' (columns: ['case', 'class'])")):
        read_class_labels(labels, GAO)
    with pytest.raises(InputError, match="no column 'streaks'"):
        read_class_labels(labels, {"class": GAO, "streaks": CRITERIA["streaks"]}, case_column="case")
    semicolons = _csv(tmp_path / "excel.csv", "case_id;class\nc1;G\n")
    with pytest.raises(InputError, match="separated by ';', not commas"):
        read_class_labels(semicolons, GAO)


def test_empty_cells_and_rows(tmp_path):
    labels = _csv(tmp_path / "labels.csv", "case_id,class,grade\nc1,G,2\n,,\nc2,A\n,O,3\nc3,O,4,extra\n")
    items = read_class_labels(labels, {"class": GAO, "grade": [2, 3, 4]}, skip_invalid=True)
    assert [item["case"] for item in items] == ["c1"]  # the all-empty row 3 is passed over
    c2, no_case, c3 = items.skipped
    _invalid(c2, "c2", labels, "empty 'grade' cell in row 4")  # a short row
    _invalid(no_case, "(row 5)", labels, "empty 'case_id' cell in row 5")
    _invalid(c3, "c3", labels, "row 6 has more cells than the header")


def test_bom_crlf_and_non_ascii_paths(tmp_path):
    folder = tmp_path / "données patients" / "étiquettes"
    labels = _csv(folder / "classes é.csv", "\ufeffcase_id , class\r\nPatient-Müller,O\r\n番号-2,G\r\n")
    items = read_class_labels(labels, GAO)
    assert [(item["case"], item["label"]) for item in items] == [("Patient-Müller", 2), ("番号-2", 0)]
    assert items[0]["label_file"] == str(labels)
    bad = _csv(folder / "mauvais é.csv", "case_id,class\r\nPatient-Müller,Ö\r\n")
    with pytest.raises(InvalidCaseError) as caught:
        read_class_labels(bad, GAO)
    _invalid(caught.value, "Patient-Müller", bad, "['Ö']")


def test_file_level_problems(tmp_path):
    with pytest.raises(MissingInputError, match="labels CSV not found"):
        read_class_labels(tmp_path / "absent.csv", GAO)
    with pytest.raises(InputError, match="is empty"):
        read_class_labels(_csv(tmp_path / "empty.csv", ""), GAO)
    latin1 = _csv(tmp_path / "latin1.csv", "case_id,class\nMüller,G\n", encoding="latin-1")
    with pytest.raises(InputError, match="is not UTF-8 text .* save it as UTF-8"):
        read_class_labels(latin1, GAO)
    labels = _csv(tmp_path / "labels.csv", "case_id,class\nc1,G\n")
    with pytest.raises(InputError, match=r"non-empty and distinct: repeated \['G'\]"):
        read_class_labels(labels, ["G", "A", "G"])
    with pytest.raises(InputError, match="none given"):
        read_class_labels(labels, [])


def test_derm7pt_diagnosis_and_seven_criteria(sample_data):
    meta = sample_data / "derm7pt-meta" / "meta.csv"
    if not meta.exists():
        pytest.skip(f"{meta} not present in the sample data")
    diagnoses = list(DIAGNOSES)
    items = read_class_labels(meta, {"diagnosis": diagnoses, **CRITERIA}, case_column="case_num")
    assert len(items) == 1011 and items[0]["case"] == "1"
    assert Counter(diagnoses[item["label"]["diagnosis"]] for item in items) == DIAGNOSES
    vascular_values = CRITERIA["vascular_structures"]
    assert Counter(vascular_values[item["label"]["vascular_structures"]] for item in items) == VASCULAR_COUNTS
    assert items[0]["label"] == {
        "diagnosis": diagnoses.index("basal cell carcinoma"),
        "pigment_network": 0,
        "streaks": 0,
        "pigmentation": 0,
        "regression_structures": 0,
        "dots_and_globules": 0,
        "blue_whitish_veil": 0,
        "vascular_structures": 1,
    }
    vascular = [value for value in CRITERIA["vascular_structures"] if value != "wreath"]
    without_wreath = {**CRITERIA, "vascular_structures": vascular}
    with pytest.raises(InvalidCaseError, match=r"column 'vascular_structures' value \['wreath'\]"):
        read_class_labels(meta, without_wreath, case_column="case_num")
    without_metastasis = {"diagnosis": [d for d in diagnoses if d != "melanoma metastasis"], **CRITERIA}
    with pytest.raises(InvalidCaseError, match=r"column 'diagnosis' value \['melanoma metastasis'\]"):
        read_class_labels(meta, without_metastasis, case_column="case_num")


@pytest.fixture
def image_file(tmp_path):
    path = tmp_path / "c1_t1.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4)), str(path))
    return str(path)


def test_validate_datalist_checks_class_labels_as_label_images(tmp_path, image_file):
    labels = _csv(tmp_path / "labels.csv", "case_id,class\nc1,O\n")
    (item,) = read_class_labels(labels, GAO, datalist=[{"case": "c1", "image": [image_file]}])
    assert validate_datalist([item], label_values=range(3)) == [item]
    with pytest.raises(InvalidCaseError) as caught:
        validate_datalist([item], label_values=[0, 1])
    _invalid(caught.value, "c1", labels, "class label [2] outside the declared set [0, 1]")

    # a label image outside its set reads alike: case, file, values, declared set
    label_image = tmp_path / "c1_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 2, np.uint8), np.eye(4)), str(label_image))
    with pytest.raises(InvalidCaseError) as caught:
        validate_datalist([{"case": "c1", "image": [image_file], "label": str(label_image)}], label_values=[0, 1])
    _invalid(caught.value, "c1", label_image, "label values [2] outside the declared set [0, 1], in 64 voxels")


def test_validate_datalist_with_tasks_and_skip_invalid(image_file):
    declared = {"diagnosis": [0, 1, 2], "streaks": [0, 1, 2]}
    good = {"case": "c1", "image": [image_file], "label": {"diagnosis": 0, "streaks": 2}}
    bad_value = {"case": "c2", "image": [image_file], "label": {"diagnosis": 3, "streaks": 0}}
    no_task = {"case": "c3", "image": [image_file], "label": {"diagnosis": 1}}
    valid = validate_datalist([good, bad_value, no_task], label_values=declared, skip_invalid=True)
    assert valid == [good]
    second, third = valid.skipped
    _invalid(second, "c2", "(datalist)", "task 'diagnosis' class label [3] outside the declared set [0, 1, 2]")
    _invalid(third, "c3", "(datalist)", "label tasks ['diagnosis'] are not the declared ['diagnosis', 'streaks']")
    with pytest.raises(InputError, match="do not match"):
        validate_datalist([good], label_values=[0, 1, 2])
    assert validate_datalist([{**good, "label": 0}], label_values=None)[0]["label"] == 0


def test_load_cased_keeps_and_checks_class_labels(image_file):
    load = LoadCased(keys=("image", "label"), label_values={"diagnosis": [0, 1]})
    loaded = load({"case": "c1", "image": [image_file], "label": {"diagnosis": 1}})
    assert loaded["image"].shape == (1, 4, 4, 4) and loaded["label"] == {"diagnosis": 1}
    with pytest.raises(InvalidCaseError, match=r"task 'diagnosis' class label \[5\]"):
        load({"case": "c1", "image": [image_file], "label": {"diagnosis": 5}, "label_file": "labels.csv"})
