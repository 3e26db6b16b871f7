"""Class labels read from a CSV: one class per case, or several tasks per case, each with its declared values.

The format is a header row, then one row per case::

    case_id,class                  one task, as CPM-RadPath's brain tumour labels (G, A, O)
    TCGA-02-0001,G
    TCGA-02-0002,O

    case_num,diagnosis,pigment_network,streaks,...   several tasks, as Derm7pt's meta/meta.csv
    1,basal cell carcinoma,absent,absent,...

- Each task is a column with its allowed values declared in order; the i-th value is class i
  (``{"class": ["G", "A", "O"]}`` reads G as 0, A as 1, O as 2). Values are strings or integers; an integer value
  matches ``2`` as well as ``2.0`` (as a spreadsheet writes it). Cells and column names are read without their
  surrounding spaces; other columns are not read.
- The file is UTF-8, with or without a byte-order mark (as Excel saves it), with ``\\n`` or ``\\r\\n`` line ends;
  fields may be quoted (``"melanoma (in situ)"``). Rows whose every cell is empty are passed over.

What is refused, with the error that names it:

- :class:`~medguide.data.errors.MissingInputError`: the file does not exist.
- :class:`~medguide.data.errors.InputError` (about the file, not a case): the file is not UTF-8, has no header, or
  lacks the case column or a task column (the columns it has are listed; a ``;`` or tab separated header is named
  as such); the declared values of a task are empty or repeated.
- :class:`~medguide.data.errors.InvalidCaseError` (case, file, what; skipped and logged with ``skip_invalid``): a
  value outside its task's declared values (through :func:`medguide.data.check_label_values`, the check label images
  go through), an empty cell, a row with more cells than the header, an empty case id, a case listed in two rows,
  and, when a datalist is given, a case of the datalist that has no row.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from medguide.data.checks import CaseList, check_label_values
from medguide.data.errors import InputError, InvalidCaseError, MissingInputError, flag

__all__ = ["read_class_labels"]


def _declared(classes: Sequence[str | int] | Mapping[str, Sequence[str | int]], label_column: str) -> dict:
    """{column: declared values}, checked to be non-empty and without repeats."""
    tasks = dict(classes) if isinstance(classes, Mapping) else {label_column: classes}
    if not tasks:
        raise InputError("classes must declare at least one task: {column: [values]}")
    for task, values in tasks.items():
        values = [values] if isinstance(values, str | int) else list(values)
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if not values or repeated:
            problem = f"repeated {repeated}" if repeated else "none given"
            raise InputError(f"the values declared for task {task!r} must be non-empty and distinct: {problem}")
        tasks[task] = values
    return tasks


def _value(cell: str, allowed: Sequence[str | int]) -> str | int:
    """A cell as the kind of value the task declares: an integer where it declares integers and the cell is one."""
    if cell not in allowed and any(isinstance(v, int) for v in allowed):
        try:
            number = float(cell)
        except ValueError:
            return cell
        if number.is_integer():
            return int(number)
    return cell


def _rows(csv_file: Path) -> tuple[list[str], list[tuple[int, dict, list]]]:
    """(header, [(line number, {column: stripped cell}, cells beyond the header)]) of a UTF-8 CSV."""
    try:
        with open(csv_file, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f, restkey="\0extra")
            header = [name.strip() for name in reader.fieldnames or []]
            reader.fieldnames = header
            rows = []
            for row in reader:
                extra = row.pop("\0extra", [])
                cells = {k: (v or "").strip() for k, v in row.items()}
                if any(cells.values()) or any(c.strip() for c in extra):
                    rows.append((reader.line_num, cells, extra))
    except UnicodeDecodeError as error:
        raise InputError(
            f"labels CSV '{csv_file}' is not UTF-8 text ({error.reason} at byte {error.start}); save it as UTF-8"
        ) from error
    if not header:
        raise InputError(f"labels CSV '{csv_file}' is empty: expected a header row such as 'case_id,class'")
    return header, rows


def _check_columns(csv_file: Path, header: list[str], columns: Sequence[str]) -> None:
    absent = [c for c in columns if c not in header]
    if absent:
        # a spreadsheet saved in a locale whose decimal mark is a comma separates fields by ';'
        separators = [name for sep, name in ((";", "';'"), ("\t", "tabs")) if len(header) == 1 and sep in header[0]]
        hint = f"; its fields are separated by {separators[0]}, not commas" if separators else ""
        raise InputError(f"labels CSV '{csv_file}' has no column {absent[0]!r} (columns: {header}){hint}")


def _row_label(csv_file: Path, case: str, line: int, cells: dict, tasks: dict) -> dict[str, int]:
    """{task: class index} of one row, each value checked against its task's declared values."""
    label = {}
    for task, allowed in tasks.items():
        if not cells[task]:
            raise InvalidCaseError(case, csv_file, f"empty {task!r} cell in row {line}")
        value = _value(cells[task], allowed)
        where = f", in row {line}"
        check_label_values([value], allowed, case, csv_file, what=f"column {task!r} value", where=where)
        label[task] = allowed.index(value)
    return label


