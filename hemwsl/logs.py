"""The console and the run log of ``hemwsl`` commands.

The console shows what a user acts on: the results a command prints, hemwsl's own progress messages, and
warnings and errors from every library. The per-iteration lines of MONAI and ignite (``Epoch: 2/10, Iter:
18/48 -- train_loss: ...``) and other INFO records go to ``<out>/hemwsl.log`` in the command's output folder,
with timestamps, as soon as that folder exists (records before it are kept in memory and written first).

``-v`` puts every INFO record on the console too, ``-vv`` DEBUG records; ``-q`` leaves only warnings and errors.
Bundles run by hemwsl commands keep this setup (:func:`hemwsl.engines.bundle.run_bundle`); bundles run with
``python -m monai.bundle run`` use their own ``configs/logging.conf`` as in MONAI's model zoo.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

__all__ = ["LOG_FILE", "RunLogHandler", "active", "adopt_library_loggers", "setup_logging"]

LOG_FILE = "hemwsl.log"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_ACTIVE = False


def active() -> bool:
    """Whether a hemwsl command configured the logging (bundles then leave it as it is)."""
    return _ACTIVE


class RunLogHandler(logging.Handler):
    """Appends records to ``path`` once its folder exists; until then keeps the last ``capacity`` records and
    writes them first. Never creates the folder: a command that fails before its output folder exists leaves
    nothing behind."""

    def __init__(self, path: str | os.PathLike, capacity: int = 20000) -> None:
        super().__init__(logging.DEBUG)
        self.path = Path(path)
        self.capacity = int(capacity)
        self.pending: list[str] = []
        self.setFormatter(logging.Formatter(_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a record that cannot be formatted is not worth a traceback on the console
            return
        self.pending.append(line)
        if len(self.pending) > self.capacity:
            del self.pending[: len(self.pending) - self.capacity]
        self.flush()

    def flush(self) -> None:
        if not self.pending or not self.path.parent.is_dir():
            return
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write("\n".join(self.pending) + "\n")
            self.pending.clear()
        except OSError:  # e.g. the folder is being removed: keep the records
            pass

    def close(self) -> None:
        self.flush()
        super().close()


class _ConsoleFilter(logging.Filter):
    """hemwsl's own INFO records and every warning by default; everything at ``-v``; warnings only at ``-q``."""

    def __init__(self, verbosity: int) -> None:
        super().__init__()
        self.verbosity = verbosity

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return not _is_known_noise(record)
        if self.verbosity < 0:
            return False
        if self.verbosity > 0:
            return True
        return record.name == "hemwsl" or record.name.startswith("hemwsl.")


class _ConsoleFormatter(logging.Formatter):
    """Plain messages for hemwsl's progress lines; level and source for the rest (and for everything at -v)."""

    def __init__(self, verbosity: int) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")
        self.verbosity = verbosity

    def format(self, record: logging.LogRecord) -> str:
        if self.verbosity <= 0 and record.levelno < logging.WARNING:
            return record.getMessage()
        return super().format(record)


def _is_known_noise(record: logging.LogRecord) -> bool:
    # MONAI warns when a bundle's own logging.conf is deliberately left out (hemwsl commands keep theirs)
    if not record.name.startswith("monai.bundle"):
        return False
    msg = record.getMessage()
    # ... and when a bundle is layered on another's configs (the CAM bundle on the classifier's train.yaml)
    return "Logging file is set to False" in msg or msg.startswith("Not all config files are in")


def adopt_library_loggers() -> None:
    """MONAI and ignite give some of their loggers a console handler of their own that does not propagate (they
    would print every iteration whatever the setup): under a hemwsl command, those records go through the root
    logger's console filter and run log instead. Called again after a bundle imports more of them."""
    if not _ACTIVE:
        return
    for name, lg in list(logging.root.manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger) or not name.startswith(("monai", "ignite")):
            continue
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:
                lg.removeHandler(h)
        lg.propagate = True


def setup_logging(verbosity: int = 0, out_dir: str | os.PathLike | None = None) -> None:
    """Configure the root logger for a command: the console (stderr) by ``verbosity`` (-1 quiet, 0 default,
    1 INFO, 2 DEBUG) and, with ``out_dir``, the run log ``<out_dir>/hemwsl.log`` (INFO, DEBUG at 2)."""
    global _ACTIVE
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, RunLogHandler) or getattr(h, "_hemwsl_console", False):
            root.removeHandler(h)
            h.close()
    level = logging.DEBUG if verbosity >= 2 else logging.INFO
    root.setLevel(level)
    console = logging.StreamHandler()
    console._hemwsl_console = True  # type: ignore[attr-defined]
    console.setFormatter(_ConsoleFormatter(verbosity))
    console.addFilter(_ConsoleFilter(verbosity))
    root.addHandler(console)
    if out_dir is not None:
        run_log = RunLogHandler(Path(out_dir) / LOG_FILE)
        run_log.setLevel(level)
        run_log.addFilter(lambda r: not _is_known_noise(r))
        root.addHandler(run_log)
    _ACTIVE = True
    adopt_library_loggers()
