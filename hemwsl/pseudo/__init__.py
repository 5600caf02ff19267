"""CAM -> pseudo-labels for training a segmentation network (Ramananda & Sundaresan, arXiv:2309.16627, 2023).

"Class Activation Map-based Weakly supervised Hemorrhage Segmentation using Resnet-LSTM in Non-Contrast
Computed Tomography images": on the slices the classifier calls positive, the CAM is thresholded
(0.7 of the normalised map), the CT intensities of that region (skull stripped, contrast enhanced) are
split in K = 4 clusters with K-means, and the cluster whose removal lowers the classifier's hemorrhage
logit most ("differential prediction") is the pseudo mask.

* Per slice: :func:`kmeans_clusters`, :func:`kmeans_refine` (+ :class:`KMeansRefine`,
  :class:`KMeansRefined`), :func:`differential_prediction` (one batched forward for all candidates),
  :func:`enhance_slices`, :class:`ClassifierInput`.
* Per volume: :func:`pseudo_label_volume`; over a datalist, resumable: :func:`make_pseudo_labels`
  (NIfTI masks + ``datalist.json``); :func:`evaluate_pseudo_labels` (Dice against the true masks). Both take
  how the mask is made as one :class:`PseudoLabelSettings` and the classifier's input settings as one
  :class:`hemwsl.data.settings.InputSettings`.
* Weakly supervised component filter (:mod:`hemwsl.pseudo.components`): :class:`ComponentFilter`, trained
  on slice labels only by :func:`fit_component_filter` (:func:`component_filter_at` loads a saved one or
  trains and saves it), drops the region's components that look like what slices without hemorrhage also
  have (``make_pseudo_labels(component_filter=...)``).
* Modes (:data:`PSEUDO_MODES`): ``"cam"`` (thresholded CAM only) and ``"cam_kmeans"``; both with or
  without slice context (``context=True``, see :mod:`hemwsl.pseudo.volume`).
"""

from __future__ import annotations

from hemwsl.pseudo.components import COMPONENT_FEATURES, ComponentFilter, component_features
from hemwsl.pseudo.differential import DifferentialResult, differential_prediction, removal_candidates
from hemwsl.pseudo.kmeans import (
    KMeansRefine,
    KMeansRefineD,
    KMeansRefineDict,
    KMeansRefined,
    kmeans_clusters,
    kmeans_refine,
)
from hemwsl.pseudo.preprocess import ENHANCEMENTS, ClassifierInput, enhance_slices
from hemwsl.pseudo.settings import PSEUDO_MODES, SELECTIONS, PseudoLabelSettings, check_pseudo_params
from hemwsl.pseudo.volume import (
    REFERENCE,
    WEAK_SLICE_LABELS,
    build_threshold,
    check_heatmaps_readable,
    component_filter_at,
    evaluate_pseudo_labels,
    fit_component_filter,
    make_pseudo_labels,
    pseudo_label_volume,
    read_slice_probabilities,
)

__all__ = [
    "COMPONENT_FEATURES",
    "ENHANCEMENTS",
    "PSEUDO_MODES",
    "REFERENCE",
    "SELECTIONS",
    "WEAK_SLICE_LABELS",
    "ClassifierInput",
    "ComponentFilter",
    "DifferentialResult",
    "KMeansRefine",
    "KMeansRefineD",
    "KMeansRefineDict",
    "KMeansRefined",
    "PseudoLabelSettings",
    "build_threshold",
    "check_heatmaps_readable",
    "check_pseudo_params",
    "component_features",
    "component_filter_at",
    "differential_prediction",
    "enhance_slices",
    "evaluate_pseudo_labels",
    "fit_component_filter",
    "kmeans_clusters",
    "kmeans_refine",
    "make_pseudo_labels",
    "pseudo_label_volume",
    "read_slice_probabilities",
    "removal_candidates",
]
