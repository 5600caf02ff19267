"""Dictionary wrappers of :mod:`hemwsl.transforms.array` and the augmentation preset.

As in MONAI, each ``Xxxd`` transform applies the array transform ``Xxx`` to ``keys`` of a data
dictionary and is also available as ``XxxD`` and ``XxxDict``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import DtypeLike, KeysCollection, NdarrayOrTensor
from monai.transforms import (
    Compose,
    MapTransform,
    RandAffined,
    RandFlipd,
    RandRotated,
)
from monai.utils import convert_to_dst_type, ensure_tuple

from hemwsl.constants import BRAIN, LABEL, SLICE_INDEX
from hemwsl.errors import HemwslInputError
from hemwsl.transforms.array import (
    HistogramEqualize,
    MultiWindow,
    SkullStrip,
    SliceStack,
    Window,
    WindowSpec,
    _to_numpy,
)

__all__ = [
    "Windowd",
    "WindowD",
    "WindowDict",
    "MultiWindowd",
    "MultiWindowD",
    "MultiWindowDict",
    "SliceStackd",
    "SliceStackD",
    "SliceStackDict",
    "SkullStripd",
    "SkullStripD",
    "SkullStripDict",
    "HistogramEqualized",
    "HistogramEqualizeD",
    "HistogramEqualizeDict",
    "RandFractionalAffined",
    "augmentation_preset",
]


class Windowd(MapTransform):
    """Dictionary-based wrapper of :class:`hemwsl.transforms.array.Window`.

    Args:
        keys: keys of the HU images to window.
        level: window centre in HU (with ``width``), or use ``window``.
        width: window width in HU, > 0.
        out_min: output of the lower window edge.
        out_max: output of the upper window edge.
        clip: clip the output to ``[out_min, out_max]``.
        window: a name of :data:`hemwsl.constants.WINDOWS` or a ``(level, width)`` pair.
        dtype: output dtype.
        allow_missing_keys: do not raise for missing keys.
    """

    backend = Window.backend

    def __init__(
        self,
        keys: KeysCollection,
        level: float | None = None,
        width: float | None = None,
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        window: WindowSpec | None = None,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = Window(level, width, out_min=out_min, out_max=out_max, clip=clip, window=window, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.window(d[key])
        return d


class MultiWindowd(MapTransform):
    """Dictionary-based wrapper of :class:`hemwsl.transforms.array.MultiWindow`.

    Output channels are window-major: channel ``w * C + c`` is input channel ``c`` under window ``w``.

    Args:
        keys: keys of the HU images.
        windows: window names and/or ``(level, width)`` pairs.
        out_min: output of each lower window edge.
        out_max: output of each upper window edge.
        clip: clip to ``[out_min, out_max]``.
        dtype: output dtype.
        allow_missing_keys: do not raise for missing keys.
    """

    backend = MultiWindow.backend

    def __init__(
        self,
        keys: KeysCollection,
        windows: Sequence[WindowSpec],
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.multi_window = MultiWindow(windows, out_min=out_min, out_max=out_max, clip=clip, dtype=dtype)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.multi_window(d[key])
        return d


class SliceStackd(MapTransform):
    """Cut a 2.5D sample around ``data[index_key]`` from channel-first volumes.

    Image ``keys`` ``(C, X, Y, Z)`` become ``(C * num_slices, X, Y)`` stacks (see
    :class:`hemwsl.transforms.array.SliceStack`); ``label_keys`` become only the centre slice
    ``(C, X, Y)``. Label keys absent from the dictionary are skipped, so the default
    ``label_keys=("label",)`` also serves samples without a mask.

    Args:
        keys: keys of the image volumes to stack.
        index_key: key of the centre slice index.
        num_slices: odd number of slices, >= 1.
        label_keys: keys of mask volumes cut at the centre slice only.
        axis: spatial axis to stack along (``-1`` = Z).
        allow_missing_keys: do not raise for missing image keys.

    Raises:
        HemwslInputError: even ``num_slices``, a key both in ``keys`` and ``label_keys``, a missing
            ``index_key``, an index out of range or volumes of different depth.
    """

    backend = SliceStack.backend

    def __init__(
        self,
        keys: KeysCollection,
        index_key: str = SLICE_INDEX,
        num_slices: int = 3,
        label_keys: KeysCollection = (LABEL,),
        axis: int = -1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = ensure_tuple(label_keys) if label_keys is not None else ()
        both = set(self.keys) & set(self.label_keys)
        if both:
            raise HemwslInputError(f"keys and label_keys must not overlap, both contain {sorted(map(str, both))}")
        self.index_key = index_key
        self.stacker = SliceStack(num_slices=num_slices, axis=axis)

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        if self.index_key not in d:
            raise HemwslInputError(f"index_key {self.index_key!r} not found in the data (keys: {list(d)})")
        index = d[self.index_key]
        depth = None
        for key in list(self.key_iterator(d)) + [k for k in self.label_keys if k in d]:
            vol = d[key]
            if not isinstance(vol, (np.ndarray, torch.Tensor)) or vol.ndim != 4:
                shape = tuple(vol.shape) if hasattr(vol, "shape") else type(vol).__name__
                raise HemwslInputError(f"{key!r} must be a channel-first volume (C, X, Y, Z), got {shape}")
            k_depth = int(vol.shape[1 + self.stacker.axis])
            if depth is None:
                depth = k_depth
            elif k_depth != depth:
                raise HemwslInputError(f"{key!r} has {k_depth} slices along the stack axis, expected {depth}")
        for key in self.key_iterator(d):
            d[key] = self.stacker(d[key], index)
        for key in self.label_keys:
            if key in d:
                d[key] = self.stacker.cut(d[key], index, 1)
        return d


class SkullStripd(MapTransform):
    """Brain mask by :class:`hemwsl.transforms.array.SkullStrip`, optionally applied to images.

    The mask is computed from ``source_key`` (default: the first of ``keys``, in HU) and stored
    under ``brain_key`` as ``uint8`` with the source's shape and type. With ``apply=True`` every
    image in ``keys`` gets ``fill_value`` outside the brain (default: that image's minimum); the
    mask must have one channel (broadcast) or as many channels as the image.

    Args:
        keys: image keys; the first is the mask source unless ``source_key`` is given.
        brain_key: key to write the mask to.
        apply: set voxels outside the brain to ``fill_value`` in the images of ``keys``.
        fill_value: value outside the brain (``None``: the image minimum).
        source_key: key of the HU image the mask is computed from.
        bone_percentile: see :class:`~hemwsl.transforms.array.SkullStrip`.
        min_bone_hu: see :class:`~hemwsl.transforms.array.SkullStrip`.
        max_bone_hu: see :class:`~hemwsl.transforms.array.SkullStrip`.
        head_hu: see :class:`~hemwsl.transforms.array.SkullStrip`.
        sigma_color: see :class:`~hemwsl.transforms.array.SkullStrip`.
        sigma_spatial: see :class:`~hemwsl.transforms.array.SkullStrip`.
        filter_radius: see :class:`~hemwsl.transforms.array.SkullStrip`.
        erosion_iterations: see :class:`~hemwsl.transforms.array.SkullStrip`.
        axis: see :class:`~hemwsl.transforms.array.SkullStrip`.
        allow_missing_keys: do not raise for missing keys.
    """

    backend = SkullStrip.backend

    def __init__(
        self,
        keys: KeysCollection,
        brain_key: str = BRAIN,
        apply: bool = False,
        fill_value: float | None = None,
        source_key: str | None = None,
        bone_percentile: float = 95.0,
        min_bone_hu: float | None = 95.0,
        max_bone_hu: float | None = 300.0,
        head_hu: float = -500.0,
        sigma_color: float = 20.0,
        sigma_spatial: float = 2.0,
        filter_radius: int = 2,
        erosion_iterations: int = 1,
        axis: int = -1,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if brain_key in self.keys:
            raise HemwslInputError(f"brain_key {brain_key!r} must differ from the image keys {list(self.keys)}")
        if fill_value is not None and not math.isfinite(float(fill_value)):
            raise HemwslInputError(f"fill_value must be a finite number or None, got {fill_value!r}")
        self.brain_key = brain_key
        self.apply = bool(apply)
        self.fill_value = fill_value
        self.source_key = source_key
        self.stripper = SkullStrip(
            bone_percentile=bone_percentile,
            min_bone_hu=min_bone_hu,
            max_bone_hu=max_bone_hu,
            head_hu=head_hu,
            sigma_color=sigma_color,
            sigma_spatial=sigma_spatial,
            filter_radius=filter_radius,
            erosion_iterations=erosion_iterations,
            axis=axis,
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        source = self.source_key if self.source_key is not None else self.first_key(d)
        if source == () or source not in d:
            if self.allow_missing_keys and self.source_key is None:
                return d
            raise HemwslInputError(f"source key {source!r} for skull stripping not found in the data (keys: {list(d)})")
        mask = self.stripper(d[source])
        d[self.brain_key] = mask
        if self.apply:
            m = _to_numpy(mask) != 0
            for key in self.key_iterator(d):
                img = d[key]
                arr = _to_numpy(img)
                if m.shape[1:] != arr.shape[1:] or m.shape[0] not in (1, arr.shape[0]):
                    raise HemwslInputError(
                        f"brain mask of shape {m.shape} cannot be applied to {key!r} of shape {arr.shape}: "
                        "spatial shapes must match and the mask needs 1 or the image's number of channels"
                    )
                fill = float(arr.min()) if self.fill_value is None else float(self.fill_value)
                out = np.where(np.broadcast_to(m, arr.shape), arr, np.asarray(fill, dtype=arr.dtype))
                d[key] = convert_to_dst_type(out, dst=img)[0]
        return d


class HistogramEqualized(MapTransform):
    """Dictionary-based wrapper of :class:`hemwsl.transforms.array.HistogramEqualize`.

    Args:
        keys: keys of the (windowed, [0, 1]) images.
        num_bins: histogram bins, >= 2.
        mask_key: key of a reference mask (e.g. ``"brain"``); ``None`` uses every voxel.
        per_slice: equalise each axial slice separately.
        method: ``"global"`` or ``"clahe"``.
        clip_limit: CLAHE clip limit.
        kernel_size: CLAHE tile size.
        axis: axial spatial axis of a volume.
        dtype: output dtype.
        allow_missing_keys: do not raise for missing keys.
    """

    backend = HistogramEqualize.backend

    def __init__(
        self,
        keys: KeysCollection,
        num_bins: int = 256,
        mask_key: str | None = None,
        per_slice: bool = False,
        method: str = "global",
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        axis: int = -1,
        dtype: DtypeLike = np.float32,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if mask_key is not None and method == "clahe":
            raise HemwslInputError("mask_key is only supported with method='global', not 'clahe'")
        self.mask_key = mask_key
        self.equalizer = HistogramEqualize(
            num_bins=num_bins,
            per_slice=per_slice,
            method=method,
            clip_limit=clip_limit,
            kernel_size=kernel_size,
            axis=axis,
            dtype=dtype,
        )

    def __call__(self, data: Mapping[Hashable, NdarrayOrTensor]) -> dict[Hashable, NdarrayOrTensor]:
        d = dict(data)
        mask = None
        if self.mask_key is not None:
            if self.mask_key not in d:
                raise HemwslInputError(f"mask_key {self.mask_key!r} not found in the data (keys: {list(d)})")
            mask = d[self.mask_key]
        for key in self.key_iterator(d):
            d[key] = self.equalizer(d[key], mask=mask)
        return d


class RandFractionalAffined(RandAffined):
    """:class:`monai.transforms.RandAffined` whose translation is a fraction of the image size.

    ``shift`` (a fraction, e.g. 0.1 = up to 10 % of each spatial size) is turned into MONAI's pixel
    ``translate_range`` from the spatial shape of the first key at each call; all other arguments
    are those of :class:`~monai.transforms.RandAffined`. One draw is shared by all keys.

    Args:
        keys: keys to transform.
        shift: maximum shift as a fraction of the spatial size, >= 0.
        **kwargs: passed to :class:`~monai.transforms.RandAffined` (not ``translate_range``).
    """

    def __init__(self, keys: KeysCollection, shift: float = 0.0, **kwargs) -> None:
        if "translate_range" in kwargs:
            raise HemwslInputError("RandFractionalAffined takes shift (a fraction), not translate_range")
        if not (isinstance(shift, (int, float)) and 0.0 <= float(shift) < 1.0):
            raise HemwslInputError(f"shift must be a fraction in [0, 1), got {shift!r}")
        super().__init__(keys, **kwargs)
        self.shift = float(shift)

    def __call__(
        self, data: Mapping[Hashable, NdarrayOrTensor], lazy: bool | None = None
    ) -> dict[Hashable, NdarrayOrTensor]:
        first = self.first_key(dict(data))
        if first != () and self.shift > 0:
            spatial = data[first].shape[1:]
            self.rand_affine.rand_affine_grid.translate_range = tuple(self.shift * float(s) for s in spatial)
        return super().__call__(data, lazy=lazy)


def augmentation_preset(
    keys: KeysCollection,
    mask_keys: KeysCollection = (),
    prob: float = 0.5,
    rotate_range_deg: float = 15.0,
    shift: float = 0.1,
    scale: float = 0.1,
    flips: bool = True,
    spatial_dims: int = 2,
    padding_mode: str = "zeros",
    seed: int | None = None,
) -> Compose:
    """Spatial augmentation for slices (or volumes) and their masks; no intensity jitter.

    The composition is: ``RandFlipd`` on spatial axis 0, ``RandFlipd`` on spatial axis 1 (if
    ``flips``), ``RandRotated`` in the axial plane by up to ``rotate_range_deg`` degrees, and a
    shift-scale ``RandAffined`` (:class:`RandFractionalAffined`: shift up to ``shift`` of the size,
    zoom ``1 +- scale``); the rotation part of shift-scale-rotate is the ``RandRotated`` step. Each
    step fires with probability ``prob``, draws once per sample and applies the same draw to all
    keys, so images and masks stay aligned. Images use bilinear, ``mask_keys`` nearest
    interpolation. Outputs are :class:`~monai.data.MetaTensor`.

    Args:
        keys: image keys.
        mask_keys: mask/label keys (nearest interpolation).
        prob: probability of each step, in [0, 1].
        rotate_range_deg: maximum absolute rotation in degrees, >= 0 (0 drops the step).
        shift: maximum shift as a fraction of the spatial size, in [0, 1) (0 and ``scale=0`` drop
            the affine step).
        scale: maximum relative zoom change, in [0, 1).
        flips: include the two random flips.
        spatial_dims: 2 for slices ``(C, H, W)``, 3 for volumes ``(C, X, Y, Z)`` (rotation about Z).
        padding_mode: MONAI padding mode of rotation/affine: ``"zeros"``, ``"border"`` or ``"reflection"``.
        seed: seed for :meth:`~monai.transforms.Compose.set_random_state` (``None``: not seeded).

    Returns:
        a :class:`monai.transforms.Compose`.

    Raises:
        HemwslInputError: a parameter out of range, no keys, or keys overlapping mask_keys.
    """
    image_keys = tuple(ensure_tuple(keys))
    label_keys = tuple(ensure_tuple(mask_keys)) if mask_keys is not None else ()
    if not image_keys and not label_keys:
        raise HemwslInputError("augmentation_preset needs at least one key in keys or mask_keys")
    overlap = set(image_keys) & set(label_keys)
    if overlap:
        raise HemwslInputError(f"keys and mask_keys must not overlap, both contain {sorted(map(str, overlap))}")
    for name, value, hi in (("prob", prob, 1.0), ("shift", shift, 1.0 - 1e-9), ("scale", scale, 1.0 - 1e-9)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= hi:
            upper = "1]" if name == "prob" else "1)"
            raise HemwslInputError(f"{name} must be a number in [0, {upper}, got {value!r}")
    if isinstance(rotate_range_deg, bool) or not isinstance(rotate_range_deg, (int, float)) or rotate_range_deg < 0:
        raise HemwslInputError(f"rotate_range_deg must be a number >= 0, got {rotate_range_deg!r}")
    if spatial_dims not in (2, 3):
        raise HemwslInputError(f"unknown spatial_dims {spatial_dims!r}; accepted values: 2, 3")
    if padding_mode not in ("zeros", "border", "reflection"):
        raise HemwslInputError(f"unknown padding_mode {padding_mode!r}; accepted values: zeros, border, reflection")

    all_keys = image_keys + label_keys
    modes = tuple("nearest" if k in label_keys else "bilinear" for k in all_keys)
    steps: list = []
    if flips:
        steps.append(RandFlipd(all_keys, prob=prob, spatial_axis=0))
        steps.append(RandFlipd(all_keys, prob=prob, spatial_axis=1))
    if rotate_range_deg > 0:
        angle = math.radians(float(rotate_range_deg))
        rot = {"range_x": angle} if spatial_dims == 2 else {"range_z": angle}
        steps.append(
            RandRotated(all_keys, prob=prob, keep_size=True, mode=modes, padding_mode=padding_mode, **rot)
        )
    if shift > 0 or scale > 0:
        steps.append(
            RandFractionalAffined(
                all_keys,
                shift=float(shift),
                prob=prob,
                scale_range=tuple(float(scale) for _ in range(spatial_dims)) if scale > 0 else None,
                mode=modes,
                padding_mode=padding_mode,
            )
        )
    compose = Compose(steps)
    if seed is not None:
        compose.set_random_state(seed=int(seed))
    return compose


WindowD = WindowDict = Windowd
MultiWindowD = MultiWindowDict = MultiWindowd
SliceStackD = SliceStackDict = SliceStackd
SkullStripD = SkullStripDict = SkullStripd
HistogramEqualizeD = HistogramEqualizeDict = HistogramEqualized
