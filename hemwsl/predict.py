"""One CT in, an answer out: self-describing model packages and ``hemwsl predict``.

A **model package** is one folder: ``hemwsl_model.json`` (everything needed to rebuild the networks and
their inputs, the validated mask recipe, the scan-level call, the folds' patients, versions) and one
state dict per fold member (``fold<k>.pt``). :func:`pack_model` builds it from a ``hemwsl train-cv`` run
(plus, optionally, the ``hemwsl benchmark`` report that validated the mask recipe and the
``hemwsl quantify`` report that chose the scan-level call); :class:`Predictor` loads it from its path
alone and runs the fold ensemble on one scan:

1. read the CT (NIfTI, or a DICOM series folder: :func:`hemwsl.data.dicom.read_dicom_series`) and check
   that it looks like a head CT in HU;
2. skull strip once on the CT grid; the classifier input (2.5D stack of CT windows at the trained size)
   is made exactly as in training (:class:`hemwsl.data.dataset.LoadCTVolumed`, :class:`MultiWindow`);
3. per member: slice probabilities (flip TTA when the model was validated with it), the recipe's
   heatmap on the CT grid, the scan-level call, and a mask: on the member's positive slices of a
   positive scan, the recipe's threshold (e.g. ``priorcomp+search``: the hyperdense components the
   heatmap touches) inside the eroded brain mask;
4. ensemble: mean probabilities and heatmap, the majority vote of the members' masks; the volume in
   mL of that mask with the spread of the members' volumes, and the ABC/2 estimate of the same mask.

Outputs per scan go to ``<out>/<stem>/`` (written in a hidden partial folder, renamed when complete):
``probabilities.csv``, ``heatmap.nii.gz``, ``mask.nii.gz`` (on the CT grid), ``report.json``,
``report.png`` and, for DICOM input, ``seg.dcm`` (a DICOM SEG referencing the source series).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hemwsl.engines.bundle import SETTING_KEYS, resolve_bundle_settings  # noqa: F401  (re-exported)
from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.metrics.volume import drop_thin_components
from hemwsl.thresholds.intensity import check_hu_reference, same_hu_reference
from hemwsl.thresholds.postprocess import check_min_share

__all__ = ["MODEL_FILE", "MODEL_KIND", "ModelPackage", "Predictor", "pack_model", "resolve_bundle_settings",
           "load_ct", "check_head_ct", "check_ct_geometry", "DEFAULT_RECIPE", "find_scans", "LoadScand", "PredictWorkflow"]

logger = logging.getLogger(__name__)

MODEL_FILE = "hemwsl_model.json"
MODEL_KIND = "hemwsl-slice-ensemble"
FORMAT_VERSION = 1

#: Mask recipe without a benchmark report: the hyperdense prior alone on the positive slices, with the
#: post-processing the real-data benchmark validated for it (docs/benchmark.md).
DEFAULT_RECIPE: dict[str, Any] = {
    "method": None, "layer": None, "threshold": "prior", "hu_range": [50.0, 90.0], "brain_erosion": 4,
    "min_size": 50, "grow": 0, "slice_threshold": 0.5, "source": "default: hyperdense prior on positive slices",
}


# ------------------------------------------------------------------------------------------- settings
def _read_csv(path: Path) -> list[dict[str, str]]:
    import csv

    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise HemwslInputError(f"{path}: cannot read as CSV ({type(err).__name__}: {err})") from err


def _read_report_json(f: Path, what: str) -> dict:
    """A report's JSON object (``summary.json`` of quantify, ``config.json`` of benchmark): one line naming the file
    when it is not readable JSON or not an object."""
    from hemwsl.data.io import read_json_file

    return read_json_file(f, what)


def _probability(value: Any) -> bool:
    """A finite number in [0, 1] (not a boolean)."""
    return (not isinstance(value, bool) and isinstance(value, (int, float)) and bool(np.isfinite(value))
            and 0.0 <= value <= 1.0)


def _check_scan_call(where: str, aggregation: Any, threshold: Any, min_slices: Any = None, model: Any = None) -> None:
    """A fold's scan call (aggregation, threshold, thin-component rule, scan model): one line starting ``where``."""
    from hemwsl.quantify import SCAN_CALLS

    if aggregation not in SCAN_CALLS:
        raise HemwslInputError(f"{where}: unknown scan aggregation {aggregation!r}; accepted values: "
                               f"{', '.join(SCAN_CALLS)}")
    if not _probability(threshold):
        raise HemwslInputError(f"{where}: scan threshold must be a probability in [0, 1], got {threshold!r}")
    if min_slices is not None and (isinstance(min_slices, bool) or not isinstance(min_slices, int) or min_slices < 1):
        raise HemwslInputError(f"{where}: min_slices must be an integer >= 1, got {min_slices!r}")
    if aggregation == "model" and model is not None:
        from hemwsl.scanmodel import SCAN_FEATURES, ScanModel

        try:
            m = ScanModel.from_dict(model)
            ok = all(getattr(m, k).shape == (len(SCAN_FEATURES),) and np.all(np.isfinite(getattr(m, k)))
                     for k in ("mean", "scale", "coef")) and np.isfinite(m.intercept)
        except HemwslInputError as err:
            raise HemwslInputError(f"{where}: {err}") from None
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            raise HemwslInputError(f"{where}: corrupt scan model ({type(err).__name__}: {err})") from None
        if not ok:
            raise HemwslInputError(f"{where}: corrupt scan model (its mean, scale and coef must be "
                                   f"{len(SCAN_FEATURES)} finite numbers each)")


def _recipe_from_benchmark(bench: Path, folds: Sequence[int], methods: Sequence[str] | None = None
                           ) -> tuple[dict, dict[int, dict]]:
    """The best heatmap row of a benchmark report (among ``methods`` when given): its method, threshold spec and
    post-processing, and each fold's chosen layer and threshold value."""
    for name in ("choices.csv", "thresholds.csv", "config.json"):
        if not (bench / name).is_file():
            raise HemwslInputError(f"{bench / name}: not found (give the folder of a `hemwsl benchmark` report)")
    config = _read_report_json(bench / "config.json", "benchmark config")
    cf = bench / "choices.csv"
    rows_read = _read_csv(cf)
    need = ("fold", "method", "layer", "threshold", "selection_dice")
    if rows_read and any(c not in rows_read[0] for c in need):
        raise HemwslInputError(f"{cf}: not a benchmark choices table (columns {', '.join(need)} expected)")
    seen: dict[tuple[int, str], int] = {}
    for i, r in enumerate(rows_read):
        if r["method"] in ("-", "", None):
            continue
        try:
            fold = int(r["fold"])
            dice = float(r["selection_dice"])
        except (TypeError, ValueError):
            raise HemwslInputError(f"{cf}: line {i + 2}: fold {r.get('fold')!r} / selection_dice "
                                   f"{r.get('selection_dice')!r} are not numbers") from None
        if not np.isfinite(dice):
            raise HemwslInputError(f"{cf}: line {i + 2}: fold {fold}: selection_dice {r['selection_dice']!r} is not a "
                                   "finite number")
        if (fold, r["method"]) in seen:
            raise HemwslInputError(f"{cf}: line {i + 2}: a second choice of {r['method']} for fold {fold} (line "
                                   f"{seen[fold, r['method']] + 2})")
        seen[fold, r["method"]] = i
    choices = [r for r in rows_read if r["method"] not in ("-", "", None) and (not methods or r["method"] in methods)]
    if not choices:
        which = f" among {list(methods)}" if methods else ""
        raise HemwslInputError(f"{bench / 'choices.csv'}: no heatmap method{which} was chosen in this report")
    # the method with the best mean selection Dice over folds
    by_method: dict[str, list[float]] = {}
    for r in choices:
        by_method.setdefault(r["method"], []).append(float(r["selection_dice"]))
    method = max(by_method, key=lambda m: np.mean(by_method[m]))
    thresholds = _read_csv(bench / "thresholds.csv")
    from hemwsl.benchmark.specs import parse_threshold_spec

    per_fold: dict[int, dict] = {}
    spec_text = None
    for k in folds:
        rows = [r for r in choices if r["method"] == method and int(r["fold"]) == k]
        if not rows:
            raise HemwslInputError(f"{bench / 'choices.csv'}: no choice of {method} for fold {k}")
        r = max(rows, key=lambda r: float(r["selection_dice"]))
        where = f"{cf}: fold {k} ({method})"
        if not (r.get("layer") or "").strip():
            raise HemwslInputError(f"{where}: an empty layer name")
        try:
            parse_threshold_spec(r["threshold"] or "")
        except HemwslInputError as err:
            raise HemwslInputError(f"{where}: {err}") from None
        spec_text = spec_text or r["threshold"]
        value = None
        for t in thresholds:
            try:
                key = (int(t["fold"]), t["method"], t["layer"], t["threshold"])
            except (KeyError, TypeError, ValueError):
                raise HemwslInputError(f"{bench / 'thresholds.csv'}: not a benchmark thresholds table (a fold that "
                                       f"is not a number: {t.get('fold')!r})") from None
            if key == (k, method, r["layer"], r["threshold"]):
                try:
                    value = float(t["value"])
                except (TypeError, ValueError):
                    value = float("nan")
                if not np.isfinite(value):
                    raise HemwslInputError(f"{bench / 'thresholds.csv'}: fold {k} ({method}, {r['layer']}): threshold "
                                           f"value {t.get('value')!r} is not a finite number")
        per_fold[k] = {"layer": r["layer"], "threshold": r["threshold"], "cam_threshold": value}

    from hemwsl.benchmark.runner import benchmark_share_grid, check_spec_in_grid

    grid = benchmark_share_grid(bench)  # each fold's chosen share is one the report validated
    for k, c in per_fold.items():
        check_spec_in_grid(parse_threshold_spec(c["threshold"]), grid, f"{cf}: fold {k} ({method})")
    spec = parse_threshold_spec(spec_text)
    if spec.base != spec.text:  # a post-processing grid: the chosen spec names its own
        post = {"hu_range": list(spec.hu_range), "brain_erosion": spec.erosion, "min_size": spec.min_size,
                "grow": spec.grow, **({"min_share": spec.min_share} if spec.min_share else {})}
        spec_text = spec.base
    else:  # one post-processing for the whole report
        post = {k: config[k] for k in ("hu_range", "brain_erosion", "min_size", "grow", "min_share") if k in config}
    from hemwsl.data.io import check_value

    try:  # the values as they are: a string "12" is no HU range, 2.7 no erosion in pixels (no coercion)
        hu_range = check_value(post.get("hu_range", DEFAULT_RECIPE["hu_range"]), "hu_range", "numbers", length=2)
        ints = {k: check_value(post.get(k, DEFAULT_RECIPE[k]), k, "int", minimum=0)
                for k in ("brain_erosion", "min_size", "grow")}
        slice_threshold = check_value(config.get("prob_threshold", 0.5), "prob_threshold", "number", minimum=0.0,
                                      maximum=1.0)
        share = post.get("min_share", 0.0)
        if isinstance(share, list):  # a grid recorded as a list, although the choice names its own: no fixed value
            raise HemwslInputError(f"min_share {share!r} is a grid, and the chosen spec {spec.text!r} names none")
        share = check_min_share(share)
        ref = check_hu_reference(config.get("hu_reference"))
        if isinstance(ref, tuple):
            ref = list(ref)  # as JSON keeps it
    except HemwslInputError as err:
        raise HemwslInputError(f"{bench / 'config.json'}: corrupt benchmark config (post-processing: {err})") from None
    if len(hu_range) != 2 or not all(np.isfinite(hu_range)) or hu_range[0] > hu_range[1] or min(ints.values()) < 0 \
            or not 0.0 <= slice_threshold <= 1.0:
        raise HemwslInputError(f"{bench / 'config.json'}: corrupt benchmark config (hu_range {hu_range}, "
                               f"{ints}, prob_threshold {slice_threshold})")
    recipe = {
        "method": method, "layer": None, "threshold": spec_text,
        "hu_range": hu_range, **ints, **({"min_share": share} if share else {}), "slice_threshold": slice_threshold,
        **({"hu_reference": ref} if ref is not None else {}),
        "source": f"benchmark report {bench.name}: {method} {spec_text}, chosen per fold on its selection patients",
    }
    return recipe, per_fold


