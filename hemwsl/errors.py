"""Errors raised by hemwsl for bad input. Each message names the file or argument at fault."""

from __future__ import annotations

import sys

__all__ = ["HemwslInputError", "check_choice", "input_error_message", "install_bundle_excepthook"]


class HemwslInputError(ValueError):
    """Bad input: a missing, corrupt or inconsistent file, or an invalid argument."""


def check_choice(name: str, value, choices) -> None:
    """Raise :class:`HemwslInputError` unless ``value`` is one of ``choices``.

    Args:
        name: argument name used in the message.
        value: the value given.
        choices: accepted values.
    """
    choices = list(choices)
    if value not in choices:
        raise HemwslInputError(f"unknown {name} {value!r}; accepted values: {', '.join(map(str, choices))}")


def input_error_message(err: BaseException | None) -> str | None:
    """The message of the :class:`HemwslInputError` behind ``err``, on one line, or ``None``.

    MONAI wraps what a bundle component raises in ``RuntimeError("Failed to instantiate ...")`` (and
    ``"Failed to evaluate ..."``); the named problem is further down the chain (``__cause__`` /
    ``__context__``), which this follows.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, HemwslInputError):
            return " ".join(str(err).split())
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    return None


def install_bundle_excepthook() -> None:
    """Under ``python -m monai.bundle run``: after the usual traceback of an uncaught error, print the named
    problem of a :class:`HemwslInputError` behind it as the last line (``hemwsl: error: ...``)."""
    if getattr(sys.excepthook, "_hemwsl", False):
        return
    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        message = input_error_message(value)
        if message:
            print(f"hemwsl: error: {message}", file=sys.stderr)

    hook._hemwsl = True  # type: ignore[attr-defined]
    sys.excepthook = hook
