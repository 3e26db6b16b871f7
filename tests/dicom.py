"""Writing small DICOM series for tests: one file per axial slice, positions and UIDs as a scanner sets them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

__all__ = ["write_dicom_series"]


def write_dicom_series(
    volume: np.ndarray,
    folder: Path,
    spacing: Sequence[float] = (0.8, 0.8, 2.5),
    series_uid: str = "1.2.826.0.1.3680043.2.1125.1",
    description: str = "",
    prefix: str = "slice",
) -> list[Path]:
    """One CT series of axial slices; ``volume`` is (x, y, z) as MONAI holds it. Returns the files in slice order."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(volume.transpose(2, 1, 0).astype(np.int16))
    image.SetSpacing(tuple(spacing))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    files = []
    for z in range(image.GetDepth()):
        slice_ = image[:, :, z]
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        for tag, value in {
            "0008|0060": "CT",
            "0008|103e": description,
            "0020|000d": series_uid + ".0",
            "0020|000e": series_uid,
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{p:.4f}" for p in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0018|0050": str(spacing[2]),
        }.items():
            slice_.SetMetaData(tag, value)
        files.append(folder / f"{prefix}{z:03d}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(slice_)
    return files
