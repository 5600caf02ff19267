"""Faithfulness of explanations: faithfulness correlation and deletion / insertion curves.

* :func:`faithfulness_correlation` (Bhatt, Weller, Moura, IJCAI 2020, "Evaluating and aggregating
  feature-based model explanations"; the definition of Quantus' ``FaithfulnessCorrelation``, Hedström
  et al., JMLR 2023; used for head-CT hemorrhage by seed paper 004, Schulze-Weddige et al.): for
  ``n_subsets`` random sets ``S`` of patches, the Pearson (or Spearman) correlation between the sum of
  the attribution over ``S`` and the drop ``f(x) - f(x_S)`` of the explained score when the pixels of
  ``S`` are replaced by a baseline.
* :func:`deletion_insertion_curves` (Petsiuk, Das, Saenko, BMVC 2018, "RISE"): the score while the
  patches are removed (deletion: replaced by the baseline) or added (insertion: pasted onto the
  baseline) in decreasing order of attribution; :func:`curve_auc` is the trapezoidal area.

Efficiency: the random subsets and the perturbed forwards of the faithfulness correlation do not
depend on the explanation. :func:`faithfulness_correlation` draws the subsets once per slice (seeded),
runs the ``B * n_subsets`` perturbed images through the model once (in chunks of ``batch_size``, on the
model's device) and correlates the drops with every given map: the attribution of each patch is a
sum-pooling of the map, the subset sums one ``(S x P) @ (P x methods)`` product. Deletion / insertion
order the patches by attribution, so their forwards are per map (``n_steps + 1`` per curve).

Policies: ``score="probability"`` explains ``sigmoid(logit of the target)`` (the classifiers are
multi-label, trained with a sigmoid per output), ``"logit"`` the raw logit. A correlation is NaN when
the drops or the attribution sums are constant over the subsets (e.g. an all-zero map); reducers skip
NaN. Patches are ``patch_size x patch_size`` squares from the top-left corner; the last row/column of
patches is cut at the image border when the size is not a multiple. Ties in attribution are ordered
by patch index (row-major), deterministically.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hemwsl.cam.base import TargetSpec, model_device, resolve_targets
from hemwsl.errors import HemwslInputError, check_choice

__all__ = [
    "BASELINES",
    "zero_baseline",
    "mean_baseline",
    "blur_baseline",
    "get_baseline",
    "patch_grid",
    "patch_sums",
    "patch_pixels",
    "draw_subsets",
    "correlate_rows",
    "faithfulness_correlation",
    "FaithfulnessCorrelation",
    "deletion_insertion_curves",
    "DeletionInsertion",
    "curve_auc",
    "SCORES",
    "SIMILARITIES",
]

Maps = Union[Tensor, Mapping[Any, Tensor]]

#: What the drop is measured on.
SCORES: tuple[str, ...] = ("probability", "logit")
#: Correlation of attribution sums and drops.
SIMILARITIES: tuple[str, ...] = ("pearson", "spearman")


# --------------------------------------------------------------------------------------------------
# Baselines: what replaces a removed pixel
# --------------------------------------------------------------------------------------------------


def zero_baseline(x: Tensor) -> Tensor:
    """All zeros (Quantus' ``"black"``; 0 is the bottom of every CT window after windowing)."""
    return torch.zeros_like(x)


def mean_baseline(x: Tensor) -> Tensor:
    """Each image's per-channel mean (Quantus' ``"mean"``)."""
    return x.mean(dim=(-2, -1), keepdim=True).expand_as(x).clone()


def _gaussian_kernel(sigma: float, radius: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def blur_baseline(x: Tensor, sigma: float = 4.0) -> Tensor:
    """Gaussian blur of each channel, ``sigma`` in pixels, reflected borders (RISE's insertion start).

    The kernel is truncated at ``ceil(3 sigma)`` pixels (at most the image size minus one).
    """
    if not sigma > 0:
        raise HemwslInputError(f"blur sigma must be > 0, got {sigma!r}")
    b, c, h, w = x.shape
    ry = max(0, min(math.ceil(3 * sigma), h - 1))
    rx = max(0, min(math.ceil(3 * sigma), w - 1))
    flat = x.reshape(b * c, 1, h, w)
    if ry:
        ky = _gaussian_kernel(sigma, ry, x.dtype, x.device)
        flat = F.conv2d(F.pad(flat, (0, 0, ry, ry), mode="reflect"), ky.view(1, 1, -1, 1))
    if rx:
        kx = _gaussian_kernel(sigma, rx, x.dtype, x.device)
        flat = F.conv2d(F.pad(flat, (rx, rx, 0, 0), mode="reflect"), kx.view(1, 1, 1, -1))
    return flat.reshape(b, c, h, w)


#: Baseline registry: name -> ``f(x (B, C, H, W), **options) -> (B, C, H, W)``.
BASELINES: dict[str, Callable[..., Tensor]] = {
    "zero": zero_baseline,
    "mean": mean_baseline,
    "blur": blur_baseline,
}


def get_baseline(baseline: str | Callable[[Tensor], Tensor], **options: Any) -> Callable[[Tensor], Tensor]:
    """The baseline function ``name`` (with ``options`` bound, e.g. ``sigma`` of ``"blur"``), or a callable.

    Raises:
        HemwslInputError: unknown name.
    """
    if callable(baseline):
        return partial(baseline, **options) if options else baseline
    check_choice("baseline", baseline, BASELINES)
    return partial(BASELINES[baseline], **options) if options else BASELINES[baseline]


# --------------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------------


def _check_patch(patch_size: int) -> int:
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)) or patch_size < 1:
        raise HemwslInputError(f"patch_size must be a positive int, got {patch_size!r}")
    return int(patch_size)