#: The post-processing keys of a recipe, and the fields of a threshold spec that hold them.
_POST_KEYS: dict[str, str] = {"hu_range": "hu_range", "brain_erosion": "erosion", "min_size": "min_size", "grow": "grow",
                              "min_share": "min_share"}


def _check_layers(where: Path, per_fold: Mapping[int, Mapping], settings: Mapping) -> None:
    """Each fold's chosen heatmap layer exists in the packed network (else predict would refuse the package later)."""
    from hemwsl.networks.registry import network_skeleton, target_layer_names

    backbone = settings.get("backbone")
    if not backbone:
        return
    accepted = target_layer_names(backbone)
    odd = {k: v["layer"] for k, v in per_fold.items() if v.get("layer") and v["layer"] not in accepted}
    if not odd:
        return
    try:  # another module path may still be a valid layer
        net = network_skeleton(backbone, settings.get("in_channels") or 3, settings.get("num_classes") or 1,
                               settings.get("network_options"))
    except Exception:  # noqa: BLE001  (the layer is then judged by the registry's names alone)
        net = None
    for k, layer in sorted(odd.items()):
        try:
            if net is None:
                raise AttributeError(layer)
            net.get_submodule(layer)
        except AttributeError:
            raise HemwslInputError(f"{where}: fold {k}: layer {layer!r} is not in {backbone} (its target layers: "
                                   f"{', '.join(accepted)})") from None


def _scan_calls(quant: Path, recipe: Mapping | None = None, members: Sequence[int] | None = None) -> dict[int, dict]:
    """Each fold's scan call (and thin-component rule) a ``hemwsl quantify`` report chose on its selection patients;
    a chosen scan model comes with its fitted coefficients, and its features must be computed as the report did
    (the same HU calibration as ``recipe``'s). Each of ``members`` must have a choice; every value is checked (one
    line naming ``summary.json`` and the fold)."""
    f = quant / "summary.json"
    if not f.is_file():
        raise HemwslInputError(f"{f}: not found (give the folder of a `hemwsl quantify` report)")
    summary = _read_report_json(f, "quantify report")
    choices = summary.get("choices")
    if not isinstance(choices, dict) or not choices:
        raise HemwslInputError(f"{f}: corrupt quantify report (no per-fold 'choices' mapping)")
    out = {}
    for k, v in choices.items():
        where = f"{f}: fold {k}"
        try:
            fold = int(k)
        except (TypeError, ValueError):
            raise HemwslInputError(f"{f}: corrupt quantify report (fold {k!r} is not a number)") from None
        if not isinstance(v, dict):
            raise HemwslInputError(f"{where}: corrupt choice (a mapping expected, got {v!r})")
        if members is not None and fold not in members:
            continue
        _check_scan_call(where, v.get("aggregation"), v.get("threshold"), v.get("min_slices"),
                         v.get("model") if v.get("aggregation") == "model" else None)
        call = {"aggregation": v["aggregation"], "threshold": float(v["threshold"]),
                **({"min_slices": int(v["min_slices"])} if v.get("min_slices") is not None else {})}
        if v["aggregation"] == "model":
            if "model" not in v:
                raise HemwslInputError(f"{f}: fold {k} chose the scan model, but the report does not hold it (made by "
                                       "an earlier hemwsl: rerun `hemwsl quantify`)")
            theirs = (summary.get("settings") or {}).get("hu_reference")
            mine = (recipe or {}).get("hu_reference")
            if not same_hu_reference(theirs, mine):
                raise HemwslInputError(f"{f}: its scan model saw HU calibrated to {theirs} (hu_reference), the mask "
                                       f"recipe to {mine}; give a quantify report made with the recipe's --hu-reference")
            call["model"] = v["model"]
            from hemwsl.scanmodel import SCAN_FEATURE_PRIOR

            call["features"] = dict(SCAN_FEATURE_PRIOR)  # as hemwsl quantify computed them
            call["source"] = f"scan model of quantify report {quant.name}, fold {k}"
        out[fold] = call
    lost = [k for k in (members or []) if k not in out]
    if lost:
        raise HemwslInputError(f"{f}: no scan call chosen for fold(s) {lost} (the report's folds: "
                               f"{sorted(int(k) for k in choices)}); give the quantify report of this run")
    return out


def _selection_scan_call(cv: Path, k: int, checkpoint: str, min_sensitivity: float = 0.9,
                         n_folds: int = 5) -> dict | None:
    """Fold ``k``'s scan-level call, chosen on patients its test part does not hold: the other folds' out-of-fold
    test predictions (``predictions_test[_last].csv``, as ``hemwsl quantify --select rest``), else fold ``k``'s
    own validation predictions. The aggregation with the best scan AUROC there (ties: the first of
    :data:`hemwsl.quantify.SCAN_AGGREGATIONS`), at the most specific threshold keeping ``min_sensitivity``.
    ``None`` without such files or without both classes among their patients."""
    from hemwsl.engines.classifier import report_name
    from hemwsl.quantify import SCAN_AGGREGATIONS, choose_scan_call, scan_probabilities, scan_score

    others = [cv / f"fold{j}" / f"predictions_{report_name('test', checkpoint)}.csv" for j in range(n_folds) if j != k]
    if len(others) and all(f.is_file() for f in others):
        files, source = others, f"out-of-fold predictions of the other {len(others)} folds' test patients"
    else:
        files = [cv / f"fold{k}" / f"predictions_{report_name('val', checkpoint)}.csv"]
        source = f"validation patients of fold {k}"
        if not files[0].is_file():
            return None
    from hemwsl.engines.runs import read_predictions_csv

    labels: dict[str, int] = {}
    for f in files:
        d = read_predictions_csv(f)
        for pat, lab in zip(d["patient"], d["label"][:, 0]):
            labels[str(pat)] = max(labels.get(str(pat), 0), int(lab))
    probs = scan_probabilities(files)
    pats = sorted(probs)
    y = np.array([labels[p] for p in pats])
    if y.min() == y.max():
        return None
    best = choose_scan_call({how: [scan_score(probs[p], how) for p in pats] for how in SCAN_AGGREGATIONS}, y,
                            min_sensitivity)
    return {"aggregation": best[0], "threshold": best[1], "selection_auroc": best[2], "selection_patients": len(pats),
            "source": f"{source} ({len(pats)} patients), sensitivity >= {min_sensitivity}"}


