"""The benchmark report: aggregate the per-case rows into tables with confidence intervals and paired tests.

Written into the report folder by :func:`write_report`:

* ``per_case.csv``: every scored slice and volume, every (method, layer, threshold), every metric;
* ``thresholds.csv``: the threshold ``search`` chose per fold, (method, layer), with its selection Dice;
* ``choices.csv``: the (layer, threshold) chosen per fold and method on the selection patients;
* ``summary.csv``: one row per (method, layer, threshold) with every aggregate and its 95% CI;
* ``summary.md``: the tables (laid out as Rafati et al. 2025's Table II: methods as rows, metrics x layers as
  columns), bootstrap 95% CIs over patients, Wilcoxon signed-rank tests of each method against the best,
  and the figures;
* ``figures/``: CT + mask + heatmap overlays (best, median, worst test slice per method), IoU histograms
  per method (Kang et al. 2021, Figure 3), the classifier's PR and ROC curves when predictions are given.

Aggregates: per-slice means (NaN-aware) of Dice, IoU, box Dice/IoU, hit rate and pointing game; global
Dice/IoU pooled over all pixels of all scored slices (``2 sum TP / (2 sum TP + sum FP + sum FN)``); the share
of slices with IoU <= 0.01 (Kang et al. 2021); per-volume Dice, RVD and volumes over ground-truth-positive patients.
CIs are percentile bootstraps that resample patients (:func:`hemwsl.metrics.bootstrap_ci`).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hemwsl.benchmark.tables import rows_to_csv
from hemwsl.data.io import atomic_write_text

__all__ = ["write_report", "read_rows", "aggregate", "holm", "paired_test", "choose_per_method"]

SLICE_AGG = ("dice", "iou", "box_dice", "box_iou", "hit", "pointing")


# --------------------------------------------------------------------------------------------- rows
def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Read ``per_case.csv`` (numbers parsed, ``nan`` kept); an unreadable file, or a value that is not a number, is
    one :class:`~hemwsl.errors.HemwslInputError` naming the file (and the line and column)."""
    from hemwsl.errors import HemwslInputError

    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise HemwslInputError(f"{path}: cannot read as a benchmark rows CSV ({type(err).__name__}: {err})") from None
    ints, text = {"fold", "tp", "fp", "fn"}, {"level", "part", "patient", "method", "layer", "threshold"}
    for i, r in enumerate(rows):
        for k, v in r.items():
            if k in text:
                continue
            try:
                if v == "":
                    r[k] = None if k in ("slice", "threshold_value") else math.nan
                elif k in ints or k == "slice":
                    r[k] = int(float(v))
                else:
                    r[k] = float(v)
            except (TypeError, ValueError, OverflowError):  # a short row (None), a word, inf as an integer
                raise HemwslInputError(f"{path}: line {i + 2}: column {k!r} holds {v!r}, not a number") from None
    return rows


def _concat(folder: Path, patients: Sequence[str]) -> str:
    parts = []
    for i, p in enumerate(patients):
        text = (folder / "per_case" / f"{p}.csv").read_text()
        parts.append(text if i == 0 else text.split("\n", 1)[1])
    return "".join(parts)