def patch_grid(size: tuple[int, int], patch_size: int) -> tuple[int, int]:
    """Number of patch rows and columns covering an ``(H, W)`` image (last ones cut at the border)."""
    p = _check_patch(patch_size)
    return math.ceil(size[0] / p), math.ceil(size[1] / p)


def patch_sums(attribution: Tensor, patch_size: int) -> Tensor:
    """Sum of ``(B, H, W)`` maps over each patch: ``(B, P)``, patches in row-major order."""
    p = _check_patch(patch_size)
    b, h, w = attribution.shape
    gh, gw = patch_grid((h, w), p)
    a = F.pad(attribution, (0, gw * p - w, 0, gh * p - h))
    return a.reshape(b, gh, p, gw, p).sum(dim=(2, 4)).reshape(b, gh * gw)


def patch_pixels(selection: Tensor, size: tuple[int, int], patch_size: int) -> Tensor:
    """``(N, P)`` patch selections (0/1) -> ``(N, 1, H, W)`` pixel masks."""
    p = _check_patch(patch_size)
    gh, gw = patch_grid(size, p)
    if selection.shape[-1] != gh * gw:
        raise HemwslInputError(f"selection has {selection.shape[-1]} patches, the grid has {gh * gw}")
    m = selection.reshape(-1, gh, gw).repeat_interleave(p, dim=1).repeat_interleave(p, dim=2)
    return m[:, None, : size[0], : size[1]]


def draw_subsets(n_patches: int, n_subsets: int, subset_size: int, generator: torch.Generator) -> Tensor:
    """``(n_subsets, n_patches)`` float 0/1 matrix: each row a uniform random set of ``subset_size`` patches."""
    if not 1 <= subset_size <= n_patches:
        raise HemwslInputError(f"subset size must be in [1, {n_patches}] patches, got {subset_size}")
    keys = torch.rand(n_subsets, n_patches, generator=generator)
    idx = keys.argsort(dim=1)[:, :subset_size]
    out = torch.zeros(n_subsets, n_patches)
    out.scatter_(1, idx, 1.0)
    return out


def correlate_rows(a: Tensor | np.ndarray, b: Tensor | np.ndarray, similarity: str = "pearson") -> np.ndarray:
    """Row-wise correlation of two ``(..., S)`` arrays; NaN where either row is constant."""
    check_choice("similarity", similarity, SIMILARITIES)
    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, Tensor) else b, dtype=np.float64)
    a, b = np.broadcast_arrays(a, b)
    if similarity == "spearman":
        from scipy.stats import rankdata

        a, b = rankdata(a, axis=-1), rankdata(b, axis=-1)
    constant = (np.ptp(a, axis=-1) == 0) | (np.ptp(b, axis=-1) == 0)
    a = a - a.mean(axis=-1, keepdims=True)
    b = b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a * b).sum(-1) / (np.sqrt((a * a).sum(-1)) * np.sqrt((b * b).sum(-1)))
    return np.where(constant, np.nan, np.clip(r, -1.0, 1.0))


# --------------------------------------------------------------------------------------------------
# Scoring perturbed images in chunks
# --------------------------------------------------------------------------------------------------


