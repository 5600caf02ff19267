"""Array transforms for head CT: windowing, 2.5D slice stacking, skull stripping, equalisation.

Every transform takes channel-first data as MONAI does -- ``(C, H, W)`` for a slice,
``(C, X, Y, Z)`` for a volume (``Z`` axial) -- either as a :class:`numpy.ndarray` or a
:class:`torch.Tensor` (including :class:`monai.data.MetaTensor`) and returns the same type
(and device). Bad arguments raise :class:`hemwsl.errors.HemwslInputError` when the transform is
built, naming the argument and the accepted values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.config import DtypeLike, NdarrayOrTensor
from monai.data import MetaTensor
from monai.transforms import Transform
from monai.transforms.utils_pytorch_numpy_unification import clip as _clip
from monai.transforms.utils_pytorch_numpy_unification import concatenate as _concatenate
from monai.utils import convert_data_type, convert_to_dst_type
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from hemwsl.constants import WINDOWS
from hemwsl.errors import HemwslInputError

__all__ = [
    "WindowSpec",
    "resolve_window",
    "Window",
    "MultiWindow",
    "stack_indices",
    "SliceStack",
    "SkullStrip",
    "HistogramEqualize",
    "HISTOGRAM_METHODS",
]

#: A CT window: a name from :data:`hemwsl.constants.WINDOWS` or a ``(level, width)`` pair in HU.
WindowSpec = str | tuple[float, float]

#: Methods accepted by :class:`HistogramEqualize`.
HISTOGRAM_METHODS: tuple[str, ...] = ("global", "clahe")


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _check_array(img: Any, name: str = "img", min_dim: int = 3, max_dim: int = 4) -> None:
    """Raise unless ``img`` is a channel-first numpy array or tensor with ``min_dim..max_dim`` dims."""
    if not isinstance(img, (np.ndarray, torch.Tensor)):
        raise HemwslInputError(f"{name} must be a numpy array or a torch tensor, got {type(img).__name__}")
    if not min_dim <= img.ndim <= max_dim:
        shapes = {3: "(C, H, W)", 4: "(C, X, Y, Z)"}
        accepted = " or ".join(shapes[d] for d in range(min_dim, max_dim + 1) if d in shapes)
        raise HemwslInputError(f"{name} must be channel-first {accepted}, got shape {tuple(img.shape)}")


def _check_finite_number(name: str, value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise HemwslInputError(f"{name} must be a number, got {value!r}") from err
    if not math.isfinite(out):
        raise HemwslInputError(f"{name} must be finite, got {value!r}")
    return out


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise HemwslInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise HemwslInputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _to_numpy(img: NdarrayOrTensor, dtype: DtypeLike = None) -> np.ndarray:
    """Plain numpy copy-or-view of ``img`` (MetaTensor and CUDA tensors included)."""
    if isinstance(img, MetaTensor):
        img = img.as_tensor()
    out = convert_data_type(img, output_type=np.ndarray, dtype=dtype)[0]
    return np.asarray(out)


def _spatial_axis(axis: int, spatial_dims: int, name: str = "axis") -> int:
    """Normalise a spatial axis (``-1`` = last) to ``0..spatial_dims-1``."""
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise HemwslInputError(f"{name} must be an integer in [-{spatial_dims}, {spatial_dims - 1}], got {axis!r}")
    if not -spatial_dims <= axis < spatial_dims:
        raise HemwslInputError(
            f"{name} must be a spatial axis in [-{spatial_dims}, {spatial_dims - 1}] for data with "
            f"{spatial_dims} spatial dimensions, got {axis}"
        )
    return int(axis) % spatial_dims


def resolve_window(window: WindowSpec, name: str = "window") -> tuple[float, float]:
    """Return ``(level, width)`` in HU for a window name or a ``(level, width)`` pair.

    Args:
        window: a key of :data:`hemwsl.constants.WINDOWS` (``"brain"``, ``"subdural"``, ...) or a
            ``(level, width)`` pair.
        name: argument name used in error messages.

    Returns:
        ``(level, width)`` as floats.

    Raises:
        HemwslInputError: unknown name, not a pair, or ``width <= 0``.
    """
    if isinstance(window, str):
        if window not in WINDOWS:
            raise HemwslInputError(
                f"unknown {name} {window!r}; accepted values: {', '.join(WINDOWS)} or a (level, width) pair"
            )
        level, width = WINDOWS[window]
    else:
        try:
            level, width = window  # type: ignore[misc]
        except (TypeError, ValueError) as err:
            raise HemwslInputError(
                f"{name} must be one of {', '.join(WINDOWS)} or a (level, width) pair, got {window!r}"
            ) from err
    level = _check_finite_number(f"{name} level", level)
    width = _check_finite_number(f"{name} width", width)
    if width <= 0:
        raise HemwslInputError(f"{name} width must be > 0 HU, got {width}")
    return level, width


# --------------------------------------------------------------------------------------------
# windowing
# --------------------------------------------------------------------------------------------


class Window(Transform):
    """Map the HU range ``[level - width/2, level + width/2]`` linearly to ``[out_min, out_max]``.

    Values outside the window are clipped to ``out_min`` / ``out_max`` (unless ``clip=False``).
    For example the brain window (level 40, width 80) maps 0 HU to 0, 40 HU to 0.5, 80 HU and
    above to 1.

    Args:
        level: window centre in HU; give it with ``width``, or use ``window``.
        width: window width in HU, > 0.
        out_min: output value of the window's lower edge.
        out_max: output value of the window's upper edge, > ``out_min``.
        clip: clip the output to ``[out_min, out_max]``.
        window: instead of ``level``/``width``: a name of :data:`hemwsl.constants.WINDOWS` or a
            ``(level, width)`` pair.
        dtype: output dtype (default float32).

    Raises:
        HemwslInputError: neither or both of ``level``/``width`` and ``window`` given, ``width <= 0``,
            unknown window name, or ``out_max <= out_min``.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        level: float | None = None,
        width: float | None = None,
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        window: WindowSpec | None = None,
        dtype: DtypeLike = np.float32,
    ) -> None:
        if window is not None:
            if level is not None or width is not None:
                raise HemwslInputError("give either window or level and width, not both")
            self.level, self.width = resolve_window(window)
        else:
            if level is None or width is None:
                raise HemwslInputError(
                    "level and width are required unless window is given "
                    f"(accepted window names: {', '.join(WINDOWS)})"
                )
            self.level, self.width = resolve_window((level, width), name="level/width")
        self.out_min = _check_finite_number("out_min", out_min)
        self.out_max = _check_finite_number("out_max", out_max)
        if self.out_max <= self.out_min:
            raise HemwslInputError(f"out_max must be > out_min, got out_min={out_min}, out_max={out_max}")
        self.clip = bool(clip)
        self.dtype = dtype

    @classmethod
    def from_name(
        cls, name: str, out_min: float = 0.0, out_max: float = 1.0, clip: bool = True, dtype: DtypeLike = np.float32
    ) -> Window:
        """Build the window named ``name`` in :data:`hemwsl.constants.WINDOWS` (e.g. ``"brain"``)."""
        return cls(window=name, out_min=out_min, out_max=out_max, clip=clip, dtype=dtype)

    @property
    def bounds(self) -> tuple[float, float]:
        """The HU interval ``(level - width/2, level + width/2)`` mapped to ``(out_min, out_max)``."""
        return self.level - self.width / 2.0, self.level + self.width / 2.0

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Window ``img`` (any shape, HU) and return it as ``dtype``, same type as the input."""
        if not isinstance(img, (np.ndarray, torch.Tensor)):
            raise HemwslInputError(f"img must be a numpy array or a torch tensor, got {type(img).__name__}")
        lo, _ = self.bounds
        scale = (self.out_max - self.out_min) / self.width
        if isinstance(img, torch.Tensor):
            x = img.to(torch.float64) if not img.is_floating_point() or img.dtype == torch.float16 else img
        else:
            x = img.astype(np.float64) if not np.issubdtype(img.dtype, np.floating) else img
        out = (x - lo) * scale + self.out_min
        if self.clip:
            out = _clip(out, self.out_min, self.out_max)
        return convert_to_dst_type(out, dst=img, dtype=self.dtype)[0]


class MultiWindow(Transform):
    """Stack several windows of the same HU input along the channel axis.

    An input with ``C`` channels gives ``C * len(windows)`` channels, **window-major**: output
    channel ``w * C + c`` is input channel ``c`` under window ``w``. So for a one-channel input and
    ``windows=("brain", "subdural", "bone")`` the output channels are brain, subdural, bone.

    Args:
        windows: window names of :data:`hemwsl.constants.WINDOWS` and/or ``(level, width)`` pairs.
        out_min: output value of each window's lower edge.
        out_max: output value of each window's upper edge.
        clip: clip to ``[out_min, out_max]``.
        dtype: output dtype (default float32).

    Raises:
        HemwslInputError: empty ``windows``, unknown name or a width <= 0.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        windows: Sequence[WindowSpec],
        out_min: float = 0.0,
        out_max: float = 1.0,
        clip: bool = True,
        dtype: DtypeLike = np.float32,
    ) -> None:
        if isinstance(windows, str) or not isinstance(windows, Sequence) or len(windows) == 0:
            raise HemwslInputError(
                f"windows must be a non-empty sequence of window names ({', '.join(WINDOWS)}) "
                f"or (level, width) pairs, got {windows!r}"
            )
        self.windows = [
            Window(
                *resolve_window(w, name=f"windows[{i}]"), out_min=out_min, out_max=out_max, clip=clip, dtype=dtype
            )
            for i, w in enumerate(windows)
        ]

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return ``(C * len(windows), ...)`` from a channel-first ``(C, ...)`` HU input."""
        _check_array(img, min_dim=2, max_dim=4)
        return _concatenate([w(img) for w in self.windows], axis=0)


# --------------------------------------------------------------------------------------------
# 2.5D slice stacking
# --------------------------------------------------------------------------------------------


def stack_indices(z: int, num_slices: int, depth: int) -> list[int]:
    """Slice indices ``z - k .. z + k`` (``k = num_slices // 2``), clamped to ``[0, depth - 1]``.

    Edge slices are replicated: ``stack_indices(0, 3, 10) == [0, 0, 1]`` and
    ``stack_indices(9, 3, 10) == [8, 9, 9]``.

    Args:
        z: centre slice index, ``0 <= z < depth``.
        num_slices: odd number of slices, >= 1.
        depth: number of slices in the volume, >= 1.

    Returns:
        ``num_slices`` indices in increasing order.

    Raises:
        HemwslInputError: even or non-positive ``num_slices``, ``depth < 1`` or ``z`` out of range.
    """
    num_slices = _check_int("num_slices", num_slices, 1)
    if num_slices % 2 == 0:
        raise HemwslInputError(f"num_slices must be odd (1, 3, 5, ...), got {num_slices}")
    depth = _check_int("depth", depth, 1)
    if isinstance(z, torch.Tensor) and z.numel() == 1:
        z = int(z.item())
    elif isinstance(z, np.ndarray) and z.size == 1:
        z = int(z.item())
    if isinstance(z, bool) or not isinstance(z, (int, np.integer)):
        raise HemwslInputError(f"slice index must be an integer in [0, {depth - 1}], got {z!r}")
    z = int(z)
    if not 0 <= z < depth:
        raise HemwslInputError(f"slice index must be in [0, {depth - 1}] for a volume of depth {depth}, got {z}")
    half = num_slices // 2
    return [min(max(i, 0), depth - 1) for i in range(z - half, z + half + 1)]


class SliceStack(Transform):
    """Cut a 2.5D input around slice ``index`` of a channel-first volume.

    From a volume ``(C, X, Y, Z)`` (stacking along ``axis``, by default the last spatial axis)
    return ``(C * num_slices, X, Y)``, channel-major: output channel ``c * num_slices + s`` is
    input channel ``c`` at slice ``stack_indices(index, num_slices, depth)[s]``. Edge slices are
    replicated. A :class:`~monai.data.MetaTensor` keeps its metadata; its affine is changed to
    the affine of the cut slice (the stacked axis moved last, origin at slice ``index``).

    Args:
        num_slices: odd number of slices, >= 1.
        axis: spatial axis to stack along (``-1``/``2`` = Z, axial).

    Raises:
        HemwslInputError: even ``num_slices`` or a bad ``axis``.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(self, num_slices: int = 3, axis: int = -1) -> None:
        stack_indices(0, num_slices, 1)  # validates num_slices
        self.num_slices = int(num_slices)
        self.axis = _spatial_axis(axis, 3)

    def __call__(self, img: NdarrayOrTensor, index: int) -> NdarrayOrTensor:
        """Return the ``(C * num_slices, ...)`` stack centred on slice ``index``."""
        return self.cut(img, index, self.num_slices)

    def cut(self, img: NdarrayOrTensor, index: int, num_slices: int) -> NdarrayOrTensor:
        """Stack ``num_slices`` slices around ``index``; ``num_slices=1`` gives the centre slice ``(C, X, Y)``."""
        _check_array(img, name="volume", min_dim=4, max_dim=4)
        depth = int(img.shape[1 + self.axis])
        idx = stack_indices(index, num_slices, depth)
        ax = 1 + self.axis
        if isinstance(img, torch.Tensor):
            src = img.as_tensor() if isinstance(img, MetaTensor) else img
            sel = torch.index_select(src, ax, torch.as_tensor(idx, device=src.device))  # (C, ..., S, ...)
            sel = torch.movedim(sel, ax, 1)  # (C, S, a, b)
        else:
            sel = np.moveaxis(np.take(img, idx, axis=ax), ax, 1)
        out = sel.reshape((sel.shape[0] * num_slices,) + tuple(sel.shape[2:]))
        if isinstance(img, MetaTensor):
            meta_out = MetaTensor(out, meta=dict(img.meta))
            meta_out.affine = self._slice_affine(img.affine, int(index))
            return meta_out
        return out

    def _slice_affine(self, affine: torch.Tensor, index: int) -> torch.Tensor:
        """Affine of the cut: in-plane columns first, stacked axis last, origin at ``index``."""
        aff = torch.as_tensor(affine, dtype=torch.float64).clone()
        if aff.shape != (4, 4):
            return aff
        out = aff.clone()
        out[:3, 3] = aff[:3, 3] + aff[:3, self.axis] * index
        order = [a for a in range(3) if a != self.axis] + [self.axis]
        out[:3, :3] = aff[:3, order]
        return out


# --------------------------------------------------------------------------------------------
# skull stripping
# --------------------------------------------------------------------------------------------


def _bilateral_numpy(img: np.ndarray, radius: int, sigma_color: float, sigma_spatial: float) -> np.ndarray:
    """Small bilateral filter (square window of side ``2 * radius + 1``), edge pixels replicated."""
    if radius <= 0:
        return img.astype(np.float32, copy=True)
    pad = np.pad(img, radius, mode="edge")
    h, w = img.shape
    num = np.zeros((h, w), dtype=np.float64)
    den = np.zeros((h, w), dtype=np.float64)
    inv_c = -0.5 / (sigma_color**2)
    inv_s = -0.5 / (sigma_spatial**2)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if dy * dy + dx * dx > radius * radius:
                continue
            nb = pad[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
            wgt = np.exp(inv_s * (dy * dy + dx * dx) + inv_c * (nb - img) ** 2)
            num += wgt * nb
            den += wgt
    return (num / den).astype(np.float32)


def _bilateral(img: np.ndarray, radius: int, sigma_color: float, sigma_spatial: float) -> np.ndarray:
    """Bilateral filter of a 2D float slice: OpenCV when installed, else a numpy implementation."""
    img = np.ascontiguousarray(img, dtype=np.float32)
    if radius <= 0:
        return img.copy()
    try:
        import cv2
    except ImportError:  # pragma: no cover - opencv is a declared dependency
        return _bilateral_numpy(img, radius, sigma_color, sigma_spatial)
    return cv2.bilateralFilter(img, d=2 * radius + 1, sigmaColor=sigma_color, sigmaSpace=sigma_spatial)


def _convex_hull_mask(points_mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of the ``True`` pixels of a 2D mask (pixel centres; empty if collinear)."""
    out = np.zeros(points_mask.shape, dtype=bool)
    rows = np.flatnonzero(points_mask.any(axis=1))
    if rows.size < 2:
        return out
    sub = points_mask[rows]
    first = sub.argmax(axis=1)
    last = sub.shape[1] - 1 - sub[:, ::-1].argmax(axis=1)
    # the leftmost and rightmost pixel of each row span the same hull as all pixels
    pts = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(np.float64)
    pts = np.unique(pts, axis=0)
    if len(pts) < 3:
        return out
    try:
        hull = ConvexHull(pts)
    except QhullError:  # collinear pixels: no area
        return out
    verts = pts[hull.vertices]
    r0, c0 = verts[:, 0], verts[:, 1]
    r1, c1 = np.roll(r0, -1), np.roll(c0, -1)
    rr = np.arange(int(rows[0]), int(rows[-1]) + 1, dtype=np.float64)[:, None]
    dr = r1 - r0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (rr - r0) / dr
        cc = c0 + t * (c1 - c0)
    valid = (dr != 0) & (t >= -1e-9) & (t <= 1 + 1e-9)
    # horizontal edges lie on one row: both end points count
    horiz = (dr == 0) & (rr == r0)
    lo = np.min(np.where(valid, cc, np.inf), axis=1)
    hi = np.max(np.where(valid, cc, -np.inf), axis=1)
    lo = np.minimum(lo, np.min(np.where(horiz, np.minimum(c0, c1), np.inf), axis=1))
    hi = np.maximum(hi, np.max(np.where(horiz, np.maximum(c0, c1), -np.inf), axis=1))
    cols = np.arange(points_mask.shape[1], dtype=np.float64)[None, :]
    inside = (cols >= np.ceil(lo - 1e-6)[:, None]) & (cols <= np.floor(hi + 1e-6)[:, None])
    out[int(rows[0]) : int(rows[-1]) + 1] = inside
    return out


def _largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n <= 1:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


class SkullStrip(Transform):
    """Brain mask of head CT (HU) by bone thresholding and convex hull, slice by slice.

    For each channel of a slice ``(C, H, W)`` or volume ``(C, X, Y, Z)``:

    1. each axial slice is smoothed with an edge-preserving bilateral filter (OpenCV);
    2. head voxels are those above ``max(head_hu, minimum + 0.5)`` HU -- the second term handles
       data clipped at the bottom (the CT-ICH copy is clipped to [-20, 100] HU, air is -20);
    3. bone is every voxel ``>=`` the ``bone_percentile`` percentile of the head voxels of the whole
       input (slice or volume), clamped to ``[min_bone_hu, max_bone_hu]``; ``>=`` keeps saturated
       data (bone stored as exactly 100 HU) working, the upper clamp keeps the less dense part of
       the skull (below the percentile on unclipped data) out of the brain;
    4. per axial slice, the head is the largest connected component of the head voxels (this
       drops the scanner table); the brain is the head tissue inside the convex hull of the head's
       bone pixels and not bone, eroded by ``erosion_iterations``, reduced to its largest connected component,
       with holes filled. Slices without bone give an empty mask.

    Args:
        bone_percentile: percentile (0-100) of the head voxels used as bone threshold.
        min_bone_hu: lower bound of the bone threshold in HU (``None``: no bound). Keeps slices
            without bone (percentile within soft tissue) from being split at a soft-tissue value.
        max_bone_hu: upper bound of the bone threshold in HU (``None``: no bound).
        head_hu: voxels at or below this HU are air/background.
        sigma_color: bilateral filter range sigma in HU.
        sigma_spatial: bilateral filter spatial sigma in pixels.
        filter_radius: bilateral window radius in pixels (``0`` disables the filter).
        erosion_iterations: iterations of binary erosion (3x3 cross) of the brain region.
        axis: axial (slice) spatial axis of a volume.

    Returns (from ``__call__``):
        a ``uint8`` mask, 1 = brain, with the same shape and type as the input.

    Raises:
        HemwslInputError: a parameter out of range.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        bone_percentile: float = 95.0,
        min_bone_hu: float | None = 95.0,
        max_bone_hu: float | None = 300.0,
        head_hu: float = -500.0,
        sigma_color: float = 20.0,
        sigma_spatial: float = 2.0,
        filter_radius: int = 2,
        erosion_iterations: int = 1,
        axis: int = -1,
    ) -> None:
        self.bone_percentile = _check_finite_number("bone_percentile", bone_percentile)
        if not 0.0 < self.bone_percentile <= 100.0:
            raise HemwslInputError(f"bone_percentile must be in (0, 100], got {bone_percentile}")
        self.min_bone_hu = None if min_bone_hu is None else _check_finite_number("min_bone_hu", min_bone_hu)
        self.max_bone_hu = None if max_bone_hu is None else _check_finite_number("max_bone_hu", max_bone_hu)
        if self.min_bone_hu is not None and self.max_bone_hu is not None and self.max_bone_hu < self.min_bone_hu:
            raise HemwslInputError(f"max_bone_hu must be >= min_bone_hu, got {max_bone_hu} < {min_bone_hu}")
        self.head_hu = _check_finite_number("head_hu", head_hu)
        self.sigma_color = _check_finite_number("sigma_color", sigma_color)
        self.sigma_spatial = _check_finite_number("sigma_spatial", sigma_spatial)
        if self.sigma_color <= 0 or self.sigma_spatial <= 0:
            raise HemwslInputError(
                f"sigma_color and sigma_spatial must be > 0, got sigma_color={sigma_color}, "
                f"sigma_spatial={sigma_spatial}"
            )
        self.filter_radius = _check_int("filter_radius", filter_radius, 0)
        self.erosion_iterations = _check_int("erosion_iterations", erosion_iterations, 0)
        self.axis = _spatial_axis(axis, 3)

    def __call__(self, img: NdarrayOrTensor) -> NdarrayOrTensor:
        """Return the ``uint8`` brain mask of ``img`` (HU), same shape and type as ``img``."""
        _check_array(img)
        arr = _to_numpy(img, dtype=np.float32)
        out = np.zeros(arr.shape, dtype=np.uint8)
        for c in range(arr.shape[0]):
            out[c] = self.mask_channel(arr[c])
        return convert_to_dst_type(out, dst=img, dtype=np.uint8 if isinstance(img, np.ndarray) else torch.uint8)[0]

    def mask_channel(self, vol: np.ndarray) -> np.ndarray:
        """Brain mask (bool) of one channel: a 2D slice ``(H, W)`` or a volume ``(X, Y, Z)``."""
        vol = np.asarray(vol, dtype=np.float32)
        if vol.ndim == 2:
            slices = vol[None]
        elif vol.ndim == 3:
            slices = np.moveaxis(vol, self.axis, 0)
        else:
            raise HemwslInputError(f"a channel must be 2D (H, W) or 3D (X, Y, Z), got shape {vol.shape}")
        out = np.zeros(slices.shape, dtype=bool)
        finite = np.isfinite(slices)
        if not finite.any():
            return out[0] if vol.ndim == 2 else np.moveaxis(out, 0, self.axis)
        vmin = float(slices[finite].min())
        clean = np.where(finite, slices, vmin).astype(np.float32)
        filtered = np.stack([_bilateral(s, self.filter_radius, self.sigma_color, self.sigma_spatial) for s in clean])
        head_thr = max(self.head_hu, vmin + 0.5)
        head = filtered > head_thr
        if head.any():
            bone_thr = float(np.percentile(filtered[head], self.bone_percentile))
            if self.min_bone_hu is not None:
                bone_thr = max(bone_thr, self.min_bone_hu)
            if self.max_bone_hu is not None:
                bone_thr = min(bone_thr, self.max_bone_hu)
            bone_thr -= 1e-3 + 1e-5 * abs(bone_thr)  # float noise of the filter on saturated data
            bone = filtered >= bone_thr
            for k in range(slices.shape[0]):
                out[k] = self._brain_slice(bone[k], head[k])
        return out[0] if vol.ndim == 2 else np.moveaxis(out, 0, self.axis)

    def _brain_slice(self, bone: np.ndarray, head: np.ndarray) -> np.ndarray:
        if not bone.any():
            return np.zeros(bone.shape, dtype=bool)
        # keep the head only: drops the scanner table / head rest, which is bone-dense but apart
        head = _largest_component(head)
        bone = bone & head
        if not bone.any():
            return np.zeros(bone.shape, dtype=bool)
        hull = _convex_hull_mask(bone)
        brain = hull & ~bone & head
        if self.erosion_iterations > 0 and brain.any():
            brain = ndimage.binary_erosion(brain, iterations=self.erosion_iterations)
        if not brain.any():
            return brain
        brain = _largest_component(brain)
        return ndimage.binary_fill_holes(brain)


# --------------------------------------------------------------------------------------------
# histogram equalisation
# --------------------------------------------------------------------------------------------


def _equalize(values: np.ndarray, ref: np.ndarray, num_bins: int) -> np.ndarray:
    """Map ``values`` to the normalised cumulative histogram of ``ref`` at their bin.

    ``num_bins`` equal bins span ``[ref.min(), ref.max()]``; a value in bin ``k`` maps to
    ``(cdf[k] - cdf_min) / (n - cdf_min)``, where ``cdf_min`` is the count up to the first occupied
    bin and ``n`` the number of reference values, so the darkest bin maps to 0 and the brightest to
    1. Values below / above the reference range map to 0 / 1.
    """
    out = np.zeros(values.shape, dtype=np.float64)
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return out
    lo, hi = float(ref.min()), float(ref.max())
    if hi <= lo:
        return out
    hist, edges = np.histogram(ref, bins=num_bins, range=(lo, hi))
    cdf = np.cumsum(hist, dtype=np.float64)
    cdf_min = cdf[np.flatnonzero(hist)[0]]
    total = cdf[-1]
    if total <= cdf_min:
        return out
    lut = np.clip((cdf - cdf_min) / (total - cdf_min), 0.0, 1.0)
    vals = np.nan_to_num(values, nan=lo)
    idx = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, num_bins - 1)
    out = lut[idx]
    out[vals < lo] = 0.0
    out[vals > hi] = 1.0
    return out


class HistogramEqualize(Transform):
    """Histogram equalisation of a (windowed, [0, 1]) image, per channel.

    ``method="global"``: each value is mapped to the cumulative histogram, at its bin, of the
    reference voxels -- all voxels, or those where ``mask`` is non-zero -- with ``num_bins`` equal
    bins over the reference range, normalised so the darkest occupied bin maps to 0 and the
    brightest to 1 (values outside the reference range map to 0 / 1). For example values
    ``0, 0, 0, 0, 0, 1/3, 2/3, 1`` with 4 bins become ``0, 0, 0, 0, 0, 1/3, 2/3, 1`` and values
    ``0, 1/3, 1/3, 1/3, 1/3, 2/3, 2/3, 1`` become ``0, 4/7, 4/7, 4/7, 4/7, 6/7, 6/7, 1``. The
    mapping is monotone non-decreasing and applied to every voxel.

    ``method="clahe"``: contrast limited adaptive equalisation
    (:func:`skimage.exposure.equalize_adapthist`), after rescaling each channel to [0, 1];
    ``mask`` is not supported.

    With ``per_slice=True`` a volume ``(C, X, Y, Z)`` is equalised axial slice by axial slice
    (along ``axis``); otherwise as a whole. A 2D input ``(C, H, W)`` is a single slice.

    Args:
        num_bins: number of histogram bins, >= 2.
        mask: default reference mask (broadcastable to the input); ``__call__``'s ``mask`` wins.
        per_slice: equalise each axial slice separately.
        method: ``"global"`` or ``"clahe"``.
        clip_limit: CLAHE clip limit in (0, 1].
        kernel_size: CLAHE tile size (``None``: 1/8 of each dimension).
        axis: axial spatial axis of a volume.
        dtype: output dtype (default float32).

    Raises:
        HemwslInputError: unknown ``method``, ``num_bins < 2``, a mask with ``"clahe"``, or
            scikit-image missing for ``"clahe"``.
    """

    backend = [torch.Tensor, np.ndarray]

    def __init__(
        self,
        num_bins: int = 256,
        mask: NdarrayOrTensor | None = None,
        per_slice: bool = False,
        method: str = "global",
        clip_limit: float = 0.01,
        kernel_size: int | Sequence[int] | None = None,
        axis: int = -1,
        dtype: DtypeLike = np.float32,
    ) -> None:
        self.num_bins = _check_int("num_bins", num_bins, 2)
        if method not in HISTOGRAM_METHODS:
            raise HemwslInputError(f"unknown method {method!r}; accepted values: {', '.join(HISTOGRAM_METHODS)}")
        self.method = method
        if method == "clahe":
            if mask is not None:
                raise HemwslInputError("mask is only supported with method='global', not 'clahe'")
            try:
                import skimage.exposure  # noqa: F401
            except ImportError as err:  # pragma: no cover
                raise HemwslInputError("method='clahe' needs scikit-image; install it or use method='global'") from err
        self.clip_limit = _check_finite_number("clip_limit", clip_limit)
        if not 0.0 < self.clip_limit <= 1.0:
            raise HemwslInputError(f"clip_limit must be in (0, 1], got {clip_limit}")
        self.kernel_size = kernel_size
        self.mask = mask
        self.per_slice = bool(per_slice)
        self.axis = _spatial_axis(axis, 3)
        self.dtype = dtype

    def __call__(self, img: NdarrayOrTensor, mask: NdarrayOrTensor | None = None) -> NdarrayOrTensor:
        """Equalise ``img``; ``mask`` (non-zero = reference voxels) overrides the default one."""
        _check_array(img)
        mask = self.mask if mask is None else mask
        if mask is not None and self.method == "clahe":
            raise HemwslInputError("mask is only supported with method='global', not 'clahe'")
        arr = _to_numpy(img, dtype=np.float64)
        msk = None
        if mask is not None:
            m = _to_numpy(mask) != 0
            try:
                msk = np.broadcast_to(m, arr.shape)
            except ValueError as err:
                raise HemwslInputError(
                    f"mask of shape {tuple(m.shape)} does not broadcast to the image shape {tuple(arr.shape)}"
                ) from err
        out = np.zeros(arr.shape, dtype=np.float64)
        for c in range(arr.shape[0]):
            chan = arr[c]
            mch = None if msk is None else msk[c]
            if self.per_slice and chan.ndim == 3:
                ax = self.axis
                for k in range(chan.shape[ax]):
                    sl = [slice(None)] * 3
                    sl[ax] = k  # type: ignore[call-overload]
                    out[c][tuple(sl)] = self._equalize_one(chan[tuple(sl)], None if mch is None else mch[tuple(sl)])
            else:
                out[c] = self._equalize_one(chan, mch)
        return convert_to_dst_type(out, dst=img, dtype=self.dtype)[0]

    def _equalize_one(self, x: np.ndarray, m: np.ndarray | None) -> np.ndarray:
        if self.method == "global":
            ref = x if m is None else x[m]
            return _equalize(x, ref, self.num_bins)
        from skimage.exposure import equalize_adapthist

        x = np.nan_to_num(x)
        lo, hi = float(x.min()), float(x.max())
        if hi <= lo:
            return np.zeros(x.shape, dtype=np.float64)
        scaled = (x - lo) / (hi - lo)
        kernel = self.kernel_size
        if kernel is not None and not isinstance(kernel, int):
            kernel = tuple(kernel)[: x.ndim]
        res = equalize_adapthist(scaled, kernel_size=kernel, clip_limit=self.clip_limit, nbins=self.num_bins)
        return np.clip(res, 0.0, 1.0)
