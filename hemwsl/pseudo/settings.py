"""How a pseudo mask is made, as one value: :class:`PseudoLabelSettings` (mode, threshold, slice context, cluster
selection, K-means and its contrast enhancement, the slice cut, the brain's erosion, the seed, the HU calibration),
instead of a dozen keyword arguments of :func:`hemwsl.pseudo.pseudo_label_volume` and
:func:`hemwsl.pseudo.make_pseudo_labels`. The classifier's input settings are the other value those take
(:class:`hemwsl.data.settings.InputSettings`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError, check_choice

__all__ = ["PSEUDO_MODES", "SELECTIONS", "PseudoLabelSettings", "check_pseudo_params"]

#: Pseudo-label modes: the thresholded CAM, or its K-means cluster chosen by the classifier.
PSEUDO_MODES: tuple[str, ...] = ("cam", "cam_kmeans")
#: How ``cam_kmeans`` picks the cluster.
SELECTIONS: tuple[str, ...] = ("differential", "brightest")


def check_pseudo_params(*, mode: str = "cam_kmeans", select: str = "differential", k: int = 4, context: bool = False,
                        context_slices: int = 3, prob_threshold: float = 0.5, brain_erosion: int = 0,
                        skull_strip: bool = False, enhance: str = "global",
                        enhance_window: str | tuple[float, float] = "brain", component_filter: bool = False) -> None:
    """The settings of :func:`~hemwsl.pseudo.pseudo_label_volume` / :func:`~hemwsl.pseudo.make_pseudo_labels` that
    need no file, checked at once (before a folder records them): raises :class:`HemwslInputError` naming the first
    bad one. (A :class:`PseudoLabelSettings` makes the checks that need neither ``skull_strip`` nor
    ``component_filter`` on construction.)"""
    _check_settings(mode=mode, select=select, k=k, context=context, context_slices=context_slices,
                    prob_threshold=prob_threshold, brain_erosion=brain_erosion, enhance=enhance,
                    enhance_window=enhance_window)
    _check_with_inputs(context=context, brain_erosion=brain_erosion, skull_strip=skull_strip,
                       component_filter=component_filter)


def _check_settings(*, mode: str, select: str, k: int, context: bool, context_slices: int, prob_threshold: float,
                    brain_erosion: int, enhance: str, enhance_window: str | tuple[float, float]) -> None:
    """The checks of :func:`check_pseudo_params` that need neither the input settings nor the component filter
    (those :class:`PseudoLabelSettings` makes on construction)."""
    from hemwsl.pseudo.preprocess import ENHANCEMENTS

    check_choice("mode", mode, PSEUDO_MODES)
    check_choice("select", select, SELECTIONS)
    if mode == "cam_kmeans":
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise HemwslInputError(f"k must be a positive int, got {k!r}")
        check_choice("enhancement", enhance, ENHANCEMENTS)
        from hemwsl.transforms.array import resolve_window

        resolve_window(enhance_window, "enhance_window")
    if context and (isinstance(context_slices, bool) or not isinstance(context_slices, (int, np.integer))
                    or context_slices < 3 or context_slices % 2 == 0):
        raise HemwslInputError(f"context_slices must be an odd number >= 3, got {context_slices}")
    if isinstance(prob_threshold, bool) or not isinstance(prob_threshold, (int, float, np.floating)) \
            or not 0.0 <= prob_threshold <= 1.0:
        raise HemwslInputError(f"prob_threshold must be in [0, 1], got {prob_threshold!r}")
    if int(brain_erosion) < 0:
        raise HemwslInputError(f"brain_erosion must be >= 0 and needs skull_strip=True, got {brain_erosion}")


def _check_with_inputs(*, context: bool, brain_erosion: int, skull_strip: bool, component_filter: bool) -> None:
    """The checks of :func:`check_pseudo_params` that need the input setting ``skull_strip`` or the component
    filter."""
    if brain_erosion and not skull_strip:
        raise HemwslInputError(f"brain_erosion must be >= 0 and needs skull_strip=True, got {brain_erosion}")
    if component_filter and context:
        raise HemwslInputError("component_filter scores the components of single slices: use it without context")


@dataclass(frozen=True)
class PseudoLabelSettings:
    """How :func:`hemwsl.pseudo.pseudo_label_volume` makes a pseudo mask (and :func:`hemwsl.pseudo.make_pseudo_labels`
    records in ``pseudo_params.json``).

    Attributes:
        mode: ``"cam"`` or ``"cam_kmeans"`` (:data:`hemwsl.pseudo.PSEUDO_MODES`).
        threshold: a number (fixed threshold on the per-slice min-max map) or a strategy of
            :mod:`hemwsl.thresholds` (see :func:`hemwsl.pseudo.build_threshold`), applied slice by slice.
        context: slice context (see :mod:`hemwsl.pseudo.volume`): the thresholded map of a slice is the mean of
            the positive slices' maps around it, and K-means clusters each pixel on those slices.
        context_slices: the odd number (>= 3) of slices of the context window (used only with ``context``).
        select: ``"differential"`` or ``"brightest"`` (:data:`hemwsl.pseudo.SELECTIONS`): how ``cam_kmeans``
            picks the cluster.
        k: K-means clusters (``cam_kmeans``).
        enhance: contrast enhancement before clustering (:func:`hemwsl.pseudo.enhance_slices`,
            :data:`hemwsl.pseudo.ENHANCEMENTS`; ``cam_kmeans``).
        enhance_window: the CT window of that enhancement, a window name or ``(level, width)`` (``cam_kmeans``).
        prob_threshold: slices with probability >= this get foreground.
        brain_erosion: with the input setting ``skull_strip``, erode the brain mask the threshold restricts to by
            this many pixels per slice (3x3 cross), which keeps the partial-volume rim of the inner skull table
            (whose HU overlap blood's) out of the pseudo-labels; the classifier still sees the uneroded stripping.
        seed: K-means random state.
        hu_reference: with the input setting ``skull_strip``, shift the scan's HU so that its brain reads this
            value (or into this ``(low, high)`` band) before the threshold (its intensity prior, its growth) and
            the component filter see them (:func:`hemwsl.thresholds.calibrate_hu`); the classifier and the
            clustering see the HU as stored. ``None``: no calibration.

    Values are checked on construction (one :class:`~hemwsl.errors.HemwslInputError` line naming the first bad
    one, the messages of :func:`hemwsl.pseudo.check_pseudo_params` and
    :func:`hemwsl.thresholds.check_hu_reference`); ``hu_reference`` is stored as that check returns it (a number,
    or a ``(low, high)`` tuple) and a list ``enhance_window`` as a tuple. The threshold, and the checks that need
    the input settings (``brain_erosion`` and ``hu_reference`` need ``skull_strip``) or the component filter (not
    with ``context``), are checked by the functions that take the settings. The defaults are those the functions
    had.
    """

    mode: str = "cam_kmeans"
    threshold: Any = 0.7
    context: bool = False
    context_slices: int = 3
    select: str = "differential"
    k: int = 4
    enhance: str = "global"
    enhance_window: str | tuple[float, float] = "brain"
    prob_threshold: float = 0.5
    brain_erosion: int = 0
    seed: int = 0
    hu_reference: float | tuple[float, float] | None = None

    def __post_init__(self) -> None:
        from hemwsl.thresholds.intensity import check_hu_reference

        if not isinstance(self.context, (bool, np.bool_)):
            raise HemwslInputError(f"context must be True or False, got {self.context!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise HemwslInputError(f"seed must be an int, got {self.seed!r}")
        if isinstance(self.enhance_window, list):
            object.__setattr__(self, "enhance_window", tuple(self.enhance_window))
        _check_settings(mode=self.mode, select=self.select, k=self.k, context=self.context,
                        context_slices=self.context_slices, prob_threshold=self.prob_threshold,
                        brain_erosion=self.brain_erosion, enhance=self.enhance, enhance_window=self.enhance_window)
        object.__setattr__(self, "hu_reference", check_hu_reference(self.hu_reference))
