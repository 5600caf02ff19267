"""``hemwsl train-cv``: train and evaluate the classifier bundle on every fold, then summarise.

Each fold runs ``bundles/ich_classifier`` train then evaluate (a fold whose ``report_test.json``
exists is skipped, so an interrupted run resumes); the summary table goes to ``cv_summary.md``.

``--set eval_checkpoint=last`` evaluates each fold's ``models/model_last.pt`` (the weights at the end of
training, EMA weights when trained with ``ema_decay > 0``) instead of the best-validation ``model.pt``:
folds already trained are only evaluated, the reports are ``report_test_last.json`` and the summary
``cv_summary_last.md``, beside those of the best checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from hemwsl.errors import input_error_message

__all__ = ["run_train_cv", "run_cv_fold", "parse_overrides", "check_override_keys", "check_cache_dir"]


def parse_overrides(pairs: list[str]) -> dict:
    """``["backbone=resnet18", "spatial_size=[256,256]"]`` -> dict; values parsed as JSON when possible."""
    from hemwsl.errors import HemwslInputError

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise HemwslInputError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def check_override_keys(overrides: dict, bundle: str, configs: tuple[str, ...] = ("train", "evaluate"),
                        option: str = "--set") -> None:
    """Every ``--set`` key must be an id of the bundle's configs (``a#b`` paths: their first part); an unknown one,
    e.g. a misspelt ``learning_rat``, is one line naming the closest valid ids instead of a silently ignored
    setting. ``option``: the command-line option named in the message."""
    import difflib

    import yaml

    from hemwsl.engines.bundle import config_files
    from hemwsl.errors import HemwslInputError

    known: set[str] = set()
    for f in config_files(bundle, [c for c in configs]):
        text = Path(f).read_text()
        known |= set((json.loads(text) if f.endswith(".json") else yaml.safe_load(text)) or {})
    known |= {"eval_checkpoint"}
    for key in overrides:
        root = str(key).split("#")[0]
        if root not in known:
            close = difflib.get_close_matches(root, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise HemwslInputError(f"{option} {key}: not a setting of bundle {bundle}{hint}")


def run_cv_fold(bundle: str, fold_dir: Path, fold: int, done_file: str, **overrides) -> bool:
    """:func:`hemwsl.engines.bundle.train_evaluate_fold` for a cross-validation loop: ``True`` when this call
    ran the fold; a finished fold, or one another live process holds (:class:`FoldBusyError`), is reported and
    skipped (``False``)."""
    from hemwsl.engines.bundle import FoldBusyError, train_evaluate_fold

    try:
        ran = train_evaluate_fold(bundle, fold_dir, fold, done_file, **overrides)
    except FoldBusyError as err:
        print(f"fold {fold}: skipped, {err}", flush=True)
        return False
    if not ran:
        print(f"fold {fold}: done, skipped")
    return ran


CV_RUN = "cv_run.json"


def check_cv_run(out: str | Path, record: dict, command: str = "train-cv", file: str = CV_RUN) -> None:
    """Refuse to resume a cross-validation folder with other settings: folds, bundle, dataset or any ``--set``
    value (a resumed run would mix folds of two recipes, or skip them as done). The record is ``<out>/<file>``;
    ``train-cv`` folders of earlier versions, with only ``cv_settings.json``, are checked on the settings alone."""
    from hemwsl.errors import HemwslInputError

    root = Path(out)
    f = root / file
    if f.is_file():
        old = json.loads(f.read_text())
    elif file == CV_RUN and (root / "cv_settings.json").is_file():
        old = {"settings": json.loads((root / "cv_settings.json").read_text())}
        record = {"settings": record["settings"]}
    else:
        return
    from hemwsl.data.io import record_diff

    diffs = record_diff(old, record)
    if diffs:
        raise HemwslInputError(f"{root}: holds a {command} run with other settings ({'; '.join(diffs)}); "
                               "use another --out (or remove the folder to start over)")


def check_cache_dir(cache_dir: str | Path | None) -> None:
    """``--cache-dir`` must be a folder (or not exist yet): a regular file there is one line, before any work."""
    from hemwsl.errors import HemwslInputError

    if cache_dir and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise HemwslInputError(f"{cache_dir}: a file is where a folder must be (--cache-dir)")


def run_train_cv(args: argparse.Namespace) -> int:
    from hemwsl.engines.classifier import cv_summary_stem, report_name, summarize_cv

    from hemwsl.errors import HemwslInputError

    if args.folds < 2:
        raise HemwslInputError(f"--folds must be >= 2 (each fold tests on patients the others train on), got {args.folds}")
    bad = [k for k in (args.only or []) if not 0 <= k < args.folds]
    if bad:
        raise HemwslInputError(f"--only: fold(s) {bad} not in [0, {args.folds - 1}]")
    overrides = parse_overrides(args.set)
    check_override_keys(overrides, args.bundle)
    from hemwsl.engines.bundle import bundle_dir

    if bundle_dir(args.bundle).name == "ich_classifier":  # the settings' values, before any volume is read
        from hemwsl.engines.classifier import TRAIN_SETTINGS, check_train_settings

        check_train_settings(**{k: v for k, v in overrides.items() if k in TRAIN_SETTINGS})
    from hemwsl.engines.bundle import check_bundle_settings

    check_bundle_settings(args.bundle, overrides)  # the bundle's own first check (network_options...), before any file
    check_cache_dir(getattr(args, "cache_dir", None))

    # the settings later steps (cam-cv, benchmark) need to rebuild the same networks and inputs
    # (which checkpoint is evaluated is no training setting: left out)
    which = overrides.get("eval_checkpoint", "best")
    test_name = report_name("test", which)
    settings = {k: v for k, v in overrides.items() if k != "eval_checkpoint"}
    from hemwsl.data.datalist import resolve_dataset_dir

    record = {"bundle": str(args.bundle), "folds": int(args.folds),
              "dataset_dir": str(resolve_dataset_dir(args.dataset_dir)),
              "settings": settings}
    check_cv_run(args.out, record)
    out = Path(args.out)
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.io import check_volumes

    # every volume read in full once before the first fold trains (cached by size and time in the run folder)
    datalist = build_datalist(overrides.get("layout", "ct-ich"), args.dataset_dir)
    _check_both_classes(datalist, args.dataset_dir)
    before = set(out.iterdir()) if out.is_dir() else None
    check_volumes(datalist, cache=out / ".volumes_checked.json")
    try:
        _train_folds(args, overrides, settings, record, test_name)
    except Exception as err:
        # bad settings found by a bundle component (unknown backbone, window, size...): remove what this call
        # wrote, so no half-made run folder is left behind; a run with a trained fold is never touched
        trained = [*out.glob("fold*/report_*.json"), *out.glob("fold*/.trained"), *out.glob("fold*/models/*.pt")]
        if input_error_message(err) is not None and not trained:
            if before is None:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for path in set(out.iterdir()) - before:
                    if path.is_dir():
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        path.unlink(missing_ok=True)
        raise
    if all((Path(args.out) / f"fold{k}" / f"report_{test_name}.json").exists() for k in range(args.folds)):
        summarize_cv(args.out, args.folds, name=test_name)
        print((Path(args.out) / f"{cv_summary_stem(test_name)}.md").read_text())
    return 0


def _check_both_classes(datalist: list[dict], where) -> None:
    """A slice classifier learns from slices with and without hemorrhage: refuse a dataset with one kind only
    (its AUROC and thresholds would be undefined: a table of nan)."""
    from hemwsl.constants import SLICE_LABELS
    from hemwsl.errors import HemwslInputError

    labels = [int(v) for e in datalist for v in (e.get(SLICE_LABELS) or [])]
    if not labels:
        raise HemwslInputError(f"{where}: no slice labels (masks or a labels CSV) to train a classifier on")
    n_pos = sum(labels)
    if n_pos == 0 or n_pos == len(labels):
        which = "none" if n_pos == 0 else "all"
        raise HemwslInputError(f"{where}: {which} of the {len(labels)} slices of {len(datalist)} patients show "
                               "hemorrhage; a classifier needs slices with and without it")


def _train_folds(args: argparse.Namespace, overrides: dict, settings: dict, record: dict, test_name: str) -> None:
    from hemwsl.data.io import atomic_write_text

    atomic_write_text(Path(args.out) / "cv_settings.json", json.dumps(settings, indent=1) + "\n")
    atomic_write_text(Path(args.out) / CV_RUN, json.dumps(record, indent=1) + "\n")
    overrides.update({"dataset_dir": args.dataset_dir, "output_dir": args.out, "n_folds": args.folds})
    if args.cache_dir:
        from hemwsl.data.datalist import build_datalist
        from hemwsl.data.dataset import warm_disk_cache

        overrides["cache_dir"] = args.cache_dir
        datalist = build_datalist(overrides.get("layout", "ct-ich"), args.dataset_dir)
        n = warm_disk_cache(datalist, args.cache_dir, spatial_size=overrides.get("spatial_size", [256, 256]),
                            skull_strip=bool(overrides.get("skull_strip", False)), workers=args.cache_procs)
        print(f"disk cache: {n} volumes preprocessed in {args.cache_dir}", flush=True)
    folds = args.only or list(range(args.folds))
    for k in folds:
        fold_dir = Path(args.out) / f"fold{k}"
        if not run_cv_fold(args.bundle, fold_dir, k, f"report_{test_name}.json", **overrides):
            continue
        rep = json.loads((fold_dir / f"report_{test_name}.json").read_text())["any"]
        print(f"fold {k}: {test_name} AUROC {rep['auroc']:.3f} AP {rep['ap']:.3f}", flush=True)