def _labels_by_case(
    csv_file: Path, header: list[str], rows: list[tuple[int, dict, list]], tasks: dict, case_column: str
) -> dict[str, dict[str, int] | InvalidCaseError]:
    """{case: {task: class index}, or the error that refuses the case}, in the order of the rows."""
    lines: dict[str, list[int]] = {}
    labels: dict[str, dict[str, int] | InvalidCaseError] = {}
    for line, cells, extra in rows:
        case = cells[case_column] or f"(row {line})"
        lines.setdefault(case, []).append(line)
        try:
            if not cells[case_column]:
                raise InvalidCaseError(case, csv_file, f"empty {case_column!r} cell in row {line}")
            if len(lines[case]) > 1:
                raise InvalidCaseError(case, csv_file, f"listed in several rows: {lines[case]}")
            if extra:
                raise InvalidCaseError(case, csv_file, f"row {line} has more cells than the header {header}")
            labels[case] = _row_label(csv_file, case, line, cells, tasks)
        except InvalidCaseError as error:
            labels[case] = error
    return labels


def read_class_labels(
    csv_file: str | os.PathLike,
    classes: Sequence[str | int] | Mapping[str, Sequence[str | int]],
    case_column: str = "case_id",
    label_column: str = "class",
    datalist: Sequence[Mapping] | None = None,
    skip_invalid: bool = False,
) -> CaseList:
    """Read class labels from a CSV (format and errors in the module docstring) into datalist items.

    Example:
        >>> read_class_labels("labels.csv", ["G", "A", "O"])  # case_id,class / TCGA-02-0001,O
        [{'case': 'TCGA-02-0001', 'label': 2, 'label_file': 'labels.csv'}]
        >>> read_class_labels("meta/meta.csv", {"diagnosis": DIAGNOSES, "streaks": ["absent", "regular", "irregular"]},
        ...                   case_column="case_num")[0]["label"]
        {'diagnosis': 0, 'streaks': 0}

    Args:
        csv_file: the labels CSV.
        classes: the declared values of the one task in ``label_column``, in class order; or
            ``{column: declared values}`` for several tasks per case.
        case_column: the column of case ids.
        label_column: the column of the one task, when ``classes`` is a list.
        datalist: items (``{"case", "image", ...}``) to give their labels: every item's case must have a row, rows
            of other cases are not read (one CSV may cover every split); a :class:`CaseList` keeps its skipped
            cases.
        skip_invalid: log and leave out a case whose row is refused, instead of raising.

    Returns:
        Items ``{"case", "label", "label_file"}`` in the CSV's order, or the datalist's items with ``label`` and
        ``label_file`` added, in its order; ``label`` is the class index for a list of ``classes``, else
        ``{task: class index}``. Cases refused under ``skip_invalid`` are in ``skipped``.

    Raises:
        MissingInputError, InputError, InvalidCaseError: see the module docstring.
    """
    csv_file = Path(csv_file)
    tasks = _declared(classes, label_column)
    if not csv_file.is_file():
        raise MissingInputError(f"labels CSV not found: '{csv_file}'")
    header, rows = _rows(csv_file)
    _check_columns(csv_file, header, [case_column, *tasks])
    skip = flag(skip_invalid, "skip_invalid")

    labels = _labels_by_case(csv_file, header, rows, tasks, case_column)
    if not isinstance(classes, Mapping):
        labels = {
            case: label if isinstance(label, Exception) else label[label_column] for case, label in labels.items()
        }

    if datalist is None:
        items = [{"case": case} for case in labels]
        result = CaseList()
    else:
        items = [dict(item) for item in datalist]
        result = CaseList(skipped=getattr(datalist, "skipped", ()))
    for item in items:
        case = str(item.get("case", ""))
        found = labels.get(case)
        if found is None:
            found = InvalidCaseError(case, csv_file, f"no row with {case_column} {case!r}")
        if isinstance(found, InvalidCaseError):
            if not skip:
                raise found
            result.skip(found)
            continue
        result.append({**item, "label": found, "label_file": str(csv_file)})
    return result
