"""Gradient attribution maps (seed paper 004, Schulze-Weddige et al.), batched, on the model's device.

Methods (each a function ``f(model, x, target=None, **kw) -> Tensor``):

* :func:`saliency` -- K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional Networks:
  Visualising Image Classification Models and Saliency Maps", ICLR workshop 2014.
* :func:`input_x_gradient` -- A. Shrikumar, P. Greenside, A. Shcherbina, A. Kundaje, "Not Just a
  Black Box: Learning Important Features Through Propagating Activation Differences",
  arXiv:1605.01713, 2016.
* :func:`smoothgrad` -- D. Smilkov, N. Thorat, B. Kim, F. Viegas, M. Wattenberg, "SmoothGrad:
  removing noise by adding noise", arXiv:1706.03825, 2017.
* :func:`gradient_shap` -- S. M. Lundberg, S.-I. Lee, "A Unified Approach to Interpreting Model
  Predictions", NeurIPS 2017 (expected gradients as defined by captum's ``GradientShap``).
* :func:`guided_backprop` -- J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving
  for Simplicity: The All Convolutional Net", ICLR workshop 2015.
* :func:`guided_gradcam` -- R. R. Selvaraju et al., "Grad-CAM: Visual Explanations from Deep
  Networks via Gradient-based Localization", ICCV 2017 (combines a guided-backprop map with a
  Grad-CAM map computed elsewhere).

Common conventions:

* ``x`` is a batch ``(B, C, *spatial)`` (usually ``(B, C, H, W)``); the returned map is
  ``(B, *spatial)`` after the channel reduction (``reduce="none"`` keeps ``(B, C, *spatial)``), a
  detached floating tensor on ``x``'s device. The computation runs on the model's device (that of
  its first parameter or buffer) in chunks of ``batch_size`` rows.
* ``target`` selects the scalar score that is differentiated per sample: ``None`` (logit 0 of a
  single-logit model, the arg-max logit of each sample otherwise), an ``int`` (that logit for every
  sample), a sequence / 1-D tensor of ``B`` ints (one logit per sample) or a callable mapping the
  logits ``(b, K)`` of a chunk to scores ``(b,)``. A callable must be row-wise (row ``i`` of its
  result depends only on row ``i`` of the logits), because the noisy methods feed it chunks of
  noisy copies.
* Channel reduction: with ``absolute=True`` the per-channel attribution is replaced by its absolute
  value first; then ``reduce`` is ``"max"`` (max over channels, Simonyan et al.'s choice for
  saliency), ``"sum"``, ``"mean"`` or ``"none"``. Signed by default (``absolute=False``):
  :func:`input_x_gradient` and :func:`gradient_shap` (channel sum, so that the completeness of
  gradient SHAP carries over to the map). Unsigned by default: :func:`saliency`,
  :func:`smoothgrad`, :func:`guided_backprop` (absolute value, max over channels).
* Gradients are taken with :func:`torch.autograd.grad` with respect to the input only: parameters'
  ``.grad`` are never written. With ``eval_mode=True`` (default) the model is switched to eval mode
  for the call (so that batch norm and dropout make the attribution of a sample independent of the
  batch it is in) and every module's ``training`` flag is restored afterwards, even on error.
* The random methods use a :class:`torch.Generator` seeded with ``seed`` on the CPU; the same draws
  (noise pattern, interpolation coefficients, baseline indices) are used for every sample, so a
  sample's map depends neither on the other samples of the batch nor on ``batch_size``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hemwsl.errors import HemwslInputError, check_choice

__all__ = [
    "ATTRIBUTION_CLASSES",
    "ATTRIBUTION_METHODS",
    "GUIDED_ACTIVATIONS",
    "REDUCTIONS",
    "AttributionMethod",
    "GradientShap",
    "GuidedBackprop",
    "InputXGradient",
    "Saliency",
    "SmoothGrad",
    "TargetSpec",
    "get_attribution_method",
    "gradient_shap",
    "guided_activations",
    "guided_backprop",
    "guided_gradcam",
    "input_x_gradient",
    "reduce_channels",
    "saliency",
    "smoothgrad",
]

TargetSpec = Union[None, int, Sequence[int], Tensor, Callable[[Tensor], Tensor]]
"""What :func:`saliency` and the other methods accept as ``target``."""

REDUCTIONS: tuple[str, ...] = ("max", "sum", "mean", "none")
"""Accepted values of ``reduce``."""


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def reduce_channels(attr: Tensor, reduce: str = "max", absolute: bool = False) -> Tensor:
    """Reduce a per-channel attribution ``(B, C, *spatial)`` to a map ``(B, *spatial)``.

    Args:
        attr: per-channel attribution.
        reduce: ``"max"``, ``"sum"``, ``"mean"`` over dim 1, or ``"none"`` (returned as is).
        absolute: take the absolute value of every channel before reducing.

    Returns:
        The reduced attribution.
    """
    check_choice("reduce", reduce, REDUCTIONS)
    if absolute:
        attr = attr.abs()
    if reduce == "max":
        return attr.amax(dim=1)
    if reduce == "sum":
        return attr.sum(dim=1)
    if reduce == "mean":
        return attr.mean(dim=1)
    return attr


def _model_device(model: nn.Module, fallback: torch.device) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return fallback


def _check_input(x: Any) -> Tensor:
    if not isinstance(x, Tensor):
        raise HemwslInputError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim < 3:
        raise HemwslInputError(f"x must be a batch (B, C, *spatial), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise HemwslInputError("x is an empty batch")
    return x


def _check_batch_size(batch_size: int | None) -> int | None:
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise HemwslInputError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    return batch_size


def _check_n_samples(n_samples: int) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise HemwslInputError(f"n_samples must be a positive integer, got {n_samples!r}")
    return n_samples


def _prepare(model: nn.Module, x: Tensor) -> tuple[Tensor, torch.device]:
    """Input on the model's device, floating point, detached from any graph."""
    x = _check_input(x)
    device = _model_device(model, x.device)
    x = x.detach().to(device)
    if not x.is_floating_point():
        x = x.float()
    return x, device