def _scan_models(cv: Path, members: Sequence[int], checkpoint: str, dataset_dir: str | os.PathLike,
                 settings: Mapping, recipe: Mapping, min_sensitivity: float, n_folds: int) -> dict[int, dict]:
    """Each member's :class:`hemwsl.scanmodel.ScanModel`, trained on the scans outside its fold's test part:
    :func:`hemwsl.scanmodel.scan_features` of every training scan from its out-of-fold probabilities
    (``predictions_test[_last].csv`` of every fold) and the recipe's prior, labelled by whether any of its
    slices is positive (slice labels: no mask is read)."""
    from hemwsl.engines.runs import fold_predictions
    from hemwsl.constants import IMAGE, PATIENT, SLICE_LABELS
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.io import load_volume
    from hemwsl.engines.classifier import fold_datalists
    from hemwsl.quantify import scan_probabilities
    from hemwsl.scanmodel import fit_scan_model, scan_features
    from hemwsl.thresholds.intensity import calibrate_hu
    from hemwsl.transforms.array import SkullStrip

    probs = scan_probabilities([fold_predictions(cv, k, checkpoint) for k in range(n_folds)])
    datalist = build_datalist(settings.get("layout") or "ct-ich", str(dataset_dir))
    feats, labels = {}, {}
    for e in datalist:
        p = str(e[PATIENT])
        if p not in probs or e.get(SLICE_LABELS) is None:
            continue
        vol = load_volume(e[IMAGE])
        brain = np.asarray(SkullStrip()(vol.array[None]))[0] > 0
        hu = calibrate_hu(vol.array, brain, recipe.get("hu_reference"))[0]
        feats[p] = scan_features(probs[p], hu, brain, vol.spacing, slice_threshold=float(recipe["slice_threshold"]),
                                 hu_range=recipe["hu_range"], brain_erosion=int(recipe["brain_erosion"]),
                                 min_size=int(recipe["min_size"]))
        labels[p] = int(np.any(e[SLICE_LABELS]))
        logger.info("scan features of %s", p)
    out = {}
    for k in members:
        test = {str(e[PATIENT]) for e in fold_datalists(datalist, n_folds=n_folds, fold=k,
                                                         seed=int(settings.get("seed") or 0),
                                                         val_fraction=float(settings.get("val_fraction") or 0.15))["test"]}
        train = sorted(p for p in feats if p not in test)
        model = fit_scan_model(np.stack([feats[p] for p in train]), [labels[p] for p in train], min_sensitivity)
        out[k] = {"aggregation": "model", "threshold": model.threshold, "model": model.to_dict(),
                  "features": {"slice_threshold": float(recipe["slice_threshold"]),
                               "hu_range": [float(v) for v in recipe["hu_range"]],
                               "brain_erosion": int(recipe["brain_erosion"]), "min_size": int(recipe["min_size"])},
                  "source": f"scan model trained on the {len(train)} scans outside fold {k}'s test part "
                            f"(out-of-fold probabilities), sensitivity >= {min_sensitivity}"}
    return out


def new_package_folder(out: str | os.PathLike) -> Path:
    """The folder of a new model package (created); one that already holds a package is refused in one line."""
    root = Path(out)
    if (root / MODEL_FILE).is_file():
        raise HemwslInputError(f"{root}: already holds a model package; choose another --out or remove it")
    root.mkdir(parents=True, exist_ok=True)
    return root


def pack_member_weights(root: Path, fold: int, checkpoint: str | os.PathLike) -> dict:
    """Copy fold ``fold``'s state dict from a training checkpoint (a state dict or ``{"model": ...}``) into
    ``<root>/fold<k>.pt`` (atomically); returns the member's ``weights``, ``source`` and ``sha1`` entries."""
    import io

    from hemwsl.data.io import atomic_write_bytes
    from hemwsl.networks.checkpoint import read_state_dict

    state = read_state_dict(checkpoint)  # an empty or unreadable file is one line naming it
    buf = io.BytesIO()
    torch.save(state, buf)
    atomic_write_bytes(root / f"fold{fold}.pt", buf.getvalue())
    return {"weights": f"fold{fold}.pt", "source": str(checkpoint), "sha1": hashlib.sha1(buf.getvalue()).hexdigest()}


def check_member_weights(checkpoint: str | os.PathLike, settings: Mapping) -> None:
    """The weights of a fold fit the network the package records (``settings``: backbone, channels, classes, network
    options): loaded into that network built without weights (:func:`hemwsl.networks.registry.network_skeleton`),
    so a package is never written around weights of another network (predict would refuse it only later). One line
    naming the file."""
    from hemwsl.networks.checkpoint import mismatch_error, read_state_dict
    from hemwsl.networks.registry import network_skeleton

    state = read_state_dict(checkpoint)
    net = network_skeleton(settings["backbone"], settings.get("in_channels"), settings.get("num_classes") or 1,
                           settings.get("network_options"))
    try:  # keys and shapes are compared; assign: the skeleton's meta tensors are replaced, not copied into
        net.load_state_dict(state, assign=True)
    except RuntimeError as err:
        raise HemwslInputError(mismatch_error(checkpoint, net, state)) from err


