"""Running and checking hemwsl's MONAI bundles from Python, offline.

:func:`run_bundle` runs a bundle's layered configs in this process (what
``python -m monai.bundle run --config_file ...`` does). :func:`validate_metadata` checks a bundle's
``metadata.json`` against the fields the MONAI model-zoo schema requires, without downloading the
schema (``monai.bundle verify_metadata`` needs the network).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from hemwsl.errors import HemwslInputError

__all__ = ["SETTING_KEYS", "resolve_bundle_settings", "BUNDLES_DIR", "bundle_dir", "config_files", "run_bundle", "run_cam_bundle", "FoldBusyError", "fold_lock", "train_evaluate_fold", "validate_metadata", "check_bundle"]

BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"

# Required top-level fields of the model-zoo metadata schema (meta_schema_20220324) and of each tensor spec.
_REQUIRED_META = (
    "version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
    "task", "description", "authors", "copyright", "network_data_format",
)
_REQUIRED_TENSOR = ("type", "format", "num_channels", "spatial_shape", "dtype", "value_range")


#: The classifier settings a package records (resolved from the bundle's ``train.yaml`` and the run's overrides).
SETTING_KEYS = ("backbone", "network_options", "in_channels", "num_classes", "dropout", "windows", "num_slices",
                "spatial_size", "skull_strip", "tta", "n_folds", "seed", "val_fraction", "layout")


def bundle_dir(name_or_path: str | os.PathLike) -> Path:
    """A bundle folder from its name under ``bundles/`` or a path."""
    p = Path(name_or_path)
    if not p.is_dir():
        p = BUNDLES_DIR / str(name_or_path)
    if not (p / "configs").is_dir():
        raise HemwslInputError(f"bundle {name_or_path!r}: no configs/ folder found at {p}")
    return p


def config_files(bundle: str | os.PathLike, names: Sequence[str]) -> list[str]:
    """Paths of ``configs/<name>.yaml`` (or ``.json``) of a bundle, in layering order."""
    root = bundle_dir(bundle) / "configs"
    files = []
    for n in names:
        for ext in (".yaml", ".json", ""):
            f = root / f"{n}{ext}"
            if f.is_file():
                files.append(str(f))
                break
        else:
            raise HemwslInputError(f"bundle {bundle}: config {n!r} not found in {root}")
    return files


def check_bundle_settings(bundle: str | os.PathLike, overrides: dict, configs: Sequence[str] = ("train",)) -> None:
    """Evaluate the settings check a bundle runs first (its ``initialize``'s first expression, when it is a
    ``check_*`` call) on ``overrides``, before a command writes anything: a bad setting is the same one line as
    under ``python -m monai.bundle run``, but before any run record or fold folder exists."""
    from monai.bundle import ConfigParser

    from hemwsl.errors import input_error_message

    parser = ConfigParser()
    parser.read_config(config_files(bundle, configs))
    parser.update(dict(overrides))
    first = (parser.get("initialize") or [None])[0]
    if not isinstance(first, str) or ".check_" not in first:
        return
    try:
        parser.get_parsed_content("initialize#0")
    except Exception as err:
        message = input_error_message(err)
        if message is None:
            raise
        raise HemwslInputError(message) from None


def resolve_bundle_settings(overrides: Mapping[str, Any], bundle: str = "ich_classifier") -> dict[str, Any]:
    """The classifier settings of :data:`SETTING_KEYS` as the bundle resolves them with ``overrides`` (what a
    model package records, and what cam-cv checks ``--set`` values against)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(config_files(bundle, ["train"]))
    parser.update(dict(overrides))
    out = {}
    for key in SETTING_KEYS:
        value = parser.get_parsed_content(key) if key in parser else None
        if isinstance(value, tuple):
            value = list(value)
        out[key] = value
    out["windows"] = [list(w) if isinstance(w, (list, tuple)) else w for w in out["windows"]]
    out["network_options"] = dict(out["network_options"] or {})
    return json.loads(json.dumps(out))  # plain JSON types


def _logging_file(config_root: Path) -> str | bool | None:
    """A bundle's ``logging.conf`` when it runs on its own; ``False`` (MONAI leaves the logging alone) under a hemwsl
    command, whose console and run log (:mod:`hemwsl.logs`) it would otherwise replace."""
    from hemwsl.logs import active

    if active():
        return False
    f = Path(config_root) / "logging.conf"
    return str(f) if f.exists() else None


def run_bundle(bundle: str | os.PathLike, configs: Sequence[str] = ("train",), workflow_type: str | None = None,
               **overrides):
    """Run layered configs of a bundle in this process; returns the finalized :class:`ConfigWorkflow`.

    ``overrides`` replace config ids (``epochs=2``, ``dataset_dir=...``); use ``#`` in ids through a dict:
    ``run_bundle("ich_classifier", **{"train#dataloader#num_workers": 0})``.
    """
    from monai.bundle import ConfigWorkflow

    from hemwsl.logs import adopt_library_loggers

    adopt_library_loggers()  # monai.bundle's loggers exist now
    root = bundle_dir(bundle) / "configs"
    wf = ConfigWorkflow(
        config_file=config_files(bundle, configs),
        meta_file=str(root / "metadata.json"),
        logging_file=_logging_file(root),
        workflow_type=workflow_type,
        **overrides,
    )
    wf.initialize()
    adopt_library_loggers()
    wf.run()
    wf.finalize()
    return wf


