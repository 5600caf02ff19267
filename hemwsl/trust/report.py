"""The trust report: faithfulness, region importance and their statistics over a datalist.

:func:`run_trust_report` explains the chosen slices of every volume with ONE
:class:`hemwsl.cam.CAMEngine` pass per batch (all CAM and attribution methods), then per slice:

* faithfulness correlation of every map from ONE set of perturbed forwards
  (:func:`hemwsl.trust.faithfulness.faithfulness_correlation`);
* deletion / insertion AUC (:func:`hemwsl.trust.faithfulness.deletion_insertion_curves`) for the maps
  at ``curve_layers`` on the ``curve_slices`` largest-lesion slices of each volume (they cost
  ``2 (n_steps + 1)`` forwards per map, so they can be restricted);
* mean and relative attribution in the hemorrhage, perihematomal ring, rest of the brain and
  background (:mod:`hemwsl.trust.regions`).

Each volume's rows are written atomically to ``per_case/<patient>.json`` and a volume whose file
exists with the same settings is skipped, so an interrupted run resumes. Then :func:`summarize`
writes ``per_case.csv`` (one row per slice and map), ``per_patient.csv``, ``tests.csv``,
``summary.md`` and ``figures/*.png``. Statistics use one value per patient (the mean over its slices;
slices of one patient are not independent).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hemwsl.constants import (
    BRAIN,
    IMAGE,
    LABEL,
    MASK,
    PATIENT,
    SLICE_INDEX,
    SLICE_LABELS,
    SPACING,
    SUBTYPE_LABELS,
    SUBTYPES,
)
from hemwsl.data.io import atomic_write_text, check_run_record, check_value, read_json_file
from hemwsl.errors import HemwslInputError, check_choice
from hemwsl.trust.regions import REGIONS

__all__ = ["TrustConfig", "check_trust_config", "check_method_options", "explain_entry", "run_trust_report", "summarize",
           "read_rows", "PAIRS"]

logger = logging.getLogger(__name__)

#: Region pairs compared within each method (paired tests, one value per patient).
PAIRS: tuple[tuple[str, str], ...] = (
    ("hemorrhage", "brain"),
    ("perihematomal", "brain"),
    ("hemorrhage", "perihematomal"),
)


@dataclass
class TrustConfig:
    """Settings of the measures (stored with every per-patient file; a change of these, of the methods,
    layers or input settings recomputes the patient).

    Attributes:
        patch_size: side of the square patches in pixels (at the classifier's input size).
        n_subsets: random patch subsets per slice for the faithfulness correlation.
        subset_fraction: fraction of the patches removed in each subset.
        baseline: faithfulness baseline, a name of :data:`hemwsl.trust.faithfulness.BASELINES`.
        blur_sigma: sigma (pixels) of the ``"blur"`` baseline.
        similarity: ``"pearson"`` or ``"spearman"``.
        score: ``"probability"`` or ``"logit"``.
        n_steps: steps of the deletion / insertion curves (``0``: no curves).
        deletion_baseline, insertion_baseline: baselines of the curves.
        curve_layers: layers whose maps get curves (``None``: all; ``"input"`` names the attribution
            methods' maps).
        curve_slices: curves on at most this many slices per volume, those with the largest lesion
            (``None``: all chosen slices).
        ring_mm: width of the perihematomal ring in mm.
        max_slices: explain at most this many slices per volume, those with the largest lesion (then
            the lowest index); ``None``: all chosen slices.
        slices: ``"positive"`` (slices labelled as hemorrhage) or ``"all"``.
        seed: seed of the random subsets.
    """

    patch_size: int = 8
    n_subsets: int = 64
    subset_fraction: float = 0.1
    baseline: str = "zero"
    blur_sigma: float = 4.0
    similarity: str = "pearson"
    score: str = "probability"
    n_steps: int = 16
    deletion_baseline: str = "zero"
    insertion_baseline: str = "blur"
    curve_layers: list[str] | None = None
    curve_slices: int | None = None
    max_slices: int | None = None
    ring_mm: float = 5.0
    slices: str = "positive"
    seed: int = 0


def _positive_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer)) and value >= 1


def check_trust_config(config: TrustConfig) -> None:
    """Every setting of ``config`` at once, before a folder records it (``trust_run.json``) or a volume is
    explained: raises :class:`HemwslInputError` naming the first bad one."""
    from hemwsl.trust.faithfulness import BASELINES, SCORES, SIMILARITIES

    if not _positive_int(config.patch_size):
        raise HemwslInputError(f"patch_size must be a positive int, got {config.patch_size!r}")
    if not _positive_int(config.n_subsets) or config.n_subsets < 2:
        raise HemwslInputError(f"n_subsets must be an int >= 2, got {config.n_subsets!r}")
    if not 0 < config.subset_fraction <= 1:
        raise HemwslInputError(f"subset_fraction must be in (0, 1], got {config.subset_fraction!r}")
    for name in ("baseline", "deletion_baseline", "insertion_baseline"):
        check_choice(name, getattr(config, name), BASELINES)
    if not config.blur_sigma > 0:
        raise HemwslInputError(f"blur_sigma must be > 0, got {config.blur_sigma!r}")
    check_choice("similarity", config.similarity, SIMILARITIES)
    check_choice("score", config.score, SCORES)
    if isinstance(config.n_steps, bool) or not isinstance(config.n_steps, (int, np.integer)) or config.n_steps < 0:
        raise HemwslInputError(f"n_steps must be an int >= 0 (0: no curves), got {config.n_steps!r}")
    for name in ("curve_slices", "max_slices"):
        value = getattr(config, name)
        if value is not None and not _positive_int(value):
            raise HemwslInputError(f"{name} must be a positive int (or None: all), got {value!r}")
    if not config.ring_mm > 0:
        raise HemwslInputError(f"ring_mm must be > 0, got {config.ring_mm!r}")
    check_choice("slices", config.slices, ("positive", "all"))


def check_method_options(methods: Sequence[str], method_options: Mapping[str, Mapping[str, Any]] | None,
                         name: str = "method_options") -> None:
    """``{method: {option: value}}`` for the explanation methods: each method one of ``methods``, each option a
    parameter of the method's constructor, and the constructor accepting the values. Raises
    :class:`HemwslInputError` naming ``name``, the method and the option."""
    import inspect

    from hemwsl.cam import get_method

    if method_options is None:
        return
    if not isinstance(method_options, Mapping):
        raise HemwslInputError(f"{name}: give a JSON object {{method: {{option: value}}}}, got {method_options!r}")
    for method, options in method_options.items():
        if method not in methods:
            raise HemwslInputError(f"{name}: options for {method!r}, which is not among the methods explained "
                                   f"({', '.join(methods)})")
        if not isinstance(options, Mapping):
            raise HemwslInputError(f"{name}: the options of {method!r} must be a JSON object {{option: value}}, "
                                   f"got {options!r}")
        cls = get_method(method)
        params = inspect.signature(cls).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            accepted = [p for p, v in params.items() if v.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                                   inspect.Parameter.KEYWORD_ONLY)]
            for option in options:
                if option not in accepted:
                    takes = f"it takes {', '.join(accepted)}" if accepted else "it takes no options"
                    raise HemwslInputError(f"{name}: {method} has no option {option!r} ({takes})")
        try:
            cls(**options)
        except HemwslInputError as err:
            text = str(err)
            raise HemwslInputError(f"{name}: {text if text.startswith(method) else f'{method}: {text}'}") from err
        except (TypeError, ValueError) as err:
            raise HemwslInputError(f"{name}: {method}: {type(err).__name__}: {err}") from err


def _brain_mask_of(volume_hu: torch.Tensor) -> torch.Tensor:
    from hemwsl.transforms.array import SkullStrip

    return torch.as_tensor(SkullStrip()(volume_hu.numpy()))


def explain_entry(
    entry: Mapping,
    network: nn.Module,
    engine: Any,
    config: TrustConfig,
    *,
    windows: Sequence = ("brain",),
    num_slices: int = 3,
    spatial_size: Sequence[int] | None = (256, 256),
    skull_strip: bool = False,
    batch_size: int = 8,
    perturbation_batch: int = 64,
    model_name: str = "",
) -> dict[str, Any]:
    """All rows of one volume: ``{"patient", "info", "rows": [one dict per slice and map]}``."""
    import nibabel as nib

    from hemwsl.data.dataset import SliceDataset
    from hemwsl.trust.faithfulness import deletion_insertion_curves, faithfulness_correlation
    from hemwsl.trust.regions import region_importance, region_masks, scaled_spacing

    patient = str(entry.get(PATIENT) or Path(entry[IMAGE]).name.split(".")[0])
    labels = entry.get(SLICE_LABELS)
    if config.slices == "positive":
        if labels is None:
            raise HemwslInputError(f"{entry[IMAGE]}: slices='positive' needs slice labels in the datalist")
        chosen = {z for z, v in enumerate(labels) if v}
    else:
        chosen = None
    info: dict[str, Any] = {"patient": patient, "model": model_name}
    subtypes = entry.get(SUBTYPE_LABELS)
    for k, name in enumerate(SUBTYPES):
        info[name] = int(any(s[k] for s in subtypes)) if subtypes else -1
    if chosen is not None and not chosen:
        return {"patient": patient, "info": {**info, "lesion_ml": 0.0, "n_slices": 0}, "rows": []}
    ds = SliceDataset([{IMAGE: entry[IMAGE], LABEL: entry.get(LABEL), PATIENT: patient,
                        SLICE_LABELS: labels}], num_slices=num_slices, windows=windows,
                      spatial_size=spatial_size, skull_strip=skull_strip,
                      slice_filter=None if chosen is None else (lambda e, z: z in chosen))
    vol = ds.cache[0]
    native = nib.load(str(entry[IMAGE])).shape
    shape = tuple(vol[IMAGE].shape[1:3])
    spacing = entry.get(SPACING) or [1.0, 1.0, 1.0]
    sp = scaled_spacing(spacing, native, shape)
    dz = float(spacing[2]) if len(spacing) > 2 else 1.0
    info["lesion_ml"] = float(vol[LABEL].sum()) * sp[0] * sp[1] * dz / 1000.0
    info["n_slices"] = len(ds) if config.max_slices is None else min(len(ds), config.max_slices)
    brain_vol = vol[BRAIN][0] if BRAIN in vol else _brain_mask_of(vol[IMAGE])[0]

    samples = [ds[i] for i in range(len(ds))]
    if config.max_slices is not None:
        top = sorted(samples, key=lambda s: (-float(s[MASK].sum()), int(s[SLICE_INDEX])))[: config.max_slices]
        samples = sorted(top, key=lambda s: int(s[SLICE_INDEX]))
    lesion_px = {int(s[SLICE_INDEX]): float(s[MASK].sum()) for s in samples}
    curve_z = set(lesion_px)
    if config.curve_slices is not None:
        curve_z = set(sorted(lesion_px, key=lambda z: (-lesion_px[z], z))[: config.curve_slices])
    device = next(network.parameters()).device
    rows: list[dict] = []
    bopt = {"sigma": config.blur_sigma}
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        x = torch.stack([s[IMAGE] for s in chunk]).to(device)
        maps = engine(x)
        probs = torch.sigmoid(engine.last_scores.float()).cpu().numpy()
        keys = list(maps)
        faith = faithfulness_correlation(
            network, x, maps, patch_size=config.patch_size, n_subsets=config.n_subsets,
            subset_fraction=config.subset_fraction, baseline=config.baseline,
            baseline_options=bopt if config.baseline == "blur" else None, similarity=config.similarity,
            score=config.score, batch_size=perturbation_batch, seed=config.seed + start,
        )
        zs = [int(s[SLICE_INDEX]) for s in chunk]
        cur_rows = [i for i, z in enumerate(zs) if z in curve_z]
        curve_keys = [k for k in keys if config.curve_layers is None or k[1] in config.curve_layers]
        curves: dict = {}
        if config.n_steps and cur_rows and curve_keys:
            sel = torch.as_tensor(cur_rows)
            curves = deletion_insertion_curves(
                network, x[sel], {k: maps[k][sel] for k in curve_keys}, patch_size=config.patch_size,
                n_steps=config.n_steps, deletion_baseline=config.deletion_baseline,
                insertion_baseline=config.insertion_baseline, baseline_options=bopt, score=config.score,
                batch_size=perturbation_batch,
            )
        for i, s in enumerate(chunk):
            z = zs[i]
            regions = region_masks(s[MASK][0], brain_vol[..., z], sp, config.ring_mm)
            for key in keys:
                imp = region_importance(maps[key][i], regions)
                row = {"patient": patient, "model": model_name, "slice": z, "prob": float(probs[i]),
                       "lesion_px": lesion_px[z], "method": key[0], "layer": key[1],
                       "faithfulness": float(faith[key][i])}
                if curves and i in cur_rows and key in curve_keys:
                    j = cur_rows.index(i)
                    row["deletion_auc"] = float(curves["deletion_auc"][key][j])
                    row["insertion_auc"] = float(curves["insertion_auc"][key][j])
                else:
                    row["deletion_auc"] = row["insertion_auc"] = float("nan")
                for r in REGIONS:
                    row[f"mean_{r}"] = imp["mean"][r]
                for r in REGIONS:
                    row[f"rel_{r}"] = imp["relative"][r]
                for r in REGIONS:
                    row[f"px_{r}"] = imp["pixels"][r]
                rows.append(row)
    return {"patient": patient, "info": info, "rows": rows}


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(type(v).__name__)


def run_trust_report(
    datalist: Sequence[Mapping],
    output_dir: str | os.PathLike,
    network_for: Callable[[Mapping], tuple[str, nn.Module]] | nn.Module,
    methods: Sequence[str],
    layers: Sequence[str] | None = None,
    config: TrustConfig | None = None,
    *,
    windows: Sequence = ("brain",),
    num_slices: int = 3,
    spatial_size: Sequence[int] | None = (256, 256),
    skull_strip: bool = False,
    batch_size: int = 8,
    perturbation_batch: int = 64,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    groups: Sequence[str] = ("volume",),
    progress: bool = True,
    models: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Compute (or resume) the per-volume results of ``datalist`` and write the summary.

    Args:
        datalist: entries from :func:`hemwsl.data.build_datalist`.
        output_dir: report folder (``per_case/``, ``per_case.csv``, ``summary.md``, ``figures/``).
        network_for: a network, or ``f(entry) -> (model name, network)`` (cross-validation: the fold
            model whose test part holds the patient). Networks are used as given (device, dtype).
        methods: names from :func:`hemwsl.cam.list_methods`.
        layers: target layers (default: the network's registered layers).
        config: :class:`TrustConfig`.
        windows, num_slices, spatial_size, skull_strip: the classifier's input settings.
        batch_size: slices per engine call.
        perturbation_batch: perturbed images per forward.
        method_options: per-method constructor options for the engine.
        groups: group comparisons of :func:`summarize`.
        progress: show a progress bar.
        models: what identifies the networks (e.g. ``{"model": pattern, "checkpoints": {path: sha1}}``). The
            folder records it with every setting above in ``trust_run.json``; a rerun into the same folder with
            any of them changed is refused with one line naming what differs, so results of two models or
            two settings never mix (patients can be added: the datalist is not part of the record).

    Returns:
        ``{name: path}`` of the written summary files.
    """
    from tqdm import tqdm

    from hemwsl.cam import CAMEngine, list_methods

    config = config or TrustConfig()
    check_trust_config(config)
    for name, value in (("batch_size", batch_size), ("perturbation_batch", perturbation_batch)):
        check_value(value, name, "int", minimum=1)
    unknown = [m for m in methods if m not in list_methods()]
    if unknown:
        raise HemwslInputError(f"unknown method(s) {unknown}; accepted values: {', '.join(list_methods())}")
    check_method_options(methods, method_options)
    for g in groups:  # before any volume is explained (the summary compares them at the end)
        check_choice("group", g, ("volume", *SUBTYPES))
    if not datalist:
        raise HemwslInputError("datalist is empty: nothing to report on")
    out = Path(output_dir)
    record = {
        "config": asdict(config), "methods": list(methods), "layers": list(layers or []),
        "windows": list(map(str, windows)), "num_slices": int(num_slices), "spatial_size": list(spatial_size or []),
        "skull_strip": bool(skull_strip), "method_options": dict(method_options or {}), "models": dict(models or {}),
    }
    if not (out / "trust_run.json").is_file() and any((out / "per_case").glob("*.json")):
        raise HemwslInputError(f"{out} holds trust results without a run record (an earlier version); "
                               "use another folder")
    check_run_record(out / "trust_run.json", record, "a trust run")
    ckey = hashlib.sha1(json.dumps(
        [asdict(config), list(methods), list(layers or []), list(map(str, windows)), num_slices,
         list(spatial_size or []), bool(skull_strip), method_options or {}], sort_keys=True, default=str,
    ).encode()).hexdigest()[:12]
    engines: dict[int, Any] = {}
    for entry in tqdm(datalist, desc="volumes", disable=not progress):
        patient = str(entry.get(PATIENT) or Path(entry[IMAGE]).name.split(".")[0])
        path = out / "per_case" / f"{patient}.json"
        if path.exists() and _finished(path, ckey):
            continue
        if config.slices == "positive" and entry.get(SLICE_LABELS) is not None and not any(entry[SLICE_LABELS]):
            continue
        name, net = network_for(entry) if not isinstance(network_for, nn.Module) else ("model", network_for)
        net.eval()
        if id(net) not in engines:
            engines[id(net)] = CAMEngine(net, list(methods), layers=list(layers) if layers else None,
                                         method_options=method_options, skip_inapplicable=True)
        t0 = time.perf_counter()
        res = explain_entry(entry, net, engines[id(net)], config, windows=windows, num_slices=num_slices,
                            spatial_size=spatial_size, skull_strip=skull_strip, batch_size=batch_size,
                            perturbation_batch=perturbation_batch, model_name=name)
        res["seconds"] = time.perf_counter() - t0
        res["config_key"] = ckey
        res["config"] = asdict(config)
        atomic_write_text(path, json.dumps(res, default=_json_default))
        logger.info("%s: %d slices in %.1f s", patient, res["info"]["n_slices"], res["seconds"])
    return summarize(out, groups=groups)


# --------------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------------


def _per_case_result(path: Path) -> dict:
    """A ``per_case/<patient>.json`` result: an object with its ``patient``, ``rows`` (a list of objects) and
    ``info`` (an object); anything else is one :class:`HemwslInputError` naming the file."""
    res = read_json_file(path, "per-case trust result")
    if not isinstance(res.get("patient"), str) or not isinstance(res.get("info"), dict) \
            or not isinstance(res.get("rows"), list) or not all(isinstance(r, dict) for r in res["rows"]):
        raise HemwslInputError(f"{path}: corrupt per-case trust result ('patient' (a string), 'rows' (a list of "
                               "objects) and 'info' (an object) expected)")
    return res


def _finished(path: Path, ckey: str) -> bool:
    """Whether ``path`` holds the finished result of this configuration (``ckey``); an unreadable or incomplete one
    (a kill, an edit) is made again, a warning naming it."""
    try:
        return _per_case_result(path).get("config_key") == ckey
    except HemwslInputError as err:
        logger.warning("%s; the patient is explained again", err)
        return False


def read_rows(output_dir: str | os.PathLike) -> tuple[list[dict], dict[str, dict]]:
    """Rows and per-patient info of all ``per_case/*.json`` files of a report folder (a corrupt one is one line
    naming it)."""
    rows: list[dict] = []
    infos: dict[str, dict] = {}
    for p in sorted((Path(output_dir) / "per_case").glob("*.json")):
        res = _per_case_result(p)
        rows += res["rows"]
        infos[res["patient"]] = dict(res["info"], seconds=res.get("seconds", float("nan")))
    return rows, infos


def _csv_text(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    buf = io.StringIO()
    columns = list(columns or (rows[0].keys() if rows else []))
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def _msd(v: Sequence[float], digits: int = 3) -> str:
    a = np.asarray(v, dtype=np.float64)
    a = a[np.isfinite(a)]
    if a.size == 0:
        return "n/a"
    sd = a.std(ddof=1) if a.size > 1 else float("nan")
    return f"{a.mean():.{digits}f} +- {sd:.{digits}f}"


def _label(method: str, layer: str) -> str:
    return method if layer == "input" else f"{method} @ {layer}"


def _fmt_p(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def summarize(
    output_dir: str | os.PathLike, groups: Sequence[str] = ("volume",), alpha: float = 0.05
) -> dict[str, Path]:
    """Tables, tests and figures from the per-case files of a report folder.

    Statistics: per method, the patient means of the relative region importance are compared between
    the region pairs of :data:`PAIRS` (:func:`hemwsl.trust.stats.compare_paired`); the patient means of
    the faithfulness correlation and of the relative hemorrhage importance are compared between the
    groups (:func:`hemwsl.trust.stats.compare_groups`): ``"volume"`` (lesion volume at most the median
    vs above) or a subtype name (patients with that subtype vs without). p-values are Holm-adjusted
    within each table.

    Returns:
        ``{"per_case", "per_patient", "tests", "summary", <figure names>}`` paths.
    """
    from hemwsl.trust.stats import compare_groups, compare_paired, holm

    out = Path(output_dir)
    rows, infos = read_rows(out)
    if not rows:
        raise HemwslInputError(f"{out}: no per-case results to summarise")
    for g in groups:
        check_choice("group", g, ("volume", *SUBTYPES))
    paths: dict[str, Path] = {}
    atomic_write_text(out / "per_case.csv", _csv_text(rows))
    paths["per_case"] = out / "per_case.csv"

    keys = list(dict.fromkeys((r["method"], r["layer"]) for r in rows))
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_key[(r["method"], r["layer"])].append(r)
    measures = ["faithfulness", "deletion_auc", "insertion_auc", *(f"rel_{r}" for r in REGIONS)]
    # per-patient means
    pp: dict[tuple, dict[str, dict[str, float]]] = {}
    pp_rows = []
    for key in keys:
        per: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
        for r in by_key[key]:
            for m in measures:
                per[r["patient"]][m].append(r[m])
        pp[key] = {}
        for patient, vals in per.items():
            with np.errstate(all="ignore"):
                means = {m: (float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"))
                         for m, v in ((m, np.asarray(vals[m], dtype=np.float64)) for m in measures)}
            pp[key][patient] = means
            pp_rows.append({"patient": patient, "method": key[0], "layer": key[1], **means})
    atomic_write_text(out / "per_patient.csv", _csv_text(pp_rows))
    paths["per_patient"] = out / "per_patient.csv"

    patients = sorted(infos)
    vols = np.asarray([infos[p]["lesion_ml"] for p in patients if infos[p].get("n_slices")])
    median_ml = float(np.median(vols)) if vols.size else float("nan")

    def group_of(g: str, patient: str) -> int | None:
        info = infos[patient]
        if g == "volume":
            return int(info["lesion_ml"] > median_ml)
        return None if info.get(g, -1) < 0 else int(info[g])

    tests: list[dict] = []
    for key in keys:
        pats = sorted(pp[key])
        for ra, rb in PAIRS:
            a = [pp[key][p][f"rel_{ra}"] for p in pats]
            b = [pp[key][p][f"rel_{rb}"] for p in pats]
            res = compare_paired(a, b, alpha=alpha)
            tests.append({"kind": "paired", "method": key[0], "layer": key[1], "measure": "relative importance",
                          "a": ra, "b": rb, **res.as_dict()})
    paired_idx = [i for i, t in enumerate(tests)]
    for i, q in zip(paired_idx, holm([tests[i]["p"] for i in paired_idx])):
        tests[i]["p_holm"] = float(q)
    start = len(tests)
    for g in groups:
        for key in keys:
            for measure in ("faithfulness", "rel_hemorrhage"):
                a, b = [], []
                for p, vals in pp[key].items():
                    grp = group_of(g, p)
                    if grp is None:
                        continue
                    (a if grp == 1 else b).append(vals[measure])
                res = compare_groups(a, b, alpha=alpha)
                label_a = f"volume > {median_ml:.2f} ml" if g == "volume" else f"{g}"
                label_b = f"volume <= {median_ml:.2f} ml" if g == "volume" else f"no {g}"
                tests.append({"kind": "groups", "method": key[0], "layer": key[1], "measure": measure,
                              "a": label_a, "b": label_b, **res.as_dict()})
    for i, q in zip(range(start, len(tests)), holm([t["p"] for t in tests[start:]])):
        tests[i]["p_holm"] = float(q)
    atomic_write_text(out / "tests.csv", _csv_text(tests))
    paths["tests"] = out / "tests.csv"

    paths.update(_figures(out, keys, by_key, pp))
    md = _markdown(out, keys, by_key, pp, tests, infos, median_ml, rows)
    atomic_write_text(out / "summary.md", md)
    paths["summary"] = out / "summary.md"
    return paths


def _markdown(out: Path, keys, by_key, pp, tests, infos, median_ml, rows) -> str:
    n_pat = sum(1 for i in infos.values() if i.get("n_slices"))
    n_slices = len({(r["patient"], r["slice"]) for r in rows})
    secs = [i["seconds"] for i in infos.values() if i.get("n_slices") and np.isfinite(i.get("seconds", np.nan))]
    lines = [
        "# Trust report",
        "",
        f"{n_slices} slices of {n_pat} patients; {len(keys)} maps (method @ layer). "
        f"Median lesion volume {median_ml:.2f} ml. Compute time {sum(secs):.0f} s.",
        "",
        "## Faithfulness",
        "",
        "Faithfulness correlation (per slice; higher is better), deletion AUC (lower is better) and insertion "
        "AUC (higher is better) as mean +- sd over slices; n = slices with a defined correlation / with curves.",
        "",
        "| map | n | faithfulness | patient-level faithfulness | n curves | deletion AUC | insertion AUC |",
        "|---|---|---|---|---|---|---|",
    ]
    for key in keys:
        rs = by_key[key]
        f = [r["faithfulness"] for r in rs]
        d = [r["deletion_auc"] for r in rs]
        lines.append(
            f"| {_label(*key)} | {int(np.isfinite(f).sum())} | {_msd(f)} | "
            f"{_msd([v['faithfulness'] for v in pp[key].values()])} | {int(np.isfinite(d).sum())} | "
            f"{_msd(d)} | {_msd([r['insertion_auc'] for r in rs])} |"
        )
    lines += ["", "## Region importance", "",
              "Relative attribution (region mean / slice mean of |attribution|; 1 = the slice average) as mean +- sd "
              "over slices.", "",
              "| map | " + " | ".join(REGIONS) + " |", "|---|" + "---|" * len(REGIONS)]
    for key in keys:
        rs = by_key[key]
        lines.append(f"| {_label(*key)} | " + " | ".join(_msd([r[f'rel_{g}'] for r in rs], 2) for g in REGIONS) + " |")
    for kind, title in (("paired", "Paired tests between regions (patient means)"),
                        ("groups", "Group tests (patient means)")):
        sel = [t for t in tests if t["kind"] == kind]
        if not sel:
            continue
        lines += ["", f"## {title}", "",
                  "Shapiro-Wilk on the differences (paired) or on each group decides between the t-test and the "
                  "rank test; p_holm is Holm-adjusted over the table.", "",
                  "| map | measure | a | b | n | test | statistic | p | p_holm | effect |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for t in sel:
            eff = "n/a" if not np.isfinite(t["effect"]) else f"{t['effect_name']} {t['effect']:.2f}"
            stat = "n/a" if not np.isfinite(t["statistic"]) else f"{t['statistic']:.3g}"
            lines.append(f"| {_label(t['method'], t['layer'])} | {t['measure']} | {t['a']} | {t['b']} | {t['n']} | "
                         f"{t['test']} | {stat} | {_fmt_p(t['p'])} | {_fmt_p(t['p_holm'])} | {eff} |")
    lines += ["", "## Figures", ""]
    for f in sorted((out / "figures").glob("*.png")):
        lines.append(f"![{f.stem}](figures/{f.name})")
    return "\n".join(lines) + "\n"


def _figures(out: Path, keys, by_key, pp) -> dict[str, Path]:
    from matplotlib.figure import Figure

    from hemwsl.reports.curves import save_figure

    paths: dict[str, Path] = {}
    labels = [_label(*k) for k in keys]

    def finite(v):
        a = np.asarray(v, dtype=np.float64)
        return a[np.isfinite(a)]

    data = [finite([r["faithfulness"] for r in by_key[k]]) for k in keys]
    ok = [i for i, d in enumerate(data) if d.size]
    if ok:
        fig = Figure(figsize=(7, 0.3 * len(ok) + 1.2), dpi=80)
        ax = fig.add_subplot(111)
        ax.violinplot([data[i] for i in ok], vert=False, showmedians=True)
        ax.set_yticks(range(1, len(ok) + 1), [labels[i] for i in ok], fontsize=7)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("faithfulness correlation (per slice)")
        fig.tight_layout()
        paths["fig_faithfulness"] = save_figure(fig, out / "figures" / "faithfulness.png")

    ncol = min(6, len(keys))
    nrow = math.ceil(len(keys) / ncol)
    fig = Figure(figsize=(2.1 * ncol, 1.9 * nrow + 0.4), dpi=70)
    for i, k in enumerate(keys):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        d = [finite([r[f"rel_{g}"] for r in by_key[k]]) for g in REGIONS]
        pos = [j + 1 for j, v in enumerate(d) if v.size]
        if pos:
            ax.violinplot([d[j - 1] for j in pos], positions=pos, showmedians=True)
        ax.axhline(1, color="grey", lw=0.6)
        ax.set_xticks(range(1, len(REGIONS) + 1), ["hem", "ring", "brain", "bg"], fontsize=6)
        ax.tick_params(axis="y", labelsize=6)
        ax.set_title(labels[i], fontsize=7)
    fig.suptitle("relative attribution per region (1 = slice average)", fontsize=9)
    fig.tight_layout()
    paths["fig_regions"] = save_figure(fig, out / "figures" / "regions.png")
    return paths
