"""The CAM engine: many CAM and attribution methods at many layers from one forward (and one backward).

:class:`CAMEngine` resolves method names in :mod:`hemwsl.cam.registry` and runs them on the building blocks of
:mod:`hemwsl.cam.base` (targets, layer capture, :class:`~hemwsl.cam.base.CAMMethod`, upsampling and
normalisation); see :mod:`hemwsl.cam.base` for the exactness of the maps against pytorch-grad-cam.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from hemwsl.cam.base import (
    INPUT_LAYER,
    CAMMethod,
    LayerContext,
    ResolvedTarget,
    TargetSpec,
    capture,
    fused_layer_name,
    is_layerwise,
    model_device,
    normalize_per_slice,
    resolve_targets,
    upsample,
)
from hemwsl.cam.registry import get_method
from hemwsl.errors import HemwslInputError, check_choice

if TYPE_CHECKING:  # pragma: no cover
    from hemwsl.cam.suffix import SuffixRunner

__all__ = ["CAMEngine"]


def _head_of(
    model: nn.Module, head: tuple[str, str] | None, head_layer: str | None
) -> tuple[str | None, nn.Linear | None, str]:
    """(head layer name, Linear module, note) for the closed forms."""
    from hemwsl.networks.registry import classifier_head, get_network_spec, target_layer_names

    if head is None:
        name = getattr(model, "hemwsl_name", None)
        if name is None:
            return None, None, "the model was not built by hemwsl.networks.build_network (pass head= and head_layer=)"
        spec = get_network_spec(name)
        if not spec.gap_linear_head:
            return None, None, f"network {name!r} has no global-average-pooling + Linear head"
        head = classifier_head(model)
        head_layer = head_layer or target_layer_names(model)[-1]
    elif head_layer is None:
        raise HemwslInputError("head= needs head_layer= (the layer whose output feeds the global pooling)")
    try:
        linear = model.get_submodule(head[1])
    except AttributeError:
        raise HemwslInputError(f"classifier head Linear {head[1]!r} not found in {type(model).__name__}") from None
    if not isinstance(linear, nn.Linear):
        raise HemwslInputError(f"classifier head {head[1]!r} is a {type(linear).__name__}, not nn.Linear")
    return head_layer, linear, ""


class CAMEngine:
    """Compute many CAM methods at many layers from one forward (and one backward).

    Example::

        engine = CAMEngine(model, ["gradcam", "gradcampp", "layercam"])  # default: the model's 3 layers
        maps = engine(x)                      # {("gradcam", "features.7"): (B, H, W) tensor, ...}
        maps = engine(x, targets=ClassTarget(2))
        logits = engine.last_logits

    One call runs the model once with hooks on all layers. Gradient methods share ONE
    ``torch.autograd.grad`` call for all layers (no parameter gradient is computed; ``.grad`` is
    untouched). Gradient-free methods reuse the same activations: Eigen-CAM and CAM need nothing else;
    Ablation-CAM uses a closed form at the head layer and otherwise re-runs only the network suffix
    after the layer; Score-CAM re-runs the network on masked inputs. The model is put in eval mode
    during a call and its mode is restored afterwards; its hooks, ``requires_grad`` flags and
    parameters are left as they were, also when a call raises.

    Args:
        model: a network returning ``(B, K)`` logits.
        methods: registry names (see :func:`hemwsl.cam.registry.list_methods`) or method instances.
        layers: module paths of the target layers; default :func:`hemwsl.networks.target_layer_names`.
        output_size: ``(H, W)`` (or one int) of the returned maps; default the input's size.
        relu: apply the ReLU each method specifies (``False``: raw signed maps).
        fuse: ``None`` (default, no fusion), ``"mean"`` or ``"max"``: also return, per method, the
            mean / max over layers of the per-slice min-max normalised upsampled maps, under the layer
            name :func:`fused_layer_name` (``"fused_mean"``).
        method_options: ``{method name: {option: value}}`` passed to the method constructors, e.g.
            ``{"scorecam": {"batch_size": 32}}``.
        head: ``(pool path, linear path)`` for models not built by hemwsl (default: the registry's).
        head_layer: the layer feeding the pooling (default: the model's deepest target layer).
        skip_inapplicable: skip (method, layer) pairs a method does not define (CAM away from the
            head layer) instead of raising.

    Attributes:
        last_logits: ``(B, K)`` logits of the last call.
        last_scores: ``(B,)`` target scores of the last call.
        last_target: the :class:`ResolvedTarget` of the last call.
        pairs: the (method name, layer) pairs computed per call.
    """

    def __init__(
        self,
        model: nn.Module,
        methods: Sequence[str | CAMMethod],
        layers: Sequence[str] | None = None,
        output_size: Sequence[int] | int | None = None,
        relu: bool = True,
        fuse: str | None = None,
        method_options: Mapping[str, Mapping[str, Any]] | None = None,
        head: tuple[str, str] | None = None,
        head_layer: str | None = None,
        skip_inapplicable: bool = False,
    ) -> None:
        from hemwsl.networks.registry import get_target_layers, target_layer_names

        if not isinstance(model, nn.Module):
            raise HemwslInputError(f"model must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.layer_names = list(layers) if layers is not None else target_layer_names(model)
        if not self.layer_names:
            raise HemwslInputError("no target layers given")
        if len(set(self.layer_names)) != len(self.layer_names):
            raise HemwslInputError(f"duplicate target layers: {self.layer_names}")
        self._modules = get_target_layers(model, self.layer_names)

        if isinstance(methods, (str, CAMMethod)):
            methods = [methods]
        if not methods:
            raise HemwslInputError("no CAM methods given")
        options = {k: dict(v) for k, v in (method_options or {}).items()}
        self.methods: dict[str, Any] = {}
        for m in methods:
            if isinstance(m, str):
                inst = get_method(m)(**options.pop(m, {}))
            elif isinstance(getattr(m, "name", None), str) and (
                callable(m) or (not is_layerwise(m) and callable(getattr(m, "attribute", None)))
            ):
                inst = m
            else:
                raise HemwslInputError(f"methods must be registry names or method instances, got {m!r}")
            if inst.name in self.methods:
                raise HemwslInputError(f"method {inst.name!r} given twice")
            self.methods[inst.name] = inst
        if options:
            raise HemwslInputError(f"method_options for methods not requested: {', '.join(options)}")

        if output_size is not None:
            output_size = (output_size, output_size) if isinstance(output_size, numbers.Integral) else tuple(output_size)
            if len(output_size) != 2 or min(output_size) < 1:
                raise HemwslInputError(f"output_size must be (H, W) of positive ints, got {output_size!r}")
        self.output_size = tuple(int(s) for s in output_size) if output_size is not None else None
        self.relu = bool(relu)
        if fuse is not None:
            check_choice("fuse", fuse, ("mean", "max"))
        self.fuse = fuse

        self.head_layer, self.head_linear, self._head_note = _head_of(model, head, head_layer)

        self.pairs: list[tuple[str, str]] = []
        self.input_methods: list[str] = []
        for name, inst in self.methods.items():
            if not is_layerwise(inst):
                self.input_methods.append(name)
                continue
            for layer in self.layer_names:
                if getattr(inst, "head_only", False) and layer != self.head_layer:
                    if skip_inapplicable:
                        continue
                    where = (
                        f"only at the layer feeding the global average pooling ({self.head_layer!r})"
                        if self.head_layer
                        else f"only at a global-average-pooling + Linear head, and {self._head_note}"
                    )
                    raise HemwslInputError(
                        f"method {name!r} ({inst.paper}) is defined {where}, not at {layer!r}; "
                        "pass layers=[...] or skip_inapplicable=True"
                    )
                why = inst.inapplicable(model, layer) if hasattr(inst, "inapplicable") else ""
                if why:
                    if skip_inapplicable:
                        continue
                    raise HemwslInputError(f"method {name!r} is not defined at {layer!r}: {why}")
                self.pairs.append((name, layer))
        self.needs_gradients = any(getattr(self.methods[m], "needs_gradients", False) for m, _ in self.pairs)
        self.last_logits: Tensor | None = None
        self.last_scores: Tensor | None = None
        self.last_target: ResolvedTarget | None = None
        self._runners: dict[str, SuffixRunner] = {}

    @property
    def method_names(self) -> list[str]:
        return list(self.methods)

    def _check_input(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor):
            x = torch.as_tensor(np.asarray(x))
        if x.ndim != 4:
            raise HemwslInputError(f"expected a (B, C, H, W) batch of slices, got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise HemwslInputError("empty batch")
        if x.is_floating_point() and not torch.isfinite(x).all():
            raise HemwslInputError(f"the batch holds {int((~torch.isfinite(x)).sum())} NaN/inf value(s)")
        dtype = next((p.dtype for p in self.model.parameters() if p.is_floating_point()), torch.float32)
        return x.detach().to(device=model_device(self.model), dtype=dtype)

    def _runner(self, layer: str, inputs: Tensor, activations: Tensor, logits: Tensor) -> SuffixRunner:
        from hemwsl.cam.suffix import SuffixRunner

        runner = self._runners.get(layer)
        if runner is None:
            runner = self._runners[layer] = SuffixRunner(self.model, layer)
        runner.prepare(inputs, activations, logits)
        return runner

    def feature_maps(self, x: Tensor, targets: TargetSpec = None) -> dict[tuple[str, str], Tensor]:
        """Raw maps at each layer's own resolution (``(B, h, w)``), before upsampling.

        Input-attribution methods (``layerwise = False``) give ``(B, H, W)`` maps at input resolution
        under ``(name, INPUT_LAYER)``.
        """
        x = self._check_input(x)
        was_training = self.model.training
        self.model.eval()
        try:
            with capture(self.model, self._modules) as cap:
                with torch.enable_grad() if self.needs_gradients else torch.no_grad():
                    xin = x.clone().requires_grad_(True) if self.needs_gradients else x
                    logits = self.model(xin)
                cap.check()
                if not isinstance(logits, Tensor) or logits.ndim != 2:
                    shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
                    raise HemwslInputError(f"the model must return (B, K) logits, got {shape}")
                target = resolve_targets(targets, x.shape[0], logits.shape[1], logits.detach())
                scores = target.scores(logits)
                grads: dict[str, Tensor] = {}
                if self.needs_gradients:
                    grad_layers = [
                        layer for m, layer in self.pairs if getattr(self.methods[m], "needs_gradients", False)
                    ]
                    grads = cap.gradients(scores, list(dict.fromkeys(grad_layers)))
                acts = {n: a.detach() for n, a in cap.activations.items()}
                cap.clear()
            logits = logits.detach()
            scores = scores.detach()
            del xin
            self.last_logits, self.last_scores, self.last_target = logits, scores, target

            head_linear, head_note = None, self._head_note
            if self.head_linear is not None and self.head_layer in acts:
                with torch.no_grad():
                    pred = self.head_linear(acts[self.head_layer].mean(dim=(2, 3)))
                tol = 1e-5 * (1.0 + float(logits.abs().max()))
                if pred.shape == logits.shape and torch.allclose(pred, logits, rtol=1e-4, atol=tol):
                    head_linear = self.head_linear
                else:
                    head_note = (
                        f"the logits are not Linear(mean over h, w of {self.head_layer!r}) on this batch"
                    )
            elif self.head_layer is not None:
                head_note = f"the head layer is {self.head_layer!r}"

            out: dict[tuple[str, str], Tensor] = {}
            with torch.no_grad():
                for name, layer in self.pairs:
                    method = self.methods[name]
                    a = acts[layer]
                    ctx = LayerContext(
                        model=self.model,
                        layer=layer,
                        module=self._modules[layer],
                        inputs=x,
                        activations=a,
                        gradients=grads.get(layer),
                        logits=logits,
                        scores=scores,
                        target=target,
                        head_linear=head_linear if layer == self.head_layer else None,
                        head_note=head_note if layer == self.head_layer else f"{layer!r} is not the head layer",
                        suffix_runner=lambda _l=layer, _a=a: self._runner(_l, x, _a, logits),
                    )
                    cam = method(ctx)
                    if cam.shape != (a.shape[0], *a.shape[2:]):
                        raise HemwslInputError(
                            f"method {name!r} returned shape {tuple(cam.shape)} at {layer!r}, "
                            f"expected {(a.shape[0], *a.shape[2:])}"
                        )
                    if self.relu and getattr(method, "relu", True):
                        cam = torch.relu(cam)
                    out[(name, layer)] = cam
            # input-attribution methods get the target as a plain spec: (B,) class indices or the callable
            spec = target.indices if target.indices is not None else target.fn
            for name in self.input_methods:
                method = self.methods[name]
                fn = getattr(method, "attribute", None) or method
                att = fn(self.model, x, spec)
                if not isinstance(att, Tensor) or tuple(att.shape) != (x.shape[0], *x.shape[2:]):
                    shape = tuple(att.shape) if isinstance(att, Tensor) else type(att).__name__
                    raise HemwslInputError(
                        f"input-attribution method {name!r} returned {shape}, expected {(x.shape[0], *x.shape[2:])}"
                    )
                out[(name, INPUT_LAYER)] = att
            return out
        finally:
            self.model.train(was_training)

    def __call__(self, x: Tensor, targets: TargetSpec = None) -> dict[tuple[str, str], Tensor]:
        """Maps for every (method, layer) pair, upsampled to the output size.

        Args:
            x: ``(B, C, H, W)`` slices (moved to the model's device).
            targets: see :func:`resolve_targets` (default: the predicted class / the single logit).

        Returns:
            ``{(method, layer): (B, H_out, W_out) float tensor}`` on the model's device, plus
            ``(method, fused_layer_name(fuse))`` entries when ``fuse`` is set.
        """
        maps = self.feature_maps(x, targets)
        size = self.output_size or tuple(x.shape[-2:])
        out = {k: upsample(v, size) for k, v in maps.items()}
        if self.fuse is not None:
            for name in self.methods:
                layer_maps = [out[(name, layer)] for layer in self.layer_names if (name, layer) in out]
                if not layer_maps:
                    continue
                stack = normalize_per_slice(torch.stack(layer_maps), mode="minmax")
                fused = stack.mean(0) if self.fuse == "mean" else stack.amax(0)
                out[(name, fused_layer_name(self.fuse))] = fused
        return out

    def __repr__(self) -> str:
        return f"CAMEngine(methods={self.method_names}, layers={self.layer_names}, fuse={self.fuse!r})"