def run_cam_bundle(**overrides):
    """Run ``bundles/ich_cam/configs/inference.yaml`` layered on the classifier's ``train.yaml`` (which gives
    the network, data and folds) in this process; ``overrides`` as :func:`run_bundle`'s (``cam_methods``,
    ``cam_layers``, ``cam_part``, ``checkpoint``, ...). Returns the workflow."""
    from monai.bundle import ConfigWorkflow

    from hemwsl.logs import adopt_library_loggers

    adopt_library_loggers()
    wf = ConfigWorkflow(config_file=config_files("ich_classifier", ["train"]) + config_files("ich_cam", ["inference"]),
                        workflow_type=None, logging_file=_logging_file(bundle_dir("ich_classifier") / "configs"),
                        **overrides)
    wf.initialize()
    adopt_library_loggers()
    wf.run()
    return wf


def train_evaluate_fold(bundle: str | os.PathLike, fold_dir: str | os.PathLike, fold: int, done_file: str,
                        **overrides) -> bool:
    """Run a bundle's ``train`` then ``train + evaluate`` configs for one fold, resumably.

    A fold whose ``done_file`` (the evaluation's output) exists is skipped; a fold whose training finished
    (``models/model.pt`` and the ``.trained`` marker) is only evaluated. Returns whether anything ran.
    """
    d = Path(fold_dir)
    if (d / done_file).exists():
        return False
    with fold_lock(d):
        if (d / done_file).exists():  # finished by the process that held the lock
            return False
        if not (d / "models" / "model.pt").exists() or not (d / ".trained").exists():
            run_bundle(bundle, ["train"], fold=fold, **overrides)
            (d / ".trained").touch()
        run_bundle(bundle, ["train", "evaluate"], fold=fold, **overrides)
    return True


class FoldBusyError(HemwslInputError):
    """Another live process holds the fold folder's lock (:func:`fold_lock`)."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


@contextlib.contextmanager
def fold_lock(fold_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold ``<fold_dir>/.lock`` while a fold trains or evaluates.

    Two processes working in one fold folder overwrite each other's checkpoints (the evaluation of one
    can load the other's half-trained ``model.pt``), so a second one fails at once with
    :class:`FoldBusyError`, naming the process that holds the lock. A lock left by a process of this
    machine that no longer runs is taken over. ``train-cv`` and ``seg-cv`` skip a busy fold, so several
    processes of the same command share the folds between them (one GPU, several folds at once).
    """
    d = Path(fold_dir)
    d.mkdir(parents=True, exist_ok=True)
    lock = d / ".lock"
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                pid_text, _, host = lock.read_text().strip().partition(" ")
                pid = int(pid_text)
            except (OSError, ValueError):
                pid, host = -1, ""
            if host == socket.gethostname() and pid > 0 and not _pid_alive(pid):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise FoldBusyError(
                f"{d}: this fold is being run by process {pid} on {host or 'an unknown host'} (lock file {lock}); "
                "wait for it to finish, or delete the lock file if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(me + "\n")
        break
    else:  # pragma: no cover - another process took the stale lock between our two tries
        raise HemwslInputError(f"{d}: could not take the lock file {lock}")
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text().strip() == me:
                lock.unlink()


def validate_metadata(path: str | os.PathLike) -> dict:
    """Check a bundle ``metadata.json`` offline; returns it, raises :class:`HemwslInputError` on a problem."""
    p = Path(path)
    try:
        meta = json.loads(p.read_text())
    except FileNotFoundError as err:
        raise HemwslInputError(f"{p}: file not found") from err
    except json.JSONDecodeError as err:
        raise HemwslInputError(f"{p}: not valid JSON ({err})") from err
    missing = [k for k in _REQUIRED_META if k not in meta]
    if missing:
        raise HemwslInputError(f"{p}: missing required field(s): {', '.join(missing)}")
    if meta["version"] not in meta["changelog"]:
        raise HemwslInputError(f"{p}: version {meta['version']} has no changelog entry")
    ndf = meta["network_data_format"]
    for part in ("inputs", "outputs"):
        if not isinstance(ndf.get(part), dict) or not ndf[part]:
            raise HemwslInputError(f"{p}: network_data_format.{part} must be a non-empty object")
        for name, spec in ndf[part].items():
            miss = [k for k in _REQUIRED_TENSOR if k not in spec]
            if miss:
                raise HemwslInputError(f"{p}: network_data_format.{part}.{name} lacks {', '.join(miss)}")
            ch = spec.get("channel_def")
            if ch is not None and len(ch) != spec["num_channels"]:
                raise HemwslInputError(
                    f"{p}: network_data_format.{part}.{name}: channel_def has {len(ch)} entries, "
                    f"num_channels is {spec['num_channels']}"
                )
    return meta


def check_bundle(bundle: str | os.PathLike, workflow_type: str = "train") -> list[str]:
    """Validate metadata and return the MONAI standard properties the config lacks (none: ``[]``).

    Only the config ids are checked; nothing is instantiated and no data is read.
    """
    from monai.bundle import ConfigParser
    from monai.bundle.properties import InferProperties, TrainProperties
    from monai.utils import BundleProperty, BundlePropertyConfig

    root = bundle_dir(bundle) / "configs"
    validate_metadata(root / "metadata.json")
    has_train = any((root / f"train{ext}").is_file() for ext in (".yaml", ".json"))
    names = ["train"] if workflow_type == "train" else (["train", "inference"] if has_train else ["inference"])
    parser = ConfigParser()
    parser.read_config(config_files(bundle, names))
    props = TrainProperties if workflow_type == "train" else InferProperties
    return [
        name
        for name, prop in props.items()
        if prop[BundleProperty.REQUIRED] and prop[BundlePropertyConfig.ID] not in parser
    ]
