"""Differential prediction: which intensity cluster does the classifier rely on?

Step 3 of the pseudo-label pipeline of Ramananda & Sundaresan (arXiv:2309.16627, 2023): each K-means
cluster of the CAM region is removed in turn (its pixels replaced by a normal-brain value) and the
classifier scores every "cluster removed" slice; the cluster whose removal lowers the hemorrhage logit
most is the hemorrhage. For a batch of ``B`` slices with ``K`` clusters, the ``B * (K + 1)`` inputs
(originals and candidates) are scored in ONE forward pass.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hemwsl.errors import HemwslInputError

__all__ = ["DifferentialResult", "removal_candidates", "differential_prediction"]


@dataclass
class DifferentialResult:
    """Scores of one batch of slices.

    Attributes:
        base: ``(B,)`` logit of the unmodified slices.
        logits: ``(B, K)`` logit with cluster ``j`` removed (NaN for a cluster absent from the slice).
        drops: ``(B, K)`` ``base - logits`` (``-inf`` for an absent cluster).
        chosen: ``(B,)`` cluster with the largest drop, ``-1`` when the slice has no cluster.
    """

    base: torch.Tensor
    logits: torch.Tensor
    drops: torch.Tensor
    chosen: torch.Tensor


def _check(stacks: torch.Tensor, cluster_maps: torch.Tensor, num_clusters: int) -> None:
    if stacks.ndim != 4:
        raise HemwslInputError(f"stacks must be (B, k, X, Y), got shape {tuple(stacks.shape)}")
    if cluster_maps.shape != (stacks.shape[0], *stacks.shape[-2:]):
        raise HemwslInputError(
            f"cluster_maps has shape {tuple(cluster_maps.shape)}, expected {(stacks.shape[0], *stacks.shape[-2:])}"
        )
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, int) or num_clusters < 1:
        raise HemwslInputError(f"num_clusters must be a positive int, got {num_clusters!r}")


def removal_candidates(
    stacks: torch.Tensor, cluster_maps: torch.Tensor, num_clusters: int, fill: float | torch.Tensor
) -> torch.Tensor:
    """The unmodified stacks and, for each cluster, the stacks with that cluster removed.

    Args:
        stacks: ``(B, k, X, Y)`` slice stacks (e.g. HU, the 2.5D neighbourhood of each slice).
        cluster_maps: int ``(B, X, Y)`` cluster number of each pixel of the centre slice (``-1``: none).
        num_clusters: ``K``.
        fill: the value removed pixels get, one for all or ``(B,)`` (e.g. each slice's median brain HU).
            It replaces the cluster's pixels in every slice of the stack.

    Returns:
        ``(B, K + 1, k, X, Y)``: index 0 the original, ``j + 1`` with cluster ``j`` removed.
    """
    stacks = torch.as_tensor(stacks)
    cluster_maps = torch.as_tensor(cluster_maps, device=stacks.device)
    _check(stacks, cluster_maps, num_clusters)
    fill_t = torch.as_tensor(fill, dtype=stacks.dtype, device=stacks.device)
    if fill_t.ndim == 0:
        fill_t = fill_t.expand(stacks.shape[0])
    if fill_t.shape != (stacks.shape[0],):
        raise HemwslInputError(
            f"fill must be a number or (B,) = ({stacks.shape[0]},) values, got shape {tuple(fill_t.shape)}")
    ids = torch.arange(num_clusters, device=stacks.device)
    removed = (cluster_maps[:, None] == ids[None, :, None, None])[:, :, None]  # (B, K, 1, X, Y)
    cand = torch.where(removed, fill_t[:, None, None, None, None], stacks[:, None])  # (B, K, k, X, Y)
    return torch.cat([stacks[:, None], cand], dim=1)


@torch.no_grad()
def differential_prediction(
    network: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    stacks: torch.Tensor,
    cluster_maps: torch.Tensor,
    num_clusters: int,
    fill: float | torch.Tensor,
    preprocess: Callable[[torch.Tensor], torch.Tensor] | None = None,
    target: int = 0,
) -> DifferentialResult:
    """Score every "cluster removed" version of a batch of slices in one forward pass.

    Args:
        network: the slice classifier (logits ``(N, C)`` or ``(N,)``), in eval mode.
        stacks: ``(B, k, X, Y)`` slice stacks in the units ``fill`` is given in (HU for the pipeline).
        cluster_maps: int ``(B, X, Y)`` cluster labels (``-1``: not clustered), from
            :func:`hemwsl.pseudo.kmeans_clusters`.
        num_clusters: ``K``.
        fill: replacement value(s), see :func:`removal_candidates`.
        preprocess: maps ``(N, k, X, Y)`` stacks to the network input (e.g.
            :class:`hemwsl.pseudo.ClassifierInput`: resize + CT windows); ``None``: identity.
        target: the logit explained (0: "any hemorrhage").

    Returns:
        :class:`DifferentialResult`; ``chosen[b]`` is the cluster whose removal lowers slice ``b``'s
        logit most.
    """
    stacks = torch.as_tensor(stacks)
    cluster_maps = torch.as_tensor(cluster_maps, device=stacks.device)
    cand = removal_candidates(stacks, cluster_maps, num_clusters, fill)
    b, k1 = cand.shape[:2]
    x = cand.reshape(b * k1, *cand.shape[2:])
    if preprocess is not None:
        x = preprocess(x)
    out = network(x).float()
    if out.ndim == 2:
        if not 0 <= target < out.shape[1]:
            raise HemwslInputError(f"target must be in [0, {out.shape[1] - 1}], got {target}")
        out = out[:, target]
    elif out.ndim != 1:
        raise HemwslInputError(f"the network must return (N,) or (N, C) logits, got shape {tuple(out.shape)}")
    scores = out.reshape(b, k1)
    base, logits = scores[:, 0], scores[:, 1:].clone()
    present = (cluster_maps[:, None] == torch.arange(num_clusters, device=cluster_maps.device)[None, :, None, None])
    present = present.flatten(2).any(-1).to(logits.device)
    logits[~present] = float("nan")
    drops = torch.where(present, base[:, None] - logits, torch.full_like(logits, float("-inf")))
    chosen = torch.where(present.any(1), drops.argmax(1), torch.full_like(base, -1, dtype=torch.long))
    return DifferentialResult(base=base, logits=logits, drops=drops, chosen=chosen)
