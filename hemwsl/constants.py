"""Dictionary keys, CT windows and subtype names shared across hemwsl."""

from __future__ import annotations

__all__ = [
    "IMAGE",
    "LABEL",
    "MASK",
    "CAM",
    "PSEUDO",
    "BRAIN",
    "PATIENT",
    "SLICE_LABELS",
    "SUBTYPE_LABELS",
    "SPACING",
    "SLICE_INDEX",
    "SEQUENCE_LENGTH",
    "SUBTYPES",
    "WINDOWS",
    "CTICH_HU_RANGE",
    "BENCHMARK_THRESHOLDS",
]

# Dictionary keys (datalist entries and transform dictionaries).
IMAGE = "image"  # CT volume / slice stack
LABEL = "label"  # hemorrhage mask (voxel labels) or, for slice samples, the class target
MASK = "mask"  # slice-level hemorrhage mask in slice samples
CAM = "cam"
PSEUDO = "pseudo"
BRAIN = "brain"  # brain mask from skull stripping
PATIENT = "patient"
SLICE_LABELS = "slice_labels"  # per-slice "any hemorrhage" labels (list of 0/1, z order)
SUBTYPE_LABELS = "subtype_labels"  # per-slice five-subtype labels (list of 5-lists, z order)
SPACING = "spacing"
SLICE_INDEX = "slice_index"
SEQUENCE_LENGTH = "sequence_length"  # batches of slice sequences: the number of consecutive slices per sequence

# The five subtypes in the order of the PhysioNet CT-ICH CSV.
SUBTYPES: tuple[str, ...] = (
    "intraventricular",
    "intraparenchymal",
    "subarachnoid",
    "epidural",
    "subdural",
)

# Named CT windows as (level, width) in HU.
WINDOWS: dict[str, tuple[float, float]] = {
    "brain": (40.0, 80.0),
    "subdural": (80.0, 200.0),
    "stroke": (40.0, 40.0),
    "blood": (60.0, 40.0),
    "seed": (25.0, 130.0),  # the 25/130 window of the seed papers
    "ctich": (40.0, 120.0),  # the window the CT-ICH copy was stored with: [-20, 100] HU
    "bone": (600.0, 2800.0),
}

# HU range the CT-ICH copy is clipped to (see its README).
CTICH_HU_RANGE: tuple[float, float] = (-20.0, 100.0)

# Default threshold grid of the localisation benchmark (see hemwsl.benchmark.specs): the seed papers' fixed
# thresholds (200/255, 225/255 of the rendered CAM, 0.7 of Ramananda & Sundaresan 2023), a percentile, Otsu, the threshold
# searched on the selection patients, and the hyperdense-blood prior alone, AND a searched CAM threshold, and its
# components chosen whole by a searched CAM threshold.
BENCHMARK_THRESHOLDS: tuple[str, ...] = (
    "fixed:200/255", "fixed:225/255", "fixed:0.7", "percentile:95", "otsu", "search", "prior", "prior+search",
    "priorcomp+search",
)
