"""``hemwsl trust``: faithfulness, region importance and statistics of the explanations of a classifier.

With ``--model`` containing ``{fold}`` (e.g. ``outputs/cv/fold{fold}/models/model.pt``) every patient is
explained by the fold model whose test part holds it (:func:`hemwsl.engines.classifier.fold_datalists`
with ``--folds``, ``--fold-seed`` and ``--val-fraction`` as in training); otherwise one model explains
every patient. Results go to ``--out`` (see :mod:`hemwsl.trust.report`); an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

__all__ = ["add_trust_arguments", "run_trust"]


def add_trust_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``hemwsl trust``."""
    g = p.add_argument_group("data and model")
    g.add_argument("--dataset-dir", default=None, help="dataset root (CT-ICH layout unless --layout)")
    g.add_argument("--layout", default="ct-ich", help="dataset layout (default: ct-ich)")
    g.add_argument("--datalist", default=None, help="datalist JSON instead of --dataset-dir")
    g.add_argument("--patients", nargs="*", default=None, help="only these patients")
    g.add_argument("--out", required=True, help="report folder")
    g.add_argument("--model", required=True, help="checkpoint; '{fold}' in the path selects each patient's fold model")
    from hemwsl.commands.benchmark import add_run_settings_argument

    add_run_settings_argument(g)
    g.add_argument("--folds", type=int, default=None, help="folds of the cross-validation (default: --cv-dir's, else 5)")
    g.add_argument("--fold-seed", type=int, default=None, help="seed of the fold split (default: --cv-dir's, else 0)")
    g.add_argument("--val-fraction", type=float, default=None, help="validation fraction (default: --cv-dir's, else 0.15)")
    g.add_argument("--backbone", default=None, help="network name (default: --cv-dir's, else resnet18)")
    g.add_argument("--num-classes", type=int, default=None, help="logits of the classifier (default: --cv-dir's, else 1)")
    g.add_argument("--windows", nargs="+", default=None, help="CT windows (default: --cv-dir's, else brain subdural blood)")
    g.add_argument("--num-slices", type=int, default=None, help="2.5D slices per window (default: --cv-dir's, else 3)")
    g.add_argument("--spatial-size", type=int, nargs=2, default=None, help="in-plane input size (default: --cv-dir's, else 256 256)")
    g.add_argument("--skull-strip", action="store_true", default=None,
                   help="the classifier was trained on skull-stripped CT (default: --cv-dir's, else no)")
    g.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    g.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    e = p.add_argument_group("explanations")
    e.add_argument("--methods", nargs="+", default=["all"],
                   help="registry names, or 'all' (default) / 'cam' (layer-wise) / 'attribution' (input)")
    e.add_argument("--exclude", nargs="*", default=[], help="methods to leave out (e.g. scorecam)")
    e.add_argument("--layers", nargs="*", default=None, help="target layers (default: the network's registered ones)")
    e.add_argument("--method-options", default=None,
                   help='JSON {method: {option: value}}, e.g. \'{"smoothgrad": {"n_samples": 16}}\'')
    e.add_argument("--batch-size", type=int, default=8, help="slices per engine call (default: 8)")
    m = p.add_argument_group("measures")
    m.add_argument("--slices", choices=("positive", "all"), default="positive", help="slices to explain")
    m.add_argument("--patch-size", type=int, default=8, help="patch side in input pixels (default: 8)")
    m.add_argument("--subsets", type=int, default=64, help="random patch subsets per slice (default: 64)")
    m.add_argument("--subset-fraction", type=float, default=0.1, help="fraction of patches per subset (default: 0.1)")
    m.add_argument("--baseline", choices=("zero", "mean", "blur"), default="zero", help="faithfulness baseline")
    m.add_argument("--blur-sigma", type=float, default=4.0, help="sigma of the blur baseline in pixels")
    m.add_argument("--similarity", choices=("pearson", "spearman"), default="pearson")
    m.add_argument("--score", choices=("probability", "logit"), default="probability")
    m.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (0: no curves; default 16)")
    m.add_argument("--deletion-baseline", choices=("zero", "mean", "blur"), default="zero")
    m.add_argument("--insertion-baseline", choices=("zero", "mean", "blur"), default="blur")
    m.add_argument("--curve-layers", nargs="*", default=None,
                   help="layers whose maps get curves ('input' = attribution methods; default: all)")
    m.add_argument("--curve-slices", type=int, default=None,
                   help="curves on the N largest-lesion slices per patient (default: all)")
    m.add_argument("--max-slices", type=int, default=None,
                   help="explain at most N slices per patient, the largest lesions (default: all)")
    m.add_argument("--ring-mm", type=float, default=5.0, help="perihematomal ring width in mm (default: 5)")
    m.add_argument("--perturbation-batch", type=int, default=64, help="perturbed images per forward")
    m.add_argument("--groups", nargs="*", default=["volume"],
                   help="group comparisons: 'volume' and/or subtype names (default: volume)")
    m.add_argument("--seed", type=int, default=0, help="seed of the random subsets")


