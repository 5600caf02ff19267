"""Chen & Kuo 2026's Algorithm 1 scored out of fold: subtype masks of a six-output LSE heatmap network.

A model package of an ``lse_*`` network with the any + five subtypes head (``hemwsl package`` of a
``hemwsl train-cv ... multilabel=true`` run) gives, for every patient, the slice probabilities of the five
subtypes and their score maps ``sigmoid(f_level)``; each member explains only the patients of its fold's test
part (recorded in the package), so every patient is seen by a network that did not train on it.

Per fold, on the *selection* patients (the other folds' test patients, each with its own out-of-fold outputs;
the benchmark's cross-fitting):

1. class thresholds: Youden's J per subtype on the slice labels (:meth:`hemwsl.thresholds.SubtypeRule.fit`);
2. the mask threshold: grid-searched (Chen & Kuo: 25..200 of 255) for the best mean per-slice Dice of the
   union of the subtype masks on the ground-truth-positive slices (CT-ICH has one merged mask per scan, so
   the union is what its masks can score; one threshold for the five subtypes: the merged masks cannot tell
   which subtype's threshold a pixel error belongs to).

Each pixel takes the present subtype with the largest normalised map (argmax). Two variants: the heatmaps
alone inside the brain (``algorithm1``, the paper), and the same labels kept only on the validated
hyperdense-blood prior (``algorithm1+prior``: 50-90 HU, brain eroded by 4 px, components >= 50 px).

Scored on the fold's test patients: per-slice Dice of the union on ground-truth-positive slices (0 where
empty), volume Dice per positive patient, per-subtype slice agreement (a subtype is *called* on a slice when
its label occupies a pixel there; sensitivity, specificity and PPV against the slice's subtype labels, over
all slices) and the share of predicted pixels whose subtype is one the slice is labelled with, and mL per
subtype (:func:`hemwsl.networks.lse.subtype_volumes_ml`).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hemwsl.errors import HemwslInputError

__all__ = ["DEFAULT_MASK_THRESHOLDS", "VARIANTS", "lse_subtype_outputs", "run_subtype_benchmark"]

DEFAULT_MASK_THRESHOLDS: tuple[float, ...] = tuple(round(v / 255.0, 4) for v in range(25, 201, 25))
VARIANTS: tuple[str, ...] = ("algorithm1", "algorithm1+prior")
_PRIOR = "prior[e4,hu50-90,min50]"


@torch.no_grad()
def lse_subtype_outputs(predictor: Any, hu: np.ndarray, level: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One member's outputs for an ``(X, Y, Z)`` HU volume: probabilities ``(Z, 6)`` (flip TTA averaged when the
    package trained with it), the score maps ``sigmoid(f_level)`` ``(Z, 6, h, w)`` at the network's resolution
    (float16), and the brain mask ``(X, Y, Z)``."""
    x, brain = predictor._inputs(hu)
    probs, maps = [], []
    for _, f, l0 in predictor.lse_batches(predictor.networks[0], x):
        probs.append(torch.sigmoid(l0.float()).cpu().numpy())
        maps.append(torch.sigmoid(f[level].float()).cpu().numpy().astype(np.float16))
    return np.concatenate(probs), np.concatenate(maps), brain


def _upsample(maps: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """``(Z, K, h, w)`` maps to ``(Z, K, X, Y)`` (bilinear, as the CAM engine brings maps to the CT grid)."""
    t = torch.from_numpy(np.asarray(maps, dtype=np.float32))
    return torch.nn.functional.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False).numpy()


def _dice(p: np.ndarray, g: np.ndarray) -> float:
    s = int(p.sum()) + int(g.sum())
    return 1.0 if s == 0 else 2.0 * float((p & g).sum()) / s


