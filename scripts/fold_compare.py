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

    from hemwsl.engines.runs import resolve_cv_folds
    from hemwsl.errors import HemwslInputError

    for run in args.runs:  # each run's fold of these patients: the same number of folds (its split), before any work
        n = resolve_cv_folds(run)[0] if (Path(run) / "cv_run.json").is_file() else None
        if n is not None and n != args.folds:
            raise HemwslInputError(f"--folds {args.folds}: the train-cv run {run} has {n} folds; its fold "
                                   f"{args.fold} model would explain patients it trained on (give --folds {n})")
    from hemwsl.engines.runs import CHECKPOINTS

    if args.checkpoint not in CHECKPOINTS:
        raise HemwslInputError(f"--checkpoint {args.checkpoint!r}: one of {', '.join(CHECKPOINTS)}")
    if not 0 <= args.fold < args.folds:
        raise HemwslInputError(f"--fold {args.fold}: the folds of --folds {args.folds} are 0 to {args.folds - 1}")
    for run in args.runs:  # every run's weights of the fold are there before split.json is written
        fold_checkpoint(run, args.fold, args.checkpoint)
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
