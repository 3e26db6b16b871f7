"""Image writers that never leave a half-written prediction and never overwrite an input."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from monai.data import NibabelWriter
from monai.utils import ImageMetaKey

__all__ = ["AtomicNibabelWriter", "case_name_formatter"]

_NIFTI_SUFFIXES = (".nii.gz", ".nii")


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing to a temporary file in the target folder, then renaming it.

    A run that is stopped mid-write leaves no truncated NIfTI behind, and readers never see a partial file.
    """

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs) -> None:
        target = Path(filename)
        suffix = next((s for s in _NIFTI_SUFFIXES if target.name.endswith(s)), target.suffix)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=suffix)
        os.close(fd)
        try:
            super().write(tmp, verbose=verbose, **obj_kwargs)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def case_name_formatter(metadict: dict, saver) -> dict:
    """``SaveImaged`` name formatter: outputs are named by the case id (``<case>_seg.nii.gz``).

    Falls back to MONAI's behaviour (the first input file's name) when the metadata carries no case id.
    """
    subject = metadict.get("case") or metadict.get(ImageMetaKey.FILENAME_OR_OBJ, getattr(saver, "_data_index", 0))
    return {"subject": str(subject), "idx": metadict.get(ImageMetaKey.PATCH_INDEX)}
