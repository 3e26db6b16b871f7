"""``LoadCased``: the multi-modal case loader the segmentation bundles use instead of ``LoadImaged``."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

from monai.config import KeysCollection
from monai.transforms import MapTransform

from medguide.data.checks import case_name, check_class_label, is_class_label, load_image_stack, load_label

__all__ = ["LoadCased"]


class LoadCased(MapTransform):
    """Load a case's modalities as one channel-first ``MetaTensor`` and its label map, validating both.

    The first key holds the image: a list of per-modality files (or DICOM series folders), stacked in that order
    into one tensor that keeps the first modality's affine and meta data, so ``Invertd`` + ``SaveImaged`` write
    predictions in the input's space. Every later key holds a label map, loaded as one channel and checked against
    the image; a label key holding a class label (an integer or ``{task: integer}``, as
    :func:`medguide.data.read_class_labels` gives them) is checked against ``label_values`` and kept as it is. Each
    file is read by MONAI's ``LoadImage`` (reader chosen by MONAI; ``PydicomReader`` for a folder, so JPEG 2000 DICOM
    decodes; SimpleITK for formats neither reads).

    Every failure raises :class:`medguide.data.InvalidCaseError` naming the case (``data[case_key]``, else the first
    file's stem) and the file: missing, unreadable or corrupted file, NaN or infinite voxels, a modality or label
    with another shape or affine, a file with several volumes where one is expected, a DICOM folder with several
    series, one slice or a missing slice, label values outside ``label_values``. The checks are those of
    :func:`medguide.data.check_case`.

    Example:
        >>> load = LoadCased(keys=("image", "label"), label_values=(0, 1, 2, 4))
        >>> item = load({"case": "c1", "image": ["c1_t1.nii.gz", "c1_flair.nii.gz"], "label": "c1_seg.nii.gz"})
        >>> item["image"].shape  # (2, X, Y, Z)

    Args:
        keys: the image key first, then label keys.
        label_values: the declared label set (``{task: values}`` for class labels of several tasks); ``None`` skips
            the value check.
        case_key: key of the case id used in error messages.
        modality_key: key of the list naming each image file's modality (sets how many volumes each holds).
        allow_missing_keys: skip absent keys (e.g. no label at inference).
    """

    def __init__(
        self,
        keys: KeysCollection = ("image", "label"),
        label_values: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        case_key: str = "case",
        modality_key: str = "modalities",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        keep = label_values is None or isinstance(label_values, Mapping)
        self.label_values = label_values if keep else tuple(label_values)
        self.case_key = case_key
        self.modality_key = modality_key

    def __call__(self, data: Mapping[Hashable, object]) -> dict[Hashable, object]:
        """Replace the paths under ``keys`` by the loaded tensors.

        Args:
            data: a datalist item.
        """
        d = dict(data)
        image_key = self.keys[0]
        case = case_name(d, image_key=image_key, case_key=self.case_key)
        image = None
        for key in self.key_iterator(d):
            if key == image_key:
                # an item's "series" chooses the DICOM series of folders that hold several
                d[key] = image = load_image_stack(d[key], case, d.get(self.modality_key), d.get("series"))
                # outputs are named by the case (medguide.data.case_name_formatter), not by its first file
                image.meta["case"] = case
            elif is_class_label(d[key]):
                check_class_label(d[key], self.label_values, case, d.get("label_file", "(datalist)"))
            elif image is None:
                raise KeyError(f"case {case!r}: label key {key!r} needs the image key {image_key!r} present")
            else:
                d[key] = load_label(d[key], image, case, self.label_values)
        return d