def _labels(rule: Any, probs: np.ndarray, norm: np.ndarray, brain: np.ndarray, t: float) -> np.ndarray:
    """``(Z, X, Y)`` subtype labels of a volume at mask threshold ``t`` from its normalised heatmaps."""
    rule = copy.copy(rule)
    rule.mask_threshold = np.atleast_1d(float(t))
    lab = np.zeros(brain.shape, dtype=np.int64)
    some = (probs >= rule.class_thresholds[None, :]).any(1)  # slices where no subtype is present stay 0
    if some.any():
        lab[some] = rule.label_normalised(probs[some], norm[some], brain[some])
    return lab


def run_subtype_benchmark(model: str | os.PathLike, dataset_dir: str | os.PathLike, out: str | os.PathLike, *,
                          level: int = 0, mask_thresholds: Sequence[float] = DEFAULT_MASK_THRESHOLDS,
                          normalisation: str = "max", layout: str = "ct-ich", device: str = "cpu",
                          batch_size: int = 32, log: Any = print) -> dict:
    """Algorithm 1 out of fold on ``dataset_dir`` (see the module docstring); writes ``subtypes.md``,
    ``subtypes.json``, ``per_slice.csv``, ``per_patient.csv`` and a resumable ``outputs/`` cache into ``out``.

    Raises:
        HemwslInputError: a model without the six outputs or without its members' test patients, a bad level or
            threshold grid, or an output folder made with other settings.
    """
    from hemwsl.benchmark.specs import parse_threshold_spec
    from hemwsl.constants import IMAGE, LABEL, PATIENT, SUBTYPE_LABELS, SUBTYPES
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.io import atomic_write, check_run_record, load_volume
    from hemwsl.metrics import bootstrap_ci, compute_auroc
    from hemwsl.networks.lse import LSEHeatmapNet, subtype_volumes_ml
    from hemwsl.predict import ModelPackage, Predictor
    from hemwsl.thresholds import SubtypeRule
    from hemwsl.transforms.array import SkullStrip

    if isinstance(level, bool) or level not in (0, 1, 2, 3):
        raise HemwslInputError(f"--level must be 0, 1, 2 or 3 (0: the finest), got {level!r}")
    grid = [float(t) for t in mask_thresholds]
    if not grid or any(not 0.0 < t < 1.0 for t in grid):
        raise HemwslInputError(f"--mask-thresholds must lie in (0, 1), got {list(mask_thresholds)}")
    pkg = ModelPackage.load(model)
    if int(pkg.settings.get("num_classes", 1)) != 6 or not str(pkg.settings.get("backbone", "")).startswith("lse_"):
        raise HemwslInputError(f"{pkg.root}: Algorithm 1 needs an lse_* network with 6 outputs (any + five subtypes); "
                               f"this one is {pkg.settings.get('backbone')!r} with {pkg.settings.get('num_classes')}")
    tests = {int(m["fold"]): [str(p) for p in (m.get("test_patients") or [])] for m in pkg.members}
    if not all(tests.values()):
        raise HemwslInputError(f"{pkg.root}: members without their test patients; pack the model with --dataset-dir")
    entries = {str(e[PATIENT]): e for e in build_datalist(layout, str(dataset_dir))}
    missing = sorted({p for ps in tests.values() for p in ps} - set(entries))
    if missing:
        raise HemwslInputError(f"{dataset_dir}: patients {missing[:5]} of the model's test parts are not in the dataset")
    run = pkg.meta.get("train_cv")
    if isinstance(run, str) and run and Path(run).is_dir():  # the train-cv run packed: its dataset, not another's
        from hemwsl.engines.runs import check_dataset_matches_run

        check_dataset_matches_run(run, list(entries.values()), dataset_dir, "--dataset-dir")
    if any(entries[p].get(SUBTYPE_LABELS) is None for ps in tests.values() for p in ps):
        raise HemwslInputError(f"{dataset_dir}: Algorithm 1 is scored against per-slice subtype labels; the datalist has none")
    outd = Path(out)
    outd.mkdir(parents=True, exist_ok=True)
    check_run_record(outd / "subtypes_run.json",
                     {"model": pkg.fingerprint(), "level": level, "mask_thresholds": grid,
                      "normalisation": normalisation, "dataset": str(Path(dataset_dir).resolve().name)},
                     "subtypes")

    # 1. each member's outputs on its own test patients (cached: a killed run resumes)
    cache = outd / "outputs"
    for k, patients in sorted(tests.items()):
        todo = [p for p in patients if not (cache / f"{p}.npz").is_file()]
        if not todo:
            continue
        pred = Predictor(pkg, members=[k], device=device, batch_size=batch_size)
        if not isinstance(pred.networks[0], LSEHeatmapNet):
            raise HemwslInputError(f"{pkg.root}: member {k} is not an LSE heatmap network")
        for p in todo:
            hu = load_volume(entries[p][IMAGE], kind="image").array
            probs, maps, _ = lse_subtype_outputs(pred, hu, level)
            atomic_write(cache / f"{p}.npz", lambda f, a=probs, b=maps: np.savez_compressed(f, probs=a, maps=b),
                         suffix=".npz")
            log(f"fold {k}: patient {p} explained ({len(probs)} slices)")
    outputs = {}
    for p in (p for ps in tests.values() for p in ps):
        with np.load(cache / f"{p}.npz") as z:
            outputs[p] = (z["probs"].astype(np.float64), z["maps"])

    # 2. class thresholds per fold, on the selection patients' out-of-fold probabilities
    fold_of = {p: k for k, ps in tests.items() for p in ps}
    rules = {}
    for k in tests:
        sel = [p for p in outputs if fold_of[p] != k]
        y = np.concatenate([np.asarray(entries[p][SUBTYPE_LABELS]) for p in sel])
        s = np.concatenate([outputs[p][0][:, 1:] for p in sel])
        rules[k] = SubtypeRule(normalisation=normalisation, names=SUBTYPES).fit(y, s)

    # 3. every patient under every fold's rule (selection rows choose the threshold, test rows are reported)
    from hemwsl.benchmark.runner import _erode

    prior_spec = parse_threshold_spec(_PRIOR)
    prior = prior_spec.strategy(None)
    slice_rows, patient_rows, presence = [], [], []
    for n, p in enumerate(sorted(outputs)):
        e = entries[p]
        vol = load_volume(e[IMAGE], kind="image")
        hu, spacing = vol.array, vol.spacing
        truth = load_volume(e[LABEL], kind="mask").array > 0
        probs, maps = outputs[p]
        brain = np.asarray(SkullStrip()(hu[None].astype(np.float32)))[0] > 0
        hu_s, brain_s, truth_s = (np.moveaxis(a, -1, 0) for a in (hu, brain, truth))
        prior_s = np.asarray(prior(None, image_hu=hu_s, brain=_erode(brain_s, prior_spec.erosion)), dtype=bool)
        norm = next(iter(rules.values())).normalise(_upsample(maps[:, 1:], hu.shape[:2])).astype(np.float32)
        gt_slices = np.flatnonzero(truth_s.any((1, 2)))
        sub_labels = np.asarray(e[SUBTYPE_LABELS], dtype=bool)
        for k, rule in rules.items():
            role = "test" if fold_of[p] == k else "selection"
            if role == "selection":  # only the union on the ground-truth slices chooses: max over present subtypes
                if not len(gt_slices):
                    continue
                present = probs[gt_slices, 1:] >= rule.class_thresholds[None, :]
                peak = np.where(present[:, :, None, None], norm[gt_slices], -np.inf).max(1)
                peak[~brain_s[gt_slices]] = -np.inf
                for t in grid:
                    for variant in VARIANTS:
                        union = peak > t if variant == "algorithm1" else (peak > t) & prior_s[gt_slices]
                        slice_rows.extend({"fold": k, "role": role, "patient": p, "slice": int(z), "variant": variant,
                                           "threshold": t, "dice": _dice(union[i], truth_s[z])}
                                          for i, z in enumerate(gt_slices))
                continue
            for t in grid:
                lab = _labels(rule, probs[:, 1:], norm, brain_s, t)
                for variant in VARIANTS:
                    lv = lab if variant == "algorithm1" else np.where(prior_s, lab, 0)
                    union = lv > 0
                    for z in gt_slices:
                        slice_rows.append({"fold": k, "role": role, "patient": p, "slice": int(z), "variant": variant,
                                           "threshold": t, "dice": _dice(union[z], truth_s[z])})
                    if role != "test":
                        continue
                    called = np.stack([(lv == j + 1).any((1, 2)) for j in range(len(SUBTYPES))], 1)
                    on_label = float(sum(np.isin(lv[z][lv[z] > 0], np.flatnonzero(sub_labels[z]) + 1).sum()
                                         for z in gt_slices))
                    ml = subtype_volumes_ml(np.moveaxis(lv, 0, -1), spacing, SUBTYPES)
                    true_ml = float(truth.sum()) * float(np.prod(spacing)) / 1000.0
                    patient_rows.append({"fold": k, "patient": p, "variant": variant, "threshold": t,
                                         "positive": bool(truth.any()), "volume_dice": _dice(union, truth_s),
                                         "true_ml": true_ml, "pred_ml": ml["any"],
                                         "pixels_on_gt_slices": int(union[gt_slices].sum()) if len(gt_slices) else 0,
                                         "pixels_with_labelled_subtype": on_label,
                                         **{f"ml_{s}": ml[s] for s in SUBTYPES}})
                    presence.append(((k, p, variant, t), called, sub_labels))
        log(f"scored patient {p} ({n + 1}/{len(outputs)})")

    # 4. the threshold each fold's selection patients choose, and the test rows at it
    def mean_dice(rows):
        return float(np.mean([r["dice"] for r in rows])) if rows else float("nan")

    chosen = {}
    for k in tests:
        for variant in VARIANTS:
            scores = {t: mean_dice([r for r in slice_rows if r["fold"] == k and r["role"] == "selection"
                                    and r["variant"] == variant and r["threshold"] == t]) for t in grid}
            chosen[(k, variant)] = max(grid, key=lambda t: (scores[t], -t))
    summary: dict[str, Any] = {"level": level, "normalisation": normalisation, "mask_thresholds": grid,
                               "class_thresholds": {k: dict(zip(SUBTYPES, map(float, r.class_thresholds)))
                                                    for k, r in rules.items()},
                               "chosen_mask_threshold": {f"{k}/{v}": t for (k, v), t in chosen.items()},
                               "variants": {}}
    test_slices = [r for r in slice_rows if r["role"] == "test" and r["threshold"] == chosen[(r["fold"], r["variant"])]]
    test_patients = [r for r in patient_rows if r["threshold"] == chosen[(r["fold"], r["variant"])]]
    y_sub = np.concatenate([np.asarray(entries[p][SUBTYPE_LABELS]) for p in sorted(outputs)])
    s_sub = np.concatenate([outputs[p][0][:, 1:] for p in sorted(outputs)])
    summary["subtype_auroc"] = {s: compute_auroc(y_sub[:, j], s_sub[:, j]) for j, s in enumerate(SUBTYPES)}
    for variant in VARIANTS:
        rows = [r for r in test_slices if r["variant"] == variant]
        d = np.array([r["dice"] for r in rows])
        ci = bootstrap_ci(d, groups=[r["patient"] for r in rows])
        prow = [r for r in test_patients if r["variant"] == variant]
        pos = [r for r in prow if r["positive"]]
        vd = np.array([r["volume_dice"] for r in pos])
        pres = [(c, y) for (key, c, y) in presence if key[2] == variant and key[3] == chosen[(key[0], variant)]]
        called = np.concatenate([c for c, _ in pres])
        truth_lab = np.concatenate([y for _, y in pres])
        per_sub = {}
        for j, s in enumerate(SUBTYPES):
            c, y = called[:, j], truth_lab[:, j]
            per_sub[s] = {"slices_labelled": int(y.sum()), "sensitivity": float((c & y).sum() / max(y.sum(), 1)),
                          "specificity": float((~c & ~y).sum() / max((~y).sum(), 1)),
                          "ppv": float((c & y).sum() / c.sum()) if c.any() else float("nan")}
        pix = sum(r["pixels_on_gt_slices"] for r in prow)
        summary["variants"][variant] = {
            "slices": len(rows), "dice_per_slice": float(d.mean()), "dice_ci": [float(ci[0]), float(ci[1])],
            "empty_on_gt_slices": float((d == 0).mean()), "positive_patients": len(pos),
            "volume_dice": float(vd.mean()) if len(vd) else float("nan"),
            "pixels_with_labelled_subtype": float(sum(r["pixels_with_labelled_subtype"] for r in prow) / pix) if pix else float("nan"),
            "subtypes": per_sub,
            "negative_patients_with_ml": int(sum(1 for r in prow if not r["positive"] and r["pred_ml"] > 1.0)),
            "negative_patients": int(sum(1 for r in prow if not r["positive"])),
        }
    _write_reports(outd, summary, test_slices, test_patients, SUBTYPES)
    return summary


