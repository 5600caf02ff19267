"""The ``hemwsl`` command line.

Subcommands are registered once in :data:`COMMANDS`; each names the module that implements it, which
is imported only when that subcommand runs (torch and MONAI are heavy to import).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hemwsl.errors import input_error_message

__all__ = ["COMMANDS", "Command", "StoreOnce", "build_parser", "main", "refuse_repeats"]


@dataclass(frozen=True)
class Command:
    """A subcommand: ``run_<name>(args) -> int`` lives in ``module``; ``add_arguments(parser)`` is a function, or
    the name of one in ``module`` (imported when the parser is built: keep such modules light at the top)."""

    name: str
    help: str
    module: str
    add_arguments: Callable[[argparse.ArgumentParser], None] | str


def _refuse_repeat(action: argparse.Action, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                   values) -> None:
    """Exit with status 2 and one line if ``action`` already ran in this parse (``namespace``: a new one per parse)."""
    if getattr(action, "_once_namespace", None) is namespace:
        name = "/".join(action.option_strings) or action.dest
        what = "a flag" if action.nargs == 0 else f"{getattr(namespace, action.dest)!r}, then {values!r}"
        parser.exit(2, f"{parser.prog}: error: argument {name}: given more than once ({what}); give it once\n")
    action._once_namespace = namespace


class StoreOnce(argparse.Action):
    """``store`` that refuses the option given twice (argparse keeps the last value silently: ``--folds 2 --folds 3``
    would make 3 folds without a word, ``--hu-reference 37 --hu-reference 40`` calibrate to 40): one line
    ``<prog>: error: argument <option>: given more than once ...``, exit status 2."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        _refuse_repeat(self, parser, namespace, values)
        setattr(namespace, self.dest, values)


