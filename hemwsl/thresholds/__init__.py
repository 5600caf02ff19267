"""Threshold strategies turning CAM heatmaps into hemorrhage masks, behind one registry.

Each strategy is a class with a ``name`` and ``__call__(heatmap, image_hu=None, brain=None)`` returning a
bool mask of the heatmap's shape and type (numpy or torch); see :mod:`hemwsl.thresholds.base` for the
shared conventions (``map > t``, per-sample thresholds, brain restriction, small-component removal).

=============  ==============================================================  ==========================
name           strategy                                                        module
=============  ==============================================================  ==========================
``fixed``      fixed value on a named normalisation (200/255, 225/255, 0.7)    :mod:`.fixed`
``percentile`` q-th percentile (Q90, Q95) of the map, its nonzero values or    :mod:`.percentile`
               the brain
``otsu``       Otsu's threshold (scikit-image)                                 :mod:`.otsu`
``search``     grid search on validation maps, applied unchanged to test       :mod:`.search`
``intensity``  hyperdense blood HU range (45-90 HU), optionally AND a CAM      :mod:`.intensity`
               threshold
=============  ==============================================================  ==========================

Multi-label subtype maps use :class:`SubtypeRule` (Chen & Kuo 2026: Youden class thresholds on validation, mask
thresholds, argmax across subtypes), in :mod:`.subtype`.

Example::

    from hemwsl.thresholds import get_threshold, search_threshold, apply_threshold

    t = search_threshold(cams_val, masks_val, candidates=[0.3, 0.5, 0.7], normalisation="minmax")
    masks_test = apply_threshold(cams_test, t, normalisation="minmax", per_sample=True)
    refine = get_threshold("intensity", cam=get_threshold("percentile", q=95), min_size=10)
    mask = refine(cam, image_hu=hu, brain=brain)
"""

from __future__ import annotations

from typing import Any

from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.thresholds.base import NORMALISATIONS, REGIONS, ThresholdStrategy, apply_threshold, normalise_map
from hemwsl.thresholds.fixed import FixedThreshold
from hemwsl.thresholds.intensity import (BLOOD_HU_RANGE, BRAIN_REFERENCE_HU, IntensityPrior, brain_reference_hu,
                                         calibrate_hu, check_hu_reference, hu_reference_text,
                                         same_hu_reference)
from hemwsl.thresholds.otsu import OtsuThreshold
from hemwsl.thresholds.percentile import PercentileThreshold
from hemwsl.thresholds.postprocess import remove_small_components, restrict_to_mask
from hemwsl.thresholds.subtype import SubtypeRule
from hemwsl.thresholds.search import (
    SEARCH_METRICS,
    SEARCH_REDUCTIONS,
    SearchedThreshold,
    search_threshold,
    threshold_scores,
)

__all__ = [
    "THRESHOLDS",
    "get_threshold",
    "ThresholdStrategy",
    "FixedThreshold",
    "PercentileThreshold",
    "OtsuThreshold",
    "SearchedThreshold",
    "IntensityPrior",
    "SubtypeRule",
    "BLOOD_HU_RANGE",
    "BRAIN_REFERENCE_HU",
    "brain_reference_hu",
    "calibrate_hu",
    "check_hu_reference",
    "hu_reference_text",
    "same_hu_reference",
    "NORMALISATIONS",
    "REGIONS",
    "SEARCH_METRICS",
    "SEARCH_REDUCTIONS",
    "apply_threshold",
    "normalise_map",
    "search_threshold",
    "threshold_scores",
    "remove_small_components",
    "restrict_to_mask",
]

#: Registry of the threshold strategies, by name.
THRESHOLDS: dict[str, type[ThresholdStrategy]] = {
    cls.name: cls for cls in (FixedThreshold, PercentileThreshold, OtsuThreshold, SearchedThreshold, IntensityPrior)
}


def get_threshold(name: str, **kwargs: Any) -> ThresholdStrategy:
    """Build the strategy registered as ``name`` with ``kwargs``.

    Args:
        name: a key of :data:`THRESHOLDS`.
        **kwargs: the strategy's constructor arguments (e.g. ``value=200/255`` for ``"fixed"``).

    Raises:
        HemwslInputError: for an unknown name; the message lists the accepted ones.
    """
    check_choice("threshold strategy", name, THRESHOLDS)
    try:
        return THRESHOLDS[name](**kwargs)
    except HemwslInputError:
        raise
    except (TypeError, ValueError) as err:  # an unknown option, or a value of the wrong type (None, a string)
        raise HemwslInputError(f"threshold {name!r} with {kwargs}: {err}") from err
