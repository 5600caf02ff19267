"""Where the time of `hemwsl cam-cv` goes, against the network's own forward + gradient time, in one run.

    python scripts/bench_cam_cv.py --dataset-dir ../shared/data/ct-ich --cv-dir outputs/ctich_lite0_128 \
        --fold 0 --checkpoint last --cache-dir outputs/cache

For the fold's test patients (the volumes one fold of `cam-cv` explains), with the run's input settings:

* **floor**: the network's forward with autograd and one gradient of the summed target scores with respect to
  the activations of the explained layers, batch by batch, on the preprocessed slices: what any gradient CAM
  method must compute;
* **cam-cv as shipped** (`run_cam`: the disk cache of preprocessed volumes, the NIfTI files written by a
  background thread while the next volume is explained);
* **cam-cv --storage uint16** (each file quantised to 65,536 levels with the NIfTI scale factor);
* **cam-cv without the cache** (each volume skull stripped and resized again), **without the background
  writer** (files written between volumes) and **without the files** (nothing written: reading, the engine and
  the resizing), to show what each costs;
* the stages of the shipped run: reading and preprocessing, the engine, the wait for the writer at the end.

Prints one table; the ratio column is each row over the floor (the target of the speed issue: <= 1.5x).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

GRADIENT_GRID = ["cam", "gradcam", "gradcampp", "xgradcam", "hirescam", "gradcam_elementwise", "layercam", "eigencam",
                 "eigengradcam"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--cv-dir", required=True, help="a train-cv run (its cv_settings.json and fold weights)")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--checkpoint", default="best", choices=["best", "last"])
    ap.add_argument("--cache-dir", required=True, help="the disk cache train-cv used (--cache-dir)")
    ap.add_argument("--methods", nargs="+", default=GRADIENT_GRID)
    ap.add_argument("--patients", type=int, default=None, help="only the first N test patients")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()

    import torch

    import hemwsl.engines.cam as cam_engine
    from hemwsl.cam import CAMEngine
    from hemwsl.data import InputSettings, SliceDataset, build_datalist
    from hemwsl.engines.classifier import fold_datalists, load_weights
    from hemwsl.engines.runs import cv_settings, fold_checkpoint
    from hemwsl.networks import build_network, target_layer_names

    from hemwsl.cam import CAM_METHODS
    from hemwsl.engines.bundle import resolve_bundle_settings
    from hemwsl.engines.runs import resolve_cv_folds
    from hemwsl.errors import HemwslInputError

    # every argument checked before the first timing: one line each (run_script), no traceback
    n_folds = resolve_cv_folds(args.cv_dir)[0]
    if not 0 <= args.fold < n_folds:
        raise HemwslInputError(f"--fold {args.fold}: the train-cv run {args.cv_dir} has folds 0 to {n_folds - 1}")
    fold_checkpoint(args.cv_dir, args.fold, args.checkpoint)  # the fold's weights are there
    unknown = [m for m in args.methods if m not in CAM_METHODS]
    if unknown:
        raise HemwslInputError(f"--methods: unknown method(s) {', '.join(unknown)}; known: {', '.join(CAM_METHODS)}")
    s = resolve_bundle_settings(cv_settings(args.cv_dir))  # the run's settings over the bundle's defaults
    windows, k = s.get("windows", ["brain"]), int(s.get("num_slices", 3))
    size = tuple(s.get("spatial_size", [256, 256]))
    strip = bool(s.get("skull_strip"))
    datalist = build_datalist("ct-ich", args.dataset_dir)
    test = fold_datalists(datalist, n_folds=n_folds, fold=args.fold, seed=s.get("seed", 0),
                          val_fraction=s.get("val_fraction", 0.15))["test"][: args.patients]
    net = build_network(s["backbone"], in_channels=len(windows) * k, num_classes=1, options=s.get("network_options"))
    net = load_weights(net, str(fold_checkpoint(args.cv_dir, args.fold, args.checkpoint)), device="cpu")
    layers = target_layer_names(net)
    inputs = InputSettings(windows=windows, num_slices=k, spatial_size=size, skull_strip=strip)
    kw = dict(inputs=inputs, batch_size=args.batch_size, progress=False, grid="input")

    # the floor: forward with autograd + one gradient w.r.t. the layers' activations, on the preprocessed slices
    stacks = []
    for e in test:
        ds = SliceDataset([e], num_slices=k, windows=windows, spatial_size=size, skull_strip=strip, cache_dir=args.cache_dir)
        stacks.append(torch.stack([ds[i]["image"] for i in range(len(ds))]))
    n_slices = sum(len(x) for x in stacks)
    modules = [net.get_submodule(name) for name in layers]
    t0 = time.perf_counter()
    for x in stacks:
        for start in range(0, len(x), args.batch_size):
            acts = []
            hooks = [m.register_forward_hook(lambda mod, i, o: acts.append(o)) for m in modules]
            try:
                score = net(x[start:start + args.batch_size])[:, 0].sum()
            finally:
                for h in hooks:
                    h.remove()
            torch.autograd.grad(score, acts)
    floor = time.perf_counter() - t0

    def timed(**extra) -> float:
        out = Path(tempfile.mkdtemp(prefix="bench_cam_cv_"))
        try:
            t = time.perf_counter()
            cam_engine.run_cam(net, test, out, args.methods, None, **kw, **extra)
            return time.perf_counter() - t
        finally:
            shutil.rmtree(out, ignore_errors=True)

    shipped = timed(cache_dir=args.cache_dir)
    uint16 = timed(cache_dir=args.cache_dir, storage="uint16")
    no_cache = timed()
    # the files not written at all (what reading the cache, the engine and the resizing cost)
    import hemwsl.cam as cam_pkg

    real_save = cam_pkg.save_heatmaps
    cam_pkg.save_heatmaps = lambda maps, affine, out, stem, storage="float32": {}
    try:
        unwritten = timed(cache_dir=args.cache_dir)
    finally:
        cam_pkg.save_heatmaps = real_save
    # without the background writer: the same run with a writer that finishes each volume before the next starts
    real_pool = cam_engine.ThreadPoolExecutor

    class Inline:
        def __init__(self, *a, **k):
            pass

        def submit(self, fn, *a, **k):
            from concurrent.futures import Future

            f = Future()
            f.set_result(fn(*a, **k))
            return f

        def map(self, fn, items):
            return [fn(i) for i in items]

        def shutdown(self, wait=True):
            pass

    cam_engine.ThreadPoolExecutor = Inline
    try:
        inline = timed(cache_dir=args.cache_dir)
    finally:
        cam_engine.ThreadPoolExecutor = real_pool
    engine = CAMEngine(net, list(args.methods), layers=layers, skip_inapplicable=True)
    t0 = time.perf_counter()
    for x in stacks:
        for start in range(0, len(x), args.batch_size):
            engine(x[start:start + args.batch_size])
    engine_only = time.perf_counter() - t0

    print(f"{len(test)} test patients of fold {args.fold} ({n_slices} slices), {s['backbone']} at {size[0]} px, "
          f"{len(args.methods)} methods x {len(layers)} layers, {torch.get_num_threads()} threads\n")
    print("| what | seconds | s/slice | ratio to the floor |")
    print("|---|---|---|---|")
    for name, t in (("floor: forward + gradient w.r.t. the layers", floor), ("the CAM engine alone (all maps)", engine_only),
                    ("cam-cv as shipped (cache + background writer)", shipped),
                    ("cam-cv --storage uint16 (cache + background writer)", uint16),
                    ("cam-cv, the files not written (reading, engine, resizing)", unwritten),
                    ("cam-cv, files written between volumes", inline), ("cam-cv without the cache", no_cache)):
        print(f"| {name} | {t:.1f} | {t / n_slices:.4f} | {t / floor:.2f}x |")


if __name__ == "__main__":
    import sys

    from hemwsl.reports.text import run_script

    sys.exit(run_script(main))
