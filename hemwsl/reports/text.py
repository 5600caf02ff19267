"""The text reports of the scripts under ``scripts/``: print a table and keep a copy, and one line per bad input."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from hemwsl.data.io import atomic_write_text
from hemwsl.errors import HemwslInputError

__all__ = ["emit", "run_script"]


def emit(text: str, out: str | os.PathLike | None = None) -> None:
    """Print ``text`` and, with ``out``, write it there too (atomically, its folder created)."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(out), text)


def run_script(main: Callable[[], int | None], prog: str | None = None) -> int:
    """``main()``'s exit status; a bad input (:class:`~hemwsl.errors.HemwslInputError`) is one line on stderr,
    ``<prog>: error: <message>``, and status 2, as the ``hemwsl`` commands give it."""
    prog = prog or Path(sys.argv[0]).name
    try:
        return int(main() or 0)
    except HemwslInputError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