class _OnceMixin:
    """Mixed into argparse's store-type actions by :func:`refuse_repeats`: a second occurrence exits as
    :class:`StoreOnce` does."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        _refuse_repeat(self, parser, namespace, values)
        super().__call__(parser, namespace, values, option_string)


_ONCE_CLASSES: dict[type, type] = {}
# the actions that set one value: a repeat silently wins; append/extend (meant to repeat), count (-v -v), help and
# version are left alone
_STORE_CLASSES = (argparse._StoreAction, argparse._StoreConstAction, argparse.BooleanOptionalAction)


def refuse_repeats(parser: argparse.ArgumentParser) -> None:
    """Make every store-type option of ``parser`` (store, store with nargs, store_true/false/const) refuse a
    second occurrence in one command line, as :class:`StoreOnce` does."""
    for action in parser._actions:
        cls = type(action)
        if not action.option_strings or isinstance(action, (StoreOnce, _OnceMixin)) \
                or not isinstance(action, _STORE_CLASSES):
            continue
        if cls not in _ONCE_CLASSES:
            _ONCE_CLASSES[cls] = type(f"Once{cls.__name__.lstrip('_')}", (_OnceMixin, cls), {})
        action.__class__ = _ONCE_CLASSES[cls]


def _add_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    p.add_argument("--patients", type=int, default=16, help="number of synthetic patients (default: 16)")
    p.add_argument("--size", type=int, default=128, help="in-plane size of the phantoms (default: 128)")
    p.add_argument("--epochs", type=int, default=6, help="classifier epochs (default: 6)")
    p.add_argument("--seed", type=int, default=0)


def _add_synth(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="folder to write the phantoms to (CT-ICH layout)")
    p.add_argument("--patients", type=int, default=12, help="number of patients (default: 12)")
    p.add_argument("--size", type=int, default=128, help="in-plane size in voxels (default: 128)")
    p.add_argument("--slices", type=int, default=24, help="slices per volume (default: 24)")
    p.add_argument("--negative-fraction", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)


def _add_datalist(p: argparse.ArgumentParser) -> None:
    p.add_argument("--layout", required=True, help="dataset layout: ct-ich or generic")
    p.add_argument("--root", required=True, help="dataset root (ct-ich) or image folder (generic)")
    p.add_argument("--labels", default=None, help="generic layout: folder of label NIfTI files")
    p.add_argument("--slice-csv", default=None, help="generic layout: optional slice-label CSV")
    p.add_argument("--out", required=True, help="datalist JSON to write")


def _add_split(p: argparse.ArgumentParser) -> None:
    p.add_argument("--datalist", required=True, help="datalist JSON (from `hemwsl datalist`)")
    p.add_argument("--out", required=True, help="split JSON to write")
    p.add_argument("--folds", type=int, default=0,
                   help="k for patient-level k-fold (0: one train/val/test split)")
    p.add_argument("--fractions", type=float, nargs=3, default=None, metavar=("TRAIN", "VAL", "TEST"),
                   help="one train/val/test split (default 0.7 0.15 0.15); not with --folds")
    p.add_argument("--seed", type=int, default=0)


def _add_train_cv(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset-dir", required=True, help="dataset root (CT-ICH layout unless --set layout=generic)")
    p.add_argument("--out", required=True, help="output folder (fold<k>/ subfolders, cv_summary.md)")
    p.add_argument("--folds", type=int, default=5, help="number of patient-level folds (default: 5)")
    p.add_argument("--only", type=int, nargs="*", help="run only these folds")
    p.add_argument("--bundle", default="ich_classifier", help="bundle name or folder (default: ich_classifier)")
    p.add_argument("--cache-dir", default=None, help="disk cache of preprocessed volumes, filled first, shared by folds")
    p.add_argument("--cache-procs", type=int, default=2, help="processes filling the disk cache (default: 2)")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides, e.g. backbone=efficientnet_v2_s 'spatial_size=[512,512]' epochs=30")


COMMANDS: dict[str, Command] = {
    c.name: c
    for c in (
        Command("demo", "run the whole pipeline on built-in synthetic phantoms", "hemwsl.commands.demo", _add_demo),
        Command("synth", "write synthetic head-CT phantoms in the CT-ICH layout", "hemwsl.commands.data", _add_synth),
        Command("datalist", "build a datalist JSON from a dataset folder", "hemwsl.commands.data", _add_datalist),
        Command("split", "patient-level train/val/test split or k-fold, as JSON", "hemwsl.commands.data", _add_split),
        Command("train-cv", "train + evaluate the classifier bundle on every fold, then summarise",
                "hemwsl.commands.classifier", _add_train_cv),
        Command("cam-cv", "heatmaps of every fold's test patients from that fold's classifier (out of fold)",
                "hemwsl.commands.benchmark", "add_cam_cv_arguments"),
        Command("cam-ensemble", "the mean of several cam-cv folders' heatmaps (e.g. seeds of one recipe), same folds",
                "hemwsl.commands.benchmark", "add_cam_ensemble_arguments"),
        Command("slice-context", "slice context for a train-cv run: each scan's slice logits smoothed along z, "
                "the width chosen per fold on its selection patients", "hemwsl.commands.context",
                "add_slice_context_arguments"),
        Command("pseudo", "pseudo-label volumes from CAM heatmaps (threshold, K-means, differential prediction)",
                "hemwsl.commands.pseudo", "add_pseudo_arguments"),
        Command("self-train", "fine-tune an LSE heatmap network on the confident pixels of its own validated recipe",
                "hemwsl.commands.selftrain", "add_self_train_arguments"),
        Command("seg-cv", "train + evaluate the 3D U-Net bundle (pseudo-labels or true masks) on every fold",
                "hemwsl.commands.segmentation", "add_seg_cv_arguments"),
        Command("trust",
                "faithfulness, region importance and statistics of the explanations (Schulze-Weddige et al. 2025)",
                "hemwsl.commands.trust", "add_trust_arguments"),
        Command("ablation",
                "Ramananda & Sundaresan 2023's ablation: pseudo-labels, U-Nets on them and on true masks, paired tests",
                "hemwsl.commands.pipeline", "add_ablation_arguments"),
        Command("pipeline", "train-cv -> cam-cv -> benchmark -> ablation on a dataset with masks, resumable",
                "hemwsl.commands.pipeline", "add_pipeline_arguments"),
        Command("benchmark", "score CAM heatmaps against masks: thresholds, metrics, CIs, paired tests, figures",
                "hemwsl.commands.benchmark", "add_benchmark_arguments"),
        Command("subtypes", "Chen & Kuo 2026's Algorithm 1: subtype masks of a six-output heatmap network, out of fold",
                "hemwsl.commands.subtypes", "add_subtypes_arguments"),
        Command("package", "pack a train-cv run (settings, weights, validated mask recipe) into one model folder",
                "hemwsl.commands.predict", "add_package_arguments"),
        Command("predict", "one CT (NIfTI or DICOM) in: slice probabilities, heatmap, mask, mL, report (DICOM SEG)",
                "hemwsl.commands.predict", "add_predict_arguments"),
        Command("quantify", "scan-level call and hemorrhage volume (mL) of every patient out of fold vs the truth",
                "hemwsl.commands.quantify", "add_quantify_arguments"),
    )
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hemwsl",
        description="Weakly supervised localisation of intracranial hemorrhage on head CT (MONAI-based).",
    )
    loud = parser.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="count", default=0,
                      help="every library's INFO lines on the console too (-vv: DEBUG); they always go to "
                           "<out>/hemwsl.log")
    loud.add_argument("-q", "--quiet", action="store_true", help="only results, warnings and errors on the console")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        add = cmd.add_arguments
        if isinstance(add, str):
            add = getattr(importlib.import_module(cmd.module), add)
        add(p)
        refuse_repeats(p)  # every option of a subcommand once: argparse would keep the last value silently
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from hemwsl.logs import setup_logging

    out = getattr(args, "out", None)
    setup_logging(-1 if args.quiet else int(args.verbose), out if isinstance(out, str) and out else None)
    if args.command is None:
        parser.print_help()
        return 2
    cmd = COMMANDS[args.command]
    module = importlib.import_module(cmd.module)
    try:
        return int(getattr(module, "run_" + cmd.name.replace("-", "_"))(args) or 0)
    except Exception as err:  # a HemwslInputError, also when MONAI wrapped it while running a bundle component
        message = input_error_message(err)  # one line, whatever the message holds
        if message is None and isinstance(err, (FileExistsError, NotADirectoryError)) and err.filename:
            message = f"{err.filename}: a file is where a folder must be (give another output path)"
        elif message is None and isinstance(err, PermissionError) and err.filename:
            message = f"{err.filename}: permission denied"
        elif message is None and isinstance(err, OSError) and err.filename:  # e.g. a symlink loop or a folder that
            # cannot be made (/proc/x) on the way to an output file
            message = " ".join(f"{err.filename}: {err.strerror or err}".split())
        if message is None:
            raise
        print(f"hemwsl {cmd.name}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