def pack_model(cv_dir: str | os.PathLike, out: str | os.PathLike, *, checkpoint: str = "best",
               benchmark_dir: str | os.PathLike | None = None, quantify_dir: str | os.PathLike | None = None,
               dataset_dir: str | os.PathLike | None = None, folds: Sequence[int] | None = None,
               bundle: str = "ich_classifier", post_processing: Mapping[str, Any] | None = None,
               overrides: Mapping[str, Any] | None = None, methods: Sequence[str] | None = None,
               min_sensitivity: float = 0.9, scan_call: str = "auto") -> Path:
    """Pack a ``train-cv`` run into a model package (see the module docstring); returns its folder.

    Args:
        cv_dir: the ``hemwsl train-cv`` output folder.
        out: the package folder to write (must not hold another package).
        checkpoint: ``best`` or ``last`` weights of each fold.
        benchmark_dir: a ``hemwsl benchmark`` report on that run's heatmaps: its best heatmap method, threshold
            spec, post-processing and per-fold (layer, threshold) become the mask recipe. Without it: the
            hyperdense prior on positive slices (:data:`DEFAULT_RECIPE`).
        quantify_dir: a ``hemwsl quantify`` report: each fold's scan-level aggregation and threshold. Without
            it, ``scan_call`` decides: ``"model"`` trains a :class:`hemwsl.scanmodel.ScanModel` per member on
            the scans outside its test part (needs ``dataset_dir``; ``"auto"``, the default, picks it when
            ``dataset_dir`` is given, else ``"select"``); with ``"select"`` patients outside each fold's test
            part choose an aggregation and threshold (:func:`_selection_scan_call`, keeping
            ``min_sensitivity``); with ``scan_call="none"`` or without prediction files, a scan is positive
            when one slice reaches the slice threshold.
        dataset_dir: the training data; its folds' test patients are recorded (the patients each member
            never saw, for honest checks).
        folds: members to pack (default all folds of the run).
        post_processing: overrides of the recipe's ``hu_range`` / ``brain_erosion`` / ``min_size`` / ``grow`` /
            ``slice_threshold`` / ``min_slices`` (3D components spanning fewer slices are dropped; default 1).
        overrides: the bundle overrides the run was trained with, when the folder has no ``cv_settings.json``
            (runs of the bundle itself rather than of ``train-cv``); they win over the file's.
        methods: choose the recipe among these heatmap methods of the benchmark report only (those the packed
            networks compute).
    """
    import hemwsl
    from hemwsl.engines.runs import check_outside_run, cv_settings, fold_checkpoint, resolve_cv_folds
    from hemwsl.data.io import atomic_write_text

    if isinstance(min_sensitivity, bool) or not isinstance(min_sensitivity, (int, float)) \
            or not 0.0 <= min_sensitivity <= 1.0:
        raise HemwslInputError(f"min_sensitivity must be in [0, 1], got {min_sensitivity!r}")
    min_slices = (post_processing or {}).get("min_slices")
    if min_slices is not None and (isinstance(min_slices, bool) or not isinstance(min_slices, int) or min_slices < 1):
        raise HemwslInputError(f"min_slices must be an integer >= 1 (1 keeps every component), got {min_slices!r}")
    cv = Path(cv_dir)
    if not cv.is_dir():
        raise HemwslInputError(f"{cv}: train-cv folder not found")
    check_outside_run(out, cv, "out", "cv_dir")
    settings = resolve_bundle_settings({**cv_settings(cv), **dict(overrides or {})}, bundle)
    if (cv / "cv_run.json").is_file():  # the fold count train-cv recorded (not in its settings: the bundle's 5)
        given = (overrides or {}).get("n_folds")
        settings["n_folds"] = resolve_cv_folds(cv, folds=int(given) if given is not None else None)[0]
    n_folds = int(settings.get("n_folds") or 5)
    found = [k for k in range(n_folds) if (cv / f"fold{k}").is_dir()]
    members = list(folds) if folds is not None else found
    if not members:
        raise HemwslInputError(f"{cv}: no fold<k>/ folders (train it with `hemwsl train-cv`)")
    outside = [k for k in members if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n_folds]
    if outside:
        raise HemwslInputError(f"--folds {outside[0]}: not a fold of the train-cv run {cv} (its folds: "
                               f"{', '.join(map(str, range(n_folds)))})")
    ckpts = {k: fold_checkpoint(cv, k, checkpoint) for k in members}
    from hemwsl.engines.runs import check_recorded_settings

    check_recorded_settings(settings, f"{cv}: settings", required=("backbone", "in_channels", "num_classes",
                                                                  "windows", "num_slices"))
    for ckpt in ckpts.values():  # every member's weights fit the recorded network, before anything is written
        check_member_weights(ckpt, settings)
    datalist = None
    if dataset_dir is not None:  # the run's dataset (its test patients are recorded), checked before any work
        from hemwsl.data.datalist import build_datalist
        from hemwsl.engines.runs import check_dataset_matches_run

        datalist = build_datalist(settings.get("layout") or "ct-ich", str(dataset_dir))
        check_dataset_matches_run(cv, datalist, dataset_dir, "--dataset-dir", n_folds)
    if min_slices is not None and min_slices > 1:  # as hemwsl quantify: a rule that empties every mask is refused
        from hemwsl.quantify import check_min_slices

        check_min_slices(min_slices, _run_depths(cv, members, n_folds, datalist), "--min-slices",
                         " the run was tested on")
    recipe, per_fold = dict(DEFAULT_RECIPE), {}
    if benchmark_dir is not None:
        from hemwsl.benchmark.runner import check_benchmark_checkpoint

        check_benchmark_checkpoint(benchmark_dir, checkpoint)  # its recipe was validated on that checkpoint's maps
        from hemwsl.benchmark.runner import check_benchmark_of_run

        check_benchmark_of_run(benchmark_dir, cv, n_folds)  # ... and chosen on this run's folds
        recipe, per_fold = _recipe_from_benchmark(Path(benchmark_dir), members, methods)
        _check_layers(Path(benchmark_dir) / "choices.csv", per_fold, settings)
    for key, value in (post_processing or {}).items():
        if key not in ("hu_range", "brain_erosion", "min_size", "grow", "min_share", "slice_threshold", "min_slices",
                       "hu_reference"):
            raise HemwslInputError(f"post_processing: unknown key {key!r}")
        recipe[key] = value
    fixed = sorted(k for k in (post_processing or {}) if k in _POST_KEYS)
    if fixed:  # fixed for every member, over the post-processing each fold's selection patients chose
        recipe["fixed_post_processing"] = fixed
    check_choice("scan_call", scan_call, ("auto", "model", "select", "none"))
    scan_call_given = scan_call
    if scan_call == "auto":  # the scan model when the training scans are at hand: it calls scans best (docs/predict.md)
        scan_call = "model" if dataset_dir is not None else "select"
    if quantify_dir is not None:
        if scan_call_given in ("none", "model", "select"):
            raise HemwslInputError(f"--quantify-dir {quantify_dir} and --scan-call {scan_call_given} contradict "
                                   "each other (the quantify report chooses each fold's scan call); give one of them")
        _check_quantify_made_from_run(Path(quantify_dir), cv, checkpoint, members, n_folds)
        calls = _scan_calls(Path(quantify_dir), recipe, members)
    elif scan_call == "model":
        if dataset_dir is None:
            raise HemwslInputError("--scan-call model needs --dataset-dir (the scan model learns from the training scans)")
        calls = _scan_models(cv, members, checkpoint, dataset_dir, settings, recipe, min_sensitivity, n_folds)
    elif scan_call == "select":
        calls = {k: c for k in members
                 if (c := _selection_scan_call(cv, k, checkpoint, min_sensitivity, n_folds)) is not None}
    else:
        calls = {}
    tests: dict[int, list[str]] = {}
    if datalist is not None:
        from hemwsl.constants import PATIENT
        from hemwsl.engines.classifier import fold_datalists

        for k in members:
            parts = fold_datalists(datalist, n_folds=n_folds, fold=k, seed=int(settings.get("seed") or 0),
                                   val_fraction=float(settings.get("val_fraction") or 0.15))
            tests[k] = sorted(str(e[PATIENT]) for e in parts["test"])
    root = new_package_folder(out)
    member_rows = []
    for k in members:
        call = calls.get(k, {"aggregation": "max", "threshold": float(recipe["slice_threshold"])})
        member_rows.append({"fold": k, **pack_member_weights(root, k, ckpts[k]), **per_fold.get(k, {}),
                            "scan_aggregation": call["aggregation"], "scan_threshold": call["threshold"],
                            "scan_call_source": call.get("source", "quantify report" if calls else "default"),
                            **({"scan_model": call["model"]} if "model" in call else {}),
                            **({"scan_features": call["features"]} if "features" in call else {}),
                            # the quantify report's rule, unless the user fixed one for the whole package
                            **({"min_slices": call["min_slices"]}
                               if "min_slices" in call and "min_slices" not in (post_processing or {}) else {}),
                            "test_patients": tests.get(k)})
    import monai

    meta = {
        "kind": MODEL_KIND, "format": FORMAT_VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "settings": settings, "outputs": _output_names(int(settings["num_classes"])), "recipe": recipe,
        "members": member_rows, "checkpoint": checkpoint, "train_cv": str(cv),
        "versions": {"hemwsl": hemwsl.__version__, "monai": monai.__version__, "torch": torch.__version__},
    }
    atomic_write_text(root / MODEL_FILE, json.dumps(meta, indent=1) + "\n")
    return root


def _run_depths(cv: Path, members: Sequence[int], n_folds: int, datalist: list[dict] | None) -> list[int]:
    """The slices of each scan the run was tested on: the dataset's, else its out-of-fold predictions'."""
    if datalist:
        from hemwsl.data.datalist import NUM_SLICES

        return [int(e[NUM_SLICES]) for e in datalist if e.get(NUM_SLICES) is not None]
    from hemwsl.engines.runs import _run_prediction_files, read_predictions_csv

    depths = []
    for f in _run_prediction_files(cv, n_folds):
        p = read_predictions_csv(f)
        for pat in set(p["patient"].tolist()):
            depths.append(int(p["slice"][p["patient"] == pat].max()) + 1)
    return depths


def _check_quantify_made_from_run(quant: Path, cv: Path, checkpoint: str, members: Sequence[int],
                                  n_folds: int) -> None:
    """A ``hemwsl quantify`` report chose its scan calls on the slice probabilities of one run: its per-patient
    ``score_max`` is each patient's highest slice probability. A report whose scores are not ``cv``'s (another run,
    other weights) would call scans with thresholds chosen on other probabilities: one line naming both. A report
    without ``score_max`` (made without the max aggregation) or a run without predictions is not checked."""
    import csv

    from hemwsl.engines.runs import fold_predictions, read_predictions_csv

    f = quant / "per_patient.csv"
    if not f.is_file():
        return
    try:
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh))
        scores = {r["patient"]: float(r["score_max"]) for r in rows if r.get("score_max") not in (None, "")}
    except (OSError, UnicodeDecodeError, csv.Error, KeyError, ValueError):
        return  # _scan_calls names a broken report
    for k in range(n_folds):
        try:
            p = read_predictions_csv(fold_predictions(cv, k, checkpoint))
        except HemwslInputError:
            continue
        names = p.get("names") or []
        col = names.index("any") if "any" in names else 0
        for pat in sorted(set(p["patient"].tolist())):
            if pat not in scores:
                continue
            mine = float(p["prob"][p["patient"] == pat, col].max())
            if abs(mine - scores[pat]) > 1e-3:
                raise HemwslInputError(
                    f"--quantify-dir {quant}: made from other slice probabilities than --cv-dir {cv}'s ({checkpoint} "
                    f"checkpoint): patient {pat}'s highest slice probability is {scores[pat]:.4f} there ({f}), "
                    f"{mine:.4f} in the run; give a quantify report of this run")


def _output_names(num_classes: int) -> list[str]:
    from hemwsl.engines.classifier import output_names

    return list(output_names(num_classes))


