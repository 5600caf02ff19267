"""One fold, several train-cv runs: each run's fold model explains that fold's validation and test patients
(``lse_heatmap``), and ``hemwsl benchmark --split`` chooses layer and threshold on the validation patients and
scores the test patients. A quick comparison when only one fold of a run exists (e.g. a 256 px run on a CPU).

    python scripts/fold_compare.py --dataset-dir ../shared/data/ct-ich --fold 0 --out outputs/fold0_compare \\
        --runs outputs/ctich_lse_lite0_128_area1 outputs/ctich_lse_lite0_256_area1
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--runs", nargs="+", required=True, help="train-cv folders")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--checkpoint", default="last")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from hemwsl.engines.runs import cv_settings, fold_checkpoint
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.splits import save_split
    from hemwsl.engines.bundle import run_cam_bundle
    from hemwsl.engines.classifier import fold_datalists

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    parts = fold_datalists(build_datalist("ct-ich", args.dataset_dir), n_folds=args.folds, fold=args.fold)
    save_split({k: [e["patient"] for e in v] for k, v in parts.items()}, out / "split.json")
    for run in args.runs:
        cv = Path(run)
        cam = out / cv.name / "cam"
        for part in ("val", "test"):
            run_cam_bundle(**{**cv_settings(cv), "dataset_dir": args.dataset_dir, "output_dir": str(cv),
                              "n_folds": args.folds, "fold": args.fold,
                              "checkpoint": str(fold_checkpoint(cv, args.fold, args.checkpoint)), "cam_dir": str(cam),
                              "cam_part": part, "cam_methods": ["lse_heatmap"], "cam_layers": None, "cam_grid": "input"})
        subprocess.run([sys.executable, "-m", "hemwsl", "benchmark", "--dataset-dir", args.dataset_dir,
                        "--cam-dir", str(cam), "--out", str(out / cv.name / "bench"), "--split", str(out / "split.json"),
                        "--thresholds", "prior", "priorcomp+search", "--no-figures", "--brain-erosion", "4",
                        "--min-size", "50", "--hu-range", "50", "90"], check=True)
    return 0


if __name__ == "__main__":
    from hemwsl.reports.text import run_script

    sys.exit(run_script(main))