@contextlib.contextmanager
def _eval_mode(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Put ``model`` in eval mode and restore every module's ``training`` flag afterwards."""
    if not enabled:
        yield
        return
    flags = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def _grad_context() -> Iterator[None]:
    """Gradients enabled even when the caller runs under ``torch.no_grad`` or ``torch.inference_mode``."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def _logits_2d(logits: Any) -> Tensor:
    if not isinstance(logits, Tensor):
        raise HemwslInputError(f"the model must return a logits tensor, got {type(logits).__name__}")
    if logits.ndim == 1:
        return logits[:, None]
    return logits


class _Target:
    """A ``target`` resolved to per-sample logit indices, a callable, or "arg-max of the rows seen"."""

    def __init__(self, target: TargetSpec, batch: int) -> None:
        self.fn: Callable[[Tensor], Tensor] | None = None
        self.index: Tensor | None = None  # (B,) long, on the CPU
        if target is None:
            return
        if callable(target) and not isinstance(target, Tensor):
            self.fn = target
            return
        if isinstance(target, bool):
            raise HemwslInputError(f"target must be None, an int, B ints or a callable, got {target!r}")
        if isinstance(target, int):
            self.index = torch.full((batch,), int(target), dtype=torch.long)
            return
        if isinstance(target, Tensor):
            index = target.detach().to("cpu")
            if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
                raise HemwslInputError(f"a target tensor must hold integer logit indices, got {index.dtype}")
            index = index.long().reshape(-1) if index.ndim <= 1 else index
        elif isinstance(target, Sequence) and not isinstance(target, str):
            if not all(isinstance(t, int) and not isinstance(t, bool) for t in target):
                raise HemwslInputError(f"a target sequence must hold ints, got {list(target)!r}")
            index = torch.as_tensor(list(target), dtype=torch.long)
        else:
            raise HemwslInputError(
                f"target must be None, an int, a sequence of B ints or a callable, got {type(target).__name__}"
            )
        if index.ndim != 1:
            raise HemwslInputError(f"a target tensor must be 0-D or 1-D, got shape {tuple(index.shape)}")
        if index.numel() == 1 and batch != 1:
            index = index.expand(batch).clone()
        if index.numel() != batch:
            raise HemwslInputError(f"target gives {index.numel()} logit indices for a batch of {batch}")
        self.index = index

    @property
    def is_argmax(self) -> bool:
        return self.fn is None and self.index is None

    def scores(self, logits: Tensor, rows: Tensor) -> Tensor:
        """Scores ``(b,)`` of the chunk ``logits`` whose rows belong to the samples ``rows``."""
        if self.fn is not None:
            scores = self.fn(logits)
            if not isinstance(scores, Tensor) or scores.numel() != logits.shape[0]:
                shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
                raise HemwslInputError(
                    f"a callable target must map logits of shape {tuple(logits.shape)} to ({logits.shape[0]},) "
                    f"scores, got {shape}"
                )
            return scores.reshape(-1)
        logits = _logits_2d(logits)
        if logits.ndim != 2:
            raise HemwslInputError(
                f"logits of shape {tuple(logits.shape)} need a callable target mapping them to per-sample scores"
            )
        if self.index is None:
            index = (
                torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
                if logits.shape[1] == 1
                else logits.detach().argmax(dim=1)
            )
        else:
            index = self.index[rows.cpu()].to(logits.device)
            bad = (index < 0) | (index >= logits.shape[1])
            if bool(bad.any()):
                raise HemwslInputError(
                    f"target index {int(index[bad][0])} out of range for a model with {logits.shape[1]} outputs"
                )
        return logits.gather(1, index[:, None])[:, 0]

    def resolve_argmax(self, model: nn.Module, x: Tensor, batch_size: int | None) -> None:
        """Fix "arg-max" targets on the clean input (needed before feeding noisy copies)."""
        if not self.is_argmax:
            return
        indices = []
        with torch.no_grad():
            for start, stop in _chunks(x.shape[0], batch_size):
                logits = _logits_2d(model(x[start:stop]))
                if logits.ndim != 2:
                    raise HemwslInputError(
                        f"logits of shape {tuple(logits.shape)} need a callable target mapping them to scores"
                    )
                if logits.shape[1] == 1:
                    indices.append(torch.zeros(stop - start, dtype=torch.long))
                else:
                    indices.append(logits.argmax(dim=1).cpu())
        self.index = torch.cat(indices)


def _chunks(n: int, batch_size: int | None) -> Iterator[tuple[int, int]]:
    step = n if batch_size is None else batch_size
    for start in range(0, n, step):
        yield start, min(start + step, n)


def _input_grad(model: nn.Module, inputs: Tensor, target: _Target, rows: Tensor) -> Tensor:
    """d score / d input for every row of ``inputs`` (rows are independent for a row-wise model)."""
    leaf = inputs.detach().clone().requires_grad_(True)
    scores = target.scores(model(leaf), rows)
    (grad,) = torch.autograd.grad(scores.sum(), leaf, allow_unused=True)
    if grad is None:  # the score does not depend on the input
        grad = torch.zeros_like(leaf)
    return grad.detach()


def _plain_gradients(
    model: nn.Module, x: Tensor, target: TargetSpec, batch_size: int | None, eval_mode: bool
) -> Tensor:
    tgt = _Target(target, x.shape[0])
    grads = []
    with _eval_mode(model, eval_mode), _grad_context():
        for start, stop in _chunks(x.shape[0], batch_size):
            rows = torch.arange(start, stop)
            grads.append(_input_grad(model, x[start:stop], tgt, rows))
    return torch.cat(grads)


def _cpu_generator(seed: int) -> torch.Generator:
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise HemwslInputError(f"seed must be an int, got {seed!r}")
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator


def _finish(attr: Tensor, reduce: str, absolute: bool, device: torch.device) -> Tensor:
    return reduce_channels(attr, reduce, absolute).detach().to(device)


# ----------------------------------------------------------------------------------------------
# gradient methods
# ----------------------------------------------------------------------------------------------


def saliency(
    model: nn.Module,
    x: Tensor,
    target: TargetSpec = None,
    *,
    reduce: str = "max",
    absolute: bool = True,
    batch_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """Saliency map ``max_c |d score / d x_c|`` (Simonyan et al., ICLR workshop 2014).

    K. Simonyan, A. Vedaldi, A. Zisserman, "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR workshop 2014. For a multi-channel image the
    paper takes the maximum of the absolute gradient over the channels (``reduce="max"``).

    Args:
        model: classifier returning logits ``(B, K)`` or ``(B,)``.
        x: input batch ``(B, C, *spatial)``.
        target: score to differentiate (see the module docstring).
        reduce: channel reduction, ``"max"`` (paper), ``"sum"``, ``"mean"`` or ``"none"``.
        absolute: take ``|gradient|`` per channel first (paper); ``False`` gives the raw gradient.
        batch_size: rows per forward/backward pass; ``None`` runs the whole batch at once.
        eval_mode: run the model in eval mode (training flags restored afterwards).

    Returns:
        ``(B, *spatial)`` map on ``x``'s device (unsigned unless ``absolute=False``).
    """
    out_device = _check_input(x).device
    x, _ = _prepare(model, x)
    grads = _plain_gradients(model, x, target, _check_batch_size(batch_size), eval_mode)
    return _finish(grads, reduce, absolute, out_device)


def input_x_gradient(
    model: nn.Module,
    x: Tensor,
    target: TargetSpec = None,
    *,
    reduce: str = "sum",
    absolute: bool = False,
    batch_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """Input times gradient, ``x * d score / d x`` (Shrikumar et al. 2016). Signed by default.

    A. Shrikumar, P. Greenside, A. Shcherbina, A. Kundaje, "Not Just a Black Box: Learning
    Important Features Through Propagating Activation Differences", arXiv:1605.01713, 2016. For a
    linear model ``w . x`` the channel sum of the map adds up to the score.

    Args:
        model: classifier returning logits ``(B, K)`` or ``(B,)``.
        x: input batch ``(B, C, *spatial)``.
        target: score to differentiate (see the module docstring).
        reduce: channel reduction, ``"sum"`` (default), ``"max"``, ``"mean"`` or ``"none"``.
        absolute: take the absolute value per channel before reducing.
        batch_size: rows per forward/backward pass; ``None`` runs the whole batch at once.
        eval_mode: run the model in eval mode (training flags restored afterwards).

    Returns:
        ``(B, *spatial)`` signed map on ``x``'s device (unsigned with ``absolute=True``).
    """
    out_device = _check_input(x).device
    x, _ = _prepare(model, x)
    grads = _plain_gradients(model, x, target, _check_batch_size(batch_size), eval_mode)
    return _finish(x * grads, reduce, absolute, out_device)


def smoothgrad(
    model: nn.Module,
    x: Tensor,
    target: TargetSpec = None,
    *,
    n_samples: int = 50,
    noise_level: float = 0.15,
    seed: int = 0,
    reduce: str = "max",
    absolute: bool = True,
    batch_size: int | None = 32,
    eval_mode: bool = True,
) -> Tensor:
    """SmoothGrad: the gradient averaged over noisy copies of the input (Smilkov et al. 2017).

    D. Smilkov, N. Thorat, B. Kim, F. Viegas, M. Wattenberg, "SmoothGrad: removing noise by adding
    noise", arXiv:1706.03825, 2017. For sample ``i``, ``n_samples`` copies
    ``x_i + sigma_i * eps_k`` with ``eps_k ~ N(0, I)`` and
    ``sigma_i = noise_level * (max(x_i) - min(x_i))`` go through the network (all copies of all
    samples, in chunks of ``batch_size`` rows); the raw gradients are averaged, then channel-reduced
    like :func:`saliency` (absolute value, max over channels). The draws ``eps_k`` come from a CPU
    generator seeded with ``seed`` and are the same for every sample. Arg-max targets are taken on
    the clean input.

    Args:
        model: classifier returning logits ``(B, K)`` or ``(B,)``.
        x: input batch ``(B, C, *spatial)``.
        target: score to differentiate (see the module docstring).
        n_samples: noisy copies per sample (paper: 50).
        noise_level: noise standard deviation as a fraction of each sample's value range
            (paper: 10-20 %).
        seed: seed of the noise generator.
        reduce: channel reduction, ``"max"`` (default), ``"sum"``, ``"mean"`` or ``"none"``.
        absolute: take the absolute value of the mean gradient per channel first.
        batch_size: rows (noisy copies) per forward/backward pass; ``None`` runs all at once.
        eval_mode: run the model in eval mode (training flags restored afterwards).

    Returns:
        ``(B, *spatial)`` map on ``x``'s device (unsigned unless ``absolute=False``).
    """
    out_device = _check_input(x).device
    n_samples = _check_n_samples(n_samples)
    batch_size = _check_batch_size(batch_size)
    if not float(noise_level) >= 0:
        raise HemwslInputError(f"noise_level must be >= 0, got {noise_level!r}")
    x, device = _prepare(model, x)
    batch = x.shape[0]
    noise = torch.randn((n_samples, *x.shape[1:]), generator=_cpu_generator(seed), dtype=x.dtype)
    flat = x.reshape(batch, -1)
    sigma = float(noise_level) * (flat.amax(dim=1) - flat.amin(dim=1))  # (B,)
    tgt = _Target(target, batch)
    with _eval_mode(model, eval_mode), _grad_context():
        total = torch.zeros(x.shape, dtype=x.dtype, device=device)
        tgt.resolve_argmax(model, x, batch_size)
        for start, stop in _chunks(batch * n_samples, batch_size):
            rows = torch.arange(start, stop)
            sample, draw = rows // n_samples, rows % n_samples
            sample_dev = sample.to(device)
            eps = noise[draw].to(device)
            scale = sigma[sample_dev].reshape(-1, *([1] * (x.ndim - 1)))
            grads = _input_grad(model, x[sample_dev] + scale * eps, tgt, sample)
            total.index_add_(0, sample_dev, grads)
    return _finish(total / n_samples, reduce, absolute, out_device)


def _baselines(baselines: Tensor | float | None, x: Tensor) -> Tensor:
    """Baseline distribution ``(N_b, C, *spatial)`` on ``x``'s device and dtype."""
    sample_shape = tuple(x.shape[1:])
    if baselines is None:
        return torch.zeros((1, *sample_shape), dtype=x.dtype, device=x.device)
    if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
        return torch.full((1, *sample_shape), float(baselines), dtype=x.dtype, device=x.device)
    if not isinstance(baselines, Tensor):
        raise HemwslInputError(f"baselines must be None, a number or a tensor, got {type(baselines).__name__}")
    b = baselines.detach().to(device=x.device, dtype=x.dtype)
    if b.ndim == x.ndim - 1:
        b = b[None]
    if b.ndim != x.ndim or b.shape[0] == 0:
        raise HemwslInputError(
            f"baselines must be (C, *spatial) or (N, C, *spatial) for inputs {tuple(x.shape)}, got {tuple(b.shape)}"
        )
    try:
        return torch.broadcast_to(b, (b.shape[0], *sample_shape))
    except RuntimeError as err:
        raise HemwslInputError(
            f"baselines of shape {tuple(baselines.shape)} do not broadcast to samples of shape {sample_shape}"
        ) from err


def gradient_shap(
    model: nn.Module,
    x: Tensor,
    target: TargetSpec = None,
    *,
    baselines: Tensor | float | None = None,
    n_samples: int = 5,
    stdevs: float = 0.0,
    seed: int = 0,
    reduce: str = "sum",
    absolute: bool = False,
    batch_size: int | None = 32,
    eval_mode: bool = True,
) -> Tensor:
    """Gradient SHAP / expected gradients (Lundberg & Lee 2017), captum's ``GradientShap``. Signed.

    S. M. Lundberg, S.-I. Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS
    2017. As in captum's ``GradientShap``: for each of ``n_samples`` draws ``k``, a baseline
    ``b_k`` is picked uniformly from the ``baselines`` distribution, Gaussian noise of standard
    deviation ``stdevs`` (absolute units) is added to the input, ``x'_k = x + stdevs * eps_k``,
    ``alpha_k ~ U(0, 1)`` and the gradient is taken at ``b_k + alpha_k (x'_k - b_k)``; the
    attribution is ``mean_k grad_k * (x'_k - b_k)`` (with ``stdevs=0``, ``x'_k = x``). In
    expectation it is complete: the channel-and-pixel sum tends to ``f(x) - E_b f(b)``, exactly so
    for a model linear in ``x`` when ``stdevs=0``. The draws come from a CPU generator seeded with
    ``seed`` and are the same for every sample. Arg-max targets are taken on the clean input.

    Args:
        model: classifier returning logits ``(B, K)`` or ``(B,)``.
        x: input batch ``(B, C, *spatial)``.
        target: score to differentiate (see the module docstring).
        baselines: ``None`` (all-zero baseline), a number (constant baseline), a tensor
            ``(C, *spatial)`` (one baseline) or ``(N, C, *spatial)`` (a distribution of ``N``
            baselines, sampled uniformly; broadcastable trailing shapes are allowed).
        n_samples: draws per sample (captum's default: 5).
        stdevs: standard deviation of the noise added to the input (captum's default: 0).
        seed: seed of the generator.
        reduce: channel reduction, ``"sum"`` (default, keeps completeness), ``"max"``, ``"mean"``
            or ``"none"``.
        absolute: take the absolute value per channel before reducing.
        batch_size: rows (draws) per forward/backward pass; ``None`` runs all at once.
        eval_mode: run the model in eval mode (training flags restored afterwards).

    Returns:
        ``(B, *spatial)`` signed map on ``x``'s device (unsigned with ``absolute=True``).
    """
    out_device = _check_input(x).device
    n_samples = _check_n_samples(n_samples)
    batch_size = _check_batch_size(batch_size)
    if not float(stdevs) >= 0:
        raise HemwslInputError(f"stdevs must be >= 0, got {stdevs!r}")
    x, device = _prepare(model, x)
    base = _baselines(baselines, x)
    batch = x.shape[0]
    generator = _cpu_generator(seed)
    base_index = torch.randint(base.shape[0], (n_samples,), generator=generator)
    alpha = torch.rand((n_samples,), generator=generator, dtype=x.dtype)
    noise = (
        torch.randn((n_samples, *x.shape[1:]), generator=generator, dtype=x.dtype) if float(stdevs) > 0 else None
    )
    tgt = _Target(target, batch)
    view = (-1, *([1] * (x.ndim - 1)))
    with _eval_mode(model, eval_mode), _grad_context():
        total = torch.zeros(x.shape, dtype=x.dtype, device=device)
        tgt.resolve_argmax(model, x, batch_size)
        for start, stop in _chunks(batch * n_samples, batch_size):
            rows = torch.arange(start, stop)
            sample, draw = rows // n_samples, rows % n_samples
            sample_dev = sample.to(device)
            inputs = x[sample_dev]
            if noise is not None:
                inputs = inputs + float(stdevs) * noise[draw].to(device)
            b = base[base_index[draw].to(device)]
            a = alpha[draw].to(device).reshape(view)
            grads = _input_grad(model, b + a * (inputs - b), tgt, sample)
            total.index_add_(0, sample_dev, grads * (inputs - b))
    return _finish(total / n_samples, reduce, absolute, out_device)


# ----------------------------------------------------------------------------------------------
# guided backpropagation
# ----------------------------------------------------------------------------------------------


def _relu_forward(x: Tensor) -> Tensor:
    return x.clamp_min(0)


def _relu_derivative(x: Tensor) -> Tensor:
    return (x > 0).to(x.dtype)


def _relu6_forward(x: Tensor) -> Tensor:
    return x.clamp(0, 6)


def _relu6_derivative(x: Tensor) -> Tensor:
    return ((x > 0) & (x < 6)).to(x.dtype)


def _silu_forward(x: Tensor) -> Tensor:
    return F.silu(x)


def _silu_derivative(x: Tensor) -> Tensor:
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


_GUIDED_RULES: dict[type[nn.Module], tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    nn.ReLU: (_relu_forward, _relu_derivative),
    nn.ReLU6: (_relu6_forward, _relu6_derivative),
    nn.SiLU: (_silu_forward, _silu_derivative),
}

GUIDED_ACTIVATIONS: tuple[type[nn.Module], ...] = tuple(_GUIDED_RULES)
"""Activation module classes (and their subclasses) that :func:`guided_backprop` makes guided."""


class _GuidedActivation(torch.autograd.Function):
    """``y = act(x)``; backward ``dx = max(dy, 0) * act'(x)`` (Springenberg et al.'s guided rule)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, forward: Callable, derivative: Callable) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.derivative = derivative
        return forward(x)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return grad_output.clamp_min(0) * ctx.derivative(x), None, None


def _rule_for(module: nn.Module, activations: tuple[type[nn.Module], ...]):
    if not isinstance(module, activations):
        return None
    for cls in type(module).__mro__:
        if cls in _GUIDED_RULES:
            return _GUIDED_RULES[cls]
    return None


@contextlib.contextmanager
def guided_activations(
    model: nn.Module, activations: Sequence[type[nn.Module]] = GUIDED_ACTIVATIONS
) -> Iterator[int]:
    """Temporarily make the activation modules of ``model`` backpropagate with the guided rule.

    Every module that is an instance of one of ``activations`` (a subset of
    :data:`GUIDED_ACTIVATIONS`: ``nn.ReLU``, ``nn.ReLU6``, ``nn.SiLU``) gets an instance attribute
    ``forward`` computing the same activation (out of place, whatever its ``inplace`` flag) through
    a custom autograd function whose backward is ``max(dy, 0) * act'(x)``. For ReLU this is exactly
    guided backpropagation (Springenberg et al. 2015): the gradient passes only where the input is
    positive and the incoming gradient is positive. For ReLU6 and SiLU (EfficientNet) the forward
    mask is replaced by the activation's derivative, negative incoming gradients being clamped the
    same way. Forward hooks on these modules still fire. Functional activations (``F.relu``,
    ``torch.relu``, ``F.silu`` called inside a module's ``forward``) and other activation classes
    (GELU, Hardswish, timm/MONAI Swish) are not covered and backpropagate normally. The original
    ``forward`` attributes are restored on exit, also when an exception is raised.

    Args:
        model: the network (modified in place for the duration of the context).
        activations: activation classes to make guided.

    Yields:
        The number of modules made guided.
    """
    activations = tuple(activations)
    unknown = [cls for cls in activations if not any(issubclass(cls, known) for known in _GUIDED_RULES)]
    if unknown:
        names = ", ".join(getattr(cls, "__name__", repr(cls)) for cls in unknown)
        raise HemwslInputError(
            f"no guided rule for {names}; supported: {', '.join(c.__name__ for c in GUIDED_ACTIVATIONS)}"
        )
    patched: list[tuple[nn.Module, bool, Any]] = []
    seen: set[int] = set()
    try:
        for module in model.modules():
            if id(module) in seen:
                continue
            seen.add(id(module))
            rule = _rule_for(module, activations)
            if rule is None:
                continue
            had_own = "forward" in module.__dict__
            patched.append((module, had_own, module.__dict__.get("forward")))
            fwd, der = rule
            module.forward = lambda inp, _f=fwd, _d=der: _GuidedActivation.apply(inp, _f, _d)  # type: ignore[method-assign]
        yield len(patched)
    finally:
        for module, had_own, original in reversed(patched):
            if had_own:
                module.forward = original  # type: ignore[method-assign]
            else:
                module.__dict__.pop("forward", None)


def guided_backprop(
    model: nn.Module,
    x: Tensor,
    target: TargetSpec = None,
    *,
    reduce: str = "max",
    absolute: bool = True,
    activations: Sequence[type[nn.Module]] = GUIDED_ACTIVATIONS,
    batch_size: int | None = None,
    eval_mode: bool = True,
) -> Tensor:
    """Guided backpropagation (Springenberg et al. 2015).

    J. T. Springenberg, A. Dosovitskiy, T. Brox, M. Riedmiller, "Striving for Simplicity: The All
    Convolutional Net", ICLR workshop 2015. The gradient of the score with respect to the input,
    where every ReLU passes back only positive gradients at positive inputs; see
    :func:`guided_activations` for the modules covered (``nn.ReLU``; ``nn.ReLU6`` and ``nn.SiLU``
    with the same clamp of negative gradients times the activation's derivative) and for what is
    not covered (functional activations). Activation modules are patched for the call only and
    restored in a ``finally`` block.

    Args:
        model: classifier returning logits ``(B, K)`` or ``(B,)``.
        x: input batch ``(B, C, *spatial)``.
        target: score to differentiate (see the module docstring).
        reduce: channel reduction, ``"max"`` (default), ``"sum"``, ``"mean"`` or ``"none"``.
        absolute: take the absolute value per channel first (default); ``False`` keeps the sign.
        activations: activation classes to make guided (a subset of :data:`GUIDED_ACTIVATIONS`).
        batch_size: rows per forward/backward pass; ``None`` runs the whole batch at once.
        eval_mode: run the model in eval mode (training flags restored afterwards).

    Returns:
        ``(B, *spatial)`` map on ``x``'s device (unsigned unless ``absolute=False``).
    """
    out_device = _check_input(x).device
    x, _ = _prepare(model, x)
    batch_size = _check_batch_size(batch_size)
    with guided_activations(model, activations) as n_guided:
        if n_guided == 0:
            warnings.warn(
                "guided_backprop: the model has no ReLU/ReLU6/SiLU module; the result is the plain gradient",
                stacklevel=2,
            )
        grads = _plain_gradients(model, x, target, batch_size, eval_mode)
    return _finish(grads, reduce, absolute, out_device)


def guided_gradcam(
    guided_map: Tensor,
    gradcam_map: Tensor,
    *,
    reduce: str = "max",
    absolute: bool = True,
    mode: str = "bilinear",
) -> Tensor:
    """Guided Grad-CAM: guided backprop times the upsampled Grad-CAM map (Selvaraju et al. 2017).

    R. R. Selvaraju, M. Cogswell, A. Das, R. Vedantam, D. Parikh, D. Batra, "Grad-CAM: Visual
    Explanations from Deep Networks via Gradient-based Localization", ICCV 2017. The elementwise
    product of a channel-reduced guided-backprop map and a Grad-CAM map computed by the caller,
    resized to the guided map's spatial size when it differs.

    Args:
        guided_map: ``(B, H, W)`` map from :func:`guided_backprop`, or a per-channel
            ``(B, C, H, W)`` one (``reduce="none"``), which is then reduced with ``reduce`` and
            ``absolute``.
        gradcam_map: ``(B, h, w)`` or ``(B, 1, h, w)`` Grad-CAM map.
        reduce: channel reduction of a per-channel ``guided_map``.
        absolute: absolute value per channel before reducing a per-channel ``guided_map``.
        mode: interpolation mode of :func:`torch.nn.functional.interpolate` for the resize.

    Returns:
        ``(B, H, W)`` map on ``guided_map``'s device.
    """
    if not isinstance(guided_map, Tensor) or not isinstance(gradcam_map, Tensor):
        raise HemwslInputError("guided_map and gradcam_map must be tensors")
    if guided_map.ndim == 4:
        guided_map = reduce_channels(guided_map, reduce, absolute)
    if guided_map.ndim != 3:
        raise HemwslInputError(f"guided_map must be (B, H, W) or (B, C, H, W), got {tuple(guided_map.shape)}")
    cam = gradcam_map.detach().to(device=guided_map.device)
    if cam.ndim == 4:
        if cam.shape[1] != 1:
            raise HemwslInputError(f"gradcam_map must have one channel, got shape {tuple(cam.shape)}")
        cam = cam[:, 0]
    if cam.ndim != 3 or cam.shape[0] != guided_map.shape[0]:
        raise HemwslInputError(
            f"gradcam_map must be (B, h, w) with B = {guided_map.shape[0]}, got {tuple(gradcam_map.shape)}"
        )
    dtype = guided_map.dtype if guided_map.is_floating_point() else torch.float32
    cam = cam.to(dtype)
    if cam.shape[-2:] != guided_map.shape[-2:]:
        kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
        cam = F.interpolate(cam[:, None], size=tuple(guided_map.shape[-2:]), mode=mode, **kwargs)[:, 0]
    return guided_map.detach().to(dtype) * cam


# ----------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------

ATTRIBUTION_METHODS: dict[str, Callable[..., Tensor]] = {
    "saliency": saliency,
    "input_x_gradient": input_x_gradient,
    "smoothgrad": smoothgrad,
    "gradient_shap": gradient_shap,
    "guided_backprop": guided_backprop,
}
"""Name -> attribution function ``f(model, x, target=None, **kw) -> (B, *spatial)``."""


class AttributionMethod:
    """A gradient attribution function with bound keyword defaults, for the CAM registry.

    Subclasses set ``name``, ``paper``, ``signed`` (whether the default map can be negative) and
    ``function``. ``signed`` of an instance follows its ``absolute`` default:
    ``signed = not absolute``.

    Args:
        **defaults: keyword arguments of ``function`` bound to this instance (overridable per call).
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = True
    signed: bool = False
    function: ClassVar[Callable[..., Tensor]]

    def __init__(self, **defaults: Any) -> None:
        import inspect

        accepted = {
            p.name
            for p in inspect.signature(type(self).function).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }
        unknown = sorted(set(defaults) - accepted)
        if unknown:
            raise HemwslInputError(
                f"{self.name}: unknown option(s) {', '.join(unknown)}; accepted: {', '.join(sorted(accepted))}"
            )
        self.defaults = dict(defaults)
        if "absolute" in defaults:
            self.signed = not bool(defaults["absolute"])

    def __call__(self, model: nn.Module, x: Tensor, target: TargetSpec = None, **kwargs: Any) -> Tensor:
        """Attribution map ``(B, *spatial)`` of ``x`` for ``target``; ``kwargs`` override the defaults."""
        return type(self).function(model, x, target, **{**self.defaults, **kwargs})

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.defaults.items())
        return f"{type(self).__name__}({options})"


class Saliency(AttributionMethod):
    """:func:`saliency` (Simonyan et al. 2014)."""

    name = "saliency"
    paper = "Simonyan, Vedaldi, Zisserman, ICLR workshop 2014"
    signed = False
    function = staticmethod(saliency)


class InputXGradient(AttributionMethod):
    """:func:`input_x_gradient` (Shrikumar et al. 2016)."""

    name = "input_x_gradient"
    paper = "Shrikumar, Greenside, Shcherbina, Kundaje, arXiv:1605.01713, 2016"
    signed = True
    function = staticmethod(input_x_gradient)


class SmoothGrad(AttributionMethod):
    """:func:`smoothgrad` (Smilkov et al. 2017)."""

    name = "smoothgrad"
    paper = "Smilkov, Thorat, Kim, Viegas, Wattenberg, arXiv:1706.03825, 2017"
    signed = False
    function = staticmethod(smoothgrad)


class GradientShap(AttributionMethod):
    """:func:`gradient_shap` (Lundberg & Lee 2017)."""

    name = "gradient_shap"
    paper = "Lundberg, Lee, NeurIPS 2017"
    signed = True
    function = staticmethod(gradient_shap)


class GuidedBackprop(AttributionMethod):
    """:func:`guided_backprop` (Springenberg et al. 2015)."""

    name = "guided_backprop"
    paper = "Springenberg, Dosovitskiy, Brox, Riedmiller, ICLR workshop 2015"
    signed = False
    function = staticmethod(guided_backprop)


ATTRIBUTION_CLASSES: dict[str, type[AttributionMethod]] = {
    cls.name: cls for cls in (Saliency, InputXGradient, SmoothGrad, GradientShap, GuidedBackprop)
}
"""Name -> :class:`AttributionMethod` subclass (same keys as :data:`ATTRIBUTION_METHODS`)."""


def get_attribution_method(name: str, **defaults: Any) -> AttributionMethod:
    """Instantiate the attribution method ``name`` with keyword ``defaults``.

    Args:
        name: a key of :data:`ATTRIBUTION_CLASSES`.
        **defaults: keyword arguments bound to the instance.

    Returns:
        The :class:`AttributionMethod`.
    """
    check_choice("attribution method", name, ATTRIBUTION_CLASSES)
    return ATTRIBUTION_CLASSES[name](**defaults)
