"""Class activation maps for the slice classifiers: one engine, many methods, one forward.

* :class:`CAMEngine` computes every requested (method, layer) map of a batch from ONE forward and, for
  the gradient methods, ONE ``torch.autograd.grad`` call (see :mod:`hemwsl.cam.base`).
* Methods (one file each in :mod:`hemwsl.cam.methods`): ``cam``, ``gradcam``, ``gradcampp``,
  ``xgradcam``, ``hirescam``, ``gradcam_elementwise``, ``layercam``, ``eigencam``, ``eigengradcam``,
  ``ablationcam``, ``scorecam``, ``fasterscorecam``, ``groupcam``, ``reciprocam``, ``lse_heatmap``; registry
  :data:`CAM_METHODS`, :func:`get_method`, :func:`list_methods`.
* Targets: :class:`ClassTarget`, ints, one int per sample, or callables (:func:`resolve_targets`).
* Normalisers: :func:`normalize_per_slice`, :func:`normalize_per_volume`, :func:`normalize_none`.
* Volumes: :func:`explain_volume`, :func:`save_heatmaps`, :func:`volume_done`.
"""

from __future__ import annotations

from hemwsl.cam.base import (
    INPUT_LAYER,
    NORMALIZERS,
    CAMMethod,
    Capture,
    ClassTarget,
    LayerContext,
    ResolvedTarget,
    capture,
    fused_layer_name,
    get_normalizer,
    is_layerwise,
    normalize_none,
    normalize_per_slice,
    normalize_per_volume,
    resolve_targets,
    upsample,
)
from hemwsl.cam.engine import CAMEngine
from hemwsl.cam.registry import CAM_METHODS, get_method, list_methods, register_method
from hemwsl.cam.suffix import SuffixRunner
from hemwsl.cam.volume import explain_volume, heatmap_path, resized_affine, save_heatmaps, volume_done

__all__ = [
    "CAM_METHODS",
    "INPUT_LAYER",
    "NORMALIZERS",
    "CAMEngine",
    "CAMMethod",
    "Capture",
    "ClassTarget",
    "LayerContext",
    "ResolvedTarget",
    "SuffixRunner",
    "capture",
    "explain_volume",
    "fused_layer_name",
    "get_method",
    "get_normalizer",
    "is_layerwise",
    "heatmap_path",
    "list_methods",
    "normalize_none",
    "normalize_per_slice",
    "normalize_per_volume",
    "register_method",
    "resolve_targets",
    "save_heatmaps",
    "resized_affine",
    "upsample",
    "volume_done",
]
