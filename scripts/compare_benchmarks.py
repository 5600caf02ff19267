"""Compare the validated rows of several `hemwsl benchmark` reports on the same patients, with paired tests.

Each report's row of ``--method`` (``-`` for the prior alone) is the (layer, threshold) its selection patients
chose per fold (``choices.csv``), scored on the fold's test patients (``per_case.csv``). Per report: the mean
per-slice Dice over slices (the report's own "Dice per slice") and the mean volume Dice of the patients with
scored slices. Against the first report (the reference), per patient (the benchmark's unit of paired tests):
the mean differences of the patient's mean per-slice Dice and of its volume Dice, with two-sided Wilcoxon
signed-rank p-values over the patients both reports scored. The reports must score the same slices
(e.g. ground-truth positive slices of the same dataset and folds) for the comparison to mean anything.

    python scripts/compare_benchmarks.py --method lse_heatmap \
        --reports outputs/bench_lse_area1/gt_comp_e4hu50min50_grow outputs/bench_lse_area1/gt_comp_cal37
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import numpy as np

from hemwsl.benchmark.summary import paired_test, per_patient, read_rows
from hemwsl.errors import HemwslInputError
from hemwsl.reports.text import emit, run_script


def chosen_rows(report: Path, method: str) -> list[dict]:
    """The ``per_case.csv`` rows of ``method``'s chosen (layer, threshold) in each fold of ``report``."""
    for name in ("choices.csv", "per_case.csv"):
        if not (report / name).is_file():
            raise HemwslInputError(f"{report / name}: not found (give the folder of a `hemwsl benchmark` report)")
    with open(report / "choices.csv", newline="") as f:
        chosen = {(int(r["fold"]), r["layer"], r["threshold"]) for r in csv.DictReader(f) if r["method"] == method}
    if not chosen:
        raise HemwslInputError(f"{report / 'choices.csv'}: no row of method {method!r}")
    return [r for r in read_rows(report / "per_case.csv")
            if r["method"] == method and (r["fold"], r["layer"], r["threshold"]) in chosen]


def volume_per_patient(rows: list[dict]) -> dict[str, float]:
    """Volume Dice of the patients with scored slices (the positive patients on ground-truth slices)."""
    scored = {r["patient"] for r in rows if r["level"] == "slice"}
    return {r["patient"]: float(r["volume_dice"]) for r in rows
            if r["level"] == "volume" and r["patient"] in scored and not math.isnan(r["volume_dice"])}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reports", nargs="+", required=True, help="benchmark report folders; the first is the reference")
    p.add_argument("--method", default="lse_heatmap", help="the method whose validated row is compared ('-': the prior)")
    p.add_argument("--out", default=None, help="also write the table to this markdown file")
    args = p.parse_args(argv)
    if len(args.reports) < 2:
        raise HemwslInputError("--reports: give at least two report folders")
    runs = {}
    for rep in args.reports:
        rows = chosen_rows(Path(rep), args.method)
        slices = [r["dice"] for r in rows if r["level"] == "slice" and not math.isnan(r["dice"])]
        runs[rep] = (per_patient(rows), volume_per_patient(rows), float(np.mean(slices)), len(slices))
    ref_slice, ref_vol = runs[args.reports[0]][:2]
    lines = [f"Validated row of `{args.method}`; reference: `{args.reports[0]}`.", "",
             "| report | Dice per slice | volume Dice | patient mean per-slice Dice: diff vs ref | Wilcoxon p | "
             "diff volume vs ref | Wilcoxon p |", "|---|---|---|---|---|---|---|"]
    for rep, (sl, vol, dice, n) in runs.items():
        row = [f"`{rep}`", f"{dice:.3f} ({n} slices, {len(sl)} patients)", f"{np.mean(list(vol.values())):.3f}"]
        if rep == args.reports[0]:
            row += ["", "", "", ""]
        else:
            a, b = paired_test(sl, ref_slice), paired_test(vol, ref_vol)
            row += [f"{a['mean_diff']:+.3f}", f"{a['p']:.4f}", f"{b['mean_diff']:+.3f}", f"{b['p']:.4f}"]
        lines.append("| " + " | ".join(row) + " |")
    emit("\n".join(lines) + "\n", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
