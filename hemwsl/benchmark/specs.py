"""Threshold specifications of the benchmark grid, written as short strings.

=====================  =====================================================================================
spec                   meaning
=====================  =====================================================================================
``fixed:V``            ``minmax(map) > V`` per slice; ``V`` a number or a fraction, e.g. ``fixed:200/255``
``percentile:Q``       above the ``Q``-th percentile of the map inside the brain (``percentile:95``)
``otsu``               Otsu's threshold of the map inside the brain
``search``             ``fixed:t`` with ``t`` chosen on the selection (validation) patients only
``prior``              the hyperdense-blood prior alone (45-90 HU inside the brain; no heatmap)
``prior+<spec>``       the prior AND the CAM mask of ``<spec>`` (e.g. ``prior+search``, ``prior+otsu``)
=====================  =====================================================================================

Every mask is restricted to the brain mask (skull stripping of the CT), as the seed papers evaluate inside
the head. Maps are min-max normalised per slice before a fixed threshold ("200 on the 8-bit rendered
CAM"), which is what seed papers 000 and 002 do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from hemwsl.constants import BENCHMARK_THRESHOLDS
from hemwsl.errors import HemwslInputError
from hemwsl.thresholds import (
    BLOOD_HU_RANGE,
    FixedThreshold,
    IntensityPrior,
    OtsuThreshold,
    PercentileThreshold,
    ThresholdStrategy,
)

__all__ = ["ThresholdSpec", "parse_threshold_spec", "parse_threshold_grid", "DEFAULT_GRID", "DEFAULT_CANDIDATES"]

#: Default grid (:data:`hemwsl.constants.BENCHMARK_THRESHOLDS`).
DEFAULT_GRID: tuple[str, ...] = BENCHMARK_THRESHOLDS
#: Candidates of ``search``: 0.05, 0.10, ..., 0.95.
DEFAULT_CANDIDATES: tuple[float, ...] = tuple(round(0.05 * k, 2) for k in range(1, 20))
_KINDS = ("fixed", "percentile", "otsu", "search", "none")


@dataclass(frozen=True)
class ThresholdSpec:
    """One parsed threshold specification (see the module table).

    Attributes:
        text: the spec as written (its name in tables and CSVs).
        kind: ``fixed``, ``percentile``, ``otsu``, ``search`` or ``none`` (the prior alone).
        value: the fixed value or percentile; ``None`` otherwise.
        prior: AND the hyperdense-blood prior.
        hu_range: the prior's HU range.
    """

    text: str
    kind: str
    value: float | None = None
    prior: bool = False
    hu_range: tuple[float, float] = BLOOD_HU_RANGE

    @property
    def needs_fit(self) -> bool:
        """Whether the threshold is chosen on the selection patients (``search``)."""
        return self.kind == "search"

    @property
    def needs_heatmap(self) -> bool:
        """``False`` for the prior alone, which is the same for every method and layer."""
        return self.kind != "none"

    def strategy(self, value: float | None = None, min_size: int = 0) -> ThresholdStrategy:
        """The per-slice strategy; ``value`` is the searched threshold of a ``search`` spec; ``min_size`` drops
        connected components of fewer pixels (after the brain restriction)."""
        kw = {"per_sample": True, "restrict_to_brain": True, "min_size": int(min_size)}
        if self.kind == "search" and value is None:
            raise HemwslInputError(f"threshold {self.text!r} needs the value chosen on the selection patients")
        cam: ThresholdStrategy | None
        if self.kind in ("fixed", "search"):
            v = self.value if self.kind == "fixed" else value
            cam = FixedThreshold(float(v), normalisation="minmax", **({} if self.prior else kw))
        elif self.kind == "percentile":
            cam = PercentileThreshold(q=float(self.value), region="brain", **({} if self.prior else kw))
        elif self.kind == "otsu":
            cam = OtsuThreshold(region="brain", **({} if self.prior else kw))
        else:
            cam = None
        if not self.prior:
            return cam
        return IntensityPrior(hu_range=self.hu_range, cam=cam, **kw)


def _number(text: str, spec: str) -> float:
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise HemwslInputError(f"threshold {spec!r}: {text!r} is not a number or a fraction") from None


def parse_threshold_spec(text: str, hu_range: Sequence[float] = BLOOD_HU_RANGE) -> ThresholdSpec:
    """Parse ``fixed:V``, ``percentile:Q``, ``otsu``, ``search``, ``prior`` or ``prior+<spec>``.

    Raises:
        HemwslInputError: naming the spec and the accepted forms.
    """
    spec = str(text).strip()
    body, prior = spec, False
    if spec == "prior":
        return ThresholdSpec(spec, "none", None, True, tuple(float(v) for v in hu_range))
    if spec.startswith("prior+"):
        body, prior = spec[len("prior+"):], True
    name, _, arg = body.partition(":")
    accepted = "fixed:V, percentile:Q, otsu, search, prior, prior+<spec>"
    if name not in _KINDS or name == "none":
        raise HemwslInputError(f"unknown threshold {spec!r}; accepted forms: {accepted}")
    value = None
    if name in ("fixed", "percentile"):
        if not arg:
            raise HemwslInputError(f"threshold {spec!r} needs a value ({name}:V)")
        value = _number(arg, spec)
        if name == "fixed" and not 0.0 <= value < 1.0:
            raise HemwslInputError(f"threshold {spec!r}: a fixed value on min-max maps must be in [0, 1)")
        if name == "percentile" and not 0.0 <= value <= 100.0:
            raise HemwslInputError(f"threshold {spec!r}: a percentile must be in [0, 100]")
    elif arg:
        raise HemwslInputError(f"threshold {spec!r}: {name} takes no value")
    return ThresholdSpec(spec, name, value, prior, tuple(float(v) for v in hu_range))


def parse_threshold_grid(texts: Sequence[str], hu_range: Sequence[float] = BLOOD_HU_RANGE) -> list[ThresholdSpec]:
    """Parse a list of specs (duplicates rejected)."""
    specs = [parse_threshold_spec(t, hu_range) for t in texts]
    if not specs:
        raise HemwslInputError("the threshold grid is empty")
    names = [s.text for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise HemwslInputError(f"threshold grid lists {dup} more than once")
    return specs
