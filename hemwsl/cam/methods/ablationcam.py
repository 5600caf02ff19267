"""Ablation-CAM: channel weights from the score drop when the channel is ablated (gradient-free)."""

from __future__ import annotations

import torch
from torch import Tensor

from hemwsl.cam.base import CAMMethod, LayerContext
from hemwsl.errors import HemwslInputError

__all__ = ["AblationCAM"]


class AblationCAM(CAMMethod):
    """Ablation-CAM (Desai & Ramaswamy 2020).

    ``w_c = (S - S_c) / S`` where ``S`` is the target score and ``S_c`` the score with channel ``c`` of
    the layer's activation set to ``ablation_value`` (0, as in the paper); map ``ReLU(sum_c w_c A_c)``.
    The division by ``S`` (which flips the weights when ``S < 0``) follows pytorch-grad-cam's
    ``AblationCAM``.

    Two exact ways to get ``S_c``:

    * closed form, at the layer feeding global average pooling + Linear with class-index targets:
      ``S_c = S + W[k, c] (ablation_value - mean_hw(A_c))``; no network call at all;
    * otherwise the network *suffix* after the layer is re-run on the ablated activations
      (:class:`hemwsl.cam.suffix.SuffixRunner`), batched over channels and slices; channels already
      equal to ``ablation_value`` everywhere are not re-run (``S_c = S``).

    Difference from pytorch-grad-cam: its ``AblationLayer`` sets the channel to 0 only when the layer's
    minimum activation is exactly 0 (post-ReLU layers, e.g. ResNet stages), and otherwise to
    ``min - 1e7`` (decreasing further for each channel of a batch); hemwsl always uses
    ``ablation_value``. Results agree for layers with a zero minimum.

    Args:
        batch_size: ablated activations per suffix run.
        ablation_value: value the ablated channel is set to.
        closed_form: ``"auto"`` (closed form where valid), ``True`` (require it) or ``False`` (always
            re-run the suffix).

    Reference:
        Desai, Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
        Gradient-free Localization", WACV 2020.
    """

    name = "ablationcam"
    paper = "Desai & Ramaswamy, Ablation-CAM: Visual Explanations for Deep Convolutional Network via Gradient-free Localization, WACV 2020"
    needs_gradients = False

    def __init__(self, batch_size: int = 64, ablation_value: float = 0.0, closed_form: bool | str = "auto") -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise HemwslInputError(f"batch_size must be a positive int, got {batch_size!r}")
        if closed_form not in ("auto", True, False):
            raise HemwslInputError(f"closed_form must be 'auto', True or False, got {closed_form!r}")
        self.batch_size = batch_size
        self.ablation_value = float(ablation_value)
        self.closed_form = closed_form

    def uses_closed_form(self, ctx: LayerContext) -> bool:
        """Whether the closed form applies to this layer and target (raises if required but not valid)."""
        ok = ctx.head_linear is not None and ctx.target.indices is not None
        if self.closed_form is True and not ok:
            why = ctx.head_note if ctx.head_linear is None else "the target is a callable, not class indices"
            raise HemwslInputError(f"closed-form Ablation-CAM is not valid at {ctx.layer!r}: {why}")
        return ok and self.closed_form is not False

    def ablated_scores(self, ctx: LayerContext) -> Tensor:
        """``(B, C)`` target scores with each channel ablated."""
        a = ctx.activations
        v = self.ablation_value
        if self.uses_closed_form(ctx):
            w = ctx.head_linear.weight[ctx.target.indices.to(a.device)].to(a.dtype)  # (B, C)
            return ctx.scores[:, None].to(a.dtype) + w * (v - a.mean(dim=(2, 3)))
        b_, c_ = a.shape[:2]
        ablated = ctx.scores[:, None].to(a.dtype).expand(b_, c_).clone()
        rows = (~(a == v).flatten(2).all(dim=-1)).nonzero()  # (R, 2): (sample, channel) to re-run
        if len(rows):
            runner = ctx.suffix_runner()
            for chunk in rows.split(self.batch_size):
                b, k = chunk[:, 0], chunk[:, 1]
                sub = a[b]
                sub[torch.arange(len(b), device=a.device), k] = v
                logits = runner.run(sub, b, ctx.inputs)
                ablated[b, k] = ctx.target.row_scores(logits, b).to(a.dtype)
        return ablated

    def weigh_context(self, ctx: LayerContext) -> Tensor:
        """``(B, C)`` Ablation-CAM channel weights ``(S - S_c) / S``."""
        s = ctx.scores[:, None].to(ctx.activations.dtype)
        return (s - self.ablated_scores(ctx)) / s

    def __call__(self, ctx: LayerContext) -> Tensor:
        weights = self.weigh_context(ctx)
        return torch.einsum("bc,bchw->bhw", weights, ctx.activations)
