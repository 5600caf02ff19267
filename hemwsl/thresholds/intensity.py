"""Intensity prior: acute blood is hyperdense, so keep only voxels in a HU range, optionally with a CAM threshold."""

from __future__ import annotations

from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.thresholds.base import ThresholdStrategy
from hemwsl.thresholds.fixed import FixedThreshold

__all__ = ["BLOOD_HU_RANGE", "BRAIN_REFERENCE_HU", "IntensityPrior", "brain_reference_hu", "calibrate_hu",
           "check_hu_reference", "hu_reference_text", "same_hu_reference", "touched_components"]

#: Default hyperdense (acute) blood range in HU, inclusive: clotted blood is about 50-90 HU, above grey
#: matter (~35-45 HU) and below calcification and bone.
BLOOD_HU_RANGE: tuple[float, float] = (45.0, 90.0)

#: The brain's HU of a typical scan, as :func:`brain_reference_hu` measures it: the median over the 55 CT-ICH scans
#: (their per-scan values run from 24 to 41 HU; 37 for the median scan).
BRAIN_REFERENCE_HU: float = 37.0

#: Voxels of the brain mask that count for :func:`brain_reference_hu` (soft tissue: CSF, clipped air and bone out).
_SOFT_TISSUE_HU: tuple[float, float] = (0.0, 80.0)
_MIN_BRAIN_VOXELS = 1000


def brain_reference_hu(hu: np.ndarray, brain: np.ndarray) -> float | None:
    """The scan's brain HU: the median of the voxels of ``brain`` (the skull strip of the whole volume, not eroded)
    between 0 and 80 HU; ``None`` when fewer than 1,000 such voxels (no brain found)."""
    hu = np.asarray(hu)
    brain = np.asarray(brain, dtype=bool)
    if hu.shape != brain.shape:
        raise HemwslInputError(f"brain_reference_hu: CT {hu.shape} and brain mask {brain.shape} differ in shape")
    v = hu[brain]
    v = v[(v >= _SOFT_TISSUE_HU[0]) & (v <= _SOFT_TISSUE_HU[1])]
    if v.size < _MIN_BRAIN_VOXELS:
        return None
    return float(np.median(v))