def _as_maps(attributions: Maps, batch: int, size: tuple[int, int]) -> tuple[dict[Any, Tensor], bool]:
    single = isinstance(attributions, Tensor)
    maps = {None: attributions} if single else dict(attributions)
    if not maps:
        raise HemwslInputError("attributions is empty")
    for key, m in maps.items():
        if not isinstance(m, Tensor) or tuple(m.shape) != (batch, *size):
            shape = tuple(m.shape) if isinstance(m, Tensor) else type(m).__name__
            raise HemwslInputError(f"attribution {key!r} has shape {shape}, expected {(batch, *size)}")
    return maps, single


def _check_input(model: nn.Module, x: Tensor) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 4 or x.shape[0] == 0:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise HemwslInputError(f"x must be a non-empty (B, C, H, W) batch, got {shape}")
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    return x.detach().to(device=model_device(model), dtype=dtype)


class _Scorer:
    """Explained score of rows of images, each row tied to a sample of the batch (its target)."""

    def __init__(self, model: nn.Module, x: Tensor, targets: TargetSpec, score: str, batch_size: int) -> None:
        check_choice("score", score, SCORES)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise HemwslInputError(f"batch_size must be a positive int, got {batch_size!r}")
        self.model, self.score, self.batch_size = model, score, batch_size
        logits = self._forward(x)
        if logits.ndim != 2:
            raise HemwslInputError(f"the model must return (B, K) logits, got {tuple(logits.shape)}")
        self.target = resolve_targets(targets, x.shape[0], logits.shape[1], logits)
        self.clean = self._transform(self.target.scores(logits))

    @torch.no_grad()
    def _forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _transform(self, s: Tensor) -> Tensor:
        return torch.sigmoid(s) if self.score == "probability" else s

    @torch.no_grad()
    def __call__(self, make: Callable[[Tensor], Tensor], rows: Tensor) -> Tensor:
        """Scores of ``make(rows[i:j])`` (images of the rows of a chunk), chunk by chunk: ``(len(rows),)``."""
        out = []
        for i in range(0, rows.numel(), self.batch_size):
            r = rows[i : i + self.batch_size]
            logits = self._forward(make(torch.arange(i, i + r.numel())))
            out.append(self._transform(self.target.row_scores(logits, r.cpu())))
        return torch.cat(out)


# --------------------------------------------------------------------------------------------------
# Faithfulness correlation
# --------------------------------------------------------------------------------------------------