# ------------------------------------------------------------------------------------------- package
def _check_description(f: Path, meta: dict, kind: str) -> None:
    """The types and ranges of a package description an edit could break: one line naming the file and the entry."""
    def bad(what: str) -> HemwslInputError:
        return HemwslInputError(f"{f}: corrupt model description ({what})")

    for key in ("settings", "recipe"):
        if not isinstance(meta[key], dict):
            raise bad(f"{key!r} must be a mapping, got {type(meta[key]).__name__}")
    members = meta["members"]
    if not isinstance(members, list) or not all(isinstance(m, dict) and isinstance(m.get("weights"), str) for m in members):
        raise bad("'members' must be a list of entries with their 'weights' file")
    for m in members:  # a member's weights are a file of the package folder (the package moves as one folder)
        w = Path(m["weights"])
        if w.is_absolute() or ".." in w.parts or not m["weights"].strip():
            raise bad(f"member fold{m.get('fold')}: weights must be a file inside the package folder, got "
                      f"{m['weights']!r}")
    if kind != MODEL_KIND:
        return
    from hemwsl.engines.runs import check_recorded_settings

    try:
        check_recorded_settings(meta["settings"], "settings",
                                required=("backbone", "in_channels", "num_classes", "windows", "num_slices"))
    except HemwslInputError as err:
        raise bad(str(err)) from None
    for m in members:
        where = f"member fold{m.get('fold')}"
        if m.get("layer") is not None and (not isinstance(m["layer"], str) or not m["layer"].strip()):
            raise bad(f"{where}: layer must be a layer name, got {m['layer']!r}")
        if m.get("cam_threshold") is not None and not _probability(m["cam_threshold"]):
            raise bad(f"{where}: cam_threshold must be a number in [0, 1] (a threshold of the min-max heatmap), got "
                      f"{m['cam_threshold']!r}")
    for m in members:
        if "scan_aggregation" in m or "scan_threshold" in m:
            try:
                _check_scan_call(f"member fold{m.get('fold')}", m.get("scan_aggregation"), m.get("scan_threshold"),
                                 m.get("min_slices"))
            except HemwslInputError as err:
                raise bad(str(err)) from None
    r = meta["recipe"]
    if "threshold" in r:
        from hemwsl.benchmark.specs import parse_threshold_spec

        if not isinstance(r["threshold"], str):
            raise bad(f"recipe threshold must be a threshold spec such as 'prior' or 'priorcomp+search', "
                      f"got {r['threshold']!r}")
        try:
            parse_threshold_spec(r["threshold"])
        except HemwslInputError as err:
            raise bad(f"recipe {err}") from None
    for key in ("slice_threshold",):
        if key in r and not _probability(r[key]):
            raise bad(f"recipe {key} must be a probability in [0, 1], got {r[key]!r}")
    for key in ("brain_erosion", "min_size", "grow"):
        if key in r and (isinstance(r[key], bool) or not isinstance(r[key], (int, float))
                         or not float(r[key]).is_integer() or r[key] < 0):
            raise bad(f"recipe {key} must be an integer >= 0, got {r[key]!r}")
    if "min_slices" in r and (isinstance(r["min_slices"], bool) or not isinstance(r["min_slices"], int)
                              or r["min_slices"] < 1):
        raise bad(f"recipe min_slices must be an integer >= 1 (1 keeps every component), got {r['min_slices']!r}")
    if "min_share" in r:
        try:
            check_min_share(r["min_share"], "recipe min_share")
        except HemwslInputError as err:
            raise bad(str(err)) from None
    hu = r.get("hu_range")
    if hu is not None and (not isinstance(hu, list) or len(hu) != 2
                           or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                                      for v in hu) or hu[0] > hu[1]):
        raise bad(f"recipe hu_range must be [low, high] with low <= high, got {hu!r}")
    ref = r.get("hu_reference")
    if ref is not None:
        try:
            if any(isinstance(v, (str, bytes)) for v in (ref if isinstance(ref, list) else [ref])):
                raise HemwslInputError("a string")  # the values as they are: "37" is no number of HU (no coercion)
            check_hu_reference(ref)
        except HemwslInputError:
            raise bad(f"recipe hu_reference must be a brain HU between -100 and 200, or a band [low, high] of two, "
                      f"got {ref!r}") from None


@dataclass
class ModelPackage:
    """A loaded model package: ``root``, and the contents of its ``hemwsl_model.json``."""

    root: Path
    meta: dict = field(repr=False)

    @classmethod
    def load(cls, path: str | os.PathLike, kind: str = MODEL_KIND) -> ModelPackage:
        """Read a package of ``kind`` from its folder (or its ``hemwsl_model.json``); one-line errors naming the
        path (a package of another kind, e.g. a U-Net's, included)."""
        from hemwsl.data.datalist import resolve_dataset_dir

        p = Path(path)
        resolve_dataset_dir(p, "--model")  # a symlink loop is named as one, not as a missing model
        f = p / MODEL_FILE if p.is_dir() else p
        if not p.exists():
            raise HemwslInputError(f"{p}: model not found")
        if f.name != MODEL_FILE or not f.is_file():
            raise HemwslInputError(f"{p}: not a hemwsl model package (no {MODEL_FILE}; make one with `hemwsl package`)")
        from hemwsl.data.io import read_json_file

        meta = read_json_file(f, "model description", expect=None)
        if not isinstance(meta, dict) or meta.get("kind") != kind:
            other = meta.get("kind") if isinstance(meta, dict) else type(meta).__name__
            raise HemwslInputError(f"{f}: a model of another kind ({other!r}); expected {kind!r}")
        fmt = meta.get("format", 0)
        if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 0:
            raise HemwslInputError(f"{f}: corrupt model description (format must be an integer >= 0, got {fmt!r})")
        if fmt > FORMAT_VERSION:
            raise HemwslInputError(f"{f}: format {meta.get('format')} is newer than this hemwsl reads ({FORMAT_VERSION})")
        for key in ("settings", "recipe", "members"):
            if key not in meta:
                raise HemwslInputError(f"{f}: corrupt model description (no {key!r})")
        if not meta["members"]:
            raise HemwslInputError(f"{f}: the package has no members")
        _check_description(f, meta, kind)
        return cls(f.parent, meta)

    @property
    def settings(self) -> dict:
        return self.meta["settings"]

    @property
    def recipe(self) -> dict:
        return self.meta["recipe"]

    @property
    def members(self) -> list[dict]:
        return self.meta["members"]

    def fingerprint(self) -> str:
        """Hash of the description (weights included through their sha1): outputs of another model never mix."""
        return hashlib.sha1(json.dumps(self.meta, sort_keys=True).encode()).hexdigest()[:12]

    def build_member(self, member: Mapping, device: str | torch.device = "cpu") -> torch.nn.Module:
        from hemwsl.engines.classifier import load_weights
        from hemwsl.networks import build_network

        s = self.settings
        net = build_network(s["backbone"], in_channels=int(s["in_channels"]), num_classes=int(s["num_classes"]),
                            dropout=float(s.get("dropout") or 0.0), options=s.get("network_options") or None)
        w = self.root / member["weights"]
        net = load_weights(net, w, device=device)  # an unreadable or foreign file is named by the loader first
        if member.get("sha1") and hashlib.sha1(w.read_bytes()).hexdigest() != member["sha1"]:
            raise HemwslInputError(f"{w}: the weights differ from those the package recorded (sha1); repack the model "
                                   "with `hemwsl package`")
        return net

    def check_settings(self, **given: Any) -> None:
        """A user's explicit option that contradicts the model: one line naming both values."""
        for key, value in given.items():
            if value is None:
                continue
            have = self.settings.get(key)
            if json.loads(json.dumps(value)) != have:
                raise HemwslInputError(f"--{key.replace('_', '-')} {value!r} contradicts the model {self.root} "
                                       f"({key} = {have!r}); leave the option out, the model knows its settings")


# ------------------------------------------------------------------------------------------- input
def resolve_device(device: str | torch.device, name: str = "device") -> torch.device:
    """``device`` as a :class:`torch.device` that this machine has: a CUDA device without CUDA, or beyond the
    GPUs there are, is one line naming ``name`` (not an error of the first checkpoint loaded onto it)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise HemwslInputError(f"{name} {device!r}: not a torch device (e.g. cpu, cuda, cuda:0)") from err
    if dev.type not in ("cpu", "cuda", "mps"):
        raise HemwslInputError(f"{name} {device}: not a device that computes here; use cpu or cuda")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise HemwslInputError(f"{name} {device}: MPS is not available on this machine; use cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise HemwslInputError(f"{name} {device}: CUDA is not available on this machine; use cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise HemwslInputError(f"{name} {device}: this machine has {n} CUDA device(s) (cuda:0 to cuda:{n - 1})")
    return dev


def check_inputs(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> None:
    """Check every scan of a batch before the first is predicted (nothing is written for a batch with a bad
    scan): no two share an output folder ``<out_dir>/<stem>``, and with several scans each exists and reads as a 3D
    CT in HU (:func:`load_ct`, :func:`check_ct_values`); a single scan is checked by its prediction's own read."""
    from hemwsl.data.io import volume_stem

    seen: dict[str, str] = {}
    for path in paths:
        stem = volume_stem(Path(path))
        if stem in seen:
            raise HemwslInputError(f"--input: {seen[stem]} and {path} would both be written to "
                                   f"{Path(out_dir) / stem}; predict them into separate --out folders")
        seen[stem] = str(path)
    if len(paths) < 2:  # one scan: the prediction's own read checks it before anything is written (no second read)
        return
    for path in paths:
        volume, _ = load_ct(path)
        check_ct_geometry(volume.spacing, volume.array.shape, str(path))
        check_ct_values(volume.array, str(path))


def load_ct(path: str | os.PathLike) -> tuple[Any, list | None]:
    """A CT as ``(Volume, DICOM datasets in slice order or None)``: a NIfTI file, or a folder of one DICOM
    series (several series: :func:`hemwsl.data.dicom.list_series`'s rule picks one)."""
    from hemwsl.data.dicom import read_dicom_series
    from hemwsl.data.io import is_nifti, load_volume

    from hemwsl.data.datalist import resolve_dataset_dir

    p = Path(path)
    resolve_dataset_dir(p, "--input")  # a symlink loop is named as one, not as a missing input
    if not p.exists():
        raise HemwslInputError(f"{p}: input not found")
    if p.is_dir():
        s = read_dicom_series(p)
        return s.volume, s.datasets
    if not is_nifti(p):
        raise HemwslInputError(f"{p}: unsupported input (expected a .nii/.nii.gz file or a DICOM series folder)")
    return load_volume(p, kind="image"), None


def check_ct_values(hu: np.ndarray, path: str) -> None:
    """One-line errors for a volume that is not a CT in HU: too few slices, or values that are not HU (e.g. an
    image scaled to [0, 1], an MR volume or a blank one); the part of :func:`check_head_ct` that needs no skull
    stripping, so a batch of scans is checked before the first is predicted."""
    if hu.shape[2] < 3:
        raise HemwslInputError(f"{path}: {hu.shape[2]} axial slice(s); a head CT volume needs at least 3")
    lo, hi = np.percentile(hu, [1, 99])
    if hi - lo < 50 or lo < -1100 or hi > 4000:
        raise HemwslInputError(f"{path}: values from {lo:.4g} to {hi:.4g} (1st-99th percentile) do not look like "
                               "CT in Hounsfield units")


