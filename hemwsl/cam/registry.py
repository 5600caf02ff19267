"""The registry of explanation methods: one entry per method name.

:data:`CAM_METHODS` maps a name to a class; :class:`hemwsl.cam.CAMEngine` instantiates it (with the
options of ``method_options``). An entry can be

* a layer-wise CAM method: a subclass of :class:`hemwsl.cam.base.CAMMethod` (``layerwise = True``),
  called as ``method(ctx: LayerContext) -> (B, h, w)`` raw map at the layer's resolution; or
* an input-attribution method (saliency, Input x Gradient, SmoothGrad, GradientSHAP, guided
  backpropagation...): a class with ``layerwise = False`` (the default for classes that are not
  ``CAMMethod`` subclasses) whose instances implement ``attribute(model, x, target) -> (B, H, W)`` (or
  ``__call__`` with the same signature), ``target`` being ``(B,)`` class indices or a row-wise callable
  on the logits, giving maps at input resolution; the engine stores them under ``(name, "input")``.
  The classes of :mod:`hemwsl.cam.attribution` fit as they are:
  ``register_method(hemwsl.cam.attribution.Saliency)``. See :mod:`hemwsl.cam.base` for details.

Every entry has the class attributes ``name`` (its registry name), ``paper`` (citation) and
``needs_gradients``. Add entries with :func:`register_method`.
"""

from __future__ import annotations

from hemwsl.cam.base import is_layerwise
from hemwsl.cam.methods import (
    AblationCAM,
    CAM,
    EigenCAM,
    EigenGradCAM,
    FasterScoreCAM,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GroupCAM,
    HiResCAM,
    LayerCAM,
    LSEHeatmap,
    ReciproCAM,
    ScoreCAM,
    XGradCAM,
)
from hemwsl.errors import HemwslInputError, check_choice

__all__ = [
    "CAM_METHODS",
    "GRADIENT_METHODS",
    "PERTURBATION_METHODS",
    "PGC_METHODS",
    "get_method",
    "list_methods",
    "register_method",
]

#: All registered methods, by name, in registry order.
CAM_METHODS: dict[str, type] = {
    cls.name: cls
    for cls in (
        CAM,
        GradCAM,
        GradCAMPlusPlus,
        XGradCAM,
        HiResCAM,
        GradCAMElementWise,
        LayerCAM,
        EigenCAM,
        EigenGradCAM,
        AblationCAM,
        ScoreCAM,
        FasterScoreCAM,
        GroupCAM,
        ReciproCAM,
        LSEHeatmap,
    )
}

#: Methods computed from the single forward + single backward (plus Eigen-CAM, forward only).
GRADIENT_METHODS: tuple[str, ...] = (
    "gradcam",
    "gradcampp",
    "xgradcam",
    "hirescam",
    "gradcam_elementwise",
    "layercam",
    "eigengradcam",
)

#: Methods that run the network again on perturbed activations or inputs.
PERTURBATION_METHODS: tuple[str, ...] = ("ablationcam", "scorecam", "fasterscorecam", "groupcam", "reciprocam")

#: hemwsl name -> pytorch-grad-cam class name, for the methods both libraries have.
PGC_METHODS: dict[str, str] = {
    "gradcam": "GradCAM",
    "gradcampp": "GradCAMPlusPlus",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "gradcam_elementwise": "GradCAMElementWise",
    "layercam": "LayerCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "ablationcam": "AblationCAM",
    "scorecam": "ScoreCAM",
}


def list_methods(layerwise: bool | None = None) -> list[str]:
    """Registered method names, in registry order.

    Args:
        layerwise: only layer-wise CAM methods (``True``) or only input-attribution methods (``False``);
            all when ``None``.
    """
    return [n for n, c in CAM_METHODS.items() if layerwise is None or is_layerwise(c) == layerwise]


def get_method(name: str) -> type:
    """The class registered as ``name``.

    Raises:
        HemwslInputError: unknown name; the message lists the accepted names.
    """
    check_choice("CAM method", name, CAM_METHODS)
    return CAM_METHODS[name]


def register_method(cls: type, name: str | None = None, overwrite: bool = False) -> type:
    """Add a method class to :data:`CAM_METHODS` (usable as a class decorator).

    Args:
        cls: a :class:`~hemwsl.cam.base.CAMMethod` subclass, or an input-attribution class with
            ``layerwise = False`` and an ``attribute(model, x, target)`` method.
        name: registry name; default ``cls.name``.
        overwrite: replace an existing entry of that name.

    Returns:
        ``cls``.
    """
    if not isinstance(cls, type):
        raise HemwslInputError(f"register_method needs a class, got {cls!r}")
    name = name or getattr(cls, "name", "")
    if not isinstance(name, str) or not name:
        raise HemwslInputError(f"{cls!r} has no name; pass name=")
    if name in CAM_METHODS and CAM_METHODS[name] is not cls and not overwrite:
        raise HemwslInputError(f"CAM method {name!r} is already registered ({CAM_METHODS[name].__name__})")
    layerwise = is_layerwise(cls)
    has_call = any("__call__" in vars(k) for k in cls.__mro__[:-1])
    if layerwise and not has_call:
        raise HemwslInputError(f"{cls!r}: a layer-wise method must be callable as method(ctx)")
    if not layerwise and not callable(getattr(cls, "attribute", None)) and not has_call:
        raise HemwslInputError(f"{cls!r}: an input-attribution method needs attribute(model, x, target) or __call__")
    for attr in ("paper", "needs_gradients"):
        if not hasattr(cls, attr):
            raise HemwslInputError(f"{cls!r} lacks the class attribute {attr!r}")
    if getattr(cls, "name", None) != name:
        cls.name = name
    CAM_METHODS[name] = cls
    return cls


def _register_attribution_methods() -> None:
    """The input-attribution methods of :mod:`hemwsl.cam.attribution` (seed paper 004) live in the same
    registry, under ``(name, "input")`` in engine outputs: saliency, input_x_gradient, smoothgrad,
    gradient_shap, guided_backprop."""
    from hemwsl.cam.attribution import ATTRIBUTION_CLASSES

    for cls in ATTRIBUTION_CLASSES.values():
        if cls.name not in CAM_METHODS:
            register_method(cls)


_register_attribution_methods()
