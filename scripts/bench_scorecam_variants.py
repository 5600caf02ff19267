"""Fast Score-CAM variants against exact Score-CAM on real CT slices: speed and fidelity, in one run.

    python scripts/bench_scorecam_variants.py --dataset-dir ../shared/data/ct-ich --cv-dir CV --fold 0 \
        --checkpoint last --layer levels.2.conv --slices 40 --top-k 8 16 32 --groups 8 32 --reciprocam

Takes the ground-truth-positive slices of the fold's test patients (at most ``--slices``), the fold's trained
network and its recorded input settings, and explains them with exact Score-CAM (``scorecam``), Faster
Score-CAM (``fasterscorecam``, the ``top_k`` channels of largest variance per slice), Group-CAM (``groupcam``,
``groups`` Grad-CAM-weighted channel groups scored over a blurred baseline) and Recipro-CAM (``reciprocam``, the
network's tail on each position of the layer alone, and its 3 x 3 Gaussian variant). Prints one table:

* seconds per slice, and the speed-up over exact Score-CAM;
* fidelity to exact Score-CAM: Spearman rank correlation of the two maps per slice (mean), and the Dice between
  their masks at 0.5 of the per-slice min-max map;
* each method's pointing game against the true mask: the share of slices whose map peaks inside the lesion
  (a threshold-free proxy of localisation; the benchmark proper chooses thresholds on selection patients).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    r = spearmanr(a.ravel(), b.ravel()).statistic
    return float(r) if np.isfinite(r) else float("nan")


def _dice(p: np.ndarray, g: np.ndarray) -> float:
    s = p.sum() + g.sum()
    return 1.0 if s == 0 else float(2 * (p & g).sum() / s)


def _mask(m: np.ndarray) -> np.ndarray:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo + 1e-8) >= 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--cv-dir", required=True, help="a train-cv run (its cv_settings.json and fold weights)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--checkpoint", default="best", choices=["best", "last"])
    ap.add_argument("--layer", required=True)
    ap.add_argument("--slices", type=int, default=40)
    ap.add_argument("--top-k", type=int, nargs="+", default=[8, 16, 32])
    ap.add_argument("--groups", type=int, nargs="*", default=[8, 32], help="Group-CAM rows (none: skip)")
    ap.add_argument("--reciprocam", action="store_true", help="add the two Recipro-CAM rows")
    ap.add_argument("--batch", type=int, default=8, help="slices per engine call")
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from hemwsl.cam import CAMEngine
    from hemwsl.cam.methods import FasterScoreCAM, GroupCAM, ReciproCAM, ScoreCAM
    from hemwsl.engines.runs import cv_settings, fold_checkpoint
    from hemwsl.data import SliceDataset, build_datalist
    from hemwsl.engines.classifier import fold_datalists, load_weights
    from hemwsl.networks import build_network

    s = cv_settings(args.cv_dir)
    datalist = build_datalist("ct-ich", args.dataset_dir)
    test = fold_datalists(datalist, n_folds=5, fold=args.fold, seed=s.get("seed", 0),
                          val_fraction=s.get("val_fraction", 0.15))["test"]
    windows = s.get("windows", ["brain", "subdural", "blood"])
    ds = SliceDataset(test, num_slices=s.get("num_slices", 3), windows=windows,
                      spatial_size=tuple(s.get("spatial_size", [256, 256])), skull_strip=bool(s.get("skull_strip")))
    idx = [i for i in range(len(ds)) if ds.slice_label(i)][: args.slices]
    x = torch.stack([ds[i]["image"] for i in idx])
    gt = torch.stack([ds[i]["mask"] for i in idx]).reshape(len(idx), *x.shape[-2:]).numpy() > 0.5
    net = build_network(s["backbone"], in_channels=len(windows) * s.get("num_slices", 3), num_classes=1)
    net = load_weights(net, str(fold_checkpoint(args.cv_dir, args.fold, args.checkpoint)), device="cpu")

    def explain(method):
        engine = CAMEngine(net, [method], layers=[args.layer])
        maps, t0 = [], time.perf_counter()
        for start in range(0, len(x), args.batch):
            out = engine.feature_maps(x[start:start + args.batch], 0)
            maps.append(next(iter(out.values())))
        seconds = time.perf_counter() - t0
        up = F.interpolate(torch.cat(maps)[:, None].float(), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return up[:, 0].numpy(), seconds

    exact, t_exact = explain(ScoreCAM())
    rows = [("scorecam (exact)", t_exact, exact)]
    for k in args.top_k:
        m, t = explain(FasterScoreCAM(top_k=k))
        rows.append((f"fasterscorecam, top_k {k}", t, m))
    for g in args.groups:
        m, t = explain(GroupCAM(groups=g))
        rows.append((f"groupcam, {g} groups", t, m))
    if args.reciprocam:
        for kernel in (False, True):
            m, t = explain(ReciproCAM(kernel=kernel))
            rows.append((f"reciprocam{' (3 x 3 Gaussian)' if kernel else ''}", t, m))
    n = len(idx)
    print(f"{n} ground-truth-positive slices of fold {args.fold}'s test patients, {s['backbone']} at "
          f"{x.shape[-1]} px, layer {args.layer}, {torch.get_num_threads()} threads\n")
    print("| method | s/slice | speed-up | Spearman vs exact | mask Dice vs exact | pointing game (true mask) |")
    print("|---|---|---|---|---|---|")
    for name, t, m in rows:
        rho = np.nanmean([_spearman(m[i], exact[i]) for i in range(n)])
        agree = np.mean([_dice(_mask(m[i]), _mask(exact[i])) for i in range(n)])
        true = np.mean([gt[i].flat[int(np.argmax(m[i]))] for i in range(n)])
        print(f"| {name} | {t / n:.3f} | {t_exact / t:.1f}x | {rho:.3f} | {agree:.3f} | {true:.3f} |")


if __name__ == "__main__":
    main()
