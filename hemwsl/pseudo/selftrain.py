"""Self-training targets for the LSE heatmap network: the confident pixels of its own validated recipe.

The benchmark validates, per fold on the selection patients, a heatmap recipe (e.g. ``priorcomp+search``: the
hyperdense prior's components that the heatmap touches, at a chosen layer and threshold, with the chosen
post-processing). Applied by the fold's own network to the fold's *training* patients, on the slices their
slice labels call positive, that recipe gives pixel-level evidence the slice labels alone do not: the chosen
components. Each training patient gets a target volume of codes

* ``1`` (blood): the components the recipe chose, on slices labelled positive;
* ``2`` (unknown): the other candidate pixels of those slices (40-100 HU inside the brain: the prior's
  components the heatmap did not choose, the lesion edge, the rim the erosion removes);
* ``0`` (background): everything else, and every pixel of a slice labelled negative.

:class:`hemwsl.networks.lse.LSEHeatmapLoss` (``lse_pixel > 0``) then fine-tunes the network on its maps' known
pixels besides the slice labels; ``hemwsl self-train`` makes the targets and runs that training on the same
folds. No mask is read: the targets use the CT, the slice labels and the network's heatmaps only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hemwsl.constants import IMAGE, SLICE_LABELS
from hemwsl.engines.classifier import TARGET_BACKGROUND, TARGET_BLOOD, TARGET_IGNORE
from hemwsl.errors import HemwslInputError

__all__ = ["UNKNOWN_HU", "target_codes", "self_training_target", "self_training_targets"]

#: HU range of the pixels of a positive slice that are neither chosen nor background: the grow region's.
UNKNOWN_HU: tuple[float, float] = (40.0, 100.0)


def target_codes(image_hu: np.ndarray, chosen: np.ndarray, slice_labels: Sequence[int], brain: np.ndarray | None,
                 unknown_hu: Sequence[float] = UNKNOWN_HU) -> np.ndarray:
    """The ``(X, Y, Z)`` uint8 target of one volume (module docstring): ``chosen`` pixels on positive slices are
    blood, the other ``unknown_hu`` pixels inside ``brain`` (everywhere when ``None``) on positive slices are
    unknown, the rest background."""
    hu = np.asarray(image_hu)
    labels = np.asarray(slice_labels, dtype=bool)
    if hu.ndim != 3 or np.shape(chosen) != hu.shape or labels.shape != (hu.shape[-1],):
        raise HemwslInputError(f"target_codes needs a (X, Y, Z) CT, a mask of its shape and {hu.shape[-1:]} slice "
                               f"labels, got {hu.shape}, {np.shape(chosen)} and {labels.shape}")
    lo, hi = (float(v) for v in unknown_hu)
    candidate = (hu >= lo) & (hu <= hi)
    if brain is not None:
        candidate &= np.asarray(brain, dtype=bool)
    codes = np.full(hu.shape, TARGET_BACKGROUND, dtype=np.uint8)
    codes[candidate & labels] = TARGET_IGNORE
    codes[np.asarray(chosen, dtype=bool) & labels] = TARGET_BLOOD
    return codes


def self_training_target(image: str | os.PathLike, cam: str | os.PathLike, slice_labels: Sequence[int], strategy: Any,
                         *, brain_erosion: int = 4) -> tuple[np.ndarray, np.ndarray, dict]:
    """Target codes of one CT (skull stripped as the benchmark does): ``strategy`` (a threshold strategy applied
    slice by slice, e.g. ``ThresholdSpec.strategy(value, per_sample=False)``) on the heatmap ``cam`` inside the
    brain eroded by ``brain_erosion`` pixels chooses the blood of the positive slices. Returns
    ``(codes, affine, counts)``."""
    from hemwsl.data.settings import InputSettings
    from hemwsl.pseudo.settings import PseudoLabelSettings
    from hemwsl.pseudo.volume import pseudo_label_volume

    labels = np.asarray(slice_labels, dtype=np.float64)
    chosen, affine, _ = pseudo_label_volume(
        image, cam, None, PseudoLabelSettings(mode="cam", threshold=strategy, prob_threshold=0.5,
                                              brain_erosion=brain_erosion),
        inputs=InputSettings(skull_strip=True), probabilities=labels)
    from hemwsl.pseudo.volume import _volume_inputs

    _, hu, _, brain, _ = _volume_inputs(image, cam, True, 0)
    codes = target_codes(hu, chosen, labels > 0.5, brain)
    counts = {"blood": int((codes == TARGET_BLOOD).sum()), "unknown": int((codes == TARGET_IGNORE).sum()),
              "positive_slices": int((labels > 0.5).sum()),
              "positive_slices_with_blood": int(((codes == TARGET_BLOOD).any(axis=(0, 1)) & (labels > 0.5)).sum())}
    return codes, affine, counts


def self_training_targets(entries: Sequence[Mapping], cam_dir: str | os.PathLike, method: str, layer: str,
                          strategy: Any, out_dir: str | os.PathLike, *, brain_erosion: int = 4,
                          progress: bool = False) -> list[Path]:
    """Write ``<out_dir>/<patient>.nii.gz`` (the target codes on the CT grid) for every entry, from its heatmap
    ``<cam_dir>/<method>/<layer>/<patient>.nii.gz``; resumable (a volume with its ``.json`` record and the same
    settings is kept; other settings in the folder are refused). Entries need their slice labels."""
    from tqdm import tqdm

    from hemwsl.data.io import atomic_write_text, read_json_file, save_nifti
    from hemwsl.pseudo.volume import _entry_stem, _heatmap_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {"cam_dir": str(Path(cam_dir).resolve()), "method": method, "layer": layer, "strategy": repr(strategy),
              "brain_erosion": int(brain_erosion), "unknown_hu": list(UNKNOWN_HU)}
    record = out / "self_training_params.json"
    if (record.exists() or record.is_symlink()) \
            and read_json_file(record, "self-training settings record", expect=None) != params:
        raise HemwslInputError(f"{out} holds self-training targets made with other settings ({record}); "
                               "use another folder")
    atomic_write_text(record, json.dumps(params, indent=1) + "\n")
    paths = []
    for e in tqdm(list(entries), desc="self-training targets", disable=not progress):
        stem = _entry_stem(e)
        if e.get(SLICE_LABELS) is None:
            raise HemwslInputError(f"{e[IMAGE]}: self-training targets need the datalist's slice labels")
        path = out / f"{stem}.nii.gz"
        done = out / f"{stem}.json"
        if not (path.is_file() and done.is_file()):
            codes, affine, counts = self_training_target(e[IMAGE], _heatmap_file(cam_dir, stem, method, layer),
                                                         e[SLICE_LABELS], strategy, brain_erosion=brain_erosion)
            save_nifti(codes, affine, path)
            atomic_write_text(done, json.dumps(counts) + "\n")
        paths.append(path)
    return paths
