"""``hemwsl package`` (a train-cv run -> a self-describing model) and ``hemwsl predict`` (one CT in, an answer out)."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_package_arguments", "add_predict_arguments", "run_package", "run_predict"]


def add_package_arguments(p: argparse.ArgumentParser) -> None:
    from hemwsl.commands.benchmark import add_checkpoint_argument

    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--cv-dir", help="output folder of `hemwsl train-cv` (the slice classifier or heatmap network)")
    src.add_argument("--seg-cv-dir", help="output folder of `hemwsl seg-cv` (the 3D U-Net; with --out, --dataset-dir "
                                          "and --folds only)")
    p.add_argument("--out", required=True, help="model package folder to write")
    add_checkpoint_argument(p)
    p.add_argument("--benchmark-dir", default=None,
                   help="a `hemwsl benchmark` report on the run's heatmaps: its best heatmap row (method, threshold, "
                        "post-processing, per-fold layer and value) becomes the mask recipe (default: the hyperdense "
                        "prior on positive slices)")
    p.add_argument("--quantify-dir", default=None,
                   help="a `hemwsl quantify` report: each fold's scan-level call (default: one slice >= 0.5)")
    p.add_argument("--scan-call", default="auto", choices=["auto", "model", "select", "none"],
                   help="model: a scan model (slice probabilities + the prior on positive slices) per member, trained "
                        "on the scans outside its test part (needs --dataset-dir); select: the scan aggregation and "
                        "threshold chosen there; none: a scan is positive when one slice is; auto (default): model with "
                        "--dataset-dir, else select; each keeps --min-sensitivity")
    p.add_argument("--min-sensitivity", type=float, default=0.9, help="scan-level sensitivity kept (default: 0.9)")
    p.add_argument("--min-slices", type=int, default=1,
                   help="drop 3D mask components spanning fewer slices than this (default: 1, keep all)")
    p.add_argument("--dataset-dir", default=None, help="the training data: records each fold's test patients")
    p.add_argument("--folds", type=int, nargs="*", default=None, help="members to pack (default: every fold)")
    p.add_argument("--methods", nargs="*", default=None,
                   help="choose the recipe among these heatmap methods of the benchmark report (default: any)")
    p.add_argument("--bundle", default="ich_classifier", help="the bundle the run was trained with")


def run_package(args: argparse.Namespace) -> int:
    from hemwsl.errors import HemwslInputError
    from hemwsl.predict import ModelPackage, pack_model

    from hemwsl.engines.runs import check_outside_run

    if args.folds is not None and not args.folds:
        raise HemwslInputError("--folds: give the fold numbers to pack (e.g. --folds 0 1), or leave the option out to "
                               "pack every fold")
    dup = sorted({k for k in (args.folds or []) if args.folds.count(k) > 1})
    if dup:
        raise HemwslInputError(f"--folds: fold(s) {dup} given twice (each fold is one member)")
    if args.seg_cv_dir:  # a U-Net package takes --out, --dataset-dir and --folds only: say so, not ignore the rest
        unused = [opt for opt, given in (("--checkpoint", args.checkpoint != "best"),
                                         ("--benchmark-dir", args.benchmark_dir is not None),
                                         ("--quantify-dir", args.quantify_dir is not None),
                                         ("--scan-call", args.scan_call != "auto"),
                                         ("--min-sensitivity", args.min_sensitivity != 0.9),
                                         ("--min-slices", args.min_slices != 1),
                                         ("--methods", args.methods is not None),
                                         ("--bundle", args.bundle != "ich_classifier")) if given]
        if unused:
            raise HemwslInputError(f"{unused[0]} does not apply to a U-Net package (--seg-cv-dir takes --out, "
                                   "--dataset-dir and --folds only); leave it out")
        check_outside_run(args.out, args.seg_cv_dir, run_name="--seg-cv-dir", what="seg-cv run")
    else:
        check_outside_run(args.out, args.cv_dir)
    if args.seg_cv_dir:
        from hemwsl.predict_unet import SEG_MODEL_KIND, pack_segmentation

        root = pack_segmentation(args.seg_cv_dir, args.out, folds=args.folds, dataset_dir=args.dataset_dir)
        pkg = ModelPackage.load(root, kind=SEG_MODEL_KIND)
        s = pkg.settings
        print(f"model package {root}: 3D U-Net, {len(pkg.members)} member(s), {len(s['windows'])} windows at "
              f"{s['spatial_size']}, patch {s['patch_size']}, threshold {s['threshold']}")
        return 0
    from hemwsl.errors import HemwslInputError

    if not 0.0 <= args.min_sensitivity <= 1.0:
        raise HemwslInputError(f"--min-sensitivity must be in [0, 1], got {args.min_sensitivity}")
    if args.min_slices < 1:
        raise HemwslInputError(f"--min-slices must be >= 1 (1 keeps every mask component), got {args.min_slices}")
    root = pack_model(args.cv_dir, args.out, checkpoint=args.checkpoint, benchmark_dir=args.benchmark_dir,
                      quantify_dir=args.quantify_dir, dataset_dir=args.dataset_dir, folds=args.folds,
                      bundle=args.bundle, methods=args.methods, scan_call=args.scan_call,
                      min_sensitivity=args.min_sensitivity,
                      post_processing={"min_slices": args.min_slices} if args.min_slices != 1 else None)
    pkg = ModelPackage.load(root)
    s, r = pkg.settings, pkg.recipe
    print(f"model package {root}: {s['backbone']}, {len(pkg.members)} member(s), input {s['num_slices']} slices x "
          f"{len(s['windows'])} windows at {s['spatial_size']}; mask recipe: {r['source']}")
    return 0


def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="a model package folder (from `hemwsl package`: the slice ensemble "
                                                  "with its mask recipe, or a 3D U-Net)")
    p.add_argument("--input", required=True, nargs="+",
                   help="CT scans: NIfTI files and/or DICOM series folders (DICOM in gives a DICOM SEG out)")
    p.add_argument("--out", default="outputs/predict", help="output folder, one <scan>/ subfolder each "
                                                            "(default: outputs/predict)")
    p.add_argument("--members", type=int, nargs="*", default=None,
                   help="only these fold members (default: the whole ensemble)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--batch-size", type=int, default=32, help="slices per forward pass (default: 32)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs of another model")
    p.add_argument("--no-figures", action="store_true", help="skip report.png")
    for key in ("spatial-size", "num-slices"):  # the model knows them: given, they must agree
        p.add_argument(f"--{key}", type=int, nargs="+" if key == "spatial-size" else None, default=None,
                       help=argparse.SUPPRESS)


def run_predict(args: argparse.Namespace) -> int:
    from hemwsl.errors import HemwslInputError
    from hemwsl.predict import ModelPackage, Predictor

    if args.batch_size < 1:
        raise HemwslInputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.members is not None and not args.members:
        raise HemwslInputError("--members: give the fold numbers to use (e.g. --members 0 1), or leave the option out "
                               "to use the whole ensemble")
    from hemwsl.predict_unet import SEG_MODEL_KIND, SegmentationPredictor, package_kind

    from hemwsl.predict import check_inputs, resolve_device

    from hemwsl.data.datalist import resolve_dataset_dir

    for path in args.input:
        resolve_dataset_dir(path, "--input")  # a symlink loop is named as one
        if not Path(path).exists():
            raise HemwslInputError(f"{path}: input not found")
    resolve_device(args.device, "--device")
    if package_kind(args.model) == SEG_MODEL_KIND:
        check_inputs(args.input, args.out)  # every scan before the first is predicted
        seg = SegmentationPredictor(args.model, members=args.members, device=args.device)
        seg.package.check_settings(spatial_size=args.spatial_size)
        for path in args.input:
            rep = seg.predict(path, args.out, overwrite=args.overwrite, figures=not args.no_figures)
            v = rep["volume"]
            print(f"{rep['stem']}: U-Net volume {v['ml']:.1f} mL (members {v['members_min_ml']:.1f}-"
                  f"{v['members_max_ml']:.1f}), ABC/2 {v['abc2_ml']:.1f} mL; {rep['seconds']:.1f} s -> "
                  f"{Path(args.out) / rep['stem']}", flush=True)
        return 0
    pkg = ModelPackage.load(args.model)
    pkg.check_settings(spatial_size=args.spatial_size, num_slices=args.num_slices)
    check_inputs(args.input, args.out)  # every scan before the first is predicted
    predictor = Predictor(pkg, members=args.members, device=args.device, batch_size=args.batch_size)
    for path in args.input:
        rep = predictor.predict(path, args.out, overwrite=args.overwrite, figures=not args.no_figures)
        v, sc = rep["volume"], rep["scan"]
        call = "HEMORRHAGE" if sc["positive"] else "no hemorrhage"
        print(f"{rep['stem']}: {call} (max slice p {sc['max_slice_probability']:.2f}, "
              f"{len(rep['slices']['positive'])} positive slices); volume {v['ml']:.1f} mL "
              f"(members {v['members_min_ml']:.1f}-{v['members_max_ml']:.1f}), ABC/2 {v['abc2_ml']:.1f} mL; "
              f"{rep['seconds']:.1f} s -> {Path(args.out) / rep['stem']}", flush=True)
    return 0
