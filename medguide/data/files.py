"""File-level helpers every reader and writer shares: atomic writes, image suffixes, hidden files, input/output paths.

Writers put their bytes in a temporary file (or folder) beside the target and rename it into place, so a stopped
run never leaves half a file and readers never see one; the renamed file gets the mode a plain ``open()`` would give
it under the user's umask (``tempfile.mkstemp`` alone makes it 0600, unreadable for colleagues on a shared server).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from medguide.data.errors import InputError, MissingInputError, flag

__all__ = [
    "IMAGE_SUFFIXES",
    "NIFTI_SUFFIXES",
    "MONAI_READER_SUFFIXES",
    "PHOTO_SUFFIXES",
    "atomic_folder",
    "atomic_target",
    "atomic_write_text",
    "check_output_dir",
    "image_stem",
    "image_suffix",
    "is_hidden",
    "name_list",
    "photo_datalist",
    "visible",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")
# files that MONAI's installed readers (nibabel, pydicom, numpy, PIL) read; SimpleITK reads the other formats
MONAI_READER_SUFFIXES = (*NIFTI_SUFFIXES, ".dcm", ".npy", ".npz", ".png", ".jpg", ".jpeg", ".bmp")
# multi-part suffixes first, so ".nii.gz" is not taken for ".gz"
IMAGE_SUFFIXES = (*MONAI_READER_SUFFIXES, ".nrrd", ".mha", ".mhd", ".tif", ".tiff")
# 2D photographs (clinical, dermoscopic, fundus, patches) that PIL decodes
PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def image_suffix(path: str | os.PathLike) -> str:
    """The image suffix of a file name, case kept (``.nii.gz`` for ``x.nii.gz``; else the last suffix)."""
    name = Path(path).name
    return next((name[-len(s) :] for s in IMAGE_SUFFIXES if name.lower().endswith(s)), Path(name).suffix)


def image_stem(path: str | os.PathLike) -> str:
    """The file name without its image suffix (``case_t1`` for ``case_t1.nii.gz``; see :func:`image_suffix`)."""
    name = Path(path).name
    return name[: len(name) - len(image_suffix(name))]


def is_hidden(path: str | os.PathLike) -> bool:
    """Whether a file or folder is hidden: a dot name, such as macOS's ``._<name>`` resource forks or ``.DS_Store``.

    Copies from a Mac disk put a ``._<name>`` beside every file; they are not images, and a reader that takes them
    for one finds "a second flair file" or an unreadable series.
    """
    return Path(path).name.startswith(".")


def visible(paths: Iterable[Path]) -> list[Path]:
    """``paths`` without the hidden ones (see :func:`is_hidden`), sorted."""
    return sorted(p for p in paths if not is_hidden(p))


def name_list(paths: Sequence[Path], most: int = 5) -> str:
    """The first ``most`` file names, comma-separated, ``", ..."`` when there are more, ``"nothing"`` when none: what an
    error says a folder holds."""
    return ", ".join(p.name for p in paths[:most]) + (", ..." if len(paths) > most else "") or "nothing"


def photo_datalist(
    folder: str | os.PathLike, key: str = "image", suffixes: Sequence[str] = PHOTO_SUFFIXES
) -> list[dict[str, str]]:
    """One datalist item ``{"case": file name without suffix, key: path}`` per photograph in ``folder``: how inference
    reads a folder of one's own photos (clinical, dermoscopic, fundus), whatever data set layout trained the model.

    Files with one of ``suffixes`` (default :data:`PHOTO_SUFFIXES`) in any case (``NEL025.JPG``) are taken, sorted by
    name; hidden files (``._name``, ``.DS_Store``) and files of other kinds (a ``notes.txt``) are passed over. Nothing
    is decoded here: a file that does not decode is named when it is loaded (:class:`medguide.transforms.LoadPhotod`).
    A folder of chest films, DICOM among them, is read with ``suffixes=(*PHOTO_SUFFIXES, ".dcm", ".dicom")``.

    Raises:
        MissingInputError: ``folder`` does not exist, or holds no photograph (the message says what it holds).
        InputError: two photos would be the same case (``a.png`` and ``a.jpg``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise MissingInputError(f"photo folder not found: '{folder}'")
    files = visible(folder.iterdir())
    wanted = tuple(s.lower() for s in suffixes)
    photos = [p for p in files if p.is_file() and image_suffix(p).lower() in wanted]
    if not photos:
        raise MissingInputError(f"no photograph ({', '.join(wanted)}) in '{folder}'; it holds {name_list(files)}")
    items: dict[str, dict[str, str]] = {}
    for photo in photos:
        case = image_stem(photo)
        if case in items:
            raise InputError(f"'{items[case][key]}' and '{photo}' would both be case {case!r}; keep one of them")
        items[case] = {"case": case, key: str(photo)}
    return list(items.values())


def _new_mode(folder: bool = False) -> int:
    """The mode a new file (0666) or folder (0777) gets from ``open()`` or ``mkdir()``: less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed onto ``path`` when the block ends without error.

    The temporary file keeps the target's image suffix (writers pick the format from it), is removed when the
    block raises, and gets the mode a new file gets under the user's umask before the rename.

    Example:
        >>> with atomic_target("out/case_seg.nii.gz") as tmp:
        ...     nib.save(image, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=image_suffix(path) or ".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _new_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary folder beside ``path`` to fill; renamed onto ``path`` when the block ends without error.

    Processes started together (``torchrun``) that each build the same folder never see a half-built one: the first
    rename wins and the others' copies are removed. The staging folder is removed when the block raises, and the
    folder gets the mode a new folder gets under the user's umask (``tempfile.mkdtemp`` alone makes it 0700).

    Example:
        >>> with atomic_folder("/tmp/sets/brats") as staging:
        ...     make_brats_dataset(staging)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield staging
        os.chmod(staging, _new_mode(folder=True))
        try:
            os.replace(staging, path)
        except OSError:
            if not path.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` as UTF-8, through a temporary file and a rename, so no reader sees half a file."""
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _input_files(datalist: Sequence[Mapping], keys: Sequence[str]) -> dict[Path, str]:
    """{resolved input file or folder: its case} of every path under ``keys`` in the datalist."""
    files = {}
    for item in datalist:
        for key in keys:
            value = item.get(key)
            for path in [value] if isinstance(value, str | os.PathLike) else value or []:
                files[Path(path).resolve()] = str(item.get("case", ""))
    return files


def check_output_dir(
    output_dir: str | os.PathLike,
    data_dir: str | os.PathLike,
    datalist: Sequence[Mapping] = (),
    output_suffix: str | None = None,
    allow_inside_data: bool = False,
    keys: Sequence[str] = ("image", "label"),
) -> Path:
    """Refuse an output folder that would mix outputs into the data set or write over one of its files.

    A prediction written into a case folder can replace that case's ground truth (``<case>_seg.nii.gz``), and
    outputs left in the data folder are read as cases by the next run. So an ``output_dir`` inside ``data_dir`` (or
    equal to it) is refused unless ``allow_inside_data``, and even then no output may land on an input file.

    Args:
        output_dir: where the run writes.
        data_dir: the data set's root folder.
        datalist: the run's items; their files under ``keys`` are the inputs that are never overwritten.
        output_suffix: the run writes ``<case><output_suffix>`` into ``output_dir`` for every item (e.g.
            ``"_seg.nii.gz"``); ``None`` when it writes no per-case file.
        allow_inside_data: the user asked for an output folder inside the data set.
        keys: item keys holding input paths.

    Returns:
        ``output_dir`` as a resolved path.

    Raises:
        InputError: naming both paths, when the output folder lies in the data set (without ``allow_inside_data``)
            or an output would overwrite an input file.
    """
    output, data = Path(output_dir).resolve(), Path(data_dir).resolve()
    inputs = _input_files(datalist, keys)
    for item in datalist if output_suffix is not None else ():
        target = output / f"{item.get('case')}{output_suffix}"
        if target in inputs:
            raise InputError(
                f"output '{target}' would overwrite an input file of case {inputs[target]!r}; "
                f"choose an output_dir outside the data set '{data}'."
            )
    # as written and resolved: a case folder linked in from elsewhere is inside the data set all the same
    plain_output, plain_data = Path(os.path.abspath(output_dir)), Path(os.path.abspath(data_dir))
    inside = any(o == d or d in o.parents for o, d in ((output, data), (plain_output, plain_data)))
    if not flag(allow_inside_data, "allow_output_in_data") and inside:
        raise InputError(
            f"output_dir '{output}' is inside the data set '{data}': outputs there can replace input files and are "
            "read as cases by the next run. Choose an output_dir outside it, or set allow_output_in_data true."
        )
    return output