def _write_reports(outd: Path, summary: dict, slices: list[dict], patients: list[dict], names: Sequence[str]) -> None:
    import csv
    import io

    from hemwsl.data.io import atomic_write_text

    for name, rows in (("per_slice.csv", slices), ("per_patient.csv", patients)):
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["fold"])
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(outd / name, buf.getvalue())
    atomic_write_text(outd / "subtypes.json", json.dumps(summary, indent=1, default=float) + "\n")
    lines = ["# Algorithm 1 (Chen & Kuo 2026) out of fold: subtype masks of the six-output heatmap network", "",
             f"Score maps of level {summary['level']}, normalisation `{summary['normalisation']}`, class thresholds by "
             "Youden and one mask threshold per fold chosen on the selection patients (grid "
             + ", ".join(f"{t:.3f}" for t in summary["mask_thresholds"]) + "); chosen: "
             + ", ".join(f"{k} {t:.3f}" for k, t in summary["chosen_mask_threshold"].items()) + ".", "",
             "| variant | GT-positive slices | Dice per slice [95% CI] | empty on GT slices | volume Dice (positive patients) "
             "| predicted pixels of a labelled subtype | blood-free patients > 1 mL |",
             "|---|---|---|---|---|---|---|"]
    for v, s in summary["variants"].items():
        lines.append(f"| {v} | {s['slices']} | {s['dice_per_slice']:.3f} [{s['dice_ci'][0]:.3f}, {s['dice_ci'][1]:.3f}] "
                     f"| {s['empty_on_gt_slices']:.2f} | {s['volume_dice']:.3f} ({s['positive_patients']}) "
                     f"| {s['pixels_with_labelled_subtype']:.2f} | {s['negative_patients_with_ml']}/{s['negative_patients']} |")
    lines += ["", "Slice-level subtype agreement (a subtype is called on a slice when its label occupies a pixel; all "
              "test slices) and the slice AUROC of each subtype output:", "",
              "| variant | subtype | labelled slices | sensitivity | specificity | PPV | slice AUROC |", "|---|---|---|---|---|---|---|"]
    for v, s in summary["variants"].items():
        for name in names:
            q = s["subtypes"][name]
            lines.append(f"| {v} | {name} | {q['slices_labelled']} | {q['sensitivity']:.2f} | {q['specificity']:.2f} "
                         f"| {q['ppv']:.2f} | {summary['subtype_auroc'][name]:.3f} |")
    atomic_write_text(outd / "subtypes.md", "\n".join(lines) + "\n")
