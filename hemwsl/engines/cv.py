"""Cross-validation runs as library code: :func:`train_cv` trains and evaluates a bundle on every fold of a
patient-level split (``hemwsl train-cv``) and :func:`cam_cv` explains every fold's held-out patients with that
fold's model (``hemwsl cam-cv``). Both check every setting and input before the first costly step, resume where
they stopped, and refuse a folder made with other settings. The commands parse arguments and call them; so do
``hemwsl pipeline`` and ``hemwsl self-train``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hemwsl.engines.runs import (
    SETTINGS,
    check_checkpoint_marker,
    check_dataset_matches_run,
    check_outside_run,
    cv_settings,
    fold_checkpoint,
    resolve_cv_folds,
)
from hemwsl.errors import input_error_message

__all__ = ["CAM_CV_METHODS", "CV_RUN", "train_cv", "cam_cv", "run_cv_fold", "parse_overrides", "check_override_keys",
           "check_train_overrides", "check_cv_run", "check_cache_dir"]

#: The methods ``cam_cv`` runs by default (``hemwsl cam-cv --methods``).
CAM_CV_METHODS: tuple[str, ...] = ("gradcam", "gradcampp", "xgradcam", "hirescam", "layercam", "eigencam", "ablationcam")


def parse_overrides(pairs: list[str]) -> dict:
    """``["backbone=resnet18", "spatial_size=[256,256]"]`` -> dict; values parsed as JSON when possible."""
    from hemwsl.errors import HemwslInputError

    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise HemwslInputError(f"--set expects KEY=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        if key in out:  # the last value would win without a word
            raise HemwslInputError(f"--set {key}: given more than once ({key}={json.dumps(out[key])}, then {pair}); "
                                   "give each setting once")
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

    config: dict = {}
    for f in config_files(bundle, [c for c in configs]):
        text = Path(f).read_text()
        config.update((json.loads(text) if f.endswith(".json") else yaml.safe_load(text)) or {})
    known = set(config) | {"eval_checkpoint"}
    for key in overrides:
        root = str(key).split("#")[0]
        if root not in known:
            close = difflib.get_close_matches(root, sorted(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise HemwslInputError(f"{option} {key}: not a setting of bundle {bundle}{hint}")
        _check_override_path(str(key), config, option)


def _check_override_path(key: str, config: dict, option: str) -> None:
    """An ``a#b#c`` key sets entry ``c`` of the mapping (or list) at ``a#b``, as MONAI's ``ConfigParser`` does: every
    part but the last must be an entry of a mapping or an index of a list, and the last one's parent a mapping or a
    list (with the index in range). Anything else (``epochs#x``: a number has no entries) is one line naming the
    key, not a ``ValueError`` of MONAI's."""
    from hemwsl.errors import HemwslInputError

    parts = key.split("#")
    node: Any = config.get(parts[0])
    for i, part in enumerate(parts[1:], 1):
        where = "#".join(parts[:i])
        last = i == len(parts) - 1
        if isinstance(node, dict):
            if last:
                return
            if part not in node:
                raise HemwslInputError(f"{option} {key}: {where} has no entry {part!r}")
            node = node[part]
        elif isinstance(node, list):
            if not part.lstrip("-").isdigit() or not -len(node) <= int(part) < len(node):
                raise HemwslInputError(f"{option} {key}: {where} is a list of {len(node)}; {part!r} is not an index "
                                       "of it")
            node = node[int(part)]
        else:
            raise HemwslInputError(f"{option} {key}: {where} is {json.dumps(node, default=str)}, not a mapping or a "
                                   f"list; it has no entry {part!r}")


def check_train_overrides(overrides: Mapping[str, Any], bundle: str = "ich_classifier", option: str = "--set") -> None:
    """The bundle settings of a training run, before anything is read or written (:func:`train_cv` and the commands
    that end in one, e.g. ``hemwsl self-train``, before their own costly steps): every key a setting of the bundle
    (:func:`check_override_keys`), the classifier's training settings (``check_train_settings``) and the bundle's
    own first check (``network_options``...)."""
    from hemwsl.engines.bundle import bundle_dir, check_bundle_settings

    overrides = dict(overrides)
    check_override_keys(overrides, bundle, option=option)
    if bundle_dir(bundle).name == "ich_classifier":  # the settings' values, before any volume is read
        from hemwsl.engines.classifier import TRAIN_SETTINGS, check_train_settings

        check_train_settings(**{k: v for k, v in overrides.items() if k in TRAIN_SETTINGS})
    check_bundle_settings(bundle, overrides)


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
    from hemwsl.data.io import read_json_file
    from hemwsl.errors import HemwslInputError

    root = Path(out)
    f = root / file
    if f.exists() or f.is_symlink():
        old = read_json_file(f, f"{command} run record")
    elif file == CV_RUN and ((root / SETTINGS).exists() or (root / SETTINGS).is_symlink()):
        old = {"settings": read_json_file(root / SETTINGS, f"{command} settings record")}
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


def train_cv(dataset_dir: str | os.PathLike, out: str | os.PathLike, folds: int = 5,
             overrides: Mapping[str, Any] | None = None, *, bundle: str = "ich_classifier",
             only: Sequence[int] | None = None, cache_dir: str | os.PathLike | None = None, cache_procs: int = 2) -> int:
    """Train and evaluate ``bundle`` on every fold of a patient-level ``folds``-fold split of ``dataset_dir``, in
    ``out/fold<k>``, then summarise (``hemwsl train-cv``).

    ``overrides``: bundle settings (``--set`` values, parsed: :func:`parse_overrides`); ``only``: these folds
    only; ``cache_dir``: a disk cache of preprocessed volumes (warmed first, ``cache_procs`` processes). Every
    setting, and every volume read in full once, is checked before the first fold trains; a finished fold is
    skipped, and a folder made with other settings is refused (:func:`check_cv_run`).
    """
    from hemwsl.engines.classifier import cv_summary_stem, report_name, summarize_cv

    from hemwsl.errors import HemwslInputError

    if folds < 2:
        raise HemwslInputError(f"--folds must be >= 2 (each fold tests on patients the others train on), got {folds}")
    bad = [k for k in (only or []) if not 0 <= k < folds]
    if bad:
        raise HemwslInputError(f"--only: fold(s) {bad} not in [0, {folds - 1}]")
    if isinstance(cache_procs, bool) or not isinstance(cache_procs, int) or cache_procs < 1:
        raise HemwslInputError(f"--cache-procs must be an integer >= 1 (processes filling the disk cache; 1: this "
                               f"process), got {cache_procs!r}")
    overrides = dict(overrides or {})
    check_train_overrides(overrides, bundle)  # keys, values and the bundle's own first check, before any file
    check_cache_dir(cache_dir)

    # the settings later steps (cam-cv, benchmark) need to rebuild the same networks and inputs
    # (which checkpoint is evaluated is no training setting: left out)
    which = overrides.get("eval_checkpoint", "best")
    test_name = report_name("test", which)
    settings = {k: v for k, v in overrides.items() if k != "eval_checkpoint"}
    from hemwsl.data.datalist import resolve_dataset_dir

    record = {"bundle": str(bundle), "folds": int(folds),
              "dataset_dir": str(resolve_dataset_dir(dataset_dir)),
              "settings": settings}
    check_cv_run(out, record)
    out = Path(out)
    from hemwsl.data.datalist import build_datalist
    from hemwsl.data.io import check_volumes

    # every volume read in full once before the first fold trains (cached by size and time in the run folder)
    datalist = build_datalist(overrides.get("layout", "ct-ich"), dataset_dir)
    _check_both_classes(datalist, dataset_dir)
    before = set(out.iterdir()) if out.is_dir() else None
    check_volumes(datalist, cache=out / ".volumes_checked.json")
    try:
        _train_folds(dataset_dir, out, folds, bundle, only, cache_dir, cache_procs, overrides, settings, record,
                     test_name)
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
    if all((Path(out) / f"fold{k}" / f"report_{test_name}.json").exists() for k in range(folds)):
        summarize_cv(out, folds, name=test_name)
        print((Path(out) / f"{cv_summary_stem(test_name)}.md").read_text())
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


def _train_folds(dataset_dir, out, folds: int, bundle: str, only, cache_dir, cache_procs: int, overrides: dict,
                 settings: dict, record: dict, test_name: str) -> None:
    from hemwsl.data.io import atomic_write_text

    atomic_write_text(Path(out) / "cv_settings.json", json.dumps(settings, indent=1) + "\n")
    atomic_write_text(Path(out) / CV_RUN, json.dumps(record, indent=1) + "\n")
    overrides.update({"dataset_dir": str(dataset_dir), "output_dir": str(out), "n_folds": folds})
    if cache_dir:
        from hemwsl.data.datalist import build_datalist
        from hemwsl.data.dataset import warm_disk_cache

        overrides["cache_dir"] = cache_dir
        datalist = build_datalist(overrides.get("layout", "ct-ich"), dataset_dir)
        n = warm_disk_cache(datalist, cache_dir, spatial_size=overrides.get("spatial_size", [256, 256]),
                            skull_strip=bool(overrides.get("skull_strip", False)), workers=cache_procs)
        print(f"disk cache: {n} volumes preprocessed in {cache_dir}", flush=True)
    for k in (only or list(range(folds))):
        fold_dir = Path(out) / f"fold{k}"
        if not run_cv_fold(bundle, fold_dir, k, f"report_{test_name}.json", **overrides):
            continue
        rep = json.loads((fold_dir / f"report_{test_name}.json").read_text())["any"]
        print(f"fold {k}: {test_name} AUROC {rep['auroc']:.3f} AP {rep['ap']:.3f}", flush=True)


def _cam_cv_settings(cv_dir: str | os.PathLike, overrides: Mapping[str, Any] | None) -> dict:
    """The classifier settings of cam-cv: the run's ``cv_settings.json`` and ``--set``; a ``--set`` value that
    contradicts what the run trained with (recorded, or the bundle's default for a network or input setting) is
    one line naming the key (heatmaps of a network fed other inputs than it was trained on are wrong without any
    error). Without a settings file, ``--set`` gives the settings."""
    from hemwsl.errors import HemwslInputError

    overrides = dict(overrides or {})
    f = Path(cv_dir) / SETTINGS
    if not f.is_file() or not overrides:
        return {**cv_settings(cv_dir), **overrides}
    from hemwsl.engines.bundle import resolve_bundle_settings

    recorded = cv_settings(cv_dir)
    resolved = resolve_bundle_settings(recorded)
    for key, value in overrides.items():
        if key in recorded:
            have = recorded[key]
        elif key in resolved:
            have = resolved[key]
        else:
            continue  # not a setting of the trained network or its inputs (e.g. batch_size, device)
        if json.loads(json.dumps(value)) != json.loads(json.dumps(have)):
            raise HemwslInputError(f"--set {key}={json.dumps(value)} contradicts the train-cv run {cv_dir} ({f}: "
                                   f"{key} = {json.dumps(have)}); leave it out")
    return {**recorded, **overrides}


def _check_cam_cv_inputs(dataset_dir, methods: Sequence[str], layers: Sequence[str] | None, part: str, grid: str,
                          cache_dir, settings: dict) -> list[dict]:
    """Everything cam-cv is asked for, before the first file is written: methods, layers (on the run's network,
    built without weights), grid, part, cache folder and the dataset (its datalist returned)."""
    from hemwsl.data.datalist import build_datalist
    from hemwsl.engines.cam import check_cam_request, layer_network

    network = None
    if layers:
        from hemwsl.engines.bundle import resolve_bundle_settings

        network = layer_network(resolve_bundle_settings(settings))
    check_cam_request(list(methods), layers or None, grid=grid, part=part, network=network)
    check_cache_dir(cache_dir)
    return build_datalist(settings.get("layout", "ct-ich"), dataset_dir)  # a bad dataset is named now


def cam_cv(dataset_dir: str | os.PathLike, cv_dir: str | os.PathLike, out: str | os.PathLike, *,
           folds: int | None = None, methods: Sequence[str] = CAM_CV_METHODS, layers: Sequence[str] | None = None,
           part: str = "test", grid: str = "input", overrides: Mapping[str, Any] | None = None,
           checkpoint: str = "best", cache_dir: str | os.PathLike | None = None, flip_tta: bool = False,
           storage: str = "float32") -> int:
    """Heatmaps of every fold's ``part`` patients by that fold's classifier of the train-cv run ``cv_dir``
    (``checkpoint``: its ``best`` or ``last`` weights), one NIfTI per (method, layer, patient) in ``out``
    (``hemwsl cam-cv``). ``flip_tta``: each map the mean of the slice's and its in-plane flip's (recorded; a folder
    of maps made without it is refused). ``storage``: ``float32`` or ``uint16`` (:func:`hemwsl.cam.save_heatmaps`;
    recorded when not ``float32``). ``overrides``: classifier settings when the run recorded none (a value that
    contradicts the run's is refused). Everything is checked before the first file is written; a folder made from
    another run, checkpoint or settings is refused.
    """
    from hemwsl.engines.bundle import run_cam_bundle

    check_outside_run(out, cv_dir)
    settings = _cam_cv_settings(cv_dir, overrides)
    folds = resolve_cv_folds(cv_dir, folds)[0]
    ckpts = [fold_checkpoint(cv_dir, k, checkpoint) for k in range(folds)]
    datalist = _check_cam_cv_inputs(dataset_dir, methods, layers, part, grid, cache_dir, settings)
    check_dataset_matches_run(cv_dir, datalist, dataset_dir, "--dataset-dir", folds)  # the run's scans, not others
    if not isinstance(flip_tta, bool):
        from hemwsl.errors import HemwslInputError

        raise HemwslInputError(f"flip_tta must be true or false, got {flip_tta!r}")
    from hemwsl.cam.volume import check_storage

    check_storage(storage)
    record = {**settings, "grid": grid, "folds": folds, **({"flip_tta": True} if flip_tta else {}),
              **({"storage": storage} if storage != "float32" else {})}
    check_checkpoint_marker(out, cv_dir, checkpoint, "heatmaps", settings=record)
    for k, ckpt in enumerate(ckpts):
        kw = {**settings, "dataset_dir": str(dataset_dir), "output_dir": str(cv_dir), "n_folds": folds,
              "fold": k, "checkpoint": str(ckpt), "cam_dir": str(out), "cam_part": part,
              "cam_methods": list(methods), "cam_layers": layers or None, "cam_grid": grid, "cam_flip_tta": flip_tta,
              "cam_storage": storage}
        if cache_dir:
            kw["cache_dir"] = str(cache_dir)
        run_cam_bundle(**kw)
        print(f"fold {k}: heatmaps of its {part} patients in {out}", flush=True)
    return 0