def _methods(names: list[str], exclude: list[str]) -> list[str]:
    from hemwsl.cam import list_methods

    out: list[str] = []
    for n in names:
        if n == "all":
            out += list_methods()
        elif n == "cam":
            out += list_methods(layerwise=True)
        elif n == "attribution":
            out += list_methods(layerwise=False)
        else:
            out.append(n)
    return [m for m in dict.fromkeys(out) if m not in set(exclude)]


def run_trust(args: argparse.Namespace) -> int:
    import torch

    from hemwsl.constants import PATIENT, SUBTYPES
    from hemwsl.data.datalist import build_datalist, load_datalist
    from hemwsl.engines.cam import check_cam_request
    from hemwsl.engines.classifier import fold_datalists, load_weights
    from hemwsl.errors import HemwslInputError, check_choice
    from hemwsl.networks import build_network
    from hemwsl.trust.report import TrustConfig, check_method_options, check_trust_config, run_trust_report

    from hemwsl.commands.benchmark import apply_run_settings

    apply_run_settings(args)
    if args.steps is not None and args.steps < 0:  # the option's own name (TrustConfig names its field n_steps)
        raise HemwslInputError(f"--steps must be an int >= 0 (0: no curves), got {args.steps}")
    # every option before any work or file (trust_run.json records them; a rerun with others is refused)
    config = TrustConfig(
        patch_size=args.patch_size, n_subsets=args.subsets, subset_fraction=args.subset_fraction,
        baseline=args.baseline, blur_sigma=args.blur_sigma, similarity=args.similarity, score=args.score,
        n_steps=args.steps, deletion_baseline=args.deletion_baseline, insertion_baseline=args.insertion_baseline,
        curve_layers=args.curve_layers, curve_slices=args.curve_slices, max_slices=args.max_slices,
        ring_mm=args.ring_mm,
        slices=args.slices, seed=args.seed,
    )
    check_trust_config(config)
    if isinstance(args.seed, bool) or not 0 <= args.seed < 2 ** 32:  # as train-cv's seed
        raise HemwslInputError(f"--seed must be in [0, 2**32), got {args.seed}")
    size = [int(v) for v in args.spatial_size] if args.spatial_size else []
    if size and args.patch_size > min(size):
        raise HemwslInputError(f"--patch-size {args.patch_size} is larger than the classifier's input "
                               f"({' x '.join(map(str, size))} pixels, spatial_size): no patch would fit; give at most "
                               f"{min(size)}")
    methods = _methods(args.methods, args.exclude)
    if not methods and args.exclude and _methods(args.methods, []):
        raise HemwslInputError(f"--exclude {' '.join(args.exclude)} leaves none of --methods "
                               f"{' '.join(args.methods)}; exclude fewer methods")
    check_cam_request(methods)
    if args.curve_layers:  # a layer name that no map has would give no curve without a word
        from hemwsl.networks.registry import target_layer_names

        valid = list(args.layers or target_layer_names(args.backbone)) + ["input"]
        unknown = [n for n in args.curve_layers if n not in valid]
        if unknown:
            raise HemwslInputError(f"--curve-layers: unknown layer(s) {', '.join(unknown)}; the explained layers are "
                                   f"{', '.join(valid)} ('input': the attribution methods' maps)")
    options = None
    if args.method_options:
        try:
            options = json.loads(args.method_options)
        except json.JSONDecodeError as err:
            raise HemwslInputError(f"--method-options {args.method_options!r}: not valid JSON ({err}); give "
                                   '{"method": {"option": value}}') from None
    check_method_options(methods, options, name="--method-options")
    for g in args.groups:
        check_choice("--groups value", g, ("volume", *SUBTYPES))
    for option, value in (("--batch-size", args.batch_size), ("--perturbation-batch", args.perturbation_batch)):
        if value < 1:
            raise HemwslInputError(f"{option} must be >= 1, got {value}")
    if args.threads < 0:
        raise HemwslInputError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    others = sorted(set(re.findall(r"\{[^{}]*\}", args.model)) - {"{fold}"})
    if others:
        raise HemwslInputError(f"--model {args.model}: only the {{fold}} placeholder is replaced (by each fold's "
                               f"number), found {', '.join(others)}")
    from hemwsl.predict import resolve_device

    device = resolve_device(args.device, "--device")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.datalist:
        datalist = load_datalist(args.datalist)
    elif args.dataset_dir:
        datalist = build_datalist(args.layout, args.dataset_dir)
    else:
        raise HemwslInputError("give --dataset-dir or --datalist")
    if args.patients:
        known = {str(e[PATIENT]) for e in datalist}
        unknown = [p for p in dict.fromkeys(map(str, args.patients)) if p not in known]
        if unknown:
            where = args.datalist or args.dataset_dir
            raise HemwslInputError(f"--patients: {', '.join(unknown)} not in {where} (its patients: "
                                   f"{', '.join(sorted(known)[:10])}{', ...' if len(known) > 10 else ''})")
    in_channels = len(args.windows) * args.num_slices
    if getattr(args, "cv_dir", None) and "{fold}" not in args.model:
        from hemwsl.data.datalist import resolve_dataset_dir

        run = resolve_dataset_dir(args.cv_dir, "--cv-dir")
        if run in resolve_dataset_dir(args.model, "--model").parents:
            raise HemwslInputError(f"--model {args.model}: one fold's weights of the --cv-dir run would explain the "
                                   "patients it trained on; give --model with {fold} (e.g. "
                                   f"{Path(args.cv_dir) / 'fold{fold}' / 'models' / 'model.pt'})")

    def load(path: str) -> torch.nn.Module:
        net = build_network(args.backbone, in_channels=in_channels, num_classes=args.num_classes)
        return load_weights(net, path, device=device)

    if "{fold}" in args.model:
        owner: dict[str, int] = {}
        for k in range(args.folds):
            parts = fold_datalists(datalist, n_folds=args.folds, fold=k, seed=args.fold_seed,
                                   val_fraction=args.val_fraction)
            for e in parts["test"]:
                owner[str(e[PATIENT])] = k
        nets: dict[int, torch.nn.Module] = {}

        def network_for(entry):
            k = owner.get(str(entry[PATIENT]))
            if k is None:
                raise HemwslInputError(f"patient {entry[PATIENT]} is in no fold's test part")
            if k not in nets:
                nets[k] = load(args.model.replace("{fold}", str(k)))
            return f"fold{k}", nets[k]
    else:
        net = load(args.model)

        def network_for(entry):
            return "model", net

    if args.patients:
        wanted = set(map(str, args.patients))
        datalist = [e for e in datalist if str(e[PATIENT]) in wanted]
    for entry in datalist:  # every model's weights before the folder records the run (trust_run.json): a refused
        network_for(entry)  # run must leave nothing that blocks the corrected rerun
    from hemwsl.data.io import file_sha1

    if "{fold}" in args.model:
        files = [args.model.replace("{fold}", str(k)) for k in range(args.folds)]
    else:
        files = [args.model]
    models = {"model": args.model, "backbone": args.backbone, "num_classes": args.num_classes,
              "checkpoints": {f: file_sha1(f) for f in files}}
    paths = run_trust_report(
        datalist, args.out, network_for, methods, layers=args.layers or None, config=config,
        windows=args.windows, num_slices=args.num_slices, spatial_size=args.spatial_size,
        skull_strip=args.skull_strip, batch_size=args.batch_size, perturbation_batch=args.perturbation_batch,
        method_options=options, groups=args.groups, models=models,
    )
    print(f"trust report: {paths['summary']}")
    return 0
