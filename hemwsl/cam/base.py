"""Core of the CAM engine: targets, activation/gradient capture, the method interface, the engine, normalisers.

What to explain (a *target*) is kept apart from how to explain it (a *method*):

* targets: :class:`ClassTarget`, plain ints, one int per sample, or any callable ``f(logits) -> (B,)``,
  turned into a :class:`ResolvedTarget` by :func:`resolve_targets`;
* methods: subclasses of :class:`CAMMethod` (one file each under :mod:`hemwsl.cam.methods`, listed in
  :data:`hemwsl.cam.registry.CAM_METHODS`);
* :class:`CAMEngine` runs the network ONCE with forward hooks on every requested layer
  (:func:`capture`) and, when any method needs gradients, calls ``torch.autograd.grad`` ONCE for all
  layers, then evaluates every (method, layer) pair on the cached activations and gradients.

Maps are raw floats (non-negative after the ReLU each method specifies) and are upsampled bilinearly
(``align_corners=False``) to the input size; normalisation is always explicit
(:func:`normalize_per_slice`, :func:`normalize_per_volume`, :func:`normalize_none`).

Relation to pytorch-grad-cam (``pytorch_grad_cam`` 1.5.7): every method reproduces its
``get_cam_weights`` / ``get_cam_image`` math. pytorch-grad-cam min-max scales each map at feature
resolution, resizes it with ``cv2.resize`` (bilinear, half-pixel centres) and min-max scales the
resized map again (``aggregate_multi_layers``). ``torch``'s bilinear interpolation with
``align_corners=False`` gives the same values as ``cv2.resize`` (to ~3e-7 on float32 maps), so
pytorch-grad-cam's output for one layer is exactly
``normalize_per_slice(upsample(normalize_per_slice(engine.feature_maps(x)[key]), size))`` (checked in
the tests to 1e-5). Min-max scaling commutes with the linear resize except for its ``1e-7`` epsilon,
so ``normalize_per_slice(engine(x)[key])`` differs from it by about ``1e-7 / (max - min)`` of the raw
map (~5e-5 for a raw map spanning 2e-3).

Input-attribution methods (saliency and friends, in ``hemwsl.cam.attribution``) can be registered too:
a registry class with ``layerwise = False`` (the default for classes that are not :class:`CAMMethod`
subclasses, see :func:`is_layerwise`) is called as ``method.attribute(model, x, target)`` (or
``method(model, x, target)`` when it has no ``attribute``), with ``x`` the ``(B, C, H, W)`` batch on the
model's device and ``target`` the resolved target as a plain spec: a ``(B,)`` long tensor of class
indices, or the row-wise callable ``f(logits) -> (B,)``. It must return ``(B, H, W)`` maps at input
resolution, computed with its own forwards (the model is in eval mode; autograd follows the caller's
grad mode, so enable it inside); the engine stores them under ``(name, INPUT_LAYER)``.
"""

from __future__ import annotations

import contextlib
import logging
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterator, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hemwsl.errors import HemwslInputError, check_choice

if TYPE_CHECKING:  # pragma: no cover
    from hemwsl.cam.suffix import SuffixRunner

__all__ = [
    "ClassTarget",
    "ResolvedTarget",
    "TargetSpec",
    "resolve_targets",
    "Capture",
    "capture",
    "LayerContext",
    "CAMMethod",
    "INPUT_LAYER",
    "fused_layer_name",
    "upsample",
    "normalize_per_slice",
    "normalize_per_volume",
    "normalize_none",
    "NORMALIZERS",
    "get_normalizer",
    "model_device",
    "is_layerwise",
]

logger = logging.getLogger(__name__)

#: Layer name under which input-attribution methods (``layerwise = False``) store their maps.
INPUT_LAYER = "input"


def fused_layer_name(fuse: str) -> str:
    """The layer name of the maps fused across layers with ``fuse`` (``"fused_mean"`` / ``"fused_max"``)."""
    return f"fused_{fuse}"


def is_layerwise(method: Any) -> bool:
    """Whether a method (class or instance) is a layer-wise CAM method.

    Its ``layerwise`` attribute when it has one; otherwise ``True`` exactly for :class:`CAMMethod`
    subclasses, so other registered callables (e.g. ``hemwsl.cam.attribution`` classes) count as
    input-attribution methods.
    """
    flag = getattr(method, "layerwise", None)
    if flag is not None:
        return bool(flag)
    cls = method if isinstance(method, type) else type(method)
    return issubclass(cls, CAMMethod)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


# --------------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------------


