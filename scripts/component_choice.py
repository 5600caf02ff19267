"""Learn which hyperdense-prior components are blood from slice labels, with the heatmap as evidence.

The prior-ceiling analysis says choosing the right whole components of the validated prior (50-90 HU,
brain eroded by 4 px, components >= 50 px) is worth up to +0.13 per-slice Dice. This script measures how
much of that a component classifier gets without pixel labels, under the benchmark's protocol:

* every patient's prior components (per slice) get the component filter's features
  (:data:`hemwsl.pseudo.components.COMPONENT_FEATURES`) plus the evidence of the heatmap network that did
  not train on that patient: the mean and max of each level's per-slice min-max normalised heatmap inside
  the component, and the out-of-fold probability of the component's slice;
* per fold, a gradient-boosted classifier is trained on the components of the fold's selection patients
  (every patient outside its test part) labelled with their **slice** label only (a component on a slice
  without blood is not blood; one on a slice with blood may be), with class-balanced weights;
* the score threshold (0 keeps every component) is chosen on the selection patients, on scores their own
  components did not train (4 inner patient folds), by mean per-slice Dice on their positive slices (as the
  benchmark chooses thresholds) or by mean volume Dice ("volume-chosen"); the classifier of all selection
  patients is then applied with it, unchanged, to the fold's test patients;
* rows: the prior alone, the classifier without heatmap features (the component filter), with them, and
  an oracle (components with any true-mask pixel); per-slice Dice on ground-truth-positive slices with a
  patient bootstrap CI and paired Wilcoxon tests against the prior; volume Dice over whole volumes (every
  slice, no slice gating), mean over the patients with blood.

    python scripts/component_choice.py --dataset-dir ../shared/data/ct-ich --cam-dir CAMS --method lse_heatmap \
        --cv-dir CV --checkpoint last --out outputs/component_choice
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def _minmax_slices(a: np.ndarray) -> np.ndarray:
    lo = a.min(axis=(0, 1), keepdims=True)
    hi = a.max(axis=(0, 1), keepdims=True)
    return np.where(hi > lo, (a - lo) / np.maximum(hi - lo, 1e-12), 0.0).astype(np.float32)


def patient_table(entry, cam_dir: Path, method: str, layers: list[str], probs: np.ndarray, cache: Path) -> dict:
    """Components of the validated prior of one patient: features, slice, label ids, true overlap."""
    from scipy import ndimage

    from hemwsl.benchmark.runner import load_heatmap
    from hemwsl.data.io import load_pair
    from hemwsl.pseudo.components import component_features
    from hemwsl.thresholds.postprocess import remove_small_components
    from hemwsl.transforms.array import SkullStrip

    f = cache / f"{entry['patient']}.npz"
    if f.is_file():
        with np.load(f) as z:
            return {k: z[k] for k in z.files}
    image, mask = load_pair(entry["image"], entry["label"])
    hu = np.asarray(image.array, dtype=np.float32)
    gt = np.asarray(mask.array) > 0
    brain = np.asarray(SkullStrip()(hu[None]))[0] > 0
    eroded = np.zeros_like(brain)
    for z in range(hu.shape[2]):
        if brain[:, :, z].any():
            eroded[:, :, z] = ndimage.binary_erosion(brain[:, :, z], iterations=4)
    region = (hu >= 50) & (hu <= 90) & eroded
    for z in range(hu.shape[2]):
        region[:, :, z] = remove_small_components(region[:, :, z], 50, connectivity=2)
    feats, slices, labels = component_features(hu, brain, region)
    maps = []
    for layer in layers:
        h = load_heatmap(cam_dir / method / layer / f"{entry['patient']}.nii.gz", hu.shape, list(range(hu.shape[2])))
        maps.append(_minmax_slices(np.moveaxis(h, 0, -1)))
    extra, overlap, sizes = [], [], []
    order = {}
    for j, z in enumerate(slices):
        order.setdefault(int(z), []).append(j)
    comp_ids = np.zeros(len(slices), dtype=np.int64)
    for z, rows in order.items():
        for i, j in enumerate(rows, start=1):
            comp_ids[j] = i
    for j, z in enumerate(slices):
        m = labels[:, :, z] == comp_ids[j]
        row = []
        for h in maps:
            v = h[:, :, z][m]
            row += [float(v.mean()), float(v.max())]
        row.append(float(probs[z]) if z < len(probs) else 0.0)
        extra.append(row)
        overlap.append(int((gt[:, :, z] & m).sum()))
        sizes.append(int(m.sum()))
    out = {"features": feats, "heat": np.asarray(extra, dtype=np.float32).reshape(len(slices), -1),
           "slices": slices, "comp_ids": comp_ids, "overlap": np.asarray(overlap), "sizes": np.asarray(sizes),
           "labels": labels.astype(np.int32), "gt": gt, "spacing": np.asarray(image.spacing)}
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(f, **out)
    return out


def slice_dice(t: dict, keep: np.ndarray) -> tuple[list[float], float]:
    """Per-slice Dice on the GT-positive slices and the volume Dice of the kept components, from each
    component's size and true-mask overlap (components of one slice are disjoint, so this is exact)."""
    gt_area = t["gt_area"]
    slices = t["slices"]
    kept_size = np.bincount(slices[keep], weights=t["sizes"][keep], minlength=len(gt_area))
    kept_tp = np.bincount(slices[keep], weights=t["overlap"][keep], minlength=len(gt_area))
    pos = np.flatnonzero(gt_area > 0)
    dice = [2 * kept_tp[z] / (kept_size[z] + gt_area[z]) for z in pos]
    denom = kept_size.sum() + gt_area.sum()
    return dice, float(2 * kept_tp.sum() / denom) if denom else 1.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--cam-dir", required=True)
    ap.add_argument("--method", default="lse_heatmap")
    ap.add_argument("--layers", nargs="+", default=["levels.0.conv", "levels.1.conv", "levels.2.conv", "levels.3.conv"])
    ap.add_argument("--cv-dir", required=True)
    ap.add_argument("--checkpoint", default="last")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--mil-rounds", type=int, default=0,
                    help="also the multiple-instance rows: after each fit, the components of positive slices that "
                         "score below --mil-keep x the slice's best score are relabelled 0 and the classifier refit "
                         "(mi-SVM-style, Andrews et al. 2002), this many rounds")
    ap.add_argument("--mil-keep", type=float, default=0.5)
    args = ap.parse_args(argv)

    from scipy.stats import wilcoxon
    from sklearn.ensemble import HistGradientBoostingClassifier

    from hemwsl.benchmark.runner import cv_folds
    from hemwsl.engines.runs import fold_predictions
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.io import atomic_write_text
    from hemwsl.quantify import scan_probabilities

    datalist = build_datalist("ct-ich", args.dataset_dir)
    test_fold, selection = cv_folds(datalist, n_folds=args.folds)
    probs = scan_probabilities([fold_predictions(args.cv_dir, k, args.checkpoint) for k in range(args.folds)])
    out = Path(args.out)
    tables = {}
    for e in datalist:
        tables[e["patient"]] = patient_table(e, Path(args.cam_dir), args.method, args.layers, probs[e["patient"]],
                                             out / "cache")
        t = tables[e["patient"]]
        t["gt_area"] = t["gt"].reshape(-1, t["gt"].shape[2]).sum(0)
        t["slices"] = t["slices"].astype(np.int64)
        print(f"{e['patient']}: {len(t['slices'])} components", flush=True)
    positive = [p for p, t in tables.items() if t["gt"].any()]

    def xy(pats, heat: bool):
        x, y = [], []
        for p in pats:
            t = tables[p]
            labels = t["gt"].any(axis=(0, 1)).astype(int)  # the slice labels (CT-ICH's are the masks' slices)
            f = np.concatenate([t["features"], t["heat"]], axis=1) if heat else t["features"]
            x.append(f)
            y.append(labels[t["slices"]])
        return np.concatenate(x), np.concatenate(y)

    grid = np.round(np.arange(0.0, 0.96, 0.05), 2)
    learned = [("filter", False, "slice"), ("filter+heatmap", True, "slice"),
               ("filter (volume-chosen)", False, "volume"), ("filter+heatmap (volume-chosen)", True, "volume"),
               ("filter+heatmap, relative to the slice's best", True, "relative")]
    if args.mil_rounds:
        learned += [(f"MIL filter+heatmap ({args.mil_rounds} rounds)", True, "slice"),
                    (f"MIL filter+heatmap ({args.mil_rounds} rounds), relative to the slice's best", True, "relative")]
    ranking: dict[str, tuple[list, list]] = {}  # per slice-criterion row, within GT-positive test slices: (is blood, score)
    rows = {"prior": {}, **{n: {} for n, _, _ in learned}, "oracle": {}}
    vols = {k: {} for k in rows}
    chosen = {n: {} for n, _, _ in learned}
    for k in range(args.folds):
        test = sorted(p for p, f in test_fold.items() if f == k)
        sel = sorted(selection[k])
        for p in test:
            t = tables[p]
            rows["prior"][p], vols["prior"][p] = slice_dice(t, np.ones(len(t["slices"]), bool))
            rows["oracle"][p], vols["oracle"][p] = slice_dice(t, t["overlap"] > 0)
        for name, heat, criterion in learned:
            mil = name.startswith("MIL")

            def fit_once(x, y):
                w = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
                return HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                                      min_samples_leaf=40, random_state=0).fit(x, y, sample_weight=w)

            def fit(pats):
                x, y = xy(pats, heat)
                clf = fit_once(x, y)
                if not mil:
                    return clf
                # which slice each row is on, to relabel within positive slices
                slice_key = np.concatenate([np.full(len(tables[p]["slices"]), i) * 10000 + tables[p]["slices"]
                                            for i, p in enumerate(pats)])
                bag_pos = y == 1
                for _ in range(args.mil_rounds):
                    sc = clf.predict_proba(x)[:, 1]
                    best = {}
                    for key, v in zip(slice_key[bag_pos], sc[bag_pos]):
                        best[key] = max(best.get(key, 0.0), v)
                    top = np.array([best.get(key, 0.0) for key in slice_key])
                    y = (bag_pos & (sc >= args.mil_keep * top)).astype(int)
                    clf = fit_once(x, y)
                return clf

            def scores(clf, p):
                t = tables[p]
                f = np.concatenate([t["features"], t["heat"]], axis=1) if heat else t["features"]
                return clf.predict_proba(f)[:, 1] if len(f) else np.zeros(0)

            # the threshold is chosen on scores the selection patients' own components did not train
            # (4 inner patient folds), then the classifier of all selection patients is applied to the test
            inner = np.array_split(np.random.default_rng(k).permutation(sel), 4)
            sel_scores = {}
            for part in inner:
                clf = fit([p for p in sel if p not in set(part)])
                sel_scores.update({p: scores(clf, p) for p in part if p in positive})

            def rule(t, sc, g):
                if criterion != "relative":
                    return sc >= g
                best_on = np.zeros(len(t["gt_area"]))
                np.maximum.at(best_on, t["slices"], sc)
                return sc >= g * best_on[t["slices"]]

            def objective(g):
                if criterion == "relative":
                    return np.mean([d for p in sel_scores for d in slice_dice(tables[p], rule(tables[p], sel_scores[p], g))[0]])
                if criterion == "slice":
                    return np.mean([d for p in sel_scores for d in slice_dice(tables[p], sel_scores[p] >= g)[0]])
                return np.mean([slice_dice(tables[p], sel_scores[p] >= g)[1] for p in sel_scores])

            best = max(grid, key=objective)
            chosen[name][k] = float(best)
            clf = fit(sel)
            for p in test:
                sc = scores(clf, p)
                rows[name][p], vols[name][p] = slice_dice(tables[p], rule(tables[p], sc, best))
                if criterion == "slice":
                    on = tables[p]["gt_area"][tables[p]["slices"]] > 0
                    ranking.setdefault(name, ([], []))[0].append(tables[p]["overlap"][on] > 0)
                    ranking[name][1].append(sc[on])
        print(f"fold {k}: thresholds " + " / ".join(str(chosen[n][k]) for n, _, _ in learned), flush=True)

    rng = np.random.default_rng(0)
    pats = sorted(p for p in rows["prior"] if rows["prior"][p])

    def per_patient(name):
        return np.array([np.mean(rows[name][p]) for p in pats])

    def mean_slices(name, idx):
        vals = [d for i in idx for d in rows[name][pats[i]]]
        return float(np.mean(vals))

    lines = ["| row | Dice per slice [95% CI] | volume Dice (all slices) | Wilcoxon p vs prior |", "|---|---|---|---|"]
    summary = {}
    for name in rows:
        point = mean_slices(name, range(len(pats)))
        boots = [mean_slices(name, rng.integers(0, len(pats), len(pats))) for _ in range(args.n_boot)]
        lo, hi = np.percentile(boots, [2.5, 97.5])
        vol = float(np.mean([vols[name][p] for p in positive]))
        a, b = per_patient(name), per_patient("prior")
        pv = float(wilcoxon(a, b).pvalue) if name != "prior" and np.any(a != b) else float("nan")
        summary[name] = {"dice_per_slice": point, "ci": [float(lo), float(hi)], "volume_dice": vol, "wilcoxon_p": pv}
        lines.append(f"| {name} | {point:.3f} [{lo:.3f}, {hi:.3f}] | {vol:.3f} | "
                     f"{'' if name == 'prior' else f'{pv:.4f}'} |")
    summary["chosen_thresholds"] = chosen
    from sklearn.metrics import roc_auc_score

    for name, (yb, sb) in ranking.items():
        auc = float(roc_auc_score(np.concatenate(yb), np.concatenate(sb)))
        summary.setdefault("component_auroc_on_positive_slices", {})[name] = auc
        lines.append(f"\nComponents of ground-truth-positive test slices, blood (any true pixel) vs not: AUROC "
                     f"{auc:.3f} ({name})")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1) + "\n")
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    from hemwsl.reports.text import run_script

    sys.exit(run_script(main))