#: Plausible voxel sizes of a head CT in mm: in-plane, slice distance; and the smallest in-plane field of view (mm)
#: and size (pixels) :func:`check_ct_geometry` accepts (small enough for the project's synthetic phantoms).
CT_PIXEL_MM = (0.1, 5.0)
CT_SLICE_MM = (0.3, 20.0)
CT_MIN_FOV_MM = 20.0
CT_MIN_PIXELS = 16


def check_ct_geometry(spacing: Sequence[float], shape: Sequence[int], path: str) -> None:
    """One-line errors for a voxel grid no head CT has (a wrong header: the volume in mL would be off by orders of
    magnitude): in-plane spacing outside :data:`CT_PIXEL_MM`, slice distance outside :data:`CT_SLICE_MM`, or an
    in-plane field of view under :data:`CT_MIN_FOV_MM` mm or :data:`CT_MIN_PIXELS` pixels."""
    sx, sy, sz = (float(v) for v in tuple(spacing)[:3])
    for name, value, (lo, hi) in (("in-plane spacing", sx, CT_PIXEL_MM), ("in-plane spacing", sy, CT_PIXEL_MM),
                                  ("slice distance", sz, CT_SLICE_MM)):
        if not lo <= value <= hi:
            raise HemwslInputError(f"{path}: voxel spacing {sx:g} x {sy:g} x {sz:g} mm: the {name} {value:g} mm is "
                                   f"outside {lo:g}-{hi:g} mm of a head CT (a wrong header?)")
    nx, ny = int(shape[0]), int(shape[1])
    fov = min(nx * sx, ny * sy)
    if min(nx, ny) < CT_MIN_PIXELS or fov < CT_MIN_FOV_MM:
        nz = int(shape[2]) if len(shape) > 2 else 0
        axis = ""
        if nz >= CT_MIN_PIXELS and nz * sz >= CT_MIN_FOV_MM:  # the 3rd axis spans a head: slices along another axis
            n, mm, i = (nx, sx, 1) if (nx, -sx) <= (ny, -sy) else (ny, sy, 2)  # the fewer, thicker voxels
            axis = (f"; the slice axis looks wrong: voxel axis {i} ({n} voxels of {mm:g} mm) looks like the slice "
                    f"axis and the 3rd ({nz} voxels of {sz:g} mm) like an in-plane one (store the axial slices "
                    "along the 3rd voxel axis)")
        raise HemwslInputError(f"{path}: an in-plane field of view of {nx} x {ny} pixels ({nx * sx:.3g} x {ny * sy:.3g} "
                               f"mm) is too small for a head CT (at least {CT_MIN_PIXELS} pixels and "
                               f"{CT_MIN_FOV_MM:g} mm a side){axis}")


def check_head_ct(hu: np.ndarray, brain: np.ndarray, path: str) -> None:
    """One-line errors for input that is not a head CT in HU: too few slices, values that are not HU (e.g.
    an image scaled to [0, 1] or an MR volume), or no brain inside a skull on any slice."""
    check_ct_values(hu, path)
    frac = brain.reshape(-1, brain.shape[2]).mean(0)
    if not (frac > 0.02).any():
        raise HemwslInputError(f"{path}: no brain inside a skull found on any slice (not a head CT, or not axial?)")


