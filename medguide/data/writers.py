"""Image writers that never leave a half-written prediction and write exactly the input's voxel grid."""

from __future__ import annotations

import logging
import os

import numpy as np
from monai.data import NibabelWriter
from monai.utils import ImageMetaKey

from medguide.data.files import atomic_target

__all__ = ["AtomicNibabelWriter", "case_name_formatter"]

logger = logging.getLogger("medguide.data")


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` writing to a temporary file in the target folder, then renaming it.

    A run that is stopped mid-write leaves no truncated NIfTI behind, readers never see a partial file, and the
    file gets the mode the user's umask gives a new file. A single-channel image is written with exactly its
    spatial shape: MONAI's default squeezing of trailing singleton dimensions would turn the prediction of a
    one-slice (X, Y, 1) volume into an (X, Y) image.
    """

    def set_data_array(self, data_array, channel_dim: int | None = 0, squeeze_end_dims: bool = True, **kwargs):
        if channel_dim is not None and squeeze_end_dims and data_array.shape[channel_dim] == 1:
            # drop the channel only; singleton spatial axes are part of the grid
            data_array, channel_dim, squeeze_end_dims = data_array.squeeze(channel_dim), None, False
        super().set_data_array(data_array, channel_dim=channel_dim, squeeze_end_dims=squeeze_end_dims, **kwargs)
        if not squeeze_end_dims and channel_dim is None:
            # MONAI appends a channel axis for channel-less data; a label image has none
            self.data_obj = np.asarray(self.data_obj)[..., 0]

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs) -> None:
        with atomic_target(filename) as tmp:
            super().write(tmp, verbose=False, **obj_kwargs)
        if verbose:
            # MONAI would log the temporary name; the user looks for the final one
            logger.info("writing: %s", filename)


def case_name_formatter(metadict: dict, saver) -> dict:
    """``SaveImaged`` name formatter: outputs are named by the case id (``<case>_seg.nii.gz``).

    Falls back to MONAI's behaviour (the first input file's name) when the metadata carries no case id.
    """
    subject = metadict.get("case") or metadict.get(ImageMetaKey.FILENAME_OR_OBJ, getattr(saver, "_data_index", 0))
    return {"subject": str(subject), "idx": metadict.get(ImageMetaKey.PATCH_INDEX)}