def _one_hu(value: Any, name: str) -> float:
    if isinstance(value, (bool, np.bool_)):
        raise HemwslInputError(f"{name} must be a number of HU (e.g. {BRAIN_REFERENCE_HU:g}), got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise HemwslInputError(f"{name} must be a number of HU (e.g. {BRAIN_REFERENCE_HU:g}), got {value!r}") from None
    if not np.isfinite(out) or not -100.0 <= out <= 200.0:
        raise HemwslInputError(f"{name} must be a brain HU between -100 and 200 (e.g. {BRAIN_REFERENCE_HU:g}), got {value!r}")
    return out


def check_hu_reference(value: Any, name: str = "hu_reference") -> float | tuple[float, float] | None:
    """``value`` as the calibration :func:`calibrate_hu` takes, or one line naming ``name``.

    ``None`` stays ``None`` (no calibration); a number (or a one-element list, as a command line gives it) is the
    brain HU every scan is shifted to; two numbers ``[low, high]`` (``low <= high``) are a band the brain is shifted
    into: a scan whose brain reads below ``low`` is raised to ``low``, one above ``high`` lowered to ``high``, and
    one in between left as stored (``[-100, 37]`` lowers the denser scans only). A band of equal ends is that
    number. A boolean is not a number of HU.
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple, np.ndarray)):
        values = list(np.asarray(value, dtype=object).ravel()) if isinstance(value, np.ndarray) else list(value)
        if len(values) not in (1, 2):
            raise HemwslInputError(f"{name} must be one brain HU or a band of two (low high), got {len(values)} "
                                   f"values: {value!r}")
        ends = [_one_hu(v, name) for v in values]
        if len(ends) == 1 or ends[0] == ends[1]:
            return ends[0]
        if ends[0] > ends[1]:
            raise HemwslInputError(f"{name} band must be low <= high, got {value!r}")
        return (ends[0], ends[1])
    return _one_hu(value, name)


def hu_reference_text(reference: float | tuple[float, float] | None) -> str:
    """``reference`` (:func:`check_hu_reference`) for a report or a file name: ``37``, ``-100..37``, ``none``."""
    reference = check_hu_reference(reference)
    if reference is None:
        return "none"
    if isinstance(reference, tuple):
        return f"{reference[0]:g}..{reference[1]:g}"
    return f"{reference:g}"


def same_hu_reference(a: Any, b: Any) -> bool:
    """Whether two recorded calibrations (a number, a band as a list or a tuple, or ``None``) are the same."""
    return check_hu_reference(a) == check_hu_reference(b)


def calibrate_hu(hu: np.ndarray, brain: np.ndarray, reference: Any = BRAIN_REFERENCE_HU
                 ) -> tuple[np.ndarray, float]:
    """``(hu - shift, shift)``: the scan shifted so that its brain reads ``reference`` HU (:func:`brain_reference_hu`).

    ``reference`` may also be a band ``(low, high)`` (:func:`check_hu_reference`): the brain is shifted into it, to
    the nearer end, and a scan whose brain already reads inside it is left as stored. ``(-100, 37)`` lowers the
    denser scans only: their cortex is what a fixed range wrongly takes in, while a paler scan's blood is paler too
    and raising it can bring its cortex up into the range.

    Scanners and protocols differ by several HU: on CT-ICH the brain's median runs from 24 to 41 HU between scans.
    A fixed blood range (50-90 HU) then takes in the grey matter of the denser scans, along the whole cortex, and
    loses the blood of the paler ones. Shifted this way, the range means the same tissue in every scan: 50 HU is
    the brain's HU + 13. The shift is 0 when ``reference`` is ``None`` or no brain is found. Only the intensity
    prior sees the shifted HU; the networks' inputs are unchanged.

    Raises:
        HemwslInputError: ``reference`` is not a brain HU (:func:`check_hu_reference`), or (with a reference) the CT
            is empty or holds NaN/inf voxels (its brain HU would be undefined).
    """
    if reference is not None and not isinstance(reference, (int, float, np.integer, np.floating, list, tuple,
                                                            np.ndarray)):
        raise HemwslInputError(f"reference must be a number of HU (e.g. {BRAIN_REFERENCE_HU:g}), a band of two or "
                               f"None, got {reference!r}")
    reference = check_hu_reference(reference, "reference")
    hu = np.asarray(hu, dtype=np.float32)
    if reference is None:
        return hu, 0.0
    if hu.size == 0:
        raise HemwslInputError(f"calibrate_hu: an empty CT (shape {hu.shape})")
    bad = int(hu.size - np.count_nonzero(np.isfinite(hu)))
    if bad:
        raise HemwslInputError(f"calibrate_hu: the CT holds {bad} NaN/inf voxel(s)")
    ref = brain_reference_hu(hu, brain)
    if ref is None:
        return hu, 0.0
    target = float(np.clip(ref, *reference)) if isinstance(reference, tuple) else float(reference)
    shift = ref - target
    return (hu - np.float32(shift)).astype(np.float32, copy=False), shift


def touched_components(region: np.ndarray, seeds: np.ndarray, min_size: int = 0) -> np.ndarray:
    """The connected components of ``region`` (full connectivity; those under ``min_size`` pixels dropped
    first, by :func:`~hemwsl.thresholds.postprocess.remove_small_components`) that hold at least one ``seeds``
    pixel, kept whole."""
    from scipy import ndimage

    from hemwsl.thresholds.postprocess import nonzero_box, remove_small_components

    r = remove_small_components(np.asarray(region, dtype=bool), min_size)
    out = np.zeros_like(r)
    if not r.any():
        return out
    box = nonzero_box(r)
    labels, n = ndimage.label(r[box], structure=ndimage.generate_binary_structure(r.ndim, r.ndim))
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(labels[np.asarray(seeds, dtype=bool)[box]])] = True
    keep[0] = False
    out[box] = keep[labels]
    return out


class IntensityPrior(ThresholdStrategy):
    """Keep the voxels with ``low <= HU <= high`` (inside the brain mask), optionally combined with a CAM mask.

    Args:
        hu_range: inclusive ``(low, high)`` range in HU (default :data:`BLOOD_HU_RANGE`).
        cam: CAM thresholding to combine with: a :class:`ThresholdStrategy`, or a number ``t`` meaning
            ``FixedThreshold(t, normalisation="minmax")``; ``None`` uses the prior alone (no heatmap needed).
        combine: ``"and"`` (blood range *and* CAM foreground, the usual refinement), ``"or"``, or
            ``"components"``: the prior's connected components (per slice, full connectivity, inside the
            brain mask, those under ``min_size`` dropped first) that the CAM foreground touches, kept
            whole. The heatmap then only chooses *which* hyperdense regions are blood; their boundaries
            come from the CT (the lever measured in the project's prior-ceiling analysis: choosing whole
            prior components is worth more than cutting them at a coarse heatmap's edge).
        min_size, restrict_to_brain, per_sample: see :class:`~hemwsl.thresholds.base.ThresholdStrategy`
            (applied after combining).

    Call: ``prior(heatmap, image_hu=hu, brain=brain)`` (``heatmap`` may be ``None`` without ``cam``);
    ``image_hu`` is required and must be in Hounsfield units, not windowed.
    """

    name = "intensity"

    def __init__(
        self,
        hu_range: tuple[float, float] = BLOOD_HU_RANGE,
        cam: ThresholdStrategy | float | None = None,
        combine: str = "and",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        low, high = (float(v) for v in hu_range)
        if not low <= high:
            raise HemwslInputError(f"hu_range must be (low, high) with low <= high, got {hu_range}")
        check_choice("combine", combine, ("and", "or", "components"))
        if combine == "components" and cam is None:
            raise HemwslInputError("combine='components' needs a cam strategy (the heatmap chooses the components)")
        if cam is not None and not isinstance(cam, ThresholdStrategy):
            cam = FixedThreshold(float(cam), normalisation="minmax")
        if isinstance(cam, ThresholdStrategy) and cam.per_sample:
            raise HemwslInputError("give the cam strategy per_sample=False; set per_sample on IntensityPrior")
        self.hu_range = (low, high)
        self.cam = cam
        self.combine = combine
        self.needs_heatmap = cam is not None

    def _mask(self, heatmap: np.ndarray | None, image_hu: np.ndarray | None, brain: np.ndarray | None) -> np.ndarray:
        if image_hu is None:
            raise HemwslInputError("IntensityPrior needs image_hu (the CT in Hounsfield units)")
        low, high = self.hu_range
        mask = (image_hu >= low) & (image_hu <= high)
        if self.cam is not None:
            cam_mask = np.asarray(self.cam(heatmap, image_hu=image_hu, brain=brain), dtype=bool)
            if self.combine == "components":
                mask = touched_components(mask if brain is None or not self.restrict_to_brain else mask & brain,
                                          cam_mask, self.min_size)
            else:
                mask = (mask & cam_mask) if self.combine == "and" else (mask | cam_mask)
        return mask

    def _params(self) -> dict[str, Any]:
        return {"hu_range": self.hu_range, "cam": self.cam, "combine": self.combine, **super()._params()}