class ClassTarget:
    """Explain the logit of one class: ``f(logits) = logits[:, index]``.

    Binary models with a single output use ``index=0``; multi-label models (any + five subtypes) use
    the subtype's index.

    Args:
        index: the logit's index (``>= 0``).
    """

    def __init__(self, index: int) -> None:
        self.index = _as_index(index, "ClassTarget index")

    def __call__(self, logits: Tensor) -> Tensor:
        if logits.ndim != 2 or not 0 <= self.index < logits.shape[1]:
            raise HemwslInputError(
                f"target class {self.index} is out of range for logits of shape {tuple(logits.shape)}"
            )
        return logits[:, self.index]

    def __repr__(self) -> str:
        return f"ClassTarget({self.index})"


#: What :func:`resolve_targets` accepts.
TargetSpec = Union[None, int, ClassTarget, Sequence[int], Tensor, np.ndarray, Callable[[Tensor], Tensor]]


def _as_index(value: Any, what: str) -> int:
    if isinstance(value, (Tensor, np.ndarray)) and value.ndim == 0:  # 0-d integer tensor / array
        if isinstance(value, Tensor):
            is_int = not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
        else:
            is_int = np.issubdtype(value.dtype, np.integer)
        if not is_int:
            raise HemwslInputError(f"{what} must be an int, got {value!r}")
        value = int(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise HemwslInputError(f"{what} must be an int, got {value!r}")
    value = int(value)
    if value < 0:
        raise HemwslInputError(f"{what} must be >= 0, got {value}")
    return value


@dataclass(frozen=True)
class ResolvedTarget:
    """A target ready for a batch.

    Attributes:
        fn: ``fn(logits (N, K)) -> (N,)``, the explained score of each row.
        indices: ``(B,)`` long tensor of the explained logit of each sample when the targets are class
            indices (``None`` for a callable target). Closed forms (CAM, AblationCAM at the head layer)
            need indices.
    """

    fn: Callable[[Tensor], Tensor]
    indices: Tensor | None = None

    def scores(self, logits: Tensor) -> Tensor:
        """The ``(B,)`` explained score of each sample of the batch."""
        if self.indices is not None:
            return logits.gather(1, self.indices.to(logits.device)[:, None])[:, 0]
        return self._checked(self.fn(logits), logits.shape[0])

    def row_scores(self, logits: Tensor, rows: Tensor) -> Tensor:
        """Scores of perturbed copies: row ``j`` of ``logits`` comes from sample ``rows[j]`` of the batch.

        A callable target is applied to the perturbed logits as a whole, so it must act row by row
        (``fn(logits)[j]`` depending on ``logits[j]`` only), as pytorch-grad-cam's targets do.
        """
        if self.indices is not None:
            idx = self.indices.to(logits.device)[rows.to(logits.device)]
            return logits.gather(1, idx[:, None])[:, 0]
        return self._checked(self.fn(logits), logits.shape[0])

    @staticmethod
    def _checked(out: Any, n: int) -> Tensor:
        if not isinstance(out, Tensor) or tuple(out.shape) != (n,):
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise HemwslInputError(f"a callable target must return a tensor of shape ({n},), got {shape}")
        return out


def resolve_targets(
    targets: TargetSpec, batch: int, num_outputs: int, logits: Tensor | None = None
) -> ResolvedTarget:
    """Turn a target specification into a :class:`ResolvedTarget` for a batch.

    Args:
        targets: ``None`` (the predicted class: ``argmax`` of the logits for multi-output models,
            output 0 for single-logit models), an ``int`` or :class:`ClassTarget` (same class for every
            sample), a sequence / 1D tensor of ints (one class per sample), or a callable
            ``f(logits) -> (B,)``.
        batch: number of samples.
        num_outputs: number of logits of the model.
        logits: ``(B, K)`` logits; needed for ``None`` with ``num_outputs > 1``.

    Returns:
        The resolved target.

    Raises:
        HemwslInputError: a class index out of range, a wrong number of per-sample targets, or an
            unsupported specification.
    """
    if num_outputs < 1:
        raise HemwslInputError(f"the model returned {num_outputs} logits")

    def _fixed(idx: Tensor) -> ResolvedTarget:
        bad = idx[(idx < 0) | (idx >= num_outputs)]
        if bad.numel():
            raise HemwslInputError(
                f"target class {int(bad[0])} is out of range: the model has {num_outputs} output(s) "
                f"(accepted: 0..{num_outputs - 1})"
            )
        return ResolvedTarget(fn=lambda lg, _i=idx: lg.gather(1, _i.to(lg.device)[:, None])[:, 0], indices=idx)

    if targets is None:
        if num_outputs == 1:
            return _fixed(torch.zeros(batch, dtype=torch.long))
        if logits is None:
            raise HemwslInputError("targets=None on a multi-output model needs the logits to pick the argmax")
        return _fixed(logits.detach().argmax(dim=1).cpu().long())
    if isinstance(targets, ClassTarget):
        return _fixed(torch.full((batch,), targets.index, dtype=torch.long))
    if (isinstance(targets, numbers.Integral) and not isinstance(targets, bool)) or (
        isinstance(targets, (Tensor, np.ndarray)) and targets.ndim == 0
    ):
        return _fixed(torch.full((batch,), _as_index(targets, "target class"), dtype=torch.long))
    if isinstance(targets, (Tensor, np.ndarray)) or (
        isinstance(targets, Sequence) and not isinstance(targets, (str, bytes))
    ):
        if isinstance(targets, (Tensor, np.ndarray)) and targets.ndim != 1:
            raise HemwslInputError(f"per-sample targets must be 1D, got shape {tuple(targets.shape)}")
        items = list(targets.tolist() if isinstance(targets, (Tensor, np.ndarray)) else targets)
        items = [t.index if isinstance(t, ClassTarget) else t for t in items]
        if len(items) != batch:
            raise HemwslInputError(f"got {len(items)} per-sample targets for a batch of {batch}")
        return _fixed(torch.as_tensor([_as_index(t, "target class") for t in items], dtype=torch.long))
    if callable(targets):
        return ResolvedTarget(fn=targets, indices=None)
    raise HemwslInputError(
        f"unsupported targets {targets!r}: use None, an int, ClassTarget, one int per sample, or a callable"
    )


# --------------------------------------------------------------------------------------------------
# Activation / gradient capture
# --------------------------------------------------------------------------------------------------


class Capture:
    """Activations recorded by :func:`capture` during one forward, and their gradients.

    Attributes:
        activations: ``{layer: (B, C, h, w) tensor}`` (still attached to the autograd graph when the
            forward ran with gradients).
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        self.activations: dict[str, Tensor] = {}
        self._versions: dict[str, int] = {}
        self._calls: dict[str, int] = dict.fromkeys(self.names, 0)

    def _hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not isinstance(output, Tensor) or output.ndim != 4:
                shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
                raise HemwslInputError(f"target layer {name!r} returned {shape}; CAM needs a (B, C, h, w) tensor")
            self._calls[name] += 1
            self.activations[name] = output
            self._versions[name] = output._version

        return hook

    def check(self) -> None:
        """Each layer ran exactly once and its output was not modified in place afterwards.

        Raises:
            HemwslInputError: otherwise.
        """
        for name in self.names:
            n = self._calls[name]
            if n != 1:
                raise HemwslInputError(
                    f"target layer {name!r} ran {n} times in one forward; CAM needs a layer that runs once"
                )
            if self.activations[name]._version != self._versions[name]:
                raise HemwslInputError(
                    f"the output of target layer {name!r} was modified in place later in the forward "
                    "(an inplace op after it); pick another layer"
                )

    def gradients(self, score: Tensor, names: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Gradients of ``score.sum()`` w.r.t. the activations of ``names``, in ONE ``torch.autograd.grad``.

        No weight gradient is computed or accumulated (parameters' ``.grad`` are untouched) and the
        graph is freed. A layer the score does not depend on gets a zero gradient.
        """
        names = self.names if names is None else list(names)
        tensors = [self.activations[n] for n in names]
        for n, t in zip(names, tensors):
            if not t.requires_grad:
                raise HemwslInputError(f"the activation of {n!r} does not require grad; cannot compute gradients")
        grads = torch.autograd.grad(score.sum(), tensors, allow_unused=True)
        return {n: (torch.zeros_like(t) if g is None else g) for n, t, g in zip(names, tensors, grads)}

    def clear(self) -> None:
        self.activations.clear()
        self._versions.clear()


@contextlib.contextmanager
def capture(model: nn.Module, layers: Mapping[str, nn.Module] | Sequence[str]) -> Iterator[Capture]:
    """Record the outputs of ``layers`` during forwards run inside the ``with`` block.

    Forward hooks are registered on entry and removed on exit, also when the block raises. Nothing else
    about the model changes (training mode, ``requires_grad`` flags, ``.grad``).

    Args:
        model: the network.
        layers: ``{name: module}`` or module paths of ``model``.

    Yields:
        A :class:`Capture`; call :meth:`Capture.gradients` for the gradients (one backward for all layers).
    """
    if not isinstance(layers, Mapping):
        from hemwsl.networks.registry import get_target_layers

        layers = get_target_layers(model, list(layers))
    cap = Capture(list(layers))
    handles = []
    try:
        for name, module in layers.items():
            handles.append(module.register_forward_hook(cap._hook(name)))
        yield cap
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------------------------------
# Method interface
# --------------------------------------------------------------------------------------------------


@dataclass
class LayerContext:
    """Everything a method may use for one target layer of one batch.

    Attributes:
        model: the network (in eval mode while the engine runs).
        layer: module path of the target layer.
        module: the target layer.
        inputs: ``(B, C_in, H, W)`` input batch, on the model's device, detached.
        activations: ``(B, C, h, w)`` detached activations of the layer.
        gradients: ``(B, C, h, w)`` gradients of the summed target scores w.r.t. the activations, or
            ``None`` when no requested method needs gradients.
        logits: ``(B, K)`` detached logits.
        scores: ``(B,)`` detached target scores.
        target: the resolved target.
        head_linear: the final ``nn.Linear`` when this layer feeds global average pooling + Linear
            directly and ``logits == head_linear(activations.mean((2, 3)))`` was verified on this
            batch; ``None`` otherwise (``head_note`` says why).
        head_note: why ``head_linear`` is ``None``.
        suffix_runner: returns the (prepared) :class:`~hemwsl.cam.suffix.SuffixRunner` of this layer,
            which runs the network from this layer on with a substituted activation.
    """

    model: nn.Module
    layer: str
    module: nn.Module
    inputs: Tensor
    activations: Tensor
    gradients: Tensor | None
    logits: Tensor
    scores: Tensor
    target: ResolvedTarget
    head_linear: nn.Linear | None = None
    head_note: str = ""
    suffix_runner: Callable[[], SuffixRunner] | None = None

    def run_model(self, inputs: Tensor) -> Tensor:
        """Logits of the full network on ``inputs`` (under ``torch.inference_mode``: no autograd)."""
        with torch.inference_mode():
            return self.model(inputs)


class CAMMethod:
    """Base class of the layer-wise CAM methods.

    A method is called as ``method(ctx) -> (B, h, w)`` raw map at the layer's resolution, before the
    engine's ReLU and upsampling. Most methods only implement :meth:`weigh` (channel weights, the map is
    ``sum_c weights[b, c] * A[b, c]``) or :meth:`compute` (any map from activations and gradients);
    perturbation methods override ``__call__``.

    Class attributes:
        name: registry name.
        paper: the citation.
        needs_gradients: the method reads ``ctx.gradients`` (the engine then runs the forward with
            autograd and calls ``torch.autograd.grad`` once for all layers).
        relu: the method's map is passed through a ReLU when the engine's ``relu=True``.
        head_only: the method is only defined at the layer feeding global average pooling + Linear.
        layerwise: ``True`` for CAM methods; ``False`` for input-attribution methods, which implement
            ``attribute(model, x, target) -> (B, H, W)`` instead.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_gradients: ClassVar[bool] = True
    relu: ClassVar[bool] = True
    head_only: ClassVar[bool] = False
    layerwise: ClassVar[bool] = True

    def inapplicable(self, model: nn.Module, layer: str) -> str:
        """Why the method is not defined for ``model`` at ``layer`` (``""``: it is). The engine raises with
        this reason, or skips the pair under ``skip_inapplicable=True``."""
        return ""

    def weigh(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        """Channel weights ``(B, C)``."""
        raise NotImplementedError(f"{type(self).__name__} implements neither weigh() nor compute()")

    def compute(self, activations: Tensor, gradients: Tensor | None) -> Tensor:
        """The raw map ``(B, h, w)``; by default ``sum_c weigh(A, G)[b, c] * A[b, c]``."""
        weights = self.weigh(activations, gradients)
        return torch.einsum("bc,bchw->bhw", weights.to(activations.dtype), activations)

    def __call__(self, ctx: LayerContext) -> Tensor:
        return self.compute(ctx.activations, ctx.gradients)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


# --------------------------------------------------------------------------------------------------
# Resizing and normalisation
# --------------------------------------------------------------------------------------------------


def upsample(maps: Tensor, size: Sequence[int] | int) -> Tensor:
    """Bilinear resize (``align_corners=False``, no antialiasing) of ``(B, h, w)`` maps to ``size``.

    Matches ``cv2.resize(..., INTER_LINEAR)`` (pytorch-grad-cam's resize) on float32 maps to ~3e-7.
    """
    size = (int(size), int(size)) if isinstance(size, numbers.Integral) else tuple(int(s) for s in size)
    if tuple(maps.shape[-2:]) == size:
        return maps
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]


def _to_tensor(maps: Tensor | np.ndarray) -> tuple[Tensor, bool]:
    if isinstance(maps, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(maps)), True
    if isinstance(maps, Tensor):
        return maps, False
    raise HemwslInputError(f"maps must be a torch tensor or numpy array, got {type(maps).__name__}")


def _planes_last(t: Tensor, dims: Sequence[int]) -> tuple[Tensor, tuple[int, int]]:
    d = tuple(int(x) % t.ndim for x in dims)
    if len(d) != 2 or d[0] == d[1]:
        raise HemwslInputError(f"dims must name two different in-plane axes, got {tuple(dims)}")
    return t.movedim(d, (-2, -1)), d


def normalize_per_slice(
    maps: Tensor | np.ndarray,
    mode: str = "minmax",
    eps: float = 1e-7,
    dims: Sequence[int] = (-2, -1),
    floor: float = 0.0,
) -> Tensor | np.ndarray:
    """Scale every 2D map on its own to [0, 1].

    * ``mode="minmax"``: ``(m - min) / (eps + max - min)`` per map, exactly pytorch-grad-cam's
      ``scale_cam_image`` (with ``floor=0``). A constant (e.g. all-zero) map becomes all zero.
    * ``mode="max"``: offset at 0 instead of the map's min: ``clip(m, 0) / (eps + max)``; an offset
      is not removed, and an all-zero map stays zero.

    With ``floor=0`` both stretch a weak map (e.g. on a slice without hemorrhage) to a maximum of ~1.
    ``floor > 0`` (in the maps' own units) is a lower bound of the denominator: a map whose range is
    below ``floor`` is divided by ``floor`` and stays weak (e.g. pass a fraction of the volume's
    maximum); :func:`normalize_per_volume` divides every slice by the volume's maximum.

    Args:
        maps: ``(..., H, W)`` tensor or array (or any layout with the in-plane axes given by ``dims``,
            e.g. ``dims=(0, 1)`` for an ``(X, Y, Z)`` volume).
        mode: ``"minmax"`` or ``"max"``.
        eps: added to the denominator.
        dims: the two in-plane axes.
        floor: lower bound of each map's denominator (``>= 0``).

    Returns:
        Same type, shape and dtype as ``maps``.
    """
    check_choice("normalisation mode", mode, ("minmax", "max"))
    if not floor >= 0:
        raise HemwslInputError(f"floor must be >= 0, got {floor!r}")
    t, was_numpy = _to_tensor(maps)
    p, d = _planes_last(t, dims)
    if p.numel() == 0:
        return maps
    flat = p.reshape(*p.shape[:-2], -1)
    shifted = flat - flat.amin(-1, keepdim=True) if mode == "minmax" else flat.clamp_min(0)
    denom = shifted.amax(-1, keepdim=True)
    if floor > 0:
        denom = denom.clamp_min(floor)
    out = (shifted / (eps + denom)).reshape(p.shape).movedim((-2, -1), d)
    return out.numpy() if was_numpy else out


def normalize_per_volume(
    maps: Tensor | np.ndarray, mode: str = "max", eps: float = 1e-7
) -> Tensor | np.ndarray:
    """Scale a whole stack (all slices of a volume, or a batch) with ONE scale to [0, 1].

    * ``mode="max"`` (default): ``clip(m, 0) / (eps + max over the stack)``. A slice whose map is weak
      or all zero (e.g. a negative slice) stays weak or zero instead of being stretched.
    * ``mode="minmax"``: ``(m - min) / (eps + max - min)`` with the stack's min and max.

    Args:
        maps: tensor or array of any shape.
        mode: ``"max"`` or ``"minmax"``.
        eps: added to the denominator.

    Returns:
        Same type, shape and dtype as ``maps``.
    """
    check_choice("normalisation mode", mode, ("minmax", "max"))
    t, was_numpy = _to_tensor(maps)
    if t.numel() == 0:
        return maps
    shifted = t - t.min() if mode == "minmax" else t.clamp_min(0)
    out = shifted / (eps + shifted.max())
    return out.numpy() if was_numpy else out


def normalize_none(maps: Tensor | np.ndarray, **_: Any) -> Tensor | np.ndarray:
    """No normalisation: returns ``maps`` unchanged (raw CAM values)."""
    return maps


#: Normalisers by name.
NORMALIZERS: dict[str, Callable[..., Any]] = {
    "slice": normalize_per_slice,
    "volume": normalize_per_volume,
    "none": normalize_none,
}


def get_normalizer(name: str) -> Callable[..., Any]:
    """The normaliser called ``name`` (``"slice"``, ``"volume"`` or ``"none"``)."""
    check_choice("normaliser", name, NORMALIZERS)
    return NORMALIZERS[name]
