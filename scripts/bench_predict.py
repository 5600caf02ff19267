"""Speed of ``hemwsl predict`` end to end on a 40-slice 512 x 512 head CT (NIfTI and DICOM in), against the
issue's target of 15 s on a 2-core CPU.

Times ``Predictor.predict`` (read, check, skull strip, classifier input, every member's probabilities with
flip TTA and heatmap, masks, NIfTI/CSV/JSON/PNG writes, DICOM SEG for DICOM input) after one warm-up scan,
with the whole ensemble and with one member, plus the process start (imports, model load). Uses
``--model`` when given; otherwise packs random weights of the CPU recipe (lse_efficientnet_lite0, 128 px,
3 slices x 3 windows, 5 folds, the priorcomp recipe) -- the same work as trained weights.

    python scripts/bench_predict.py [--model MODEL] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _random_package(root: Path) -> Path:
    import torch

    from hemwsl.networks import build_network
    from hemwsl.predict import pack_model

    settings = {"backbone": "lse_efficientnet_lite0", "spatial_size": [128, 128], "skull_strip": True,
                "windows": ["brain", "subdural", "blood"], "num_slices": 3, "tta": True}
    cv = root / "cv"
    cv.mkdir(parents=True)
    (cv / "cv_settings.json").write_text(json.dumps(settings))
    bench = root / "bench"
    bench.mkdir()
    choices, thresholds = ["fold,method,layer,threshold,selection_dice"], [
        "fold,method,layer,threshold,value,selection_dice,selection_patients,selection_slices,selection_metric"]
    for k in range(5):
        torch.manual_seed(k)
        net = build_network(settings["backbone"], in_channels=9, num_classes=1)
        (cv / f"fold{k}" / "models").mkdir(parents=True)
        torch.save(net.state_dict(), cv / f"fold{k}" / "models" / "model.pt")
        choices.append(f"{k},lse_heatmap,levels.2.conv,priorcomp+search,0.4")
        thresholds.append(f"{k},lse_heatmap,levels.2.conv,priorcomp+search,0.05,0.4,44,168,dice")
    (bench / "choices.csv").write_text("\n".join(choices) + "\n")
    (bench / "thresholds.csv").write_text("\n".join(thresholds) + "\n")
    (bench / "config.json").write_text(json.dumps({"prob_threshold": 0.5, "hu_range": [50.0, 90.0],
                                                   "brain_erosion": 4, "min_size": 50}))
    return pack_model(cv, root / "model", benchmark_dir=bench)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    import nibabel as nib
    import torch

    torch.set_num_threads(args.threads)
    from hemwsl.data.dicom import write_dicom_series
    from hemwsl.data.synthetic import make_phantom
    from hemwsl.predict import ModelPackage, Predictor

    t_import = time.perf_counter() - t_start
    tmp = Path(tempfile.mkdtemp())
    model = Path(args.model) if args.model else _random_package(tmp / "pkg")
    p = make_phantom(1, shape=(512, 512, 40), spacing=(0.45, 0.45, 5.0), subtypes=["intraparenchymal", "subdural"])
    nii = tmp / "ct512.nii.gz"
    nib.save(nib.Nifti1Image(p["image"].astype(np.int16), p["affine"]), str(nii))
    dcm = tmp / "ct512_dicom"
    write_dicom_series(p["image"], p["affine"], dcm)
    pkg = ModelPackage.load(model)
    rows = []
    for label, members in (("whole ensemble", None), ("one member", [int(pkg.members[0]["fold"])])):
        t0 = time.perf_counter()
        pred = Predictor(pkg, members=members)
        t_load = time.perf_counter() - t0
        pred.predict(nii, tmp / "warm", overwrite=True)  # warm-up
        for kind, src in (("NIfTI", nii), ("DICOM", dcm)):
            times = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                pred.predict(src, tmp / f"out{r}{kind}{label[0]}", overwrite=True)
                times.append(time.perf_counter() - t0)
            rows.append((label, len(pred.members), kind, float(np.median(times)), t_load))
    print(f"\n40-slice 512 x 512 CT, {args.threads} torch threads, model {pkg.settings['backbone']} at "
          f"{pkg.settings['spatial_size']} ({pkg.recipe['threshold']}); imports {t_import:.1f} s\n")
    print("| members | input | predict s (median of %d) | model load s | target s |" % args.repeats)
    print("|---|---|---|---|---|")
    for label, n, kind, t, tl in rows:
        print(f"| {label} ({n}) | {kind} | {t:.2f} | {tl:.2f} | 15 |")
    return 0


if __name__ == "__main__":
    from hemwsl.reports.text import run_script

    sys.exit(run_script(main))
