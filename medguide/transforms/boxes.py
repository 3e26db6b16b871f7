"""Boxes from a heat map: upsample to the image, threshold, one box per connected component, scored by the map.

The box generation of ChestX-ray8 (Wang et al., "ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on
Weakly-Supervised Classification and Localization of Common Thorax Diseases", CVPR 2017,
https://arxiv.org/abs/1705.02315), applied in medguide to the attention maps of report-guided localisation (Bhalodia
et al., MICCAI 2021, https://arxiv.org/abs/2110.03094; ``../shared/METHODS.md`` section 4).

Axes and boxes follow MONAI: a map is channel-first with the spatial axes x, y (``[1, w, h]``, as medguide loads a
2D image, ``[C, W, H]``), and a box is ``[x0, y0, x1, y1]`` in MONAI's ``StandardMode`` (``monai.data.box_utils``),
coordinate ``k`` along spatial axis ``k``, in pixel corners: a component covering pixels 3..5 of the x axis gives
``x0 = 3, x1 = 6``, so the box's area is its pixel count along each axis multiplied. For a ChestX-ray8 image loaded
by MONAI's ``PILReader`` the x axis runs along the image's columns, as the ``Bbox [x`` column of its box file.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Resize, Transform
from monai.utils import convert_to_tensor
from scipy import ndimage

__all__ = ["MapToBoxes", "MapToBoxesd", "heat_map_image_size", "map_to_boxes", "threshold_heat_map"]

SCORES = ("max", "mean")


def heat_map_image_size(
    heat_map: torch.Tensor | np.ndarray, spatial_size: Sequence[int] | None = None, meta_key: str = "spatial_shape"
) -> tuple[int, int]:
    """The image's spatial size ``(W, H)`` a heat map belongs to: ``spatial_size`` if given, else ``meta[meta_key]``.

    Raises:
        ValueError: if neither gives a size, or the size is not two positive integers.
    """
    if spatial_size is None:
        found = getattr(heat_map, "meta", {}).get(meta_key)
        if found is None:
            raise ValueError(
                f"the image's spatial size is needed to place the boxes: give spatial_size, or a MetaTensor heat map "
                f"whose meta holds {meta_key!r} (as MONAI's LoadImage records it)."
            )
        spatial_size = np.asarray(found.cpu() if isinstance(found, torch.Tensor) else found).reshape(-1).tolist()
    size = tuple(int(s) for s in spatial_size)
    if len(size) != 2 or min(size) < 1 or any(s != float(t) for s, t in zip(size, spatial_size, strict=True)):
        raise ValueError(f"spatial_size must be two positive integers (W, H), got {spatial_size!r}.")
    return size


def _check_threshold(threshold: float, relative: bool) -> None:
    if relative and not 0 <= threshold <= 1:
        raise ValueError(f"a relative threshold is a fraction of the map's maximum in [0, 1], got {threshold!r}.")


def _check_options(score: str, max_boxes: int | None, min_area: int, connectivity: int) -> None:
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}.")
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (edge neighbours) or 2 (with diagonals), got {connectivity!r}.")
    if (max_boxes is not None and max_boxes < 1) or min_area < 1:
        raise ValueError(f"max_boxes and min_area must be at least 1, got {max_boxes!r} and {min_area!r}.")


def threshold_heat_map(
    heat_map: torch.Tensor | np.ndarray,
    spatial_size: Sequence[int] | None = None,
    threshold: float = 0.7,
    relative: bool = True,
    meta_key: str = "spatial_shape",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The heat map upsampled to the image (bilinear) and its thresholded mask.

    Args:
        heat_map: ``[1, w, h]`` or ``[w, h]``, any real values (an attention map, a CAM); a ``MetaTensor`` may carry
            the image's size in its meta.
        spatial_size: the image's spatial size ``(W, H)`` in the map's axis order; ``None``: ``heat_map.meta
            [meta_key]``.
        threshold: with ``relative``, the fraction of the upsampled map's maximum a pixel must reach (``value >=
            threshold * max``; a map with no positive value gives an empty mask); otherwise the value itself
            (``value >= threshold``). The default 0.7 is ChestX-ray8's: its maps were scaled to ``[0, 255]`` and the
            pixels below 180 dropped (180 / 255 = 0.71).
        relative: whether ``threshold`` is relative to the map's maximum.
        meta_key: the meta key holding the image's spatial size (``LoadImage`` records the original size there).

    Returns:
        ``(values, mask)``: float32 ``[W, H]`` and boolean ``[W, H]`` CPU tensors.

    Raises:
        ValueError: if ``heat_map`` is not ``[1, w, h]`` or ``[w, h]``, holds a value that is not finite, the image's
            size is neither given nor in the meta, or is not two positive integers, or a relative ``threshold`` is
            outside ``[0, 1]``.
    """
    _check_threshold(threshold, relative)
    size = heat_map_image_size(heat_map, spatial_size, meta_key)
    values = convert_to_tensor(heat_map, track_meta=False).detach().to(device="cpu", dtype=torch.float32)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"a heat map must be [1, w, h] or [w, h], got shape {tuple(heat_map.shape)}.")
    if not torch.isfinite(values).all():
        raise ValueError("the heat map holds a value that is not finite.")
    if tuple(values.shape) != size:
        values = Resize(size, mode="bilinear", align_corners=False)(values[None])[0]
        values = convert_to_tensor(values, track_meta=False)
    if relative:
        peak = values.max()
        mask = values >= threshold * peak if peak > 0 else torch.zeros_like(values, dtype=torch.bool)
    else:
        mask = values >= threshold
    return values, mask


