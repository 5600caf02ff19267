"""Checkpoint I/O of the networks: a training bundle's checkpoint loaded into a network, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hemwsl.errors import HemwslInputError

__all__ = ["load_weights"]


def load_weights(network: torch.nn.Module, path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load a checkpoint written by the training bundle (a state dict, or ``{"model": state_dict}``) into
    ``network`` and return it on ``device`` in eval mode."""
    p = Path(path)
    if not p.is_file():
        raise HemwslInputError(f"{p}: checkpoint not found")
    try:
        state = torch.load(p, map_location=device, weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0]
        raise HemwslInputError(f"{p}: cannot read checkpoint ({type(err).__name__}: {first})") from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    try:
        network.load_state_dict(state)
    except RuntimeError as err:
        lines = [x.strip() for x in str(err).strip().splitlines() if x.strip()]
        raise HemwslInputError(f"{p}: checkpoint does not match the network ({'; '.join(lines[:3])[:400]})") from err
    return network.to(device).eval()
