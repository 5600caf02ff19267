"""The console and run log of hemwsl commands (:mod:`hemwsl.logs`)."""

from __future__ import annotations

import logging

import pytest

from hemwsl.logs import LOG_FILE, RunLogHandler, adopt_library_loggers, setup_logging


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
            h.close()
    root.setLevel(level)


@pytest.mark.parametrize("verbosity, shown", [
    (0, {"hemwsl progress", "monai warning"}),
    (-1, {"monai warning"}),
    (1, {"hemwsl progress", "monai warning", "monai iteration"}),
])
def test_console_shows_progress_and_warnings_and_the_run_log_keeps_everything(restore_logging, tmp_path, capsys,
                                                                             verbosity, shown):
    out = tmp_path / "run"
    setup_logging(verbosity, out)
    logging.getLogger("hemwsl.engines.x").info("hemwsl progress")
    logging.getLogger("monai.handlers.StatsHandler").info("monai iteration")
    logging.getLogger("monai.bundle.workflows").warning("monai warning")
    logging.getLogger("monai.bundle.workflows").warning("Logging file is set to False, skipping logging.")
    logging.getLogger("monai.bundle.workflows").warning("Not all config files are in bundles/x/configs. If ...")
    err = capsys.readouterr().err
    printed = {m for m in ("hemwsl progress", "monai iteration", "monai warning") if m in err}
    assert printed == shown and "Logging file is set to False" not in err and "Not all config files" not in err
    assert not out.exists()  # the run log never creates the output folder ...
    out.mkdir()
    logging.getLogger("hemwsl").info("after")
    text = (out / LOG_FILE).read_text()  # ... and writes what came before it first
    assert text.index("hemwsl progress") < text.index("monai iteration") < text.index("after")
    assert "Logging file is set to False" not in text


def test_library_loggers_with_their_own_console_handler_are_adopted(restore_logging, tmp_path, capsys):
    lib = logging.getLogger("monai.some.module")
    lib.addHandler(logging.StreamHandler())
    lib.propagate = False
    setup_logging(0, tmp_path)
    lib.info("an iteration line")
    assert "an iteration line" not in capsys.readouterr().err
    assert lib.propagate and not lib.handlers
    assert "an iteration line" in (tmp_path / LOG_FILE).read_text()
    adopt_library_loggers()  # idempotent


def test_run_log_keeps_at_most_its_capacity(tmp_path):
    h = RunLogHandler(tmp_path / "missing" / LOG_FILE, capacity=3)
    for i in range(5):
        h.emit(logging.LogRecord("hemwsl", logging.INFO, __file__, 1, f"line {i}", None, None))
    assert [line.split()[-1] for line in h.pending] == ["2", "3", "4"]
    assert not (tmp_path / "missing").exists()