def map_to_boxes(
    heat_map: torch.Tensor | np.ndarray,
    spatial_size: Sequence[int] | None = None,
    threshold: float = 0.7,
    relative: bool = True,
    score: str = "max",
    max_boxes: int | None = None,
    min_area: int = 1,
    connectivity: int = 1,
    meta_key: str = "spatial_shape",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes around the connected components of the thresholded, upsampled heat map, best first.

    See :class:`MapToBoxes` for the arguments.

    Returns:
        ``(boxes, scores)``: float32 ``[K, 4]`` ``[x0, y0, x1, y1]`` in image pixel corners, and float32 ``[K]``,
        sorted by decreasing score (ties: the component met first in the map's row-major order); ``K = 0`` for a
        map with no pixel above the threshold.

    Raises:
        ValueError: as :func:`threshold_heat_map`, and for an unknown ``score``, ``connectivity`` not 1 or 2, or
            ``max_boxes`` / ``min_area`` below 1.
    """
    _check_options(score, max_boxes, min_area, connectivity)
    values, mask = threshold_heat_map(heat_map, spatial_size, threshold, relative, meta_key)
    labels, count = ndimage.label(mask.numpy(), structure=ndimage.generate_binary_structure(2, connectivity))
    if count == 0:
        return torch.zeros(0, 4), torch.zeros(0)
    index = np.arange(1, count + 1)
    measure = ndimage.maximum if score == "max" else ndimage.mean
    scores = np.asarray(measure(values.numpy(), labels, index), dtype=np.float32)
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    boxes = np.array([[x.start, y.start, x.stop, y.stop] for x, y in ndimage.find_objects(labels)], dtype=np.float32)
    keep = np.flatnonzero(areas >= min_area)
    keep = keep[np.argsort(-scores[keep], kind="stable")][:max_boxes]
    return torch.from_numpy(boxes[keep]), torch.from_numpy(scores[keep])


class MapToBoxes(Transform):
    """Heat map -> scored boxes, as ChestX-ray8's localisation baseline draws them from its class activation maps.

    The map is upsampled bilinearly to the image's size, thresholded (:func:`threshold_heat_map`), split into
    connected components (``scipy.ndimage.label``: MONAI labels components only inside its largest-component
    utilities), and each component gives the box that bounds it, scored by the map inside the component. The boxes
    come sorted by decreasing score. Axes and box convention: the module docstring (MONAI's ``StandardMode``).

    Args:
        spatial_size: the image's spatial size ``(W, H)`` in the map's axis order; ``None``: the heat map's
            ``meta[meta_key]`` (a call may also pass it).
        threshold: see :func:`threshold_heat_map` (default 0.7 of the maximum, ChestX-ray8's 180 / 255).
        relative: ``threshold`` as a fraction of the upsampled map's maximum (default) or as a value.
        score: ``"max"`` (default: the component's peak, which ranks a component by its strongest evidence whatever
            its size) or ``"mean"`` of the upsampled map over the component's pixels.
        max_boxes: keep at most this many boxes, the best; ``None``: all.
        min_area: drop components of fewer pixels (at the image's size) than this.
        connectivity: 1: pixels sharing an edge are connected; 2: diagonal neighbours too.
        meta_key: the meta key holding the image's spatial size.

    Raises:
        ValueError: see :func:`map_to_boxes`.

    Example:
        >>> heat = torch.zeros(1, 4, 4)
        >>> heat[0, 1:3, 2] = 1.0  # x = 1..2, y = 2
        >>> boxes, scores = MapToBoxes(spatial_size=(8, 8))(heat)  # each map pixel is 2 x 2 image pixels
        >>> boxes.tolist(), scores.tolist()  # the score is the upsampled map's peak
        ([[2.0, 4.0, 6.0, 6.0]], [0.75])
    """

    def __init__(
        self,
        spatial_size: Sequence[int] | None = None,
        threshold: float = 0.7,
        relative: bool = True,
        score: str = "max",
        max_boxes: int | None = None,
        min_area: int = 1,
        connectivity: int = 1,
        meta_key: str = "spatial_shape",
    ) -> None:
        self.spatial_size = spatial_size
        self.options = {
            "threshold": threshold,
            "relative": relative,
            "score": score,
            "max_boxes": max_boxes,
            "min_area": min_area,
            "connectivity": connectivity,
            "meta_key": meta_key,
        }
        _check_threshold(threshold, relative)
        _check_options(score, max_boxes, min_area, connectivity)

    def __call__(
        self, heat_map: torch.Tensor | np.ndarray, spatial_size: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(boxes [K, 4], scores [K])`` of ``heat_map`` (``[1, w, h]`` or ``[w, h]``); see :func:`map_to_boxes`.

        ``spatial_size`` overrides the transform's for this call.
        """
        return map_to_boxes(heat_map, self.spatial_size if spatial_size is None else spatial_size, **self.options)


class MapToBoxesd(MapTransform):
    """Dictionary version of :class:`MapToBoxes`, for a MONAI post-processing chain.

    Each key's heat map stays; its boxes go to ``"{key}_{box_postfix}"`` and their scores to
    ``"{key}_{score_postfix}"``.

    Args:
        keys: keys of the heat maps.
        size_key: key of the image's spatial size ``(W, H)`` in the dictionary (e.g. written by a reader); ``None``:
            ``spatial_size``, else the heat map's meta.
        box_postfix: postfix of the output key of the boxes.
        score_postfix: postfix of the output key of the scores.
        allow_missing_keys: don't raise for absent keys.
        **options: the arguments of :class:`MapToBoxes`.

    Example:
        >>> post = MapToBoxesd("heat", spatial_size=(4, 4))
        >>> post({"heat": torch.eye(4)[None]})["heat_boxes"].shape  # four diagonal pixels, not edge-connected
        torch.Size([4, 4])
    """

    def __init__(
        self,
        keys: KeysCollection,
        size_key: str | None = None,
        box_postfix: str = "boxes",
        score_postfix: str = "scores",
        allow_missing_keys: bool = False,
        **options,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.converter = MapToBoxes(**options)
        self.size_key = size_key
        self.box_postfix = box_postfix
        self.score_postfix = score_postfix

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        size = None if self.size_key is None else d[self.size_key]
        if isinstance(size, torch.Tensor | np.ndarray):
            size = size.reshape(-1).tolist()
        for key in self.key_iterator(d):
            d[f"{key}_{self.box_postfix}"], d[f"{key}_{self.score_postfix}"] = self.converter(d[key], size)
        return d