def faithfulness_correlation(
    model: nn.Module,
    x: Tensor,
    attributions: Maps,
    targets: TargetSpec = None,
    *,
    patch_size: int = 8,
    n_subsets: int = 64,
    subset_fraction: float = 0.1,
    baseline: str | Callable[[Tensor], Tensor] = "zero",
    baseline_options: Mapping[str, Any] | None = None,
    similarity: str = "pearson",
    score: str = "probability",
    batch_size: int = 64,
    seed: int = 0,
    return_details: bool = False,
) -> Any:
    """Faithfulness correlation (Bhatt et al. 2020; Quantus' ``FaithfulnessCorrelation``) of maps.

    For each slice ``b``, ``n_subsets`` random sets ``S_k`` of ``round(subset_fraction * P)`` patches
    (of the ``P`` patches of the image) are drawn from a generator seeded with ``seed`` (the same sets
    for every map); ``x_{S_k}`` is ``x`` with the pixels of ``S_k`` replaced by the baseline, and

        ``rho_b = corr_k( sum_{i in S_k} a_b(i),  f(x_b) - f(x_{b, S_k}) )``.

    With ``patch_size=1`` and ``subset_fraction = subset_size / (H W)`` this is Quantus' definition
    (pixels drawn at random, ``nr_runs = n_subsets``).

    Args:
        model: network returning ``(B, K)`` logits (eval mode is the caller's business).
        x: ``(B, C, H, W)`` inputs.
        attributions: one ``(B, H, W)`` map tensor, or ``{key: (B, H, W)}`` for several methods.
        targets: as in :func:`hemwsl.cam.resolve_targets` (default: output 0 / the argmax).
        patch_size: side of the square patches in pixels (1: single pixels).
        n_subsets: random subsets per slice.
        subset_fraction: fraction of the patches in each subset, in (0, 1].
        baseline: name in :data:`BASELINES` or a callable ``f(x) -> baseline image``.
        baseline_options: keyword options of the baseline (``{"sigma": 4.0}`` for ``"blur"``).
        similarity: ``"pearson"`` (Bhatt et al., Quantus) or ``"spearman"``.
        score: ``"probability"`` (``sigmoid`` of the target logit) or ``"logit"``.
        batch_size: perturbed images per forward.
        seed: seed of the subsets.
        return_details: also return ``{"drops": (B, S), "sums": {key: (B, S)}, "subsets": (B, S, P)}``.

    Returns:
        ``(B,)`` float64 numpy correlations for a single map, else ``{key: (B,)}``; with the details
        as a second element when asked.
    """
    x = _check_input(model, x)
    b, _, h, w = x.shape
    maps, single = _as_maps(attributions, b, (h, w))
    check_choice("similarity", similarity, SIMILARITIES)
    if isinstance(n_subsets, bool) or not isinstance(n_subsets, (int, np.integer)) or n_subsets < 2:
        raise HemwslInputError(f"n_subsets must be an int >= 2, got {n_subsets!r}")
    if not 0 < subset_fraction <= 1:
        raise HemwslInputError(f"subset_fraction must be in (0, 1], got {subset_fraction!r}")
    gh, gw = patch_grid((h, w), patch_size)
    n_patches = gh * gw
    k = min(n_patches, max(1, int(round(subset_fraction * n_patches))))
    gen = torch.Generator().manual_seed(int(seed))
    subsets = torch.stack([draw_subsets(n_patches, int(n_subsets), k, gen) for _ in range(b)])  # (B, S, P)
    base = get_baseline(baseline, **dict(baseline_options or {}))(x)

    scorer = _Scorer(model, x, targets, score, batch_size)
    rows = torch.arange(b).repeat_interleave(int(n_subsets))  # row j: sample rows[j], subset j % S
    flat = subsets.reshape(-1, n_patches).to(x.device, x.dtype)

    def make(idx: Tensor) -> Tensor:
        m = patch_pixels(flat[idx.to(x.device)], (h, w), patch_size)
        r = rows[idx].to(x.device)
        return x[r] * (1 - m) + base[r] * m

    perturbed = scorer(make, rows).reshape(b, int(n_subsets))
    drops = (scorer.clean[:, None].to(perturbed.device) - perturbed).double().cpu()

    out: dict[Any, np.ndarray] = {}
    sums: dict[Any, Tensor] = {}
    for key, m in maps.items():
        ps = patch_sums(m.detach().to(torch.float64).cpu(), patch_size)  # (B, P)
        sums[key] = torch.bmm(subsets.double(), ps[:, :, None])[..., 0]  # (B, S)
        out[key] = correlate_rows(sums[key], drops, similarity)
    result: Any = out[None] if single else out
    if return_details:
        return result, {"drops": drops, "sums": sums[None] if single else sums, "subsets": subsets}
    return result


class FaithfulnessCorrelation:
    """:func:`faithfulness_correlation` with bound options (Bhatt et al., IJCAI 2020).

    Example::

        metric = FaithfulnessCorrelation(patch_size=8, n_subsets=64, baseline="mean")
        rho = metric(model, x, {"gradcam": cam_a, "saliency": cam_b})  # {key: (B,) numpy}

    Args:
        **options: keyword options of :func:`faithfulness_correlation`.
    """

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    def __call__(self, model: nn.Module, x: Tensor, attributions: Maps, targets: TargetSpec = None) -> Any:
        return faithfulness_correlation(model, x, attributions, targets, **self.options)


# --------------------------------------------------------------------------------------------------
# Deletion / insertion
# --------------------------------------------------------------------------------------------------


def _step_counts(n_patches: int, n_steps: int) -> Tensor:
    if isinstance(n_steps, bool) or not isinstance(n_steps, (int, np.integer)) or n_steps < 1:
        raise HemwslInputError(f"n_steps must be a positive int, got {n_steps!r}")
    return torch.round(torch.arange(n_steps + 1, dtype=torch.float64) * n_patches / n_steps).long()