# ------------------------------------------------------------------------------------------- outputs of a scan
def finished_prediction(final: Path, src: Path, fingerprint: str, members: list[int], overwrite: bool) -> dict | None:
    """The resume rule of a scan's output folder: the report of a finished prediction by the same model, members and
    input (skip it); ``None`` when there is none, or when ``overwrite`` lets another one be replaced; else a one-line
    refusal (outputs of two models never mix)."""
    if not (final / "report.json").is_file():
        return None
    try:
        old = json.loads((final / "report.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        old = None
    if not isinstance(old, dict):  # the report of an interrupted or foreign write: no finished prediction
        if not overwrite:
            raise HemwslInputError(f"{final / 'report.json'}: not a hemwsl prediction report (truncated?); "
                                   "use another --out or --overwrite")
        return None
    same_input = old.get("input") == str(src)
    if old.get("model_fingerprint") == fingerprint and old.get("members") == members and same_input:
        logger.info("%s: done, skipped", final.name)
        return old
    if not overwrite:
        what = "model or members" if same_input else f"input ({old.get('input')})"
        raise HemwslInputError(f"{final}: holds the prediction of another {what}; use another --out or --overwrite")
    return None


@contextlib.contextmanager
def partial_folder(out_dir: str | os.PathLike, stem: str):
    """A hidden ``.<stem>.partial`` folder to write a scan's outputs into, renamed to ``<stem>`` when the block
    ends without error and removed when it fails: nothing partly written is left behind."""
    import errno

    final = Path(out_dir) / stem
    part = Path(out_dir) / f".{stem}.partial"
    shutil.rmtree(part, ignore_errors=True)
    try:
        part.mkdir(parents=True)
    except OSError as err:  # name the output folder the user gave, not the hidden one inside it
        why = {errno.ENOTDIR: "a file is where a folder must be", errno.EEXIST: "a file is where a folder must be",
               errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.ELOOP: "a symlink loop",
               errno.EROFS: "a read-only file system", errno.ENOSPC: "no space left"}.get(err.errno)
        raise HemwslInputError(f"{out_dir}: cannot write the outputs there ({why or err.strerror or err}; --out)"
                               ) from None
    try:
        yield part
        if final.exists():
            shutil.rmtree(final)
        os.replace(part, final)
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise


# ------------------------------------------------------------------------------------------- predictor
def _erode(brain: np.ndarray, erosion: int) -> np.ndarray:
    """Per axial slice of an ``(X, Y, Z)`` mask, ``erosion`` iterations of a 3x3 cross: the benchmark's erosion
    (:func:`hemwsl.benchmark.runner._erode`, which takes slices first)."""
    from hemwsl.benchmark.runner import _erode as erode_slices

    return np.moveaxis(erode_slices(np.moveaxis(brain, -1, 0), erosion), 0, -1)


def _largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 3D connected component (26-connectivity): ABC/2 measures one bleed, the largest."""
    from scipy import ndimage

    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3), dtype=bool))
    if n <= 1:
        return mask
    sizes = np.bincount(labels.ravel())[1:]
    return labels == (1 + int(np.argmax(sizes)))


class Predictor:
    """The fold ensemble of a model package, ready for scans.

    Args:
        model: a package folder or a loaded :class:`ModelPackage`.
        members: fold numbers to use (default all: e.g. ``[k]`` predicts with fold ``k`` alone, for patients of
            its test part).
        device: where the networks run.
        batch_size: slices per forward pass.
    """

    def __init__(self, model: str | os.PathLike | ModelPackage, members: Sequence[int] | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 32) -> None:
        from hemwsl.benchmark.specs import parse_threshold_spec
        from hemwsl.transforms.array import MultiWindow

        if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            # a negative size made no batch at all ("need at least one array to concatenate")
            raise HemwslInputError(f"batch_size must be an integer >= 1 (slices per forward pass), got {batch_size!r}")
        self.package = model if isinstance(model, ModelPackage) else ModelPackage.load(model)
        pkg = self.package
        by_fold = {int(m["fold"]): m for m in pkg.members}
        if members is not None:
            if not list(members):
                raise HemwslInputError("members: give at least one fold number (None: the whole ensemble)")
            dup = sorted({k for k in members if list(members).count(k) > 1})
            if dup:
                raise HemwslInputError(f"members: fold(s) {dup} given twice (each member counts once in the ensemble)")
            missing = [k for k in members if k not in by_fold]
            if missing:
                raise HemwslInputError(f"{pkg.root}: no member for fold(s) {missing}; members: {sorted(by_fold)}")
        self.members = [by_fold[k] for k in (members if members is not None else sorted(by_fold))]
        self.device = resolve_device(device)
        self.batch_size = int(batch_size)
        self.networks = [pkg.build_member(m, self.device) for m in self.members]
        s = pkg.settings
        self.window = MultiWindow(s["windows"])
        r = pkg.recipe
        from dataclasses import replace

        spec = parse_threshold_spec(r["threshold"], hu_range=tuple(r["hu_range"]))
        self.spec = replace(spec, hu_range=tuple(float(v) for v in r["hu_range"]),
                            erosion=int(r["brain_erosion"]), min_size=int(r["min_size"]), grow=int(r.get("grow", 0)),
                            min_share=float(r.get("min_share", 0.0)))
        if self.spec.needs_heatmap and not r.get("method"):
            raise HemwslInputError(f"{pkg.root}: recipe {r['threshold']!r} needs a heatmap method")
        self.member_specs = [self._member_spec(m) for m in self.members]
        self.engines = []
        if r.get("method"):
            from hemwsl.cam import CAMEngine

            for net, m in zip(self.networks, self.members):
                layer = m.get("layer") or r.get("layer")
                try:
                    self.engines.append(CAMEngine(net, [r["method"]], layers=[layer]))
                except HemwslInputError as err:  # a layer edited into the description: name the package
                    raise HemwslInputError(f"{pkg.root / MODEL_FILE}: member fold{m.get('fold')}: {err}") from None

    def _member_spec(self, member: Mapping):
        """The threshold and post-processing of ``member``: those its fold's selection patients chose when its
        benchmark choice names its own (a post-processing grid: ``priorcomp+search[e4,hu55-90,min50,g1]``), else the
        recipe's; a key fixed for every member when packing (``fixed_post_processing``) stays the recipe's."""
        from dataclasses import replace

        from hemwsl.benchmark.specs import parse_threshold_spec

        text = member.get("threshold")
        if not text:
            return self.spec
        try:
            own = parse_threshold_spec(text)
        except HemwslInputError as err:
            raise HemwslInputError(f"{self.package.root / MODEL_FILE}: member fold{member.get('fold')}: {err}") from None
        if own.base == own.text:  # no post-processing of its own
            return self.spec
        fixed = set(self.package.recipe.get("fixed_post_processing") or ())
        values = {"hu_range": tuple(float(v) for v in own.hu_range), "erosion": int(own.erosion),
                  "min_size": int(own.min_size), "grow": int(own.grow), "min_share": float(own.min_share)}
        return replace(self.spec, **{f: values[f] for key, f in _POST_KEYS.items() if key not in fixed})

    # ----------------------------------------------------------------- steps
    def _inputs(self, hu: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Classifier input ``(Z, C, h, w)`` as in training, and the brain mask on the CT grid."""
        from hemwsl.constants import IMAGE, LABEL
        from hemwsl.data.dataset import LoadCTVolumed
        from hemwsl.transforms.array import SkullStrip, stack_indices

        s = self.package.settings
        img = torch.from_numpy(np.ascontiguousarray(hu, dtype=np.float32))[None]
        brain = np.asarray(SkullStrip()(img.numpy()))[0] > 0
        if s.get("skull_strip"):
            img = torch.where(torch.from_numpy(brain)[None], img, img.min())
        loader = LoadCTVolumed((IMAGE, LABEL), spatial_size=s.get("spatial_size"), skull_strip=False)
        vol = loader._resize(img, "bilinear")[0]  # (x, y, Z)
        depth = vol.shape[-1]
        k = int(s["num_slices"])
        stacks = torch.stack([vol[..., stack_indices(z, k, depth)].permute(2, 0, 1) for z in range(depth)])
        return torch.stack([torch.as_tensor(self.window(st), dtype=torch.float32) for st in stacks]), brain

    @torch.no_grad()
    def _probabilities(self, net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
        from hemwsl.engines.classifier import FlipTTAInferer

        from hemwsl.networks.sequence import is_sequence_network

        infer = FlipTTAInferer() if self.package.settings.get("tta") else (lambda xb, n: n(xb))
        if is_sequence_network(net):  # slice context: the whole volume is one sequence
            return torch.sigmoid(infer(x[None].to(self.device), net).float()).cpu().numpy()
        out = []
        for i in range(0, len(x), self.batch_size):
            xb = x[i: i + self.batch_size].to(self.device)
            out.append(torch.sigmoid(infer(xb, net).float()).cpu().numpy())
        return np.concatenate(out)

    def lse_batches(self, net: torch.nn.Module, x: torch.Tensor):
        """An LSE heatmap network over ``x`` batch by batch: ``(batch, score maps of every level, l_0)``, ``l_0``
        averaged with the left-right flipped input's when the package was validated with flip TTA (call it under
        ``torch.no_grad()``)."""
        tta = bool(self.package.settings.get("tta"))
        for i in range(0, len(x), self.batch_size):
            xb = x[i: i + self.batch_size].to(self.device)
            maps, logits = net(xb, levels=True)
            l0 = logits[0]
            if tta:
                l0 = (l0 + net(torch.flip(xb, (3,)))) / 2
            yield xb, maps, l0

    @torch.no_grad()
    def _lse_pass(self, net: torch.nn.Module, x: torch.Tensor, layer: str, shape: Sequence[int]
                  ) -> tuple[np.ndarray, np.ndarray]:
        """An LSE heatmap network's probabilities and ``lse_heatmap`` map from one forward (plus the flipped one
        for TTA): the same numbers as :meth:`_probabilities` and :meth:`_heatmap` through the CAM engine, at
        about two thirds of the cost (tested)."""
        from hemwsl.cam.base import upsample

        level = int(layer.split(".")[1])
        probs, heats = [], []
        for xb, maps, l0 in self.lse_batches(net, x):
            probs.append(torch.sigmoid(l0.float()).cpu().numpy())
            h = upsample(torch.sigmoid(maps[level][:, 0].float()), xb.shape[-2:])
            heats.append(upsample(h, tuple(shape[:2])).cpu().numpy())
        return np.concatenate(probs), np.moveaxis(np.concatenate(heats), 0, -1).astype(np.float32)

    def _heatmap(self, engine: Any, x: torch.Tensor, shape: Sequence[int]) -> np.ndarray:
        from hemwsl.cam import explain_volume

        maps = explain_volume(engine, x.to(self.device), batch_size=self.batch_size, grid_shape=tuple(shape[:2]))
        return np.asarray(next(iter(maps.values())), dtype=np.float32)  # (X, Y, Z)

    def _member_mask(self, member: Mapping, probs: np.ndarray, heat: np.ndarray | None, hu: np.ndarray,
                     brain: np.ndarray, whole_brain: np.ndarray | None = None,
                     spacing: Sequence[float] | None = None, spec=None) -> tuple[np.ndarray, bool, float]:
        from hemwsl.quantify import scan_score

        r = self.package.recipe
        if member.get("scan_model"):
            from hemwsl.scanmodel import ScanModel, scan_features

            if whole_brain is None or spacing is None:
                raise HemwslInputError("a scan model needs the brain mask and the spacing")
            # the prior the model was fitted on (recorded with it; packages of earlier versions: the recipe's)
            fs = member.get("scan_features") or {"slice_threshold": r["slice_threshold"], "hu_range": r["hu_range"],
                                                 "brain_erosion": r["brain_erosion"], "min_size": r["min_size"]}
            x = scan_features(probs[:, 0], hu, whole_brain, spacing, slice_threshold=float(fs["slice_threshold"]),
                              hu_range=[float(v) for v in fs["hu_range"]], brain_erosion=int(fs["brain_erosion"]),
                              min_size=int(fs["min_size"]))
            score = float(ScanModel.from_dict(member["scan_model"]).probability(x)[0])
        else:
            score = scan_score(probs[:, 0], member.get("scan_aggregation", "max"), float(r["slice_threshold"]))
        positive = score >= float(member.get("scan_threshold", r["slice_threshold"]))
        mask = np.zeros(hu.shape, dtype=bool)
        if not positive:
            return mask, False, score
        zs = [z for z in range(hu.shape[2]) if probs[z, 0] >= float(r["slice_threshold"])]
        if not zs:
            return mask, True, score
        spec = spec or self.spec
        strategy = spec.strategy(member.get("cam_threshold") if spec.needs_fit else None)
        slab_hu = np.moveaxis(hu[:, :, zs], -1, 0)
        slab_brain = np.moveaxis(brain[:, :, zs], -1, 0)
        slab_heat = np.moveaxis(heat[:, :, zs], -1, 0) if heat is not None else None
        pred = np.asarray(strategy(slab_heat, image_hu=slab_hu, brain=slab_brain), dtype=bool)
        mask[:, :, zs] = np.moveaxis(pred, 0, -1)
        # the member's own rule when its quantify report chose one on its selection patients, else the recipe's
        return drop_thin_components(mask, int(member.get("min_slices", r.get("min_slices", 1)))), True, score

    # ----------------------------------------------------------------- one scan
    def predict_arrays(self, hu: np.ndarray, spacing: Sequence[float], path: str = "<array>") -> dict[str, Any]:
        """Run the ensemble on an ``(X, Y, Z)`` HU volume; returns arrays and numbers (nothing written)."""
        from hemwsl.metrics.agreement import abc2_volume_ml
        from hemwsl.metrics.volume import lesion_volume_ml
        from hemwsl.thresholds.intensity import calibrate_hu

        t0 = time.perf_counter()
        check_ct_geometry(spacing, hu.shape, path)
        x, brain = self._inputs(hu)
        check_head_ct(hu, brain, path)
        eroded = {}  # the brain eroded as each member's post-processing asks, once per erosion
        # the prior (and the scan model's features) see the HU calibrated as the recipe's benchmark did; the
        # networks see the HU as stored
        hu_prior = calibrate_hu(hu, brain, self.package.recipe.get("hu_reference"))[0]
        probs, heats, masks, calls, scores = [], [], [], [], []
        fast = self.package.recipe.get("method") == "lse_heatmap"
        for i, (net, m) in enumerate(zip(self.networks, self.members)):
            if fast:
                p, h = self._lse_pass(net, x, m.get("layer") or self.package.recipe["layer"], hu.shape)
            else:
                p = self._probabilities(net, x)
                h = self._heatmap(self.engines[i], x, hu.shape) if self.engines else None
            spec = self.member_specs[i]
            if spec.erosion not in eroded:
                eroded[spec.erosion] = _erode(brain, int(spec.erosion))
            mk, call, score = self._member_mask(m, p, h, hu_prior, eroded[spec.erosion], brain, spacing, spec)
            probs.append(p), heats.append(h), masks.append(mk), calls.append(call), scores.append(score)
        n = len(self.members)
        votes = np.sum(masks, axis=0)
        mask = votes * 2 > n
        member_ml = [lesion_volume_ml(mk, spacing) for mk in masks]
        prob = np.mean(probs, axis=0)
        heat = np.mean(heats, axis=0).astype(np.float32) if self.engines else None
        out = {
            "probabilities": prob, "member_probabilities": np.stack(probs), "heatmap": heat, "mask": mask,
            "brain": brain, "scan_positive": sum(calls) * 2 > n, "member_scan_calls": calls,
            "member_scan_scores": scores, "volume_ml": lesion_volume_ml(mask, spacing),
            "member_volumes_ml": member_ml,
            "abc2_ml": abc2_volume_ml(_largest_component(mask), spacing) if mask.any() else 0.0,
            "seconds": time.perf_counter() - t0,
        }
        out["subtype_volumes_ml"] = self._subtype_volumes(prob, mask, spacing)
        return out

    def _subtype_volumes(self, prob: np.ndarray, mask: np.ndarray, spacing: Sequence[float]) -> dict | None:
        """Per-subtype mL of a six-output model: each mask voxel goes to the subtype present on its slice
        (probability >= 0.5) with the highest probability; voxels of slices with none present are
        ``unassigned``."""
        names = self.package.meta.get("outputs") or []
        if prob.shape[1] < 6:
            return None
        voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
        vol = {n: 0.0 for n in names[1:]}
        vol["unassigned"] = 0.0
        for z in range(mask.shape[2]):
            n_vox = int(mask[:, :, z].sum())
            if not n_vox:
                continue
            sub = prob[z, 1:]
            key = names[1 + int(np.argmax(sub))] if (sub >= 0.5).any() else "unassigned"
            vol[key] += n_vox * voxel_ml
        return vol

    def predict(self, path: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False,
                figures: bool = True, loaded: tuple[Any, list | None] | None = None) -> dict[str, Any]:
        """Predict one scan and write its outputs to ``<out_dir>/<stem>/``; returns the report (``report.json``).

        A finished scan of the same model is skipped (its report returned); one of another model is refused
        unless ``overwrite``. Nothing partly written is left behind on error. ``loaded``: the scan as
        :func:`load_ct` returns it, when it was read already (e.g. by a bundle's preprocessing)."""
        from hemwsl.data.io import atomic_write_text, save_nifti

        src = Path(path)
        from hemwsl.data.io import volume_stem

        stem = volume_stem(src)
        fp = self.package.fingerprint()
        members = [int(m["fold"]) for m in self.members]
        done = finished_prediction(Path(out_dir) / stem, src, fp, members, overwrite)
        if done is not None:
            return done
        volume, datasets = loaded if loaded is not None else load_ct(src)
        res = self.predict_arrays(volume.array, volume.spacing, str(src))
        self.last = res  # the arrays of the latest scan (e.g. the mask a MONAI Deploy operator emits)
        with partial_folder(out_dir, stem) as part:
            names = self.package.meta.get("outputs") or ["any"]
            lines = ["slice," + ",".join(f"prob_{n}" for n in names) + ",positive"]
            thr = float(self.package.recipe["slice_threshold"])
            lines += [f"{z}," + ",".join(f"{v:.6f}" for v in row) + f",{int(row[0] >= thr)}"
                      for z, row in enumerate(res["probabilities"])]
            atomic_write_text(part / "probabilities.csv", "\n".join(lines) + "\n")
            save_nifti(res["mask"].astype(np.uint8), volume.affine, part / "mask.nii.gz")
            if res["heatmap"] is not None:
                save_nifti(res["heatmap"], volume.affine, part / "heatmap.nii.gz")
            report = self._report(src, stem, volume, res, fp, members)
            if datasets is not None:
                from hemwsl.data.dicom import write_dicom_seg

                import hemwsl

                write_dicom_seg(res["mask"], datasets, part / "seg.dcm", software_version=hemwsl.__version__)
                report["files"]["dicom_seg"] = "seg.dcm"
            if figures:
                from hemwsl.reports.predict import plot_scan_report

                plot_scan_report(volume.array, volume.affine, res["mask"], res["heatmap"], res["probabilities"][:, 0],
                                 part / "report.png", title=self._title(stem, report), slice_threshold=thr)
                report["files"]["report_png"] = "report.png"
            atomic_write_text(part / "report.json", json.dumps(report, indent=1) + "\n")
        return report

    @staticmethod
    def _title(stem: str, report: Mapping) -> str:
        v = report["volume"]
        call = "hemorrhage" if report["scan"]["positive"] else "no hemorrhage"
        return (f"{stem}: {call} (scan probability {report['scan']['max_slice_probability']:.2f}); "
                f"{v['ml']:.1f} mL [members {v['members_min_ml']:.1f}-{v['members_max_ml']:.1f}], ABC/2 {v['abc2_ml']:.1f} mL")

    def _report(self, src: Path, stem: str, volume: Any, res: Mapping, fp: str, members: list[int]) -> dict:
        r = self.package.recipe
        thr = float(r["slice_threshold"])
        ml = np.asarray(res["member_volumes_ml"], dtype=float)
        p = res["probabilities"][:, 0]
        return {
            "input": str(src), "stem": stem, "model": str(self.package.root), "model_fingerprint": fp,
            "members": members, "shape": list(volume.shape), "spacing_mm": [round(s, 4) for s in volume.spacing],
            "scan": {"positive": bool(res["scan_positive"]), "max_slice_probability": float(p.max()),
                     "member_calls": [bool(c) for c in res["member_scan_calls"]],
                     "member_scores": [float(s) for s in res["member_scan_scores"]],
                     "rule": "majority of the members' calls (aggregation and threshold per member)"},
            "slices": {"threshold": thr, "positive": [int(z) for z in np.flatnonzero(p >= thr)]},
            "volume": {"ml": float(res["volume_ml"]), "members_ml": [float(v) for v in ml],
                       "members_mean_ml": float(ml.mean()), "members_sd_ml": float(ml.std(ddof=1)) if len(ml) > 1 else 0.0,
                       "members_min_ml": float(ml.min()), "members_max_ml": float(ml.max()),
                       "abc2_ml": float(res["abc2_ml"]), "abc2_of": "the largest connected component of the mask", "subtypes_ml": res["subtype_volumes_ml"]},
            "recipe": {**r, "mask": "majority vote of the members' masks"},
            "seconds": round(float(res["seconds"]), 3),
            "files": {"probabilities": "probabilities.csv", "mask": "mask.nii.gz",
                      **({"heatmap": "heatmap.nii.gz"} if res["heatmap"] is not None else {})},
        }


# ------------------------------------------------------------------------------------------- bundle pieces
def find_scans(folder: str | os.PathLike, as_items: bool = False) -> list:
    """The scans of a folder: its NIfTI files, then its sub-folders (DICOM series), each sorted; with
    ``as_items``, as data items ``{"image": path}``."""
    root = Path(folder)
    if not root.is_dir():
        if root.exists():
            raise HemwslInputError(f"{root}: a file, not a folder of scans (give the folder that holds the NIfTI files "
                                   "or DICOM series folders)")
        raise HemwslInputError(f"{root}: input folder not found")
    scans = [str(p) for p in sorted(root.iterdir()) if p.is_file() and p.name.endswith((".nii", ".nii.gz"))]
    scans += [str(p) for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    if not scans:
        raise HemwslInputError(f"{root}: no NIfTI file or DICOM series folder found")
    return [{"image": s} for s in scans] if as_items else scans


class LoadScand:
    """Dictionary transform for a bundle's ``preprocessing``: ``{"image": path}`` -> adds ``"volume"`` (HU on its
    grid) and ``"dicom"`` (the source datasets of a DICOM series, or ``None``) with :func:`load_ct`."""

    def __init__(self, keys: str = "image") -> None:
        self.key = keys if isinstance(keys, str) else keys[0]

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        d["volume"], d["dicom"] = load_ct(d[self.key])
        return d


def _flag(name: str, value: Any) -> bool:
    """A bundle's true/false setting: a bool, or the words ``true``/``false`` as ``monai.bundle run --name false``
    passes them (a string); anything else (e.g. ``maybe``, which Python takes for true) is one line naming it."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise HemwslInputError(f"{name} must be true or false, got {value!r}")


class PredictWorkflow:
    """The ``evaluator`` of ``bundles/ich_predict``: every item of ``dataset`` (from :class:`LoadScand`) through
    :meth:`Predictor.predict`, outputs under ``output_dir``; ``run()`` returns the reports."""

    def __init__(self, predictor: Predictor, dataset: Sequence[Mapping], output_dir: str | os.PathLike,
                 figures: bool = True, overwrite: bool = False) -> None:
        figures, overwrite = _flag("figures", figures), _flag("overwrite", overwrite)
        self.predictor, self.dataset, self.output_dir = predictor, dataset, Path(output_dir)
        self.figures, self.overwrite = figures, overwrite

    def run(self) -> list[dict]:
        reports = []
        for i in range(len(self.dataset)):
            item = self.dataset[i]
            rep = self.predictor.predict(item["image"], self.output_dir, overwrite=self.overwrite,
                                         figures=self.figures, loaded=(item["volume"], item["dicom"]))
            logger.info("%s: %s, %.1f mL", rep["stem"], "positive" if rep["scan"]["positive"] else "negative",
                        rep["volume"]["ml"])
            reports.append(rep)
        return reports

