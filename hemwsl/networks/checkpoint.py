"""Checkpoint I/O of the networks: a training bundle's checkpoint loaded into a network, one-line errors."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from hemwsl.errors import HemwslInputError

__all__ = ["load_weights", "read_state_dict", "read_error", "mismatch_error"]


def read_error(path: str | os.PathLike, err: BaseException, what: str = "checkpoint") -> str:
    """One short line for an error of ``torch.load`` on ``path`` (PyTorch's own messages run over several lines
    and advise ``weights_only=False``, wrong for a file that is not a checkpoint at all)."""
    text = str(err)
    if "Weights only load failed" in text or type(err).__name__ == "UnpicklingError" or "invalid load key" in text:
        reason = "not a PyTorch weights file"
    elif "PytorchStreamReader" in text or isinstance(err, EOFError) or "zip archive" in text:
        reason = "a truncated or corrupt PyTorch weights file"
    elif "CUDA device" in text and not torch.cuda.is_available():
        reason = "saved on a GPU and asked for on one, but CUDA is not available here"
    else:
        first = (text.strip().splitlines() or [""])[0]
        reason = f"{type(err).__name__}: {first[:120]}"
    return f"{path}: cannot read {what} ({reason})"


def mismatch_error(path: str | os.PathLike, network: torch.nn.Module, state: Mapping, what: str = "checkpoint") -> str:
    """One short line saying how the state dict of ``path`` differs from ``network``'s: how many keys are missing,
    unexpected or of another shape, with the first of each."""
    mine = network.state_dict()
    missing = [k for k in mine if k not in state]
    unexpected = [k for k in state if k not in mine]
    shape = [k for k in mine if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(mine[k].shape)]
    parts = [f"{len(keys)} {name} key(s), e.g. {keys[0][:40]!r}"
             for name, keys in (("missing", missing), ("unexpected", unexpected), ("other-shape", shape)) if keys]
    return (f"{path}: {what} does not match the network {type(network).__name__} "
            f"({'; '.join(parts) or 'incompatible state dict'}; trained with another backbone or settings?)")


def read_state_dict(path: str | os.PathLike, device: str | torch.device = "cpu") -> Mapping:
    """The state dict of a checkpoint written by the training bundle (a state dict, or ``{"model": state_dict}``),
    on ``device``; a missing, empty or unreadable file, or one holding something else, is one
    :class:`HemwslInputError` naming it."""
    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: checkpoint not found")
    try:
        state = torch.load(p, map_location=device, weights_only=True)
    except Exception as err:
        raise HemwslInputError(read_error(p, err)) from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise HemwslInputError(f"{p}: checkpoint holds a {type(state).__name__}, not a state dict")
    return state


def load_weights(network: torch.nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a checkpoint written by the training bundle (a state dict, or ``{"model": state_dict}``) into
    ``network`` and return it on ``device`` in eval mode."""
    p = Path(path)
    state = read_state_dict(p, device)
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        raise HemwslInputError(mismatch_error(p, network, state)) from err
    return network.to(device).eval()