def deletion_insertion_curves(
    model: nn.Module,
    x: Tensor,
    attributions: Maps,
    targets: TargetSpec = None,
    *,
    modes: tuple[str, ...] = ("deletion", "insertion"),
    patch_size: int = 8,
    n_steps: int = 16,
    deletion_baseline: str | Callable[[Tensor], Tensor] = "zero",
    insertion_baseline: str | Callable[[Tensor], Tensor] = "blur",
    baseline_options: Mapping[str, Any] | None = None,
    score: str = "probability",
    batch_size: int = 64,
) -> dict[str, Any]:
    """Deletion and insertion curves (Petsiuk et al., BMVC 2018) of one or several maps.

    Patches are ranked by their summed attribution (descending; ties by patch index). At step
    ``t = 0..n_steps`` the top ``n_t = round(t P / n_steps)`` patches are replaced by the deletion
    baseline (deletion: the score should fall fast, low AUC is good) or pasted from ``x`` onto the
    insertion baseline (insertion: the score should rise fast, high AUC is good).

    Args:
        model, x, attributions, targets, patch_size, score, batch_size: as in
            :func:`faithfulness_correlation`.
        modes: any of ``"deletion"``, ``"insertion"``.
        n_steps: steps of each curve (``n_steps + 1`` forwards per map and mode).
        deletion_baseline, insertion_baseline: names in :data:`BASELINES` or callables.
        baseline_options: options of the baselines that take some: ``"blur"`` and callables (e.g.
            ``{"sigma": 4.0}``); ignored for ``"zero"`` and ``"mean"``.

    Returns:
        ``{"fractions": (n_steps + 1,) numpy fractions of patches removed/inserted, mode: curves}``,
        ``curves`` a ``(B, n_steps + 1)`` numpy array for a single map, else ``{key: (B, n_steps + 1)}``;
        plus ``"<mode>_auc"`` entries of the same form with :func:`curve_auc`.
    """
    x = _check_input(model, x)
    b, _, h, w = x.shape
    maps, single = _as_maps(attributions, b, (h, w))
    for mode in modes:
        check_choice("mode", mode, ("deletion", "insertion"))
    gh, gw = patch_grid((h, w), patch_size)
    n_patches = gh * gw
    counts = _step_counts(n_patches, n_steps)
    fractions = (counts.double() / n_patches).numpy()
    keys = list(maps)
    # rank[key] (B, P): position of each patch in the order of decreasing attribution
    ranks = {}
    for key in keys:
        ps = patch_sums(maps[key].detach().to(torch.float64).cpu(), patch_size)
        order = torch.sort(-ps, dim=1, stable=True).indices
        ranks[key] = torch.empty_like(order).scatter_(1, order, torch.arange(n_patches).expand(b, -1).contiguous())
    scorer = _Scorer(model, x, targets, score, batch_size)
    steps = counts.numel()
    out: dict[str, Any] = {"fractions": fractions}
    opts = dict(baseline_options or {})
    for mode in modes:
        name = deletion_baseline if mode == "deletion" else insertion_baseline
        base = get_baseline(name, **(opts if name == "blur" or callable(name) else {}))(x)
        # rows: (key, sample, step), step fastest
        n_rows = len(keys) * b * steps
        rows_sample = torch.arange(b).repeat_interleave(steps).repeat(len(keys))
        rank_all = torch.stack([ranks[k] for k in keys])  # (M, B, P)

        def make(idx: Tensor, _base=base, _rank=rank_all, _mode=mode) -> Tensor:
            m_idx = idx // (b * steps)
            s_idx = (idx // steps) % b
            t_idx = idx % steps
            sel = (_rank[m_idx, s_idx] < counts[t_idx][:, None]).to(x.dtype).to(x.device)  # (n, P) selected
            pix = patch_pixels(sel, (h, w), patch_size)
            r = s_idx.to(x.device)
            if _mode == "deletion":
                return x[r] * (1 - pix) + _base[r] * pix
            return _base[r] * (1 - pix) + x[r] * pix

        scores = scorer(make, rows_sample[:n_rows]).double().cpu().numpy().reshape(len(keys), b, steps)
        curves = {k: scores[i] for i, k in enumerate(keys)}
        aucs = {k: curve_auc(fractions, c) for k, c in curves.items()}
        out[mode] = curves[None] if single else curves
        out[f"{mode}_auc"] = aucs[None] if single else aucs
    return out


class DeletionInsertion:
    """:func:`deletion_insertion_curves` with bound options (Petsiuk et al., BMVC 2018).

    Args:
        **options: keyword options of :func:`deletion_insertion_curves`.
    """

    def __init__(self, **options: Any) -> None:
        self.options = dict(options)

    def __call__(self, model: nn.Module, x: Tensor, attributions: Maps, targets: TargetSpec = None) -> dict:
        return deletion_insertion_curves(model, x, attributions, targets, **self.options)


def curve_auc(fractions: Any, curves: Any) -> np.ndarray:
    """Trapezoidal area under ``curves`` (``(..., T)``) over ``fractions`` (``(T,)``, from 0 to 1)."""
    f = np.asarray(fractions, dtype=np.float64)
    c = np.asarray(curves, dtype=np.float64)
    if f.ndim != 1 or c.shape[-1] != f.shape[0] or f.shape[0] < 2:
        raise HemwslInputError(f"curves {c.shape} do not match fractions {f.shape}")
    return ((c[..., 1:] + c[..., :-1]) * 0.5 * np.diff(f)).sum(-1)
