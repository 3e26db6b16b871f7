"""The one error every medguide reader raises for a bad case, so a training run can name it or skip it."""

from __future__ import annotations

__all__ = ["InvalidCaseError"]


class InvalidCaseError(ValueError):
    """A case that cannot be used: a file is missing, unreadable, corrupted or inconsistent with the others.

    The message names the case, the file and why, e.g.
    ``case 'BraTS-GLI-00001-000': file '/data/x_t1.nii.gz': contains NaN or infinite voxels``.

    Args:
        case: the case id (the datalist item's ``"case"``, else the first file's stem).
        file: the offending file or DICOM folder.
        reason: what is wrong with it.
    """

    def __init__(self, case: str, file: str, reason: str) -> None:
        self.case = str(case)
        self.file = str(file)
        self.reason = reason
        super().__init__(f"case {self.case!r}: file {self.file!r}: {reason}")

    def __reduce__(self):
        # DataLoader workers pickle exceptions; the default would call __init__ with the message only.
        return type(self), (self.case, self.file, self.reason)
