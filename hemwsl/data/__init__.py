"""Data access: checked volume I/O, datalists of CT datasets, patient-level splits and the classifier's input
settings."""

from __future__ import annotations

from hemwsl.data.datalist import (
    CTICH_CSV,
    DATALIST_KEYS,
    LAYOUTS,
    NUM_SLICES,
    POSITIVE,
    build_datalist,
    ctich_datalist,
    datalist_stats,
    generic_datalist,
    load_datalist,
    mask_slice_labels,
    save_datalist,
    validate_datalist,
)
from hemwsl.data.io import NIFTI_SUFFIXES, Volume, atomic_write_text, is_nifti, load_pair, load_volume, save_nifti
from hemwsl.data.settings import CLASSIFIER_INPUT_DEFAULTS, INPUT_SETTING_KEYS, InputSettings
from hemwsl.data.splits import (
    apply_split,
    fold_split,
    kfold_patients,
    load_split,
    patient_positivity,
    save_split,
    split_patients,
    validate_split,
)

from hemwsl.data.dataset import LoadCTVolumed, SliceDataset, balanced_sampler

# synthetic data (hemwsl.data.synthetic) is imported from its own module; not re-exported here.

__all__ = [
    # dataset
    "LoadCTVolumed",
    "SliceDataset",
    "balanced_sampler",
    # io
    "Volume",
    "load_volume",
    "load_pair",
    "save_nifti",
    "atomic_write_text",
    "NIFTI_SUFFIXES",
    "is_nifti",
    # datalist
    "NUM_SLICES",
    "POSITIVE",
    "DATALIST_KEYS",
    "CTICH_CSV",
    "LAYOUTS",
    "ctich_datalist",
    "generic_datalist",
    "build_datalist",
    "datalist_stats",
    "validate_datalist",
    "save_datalist",
    "load_datalist",
    "mask_slice_labels",
    # settings
    "InputSettings",
    "INPUT_SETTING_KEYS",
    "CLASSIFIER_INPUT_DEFAULTS",
    # splits
    "patient_positivity",
    "split_patients",
    "kfold_patients",
    "fold_split",
    "validate_split",
    "save_split",
    "load_split",
    "apply_split",
]