# --------------------------------------------------------------------------------------------- stats
def _nanmean(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else math.nan


def _global(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, metric: str) -> float:
    tp, fp, fn = float(np.sum(tp)), float(np.sum(fp)), float(np.sum(fn))
    den = 2 * tp + fp + fn if metric == "dice" else tp + fp + fn
    if den == 0:
        return 1.0  # both empty (EMPTY_POLICY)
    return (2 * tp if metric == "dice" else tp) / den


def aggregate(rows: Sequence[Mapping[str, Any]], n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Aggregates of the slice and volume rows of ONE (method, layer, threshold)."""
    from hemwsl.metrics import bootstrap_ci

    sl = [r for r in rows if r["level"] == "slice"]
    vol = [r for r in rows if r["level"] == "volume" and r["tp"] + r["fn"] > 0]  # positive patients
    out: dict[str, Any] = {"slices": len(sl), "patients": len({r["patient"] for r in sl})}
    if sl:
        groups = np.array([r["patient"] for r in sl])
        for m in SLICE_AGG:
            out[m] = _nanmean(np.array([r[m] for r in sl]))
        tp, fp, fn = (np.array([r[k] for r in sl], dtype=np.float64) for k in ("tp", "fp", "fn"))
        out["global_dice"] = _global(tp, fp, fn, "dice")
        out["global_iou"] = _global(tp, fp, fn, "iou")
        iou = np.array([r["iou"] for r in sl])
        out["low_iou_rate"] = float(np.mean(iou <= 0.01))
        dice = np.array([r["dice"] for r in sl])
        if n_boot > 0 and len(set(groups)) > 1:
            out["dice_ci"] = bootstrap_ci(dice, groups=groups, n_boot=n_boot, seed=seed)
            out["global_dice_ci"] = bootstrap_ci(lambda a, b, c: _global(a, b, c, "dice"), tp, fp, fn,
                                                 groups=groups, n_boot=n_boot, seed=seed)
        else:
            out["dice_ci"] = out["global_dice_ci"] = (math.nan, math.nan)
    if vol:
        for m in ("volume_dice", "rvd", "hd95", "surface_dice", "ml_pred", "ml_gt"):
            out[m] = _nanmean(np.array([r[m] for r in vol]))
        out["volume_patients"] = len(vol)
    return out


def per_patient(rows: Sequence[Mapping[str, Any]], metric: str = "dice") -> dict[str, float]:
    """Mean per-slice ``metric`` of each patient (the unit of the paired tests and bootstraps)."""
    acc: dict[str, list[float]] = {}
    for r in rows:
        if r["level"] == "slice" and not math.isnan(r[metric]):
            acc.setdefault(r["patient"], []).append(r[metric])
    return {p: float(np.mean(v)) for p, v in acc.items()}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (NaN kept, not counted)."""
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, np.nan)
    order = ok[np.argsort(p[ok], kind="mergesort")]
    m, running = len(order), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


def paired_test(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, float]:
    """Wilcoxon signed-rank test of per-patient values ``a`` vs ``b`` on their common patients.

    Returns:
        ``{"n", "mean_diff", "median_diff", "p"}`` (``p`` NaN when fewer than two non-zero differences).
    """
    from scipy import stats

    common = sorted(set(a) & set(b))
    d = np.array([a[p] - b[p] for p in common], dtype=np.float64)
    res = {"n": len(common), "mean_diff": float(d.mean()) if d.size else math.nan,
           "median_diff": float(np.median(d)) if d.size else math.nan, "p": math.nan}
    if np.count_nonzero(d) >= 2:
        res["p"] = float(stats.wilcoxon(d, zero_method="wilcox").pvalue)
    return res


def choose_per_method(
    rows: Sequence[Mapping[str, Any]], choice_rows: Sequence[Mapping[str, Any]], selection: Mapping[int, set[str]],
    select_metric: str = "dice",
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Per fold and method, the (layer, threshold) with the best mean per-slice Dice on the fold's selection
    patients (``search`` counts with the Dice of its chosen value there); its rows on the fold's test
    patients make the method's validated result.

    Returns:
        ``({method: test rows of its chosen pairs}, choice table)``.
    """
    slice_rows = [r for r in rows if r["level"] == "slice"]
    by_key: dict[tuple[str, str, str], dict[str, list[Any]]] = {}
    for r in slice_rows:
        value = (r["tp"], r["fp"], r["fn"]) if select_metric == "global_dice" else r["dice"]
        by_key.setdefault((r["method"], r["layer"], r["threshold"]), {}).setdefault(r["patient"], []).append(value)
    searched = {(c["fold"], c["method"], c["layer"], c["threshold"]): c["selection_dice"] for c in choice_rows}
    folds = sorted({r["fold"] for r in rows if r["part"] == "test"})
    chosen: dict[str, list[dict[str, Any]]] = {}
    table = []
    methods = sorted({k[0] for k in by_key})
    for k in folds:
        sel = selection.get(k, set())
        for method in methods:
            best, best_score = None, -math.inf
            for (m, layer, thr), patients in sorted(by_key.items()):
                if m != method:
                    continue
                if (k, m, layer, thr) in searched:
                    score = searched[(k, m, layer, thr)]
                else:
                    vals = [v for p in sorted(sel) for v in patients.get(p, [])]  # one order in every process
                    if not vals:
                        score = math.nan
                    elif select_metric == "global_dice":
                        tp, fp, fn = np.asarray(vals, dtype=np.float64).T
                        score = _global(tp, fp, fn, "dice")
                    else:
                        score = _nanmean(np.array(vals))
                if not math.isnan(score) and score > best_score:
                    best, best_score = (layer, thr), score
            if best is None:
                continue
            table.append({"fold": k, "method": method, "layer": best[0], "threshold": best[1],
                          "selection_dice": best_score})
            chosen.setdefault(method, []).extend(
                r for r in rows if r["part"] == "test" and r["fold"] == k and r["method"] == method
                and r["layer"] == best[0] and r["threshold"] == best[1])
    return chosen, table


# --------------------------------------------------------------------------------------------- markdown
def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _ci(agg: Mapping[str, Any], key: str) -> str:
    lo, hi = agg.get(f"{key}_ci", (math.nan, math.nan))
    return f"{_f(agg.get(key))} [{_f(lo)}, {_f(hi)}]"


def _name(method: str) -> str:
    return "prior only (no CAM)" if method == "-" else method


def _table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def _post_text(post: Sequence[Any]) -> str:
    if not post:
        return "No post-processing."
    if len(post) == 1:
        g = post[0]
        grow = f", masks grown by {g.grow} px into 40-100 HU" if g.grow else ""
        share = (f", components under {g.min_share:g} of the slice's largest heat mass dropped" if g.min_share
                 else "")
        return (f"Post-processing (fixed): brain mask eroded by {g.erosion} px, prior range {g.hu_range[0]:g}-"
                f"{g.hu_range[1]:g} HU, components under {g.min_size} px dropped{share}{grow}.")
    er = sorted({g.erosion for g in post})
    hu = sorted({g.hu_range for g in post})
    ms = sorted({g.min_size for g in post})
    gr = sorted({g.grow for g in post})
    sh = sorted({g.min_share for g in post})
    grow = f" x growth into 40-100 HU {gr} px" if gr != [0] else ""
    share = (f" x share of the slice's largest component's heat mass [{', '.join(f'{v:g}' for v in sh)}]"
             if sh != [0.0] else "")
    names = "`[e<px>,hu<low>-<high>,min<px>]`" + (", `,s<share>` for the share" if sh != [0.0] else "") \
        + (", `,g<px>` for growth" if gr != [0] else "")
    return ("Post-processing **chosen per fold on the selection patients** with the (layer, threshold), from "
            f"brain erosion {er} px x prior range [{', '.join(f'{a:g}-{b:g}' for a, b in hu)}] HU x minimum component "
            f"{ms} px{share}{grow} (spec names carry it: {names}).")


def _calibration_text(out: Path) -> str:
    import json

    cfg = Path(out) / "config.json"
    ref = json.loads(cfg.read_text()).get("hu_reference") if cfg.is_file() else None
    if ref is None:
        return ""
    from hemwsl.thresholds.intensity import check_hu_reference

    ref = check_hu_reference(ref)
    if isinstance(ref, tuple):
        return (f" HU calibrated per scan: each scan whose brain (median of the skull strip's 0-80 HU voxels) reads "
                f"outside {ref[0]:g}-{ref[1]:g} HU shifted to the nearer end before the prior's range and the growth "
                f"apply; the others as stored.")
    return (f" HU calibrated per scan: each scan shifted so that its brain (median of the skull strip's 0-80 HU "
            f"voxels) reads {ref:g} HU before the prior's range and the growth apply.")


def _post_tables(aggs: Mapping[tuple[str, str, str], Mapping[str, Any]], specs: Sequence[Any],
                 table: Sequence[Mapping[str, Any]]) -> list[str]:
    """The post-processing grid: how often each combination was chosen, and the heatmap-free prior (test
    rows, not validated) at each combination, which shows how much the post-processing alone moves."""
    md = ["## Post-processing chosen per fold", ""]
    counts: dict[str, int] = {}
    for c in table:
        counts[c["threshold"]] = counts.get(c["threshold"], 0) + 1
    md += [_table(["threshold (with post-processing)", "times chosen (fold x method)"],
                  [[f"`{t}`", str(n)] for t, n in sorted(counts.items(), key=lambda x: (-x[1], x[0]))]), ""]
    prior = [sp for sp in specs if sp.base == "prior"]
    if prior:
        md += ["Prior alone (no heatmap) at every combination, all test patients (exploratory, not validated):", ""]
        body = []
        for sp in prior:
            a = aggs.get(("-", "-", sp.text))
            if a:
                body.append([str(sp.erosion), f"{sp.hu_range[0]:g}-{sp.hu_range[1]:g}", str(sp.min_size),
                             str(sp.grow), f"{sp.min_share:g}", _f(a.get("dice")), _f(a.get("global_dice")),
                             _f(a.get("volume_dice"))])
        md += [_table(["erosion px", "HU range", "min component px", "growth px", "min share", "Dice slice",
                       "Dice global", "volume Dice"], body), ""]
    return md


def write_report(
    out: Path,
    patients: Sequence[str],
    choice_rows: Sequence[Mapping[str, Any]],
    selection: Mapping[int, set[str]],
    specs: Sequence[Any],
    *,
    slices: str,
    n_boot: int = 1000,
    figures: bool = True,
    datalist: Mapping[str, Mapping] | None = None,
    cam_dir: Path | None = None,
    predictions: Mapping[str, Any] | None = None,
    prob_threshold: float = 0.5,
    post: Sequence[Any] = (),
    select_metric: str = "dice",
) -> Path:
    """Write ``per_case.csv``, ``thresholds.csv``, ``choices.csv``, ``summary.csv``, ``summary.md`` and figures.

    ``post``: the post-processing grid (:class:`~hemwsl.benchmark.specs.PostProcessing`) the specs were
    expanded with; one combination is reported as fixed, several as chosen on the selection patients.
    """
    out = Path(out)
    atomic_write_text(out / "per_case.csv", _concat(out, patients))
    rows = read_rows(out / "per_case.csv")
    test_rows = [r for r in rows if r["part"] == "test"]
    atomic_write_text(out / "thresholds.csv", rows_to_csv(choice_rows, ["fold", "method", "layer", "threshold", "value",
                                                                    "selection_dice", "selection_patients",
                                                                    "selection_slices", "selection_metric"]))
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in test_rows:
        groups.setdefault((r["method"], r["layer"], r["threshold"]), []).append(r)
    aggs = {k: aggregate(v, n_boot=n_boot) for k, v in sorted(groups.items())}
    fields = ["method", "layer", "threshold", "slices", "patients", *SLICE_AGG, "global_dice", "global_iou",
              "low_iou_rate", "dice_ci_low", "dice_ci_high", "global_dice_ci_low", "global_dice_ci_high",
              "volume_dice", "rvd", "hd95", "surface_dice", "ml_pred", "ml_gt", "volume_patients"]
    flat = []
    for (m, layer, thr), a in aggs.items():
        row = {"method": m, "layer": layer, "threshold": thr, **{k: v for k, v in a.items() if not k.endswith("_ci")}}
        row.update(dice_ci_low=a.get("dice_ci", (math.nan,) * 2)[0], dice_ci_high=a.get("dice_ci", (math.nan,) * 2)[1],
                   global_dice_ci_low=a.get("global_dice_ci", (math.nan,) * 2)[0],
                   global_dice_ci_high=a.get("global_dice_ci", (math.nan,) * 2)[1])
        flat.append(row)
    atomic_write_text(out / "summary.csv", rows_to_csv(flat, fields))

    chosen, table = choose_per_method(rows, choice_rows, selection, select_metric)
    atomic_write_text(out / "choices.csv", rows_to_csv(table, ["fold", "method", "layer", "threshold", "selection_dice"]))
    validated = {m: aggregate(r, n_boot=n_boot) for m, r in chosen.items()}
    pp = {m: per_patient(r) for m, r in chosen.items()}
    ranked = sorted(validated, key=lambda m: -np.nan_to_num(validated[m].get("dice", math.nan), nan=-1.0))
    best = ranked[0] if ranked else None
    tests = {m: paired_test(pp[m], pp[best]) for m in ranked if m != best}
    adjusted = dict(zip(tests, holm([t["p"] for t in tests.values()])))

    n_test = len({r["patient"] for r in test_rows})
    n_slices = len({(r["patient"], r["slice"]) for r in test_rows if r["level"] == "slice"})
    folds = sorted({r["fold"] for r in test_rows})
    what = {"gt": "ground-truth positive slices (as Rafati et al. 2025)",
            "predicted": f"slices the classifier calls positive (probability >= {prob_threshold}, as Chen & Kuo 2026's "
                         "clinical setting; missed lesion slices are not scored here but lower the volume rows)",
            "all": "all slices"}[slices]
    md = [
        "# CAM localisation benchmark",
        "",
        f"Scored: **{what}**; {n_slices} slices of {n_test} test patients, {len(folds)} fold(s). Every patient is "
        "scored with heatmaps of the classifier that did not train on it; thresholds and each method's (layer, "
        "threshold) are chosen on the fold's selection patients only and applied unchanged to its test patients, "
        f"by {'mean per-slice' if select_metric == 'dice' else 'pooled (global)'} Dice. "
        f"{_post_text(post)}{_calibration_text(out)} Brackets: bootstrap 95% CI over patients ({n_boot} replicates). Volume rows: the masks of the scored "
        "slices against the whole ground-truth volume, over ground-truth-positive patients.",
        "",
        "## Each method at its validated (layer, threshold)",
        "",
    ]
    body = []
    for m in ranked:
        a = validated[m]
        t = tests.get(m)
        p = "best" if m == best else f"{_f(t['p'], 4)} ({_f(adjusted[m], 4)})"
        body.append([_name(m), _ci(a, "dice"), _ci(a, "global_dice"), _f(a.get("iou")), _f(a.get("box_dice")),
                     _f(a.get("hit")), _f(a.get("pointing")), _f(a.get("low_iou_rate")), _f(a.get("volume_dice")),
                     "" if m == best else _f(t["mean_diff"]), p])
    md.append(_table(["method", "Dice per slice [95% CI]", "Dice global [95% CI]", "IoU per slice", "box Dice",
                      "hit rate", "pointing game", "IoU <= 0.01", "volume Dice", "mean diff vs best",
                      "Wilcoxon p (Holm)"], body))
    md += ["", "Chosen (layer, threshold) per fold: `choices.csv`; values chosen by `search`: `thresholds.csv`.", ""]
    layers_by_method: dict[str, list[str]] = {}
    for (m, layer, _t) in aggs:
        if m != "-" and layer not in layers_by_method.setdefault(m, []):
            layers_by_method[m].append(layer)
    if len(post) > 1:
        md += _post_tables(aggs, specs, table)
    chosen_specs = {c["threshold"] for c in table}
    for spec in specs:
        if len(post) > 1 and spec.text not in chosen_specs:
            continue  # with a post-processing grid: Table-II tables only for the combinations some fold chose
        keys = [k for k in aggs if k[2] == spec.text]
        if not keys:
            continue
        md += [f"## Threshold `{spec.text}`: Dice / IoU per slice and global, per layer", ""]
        if keys[0][0] == "-":
            a = aggs[keys[0]]
            md += [_table(["method", "Dice slice", "Dice global", "IoU slice", "IoU global", "volume Dice"],
                          [[_name("-"), _f(a.get("dice")), _f(a.get("global_dice")), _f(a.get("iou")),
                            _f(a.get("global_iou")), _f(a.get("volume_dice"))]]), ""]
            continue
        layers: list[str] = []
        for k in keys:
            if k[1] not in layers:
                layers.append(k[1])
        header = ["method"] + [f"{layer} {x}" for layer in layers for x in ("Dice s", "Dice g", "IoU s", "IoU g")]
        body = []
        for m in sorted({k[0] for k in keys}):
            row = [_name(m)]
            for layer in layers:
                a = aggs.get((m, layer, spec.text))
                row += ([_f(a.get("dice")), _f(a.get("global_dice")), _f(a.get("iou")), _f(a.get("global_iou"))]
                        if a else ["", "", "", ""])
            body.append(row)
        md += [_table(header, body), ""]
    if figures:
        from hemwsl.benchmark.figures import write_figures

        written = write_figures(out, chosen, datalist or {}, cam_dir, predictions, table, specs=specs)
        if written:
            md += ["## Figures", ""] + [f"![{p.stem}]({p.relative_to(out).as_posix()})" for p in written] + [""]
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")
    return out
