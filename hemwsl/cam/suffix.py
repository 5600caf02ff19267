"""Run a network from a target layer on, with a substituted activation at that layer.

Perturbation methods (Ablation-CAM away from the head layer) need the logits of many modified copies
of a layer's activation. Re-running the whole network per copy (what pytorch-grad-cam does: its
``AblationLayer`` replaces the layer but the layers before it still run) wastes the prefix. A
:class:`SuffixRunner` instead skips the prefix:

1. a probe forward (once per runner, one sample) records the order in which modules start and end;
   the *prefix* is the set of outermost modules that finish before the target layer starts and never
   run again after it;
2. during a suffix run the prefix modules' ``forward`` is temporarily replaced by the identity and the
   target layer's ``forward`` by "return the substitute", so only the modules after the target layer
   compute (for torchvision / timm / hemwsl backbones: the later stages, pooling and classifier);
3. a self-check (once per runner) runs the suffix with the layer's true activation and compares with
   the true logits. When the check fails or raises (skip connections from the prefix into the suffix,
   shared modules, functional code depending on the prefix's values) the runner falls back to the
   always-correct ``"full"`` mode: a forward hook on the target layer returns the substitute and the
   whole network runs on the real inputs.

Patched ``forward`` attributes are restored in ``finally`` blocks, so the model is left unchanged also
when a run raises.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from typing import Any, Iterator

import torch
from torch import Tensor, nn

from hemwsl.errors import HemwslInputError, check_choice

__all__ = ["SuffixRunner"]

logger = logging.getLogger(__name__)

_MISSING = object()


def _identity(*args: Any, **kwargs: Any) -> Any:
    if args:
        return args[0]
    return next(iter(kwargs.values()))


def _set_forward(module: nn.Module, fn: Any) -> Any:
    old = module.__dict__.get("forward", _MISSING)
    module.__dict__["forward"] = fn
    return old


def _restore_forward(module: nn.Module, old: Any) -> None:
    if old is _MISSING:
        module.__dict__.pop("forward", None)
    else:
        module.__dict__["forward"] = old


class SuffixRunner:
    """Logits of a network whose target layer outputs a given tensor.

    Args:
        model: the network (should be in eval mode while running).
        layer: module path of the target layer.
        mode: ``"auto"`` (suffix-only when the self-check passes, else full), ``"suffix"`` (raise if the
            self-check fails) or ``"full"`` (always run the whole network).

    Attributes:
        mode_used: ``"suffix"`` or ``"full"`` once prepared, ``None`` before.
        prefix: module paths replaced by the identity in suffix mode.
    """

    def __init__(self, model: nn.Module, layer: str, mode: str = "auto") -> None:
        check_choice("suffix mode", mode, ("auto", "suffix", "full"))
        self.model = model
        self.layer = layer
        try:
            self.module = model.get_submodule(layer)
        except AttributeError:
            raise HemwslInputError(f"target layer {layer!r} not found in {type(model).__name__}") from None
        self.mode = mode
        self.mode_used: str | None = None
        self.prefix: list[str] = []
        self._prefix_modules: list[nn.Module] = []

    # -- probing ----------------------------------------------------------------------------------

    def _probe(self, sample: Tensor) -> None:
        counter = itertools.count()
        spans: dict[str, list[list[int]]] = {}
        modules = dict(self.model.named_modules())
        handles = []

        def pre(name: str):
            def hook(module: nn.Module, args: Any) -> None:
                spans.setdefault(name, []).append([next(counter), -1])

            return hook

        def post(name: str):
            def hook(module: nn.Module, args: Any, output: Any) -> None:
                spans[name][-1][1] = next(counter)

            return hook

        try:
            for name, m in modules.items():
                if name:
                    handles.append(m.register_forward_pre_hook(pre(name)))
                    handles.append(m.register_forward_hook(post(name)))
            with torch.no_grad():
                self.model(sample)
        finally:
            for h in handles:
                h.remove()
        if self.layer not in spans:
            raise HemwslInputError(f"target layer {self.layer!r} did not run in the forward")
        start = spans[self.layer][0][0]
        done = {n for n, s in spans.items() if all(0 <= e < start for _, e in s)}
        outer = sorted(
            (n for n in done if not any(n.startswith(p + ".") for p in done)), key=lambda n: spans[n][0][0]
        )
        self.prefix = outer
        self._prefix_modules = [modules[n] for n in outer]

    @contextlib.contextmanager
    def _patched(self, substitute: Tensor) -> Iterator[None]:
        saved: list[tuple[nn.Module, Any]] = []
        try:
            for m in self._prefix_modules:
                saved.append((m, _set_forward(m, _identity)))
            saved.append((self.module, _set_forward(self.module, lambda *a, **k: substitute)))
            yield
        finally:
            for m, old in reversed(saved):
                _restore_forward(m, old)

    def prepare(self, inputs: Tensor, activations: Tensor, logits: Tensor) -> None:
        """Probe and self-check once (later calls return at once).

        Args:
            inputs: ``(B, C_in, H, W)`` a batch of inputs.
            activations: ``(B, C, h, w)`` the target layer's true output on ``inputs``.
            logits: ``(B, K)`` the true logits on ``inputs``.
        """
        if self.mode_used is not None:
            return
        if self.mode == "full":
            self.mode_used = "full"
            return
        reason = ""
        try:
            self._probe(inputs[:1])
            got = self._run_suffix(activations, inputs)
            tol = 1e-5 * (1.0 + float(logits.abs().max()))
            if got.shape != logits.shape or not torch.allclose(got, logits, rtol=1e-4, atol=tol):
                reason = "suffix-only logits differ from the true logits"
        except HemwslInputError:
            raise
        except Exception as err:  # a prefix module whose output is needed later, odd signatures...
            reason = f"{type(err).__name__}: {err}"
        if reason:
            if self.mode == "suffix":
                raise HemwslInputError(f"cannot run the network from {self.layer!r} on: {reason}")
            logger.info("layer %s: running the full network for perturbations (%s)", self.layer, reason)
            self.mode_used = "full"
        else:
            self.mode_used = "suffix"

    # -- running ----------------------------------------------------------------------------------

    def _run_suffix(self, substitute: Tensor, inputs: Tensor) -> Tensor:
        dummy = inputs[:1].expand(substitute.shape[0], *inputs.shape[1:])
        with torch.inference_mode(), self._patched(substitute):
            return self.model(dummy)

    def _run_full(self, substitute: Tensor, inputs: Tensor) -> Tensor:
        handle = self.module.register_forward_hook(lambda m, a, o: substitute)
        try:
            with torch.inference_mode():
                return self.model(inputs)
        finally:
            handle.remove()

    def run(self, substitute: Tensor, rows: Tensor, inputs: Tensor) -> Tensor:
        """Logits with the target layer's output replaced by ``substitute``.

        Args:
            substitute: ``(n, C, h, w)`` activations, one per row.
            rows: ``(n,)`` index of the input sample each row belongs to (used by the full mode).
            inputs: ``(B, C_in, H, W)`` the batch the rows index into.

        Returns:
            ``(n, K)`` logits.
        """
        if self.mode_used is None:
            raise HemwslInputError("SuffixRunner.prepare() must be called before run()")
        if self.mode_used == "suffix":
            return self._run_suffix(substitute, inputs)
        return self._run_full(substitute, inputs[rows.to(inputs.device)])
