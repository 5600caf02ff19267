"""Errors raised by hemwsl for bad input. Each message names the file or argument at fault."""

from __future__ import annotations

__all__ = ["HemwslInputError", "check_choice"]


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
