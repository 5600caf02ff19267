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
``priorcomp+<spec>``   the prior's connected components (per slice) touched by the CAM mask of ``<spec>``,
                       kept whole: the heatmap chooses which hyperdense regions are blood, the CT gives
                       their boundaries (e.g. ``priorcomp+search``)
=====================  =====================================================================================

Post-processing (brain-mask erosion, the prior's HU range, minimum component size, the dominant components,
growth at the edge) is part of a spec. When the benchmark is given several values of any of them,
:func:`expand_post_grid` makes one spec per combination, named ``<spec>[e<erosion>,hu<low>-<high>,min<size>]``
(``hu`` only for prior specs; ``,s<share>`` appended when only the components of at least that share of the
slice's largest component's heat mass are kept, :func:`hemwsl.thresholds.postprocess.keep_dominant_components`;
``,g<px>`` when the mask grows by ``px`` pixels into 40-100 HU, :data:`hemwsl.thresholds.base.GROW_HU_RANGE`),
and the combination is then chosen on the selection patients like the threshold itself.

Every mask is restricted to the brain mask (skull stripping of the CT), as the seed papers evaluate inside
the head. Maps are min-max normalised per slice before a fixed threshold ("200 on the 8-bit rendered
CAM"), which is what seed papers 000 and 002 do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any
import re
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

__all__ = [
    "ThresholdSpec", "PostProcessing", "parse_threshold_spec", "parse_threshold_grid", "expand_post_grid",
    "post_grid", "DEFAULT_GRID", "DEFAULT_CANDIDATES",
]

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
        erosion: pixels the brain mask is eroded by before the mask is restricted to it.
        min_size: connected components (per slice) under this many pixels are dropped.
        base: the spec without its post-processing suffix (``text`` when there is none).
        combine: how a prior spec combines with the CAM mask: ``"and"`` (``prior+``) or ``"components"``
            (``priorcomp+``).
        grow: pixels the final mask grows by into 40-100 HU inside the brain (0: none).
        min_share: keep the components (per slice) whose heat mass is at least this share of the largest one's
            (0: all).
    """

    text: str
    kind: str
    value: float | None = None
    prior: bool = False
    hu_range: tuple[float, float] = BLOOD_HU_RANGE
    erosion: int = 0
    min_size: int = 0
    base: str = ""
    combine: str = "and"
    grow: int = 0
    min_share: float = 0.0

    def __post_init__(self) -> None:
        if not self.base:
            object.__setattr__(self, "base", self.text)

    @property
    def needs_fit(self) -> bool:
        """Whether the threshold is chosen on the selection patients (``search``)."""
        return self.kind == "search"

    @property
    def needs_heatmap(self) -> bool:
        """``False`` for the prior alone, which is the same for every method and layer."""
        return self.kind != "none"

    def strategy(self, value: float | None = None, per_sample: bool = True) -> ThresholdStrategy:
        """The per-slice strategy; ``value`` is the searched threshold of a ``search`` spec. Components under the
        spec's ``min_size`` pixels are dropped after the brain restriction. ``per_sample=False`` for callers that
        apply it slice by slice themselves (the pseudo-labels)."""
        kw = {"per_sample": per_sample, "restrict_to_brain": True, "min_size": self.min_size, "grow": self.grow,
              "min_share": self.min_share}
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
        return IntensityPrior(hu_range=self.hu_range, cam=cam, combine=self.combine, **kw)


def _number(text: str, spec: str) -> float:
    try:
        return float(Fraction(text)) if "/" in text else float(text)
    except (ValueError, ZeroDivisionError):
        raise HemwslInputError(f"threshold {spec!r}: {text!r} is not a number or a fraction") from None


_SUFFIX = re.compile(r"^(?P<body>.*)\[e(?P<e>\d+)(?:,hu(?P<lo>-?[\d.]+)-(?P<hi>-?[\d.]+))?,min(?P<m>\d+)"
                     r"(?:,s(?P<s>[\d.]+))?(?:,g(?P<g>\d+))?\]$")


def parse_threshold_spec(text: str, hu_range: Sequence[float] = BLOOD_HU_RANGE) -> ThresholdSpec:
    """Parse ``fixed:V``, ``percentile:Q``, ``otsu``, ``search``, ``prior`` or ``prior+<spec>``, optionally with a
    post-processing suffix ``[e<erosion>,hu<low>-<high>,min<size>]``, ``[...,s<share>]``, ``[...,g<px>]`` (as
    :func:`expand_post_grid` names them).

    Raises:
        HemwslInputError: naming the spec and the accepted forms.
    """
    spec = str(text).strip()
    post: dict = {}
    m = _SUFFIX.match(spec)
    if m:
        post = {"erosion": int(m["e"]), "min_size": int(m["m"]), "base": m["body"], "grow": int(m["g"] or 0)}
        if m["s"] is not None:
            from hemwsl.thresholds.postprocess import check_min_share

            try:
                post["min_share"] = check_min_share(float(m["s"]), "share")
            except ValueError:
                raise HemwslInputError(f"threshold {spec!r}: share {m['s']!r} is not a number") from None
            except HemwslInputError as err:
                raise HemwslInputError(f"threshold {spec!r}: {err}") from None
        if m["lo"] is not None:
            hu_range = (float(m["lo"]), float(m["hi"]))
    body, prior, combine = (m["body"] if m else spec), False, "and"
    hu = tuple(float(v) for v in hu_range)
    if body == "prior":
        return ThresholdSpec(spec, "none", None, True, hu, **post)
    if body.startswith("prior+"):
        body, prior = body[len("prior+"):], True
    elif body.startswith("priorcomp+"):
        body, prior, combine = body[len("priorcomp+"):], True, "components"
    name, _, arg = body.partition(":")
    accepted = ("fixed:V, percentile:Q, otsu, search, prior, prior+<spec>, priorcomp+<spec> "
                "(each optionally [e<px>,hu<lo>-<hi>,min<px>], with ,s<share> and ,g<px> after min)")
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
    return ThresholdSpec(spec, name, value, prior, hu, combine=combine, **post)


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


@dataclass(frozen=True)
class PostProcessing:
    """One post-processing combination: brain erosion (px), the prior's HU range, minimum component size (px),
    growth into 40-100 HU at the mask's edge (px), the share of the largest component's heat mass a component
    needs to be kept."""

    erosion: int = 0
    hu_range: tuple[float, float] = BLOOD_HU_RANGE
    min_size: int = 0
    grow: int = 0
    min_share: float = 0.0

    def suffix(self, prior: bool) -> str:
        """``[e4,hu50-90,min50]`` (``hu`` only for prior specs; ``,s0.2`` when only the dominant components are kept,
        ``,g1`` when the mask grows)."""
        hu = f",hu{self.hu_range[0]:g}-{self.hu_range[1]:g}" if prior else ""
        share = f",s{self.min_share:g}" if self.min_share else ""
        grow = f",g{self.grow}" if self.grow else ""
        return f"[e{self.erosion}{hu},min{self.min_size}{share}{grow}]"


def _value_list(values: Any, name: str, check: Callable[[Any], Any]) -> list:
    """One value or a list of values of a grid dimension, each through ``check`` (which names a bad one), sorted
    without repeats; an empty list is refused."""
    vals = [values] if isinstance(values, (int, float)) else list(values)
    if not vals:
        raise HemwslInputError(f"{name}: give at least one value")
    return sorted({check(v) for v in vals})


def _non_negative_int(name: str) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if float(v) != int(v) or int(v) < 0:
            raise HemwslInputError(f"{name}: {v!r} is not a non-negative integer")
        return int(v)
    return check


def _int_list(values: int | Sequence[int], name: str) -> list[int]:
    return _value_list(values, name, _non_negative_int(name))


def _hu_list(hu_range: Sequence[float] | Sequence[Sequence[float]]) -> list[tuple[float, float]]:
    vals = list(hu_range)
    pairs = [vals] if vals and isinstance(vals[0], (int, float)) else vals
    out = []
    for pr in pairs:
        pr = [float(v) for v in pr]
        if len(pr) != 2 or not pr[0] < pr[1]:
            raise HemwslInputError(f"hu_range: {pr!r} is not a (low, high) pair with low < high")
        out.append((pr[0], pr[1]))
    if not out:
        raise HemwslInputError("hu_range: give at least one (low, high) pair")
    return sorted(set(out))


def post_grid(
    erosion: int | Sequence[int] = 0,
    hu_range: Sequence[float] | Sequence[Sequence[float]] = BLOOD_HU_RANGE,
    min_size: int | Sequence[int] = 0,
    grow: int | Sequence[int] = 0,
    min_share: float | Sequence[float] = 0.0,
) -> list[PostProcessing]:
    """Every combination of the given values (one value or a list each; ``hu_range`` one pair or a list of pairs)."""
    return [PostProcessing(e, hu, m, g, sh) for e in _int_list(erosion, "brain_erosion") for hu in _hu_list(hu_range)
            for m in _int_list(min_size, "min_size") for sh in _share_list(min_share) for g in _int_list(grow, "grow")]


def _share_list(values: float | Sequence[float]) -> list[float]:
    from hemwsl.thresholds.postprocess import check_min_share

    return _value_list(values, "min_share", check_min_share)


def expand_post_grid(texts: Sequence[str], grid: Sequence[PostProcessing]) -> list[ThresholdSpec]:
    """Specs of ``texts`` x post-processing ``grid``.

    With one combination the specs keep their plain names (the post-processing is fixed, as the report
    says); with several, each spec is repeated per combination (once per erosion and component size for
    specs without the prior, whose HU range does not matter) and named with :meth:`PostProcessing.suffix`.
    """
    from dataclasses import replace

    if not grid:
        raise HemwslInputError("the post-processing grid is empty")
    plain = parse_threshold_grid(texts)
    if len(grid) == 1:
        g = grid[0]
        return [replace(s, hu_range=g.hu_range, erosion=g.erosion, min_size=g.min_size, grow=g.grow,
                        min_share=g.min_share) for s in plain]
    out: list[ThresholdSpec] = []
    for s in plain:
        seen = set()
        for g in grid:
            key = (g.erosion, g.min_size, g.hu_range if s.prior else None, g.grow, g.min_share)
            if key in seen:
                continue
            seen.add(key)
            out.append(replace(s, text=s.text + g.suffix(s.prior), hu_range=g.hu_range, erosion=g.erosion,
                               min_size=g.min_size, grow=g.grow, min_share=g.min_share, base=s.text))
    return out
