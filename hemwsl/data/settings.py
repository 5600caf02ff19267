"""The classifier's input settings as one value: :class:`InputSettings` (CT windows, 2.5D stack depth, in-plane
size, skull stripping, windowing on the device), instead of five keyword arguments threaded through every function
that cuts slices for the classifier."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from hemwsl.errors import HemwslInputError

__all__ = ["INPUT_SETTING_KEYS", "CLASSIFIER_INPUT_DEFAULTS", "InputSettings"]

#: The keys of a run's settings (``cv_settings.json``, the classifier bundle's ``train.yaml``) that are input settings.
INPUT_SETTING_KEYS: tuple[str, ...] = ("windows", "num_slices", "spatial_size", "skull_strip", "window_on_device")
#: Their defaults in ``bundles/ich_classifier/configs/train.yaml`` (``tests/test_input_settings.py`` checks them).
CLASSIFIER_INPUT_DEFAULTS: Mapping[str, Any] = {"windows": ("brain", "subdural", "blood"), "num_slices": 3,
                                                "spatial_size": (256, 256), "skull_strip": False,
                                                "window_on_device": False}


def _tupled(value: Any) -> Any:
    """Lists (from YAML or JSON), nested too, as tuples, so that the settings are hashable; other values as given."""
    return tuple(_tupled(v) for v in value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class InputSettings:
    """How the classifier's input is made from a CT volume (see :class:`hemwsl.data.dataset.SliceDataset`).

    Attributes:
        windows: CT windows, names of :data:`hemwsl.constants.WINDOWS` or ``(level, width)`` pairs.
        num_slices: odd number of adjacent slices stacked as channels.
        spatial_size: in-plane size the volumes are resized to; ``None`` keeps the native grid.
        skull_strip: skull strip volumes before resizing.
        window_on_device: the loader serves raw HU stacks and the windows are applied on the device.

    Lists are stored as tuples; values are checked on construction (one :class:`HemwslInputError` line naming the
    field, the messages of the dataset's own checks). The defaults are those ``run_cam`` had; the classifier
    bundle's are :data:`CLASSIFIER_INPUT_DEFAULTS` (:meth:`from_settings`).
    """

    windows: tuple[str, ...] = ("brain",)
    num_slices: int = 3
    spatial_size: tuple[int, int] | None = (256, 256)
    skull_strip: bool = False
    window_on_device: bool = False

    def __post_init__(self) -> None:
        from hemwsl.transforms.array import MultiWindow

        windows = _tupled(self.windows)
        MultiWindow(windows)  # a string, an empty list, unknown names and bad pairs: one line naming windows
        object.__setattr__(self, "windows", windows)
        n = self.num_slices
        if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, float, np.integer, np.floating)) \
                or not np.isfinite(n) or not float(n).is_integer() or n < 1 or int(n) % 2 == 0:
            raise HemwslInputError(f"num_slices must be a positive odd number, got {n!r}")
        object.__setattr__(self, "num_slices", int(n))
        size = self.spatial_size
        if size is not None:
            if isinstance(size, str) or not isinstance(size, (list, tuple)) or len(size) != 2 \
                    or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating))
                           or not np.isfinite(v) or not float(v).is_integer() for v in size) or min(size) < 8:
                raise HemwslInputError(f"spatial_size must be two ints >= 8 or None, got {size!r}")
            object.__setattr__(self, "spatial_size", tuple(int(v) for v in size))
        for name in ("skull_strip", "window_on_device"):
            value = getattr(self, name)
            if not isinstance(value, (bool, np.bool_)):  # a string such as 'maybe' would be taken for true
                raise HemwslInputError(f"{name} must be true or false, got {value!r}")
            object.__setattr__(self, name, bool(value))

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> InputSettings:
        """The input settings of a run's settings (``hemwsl.engines.runs.cv_settings``, the bundle's keys; other
        keys are ignored); a key that is missing, or ``None`` (except ``spatial_size``: ``None`` is the native
        grid), takes the classifier bundle's default (:data:`CLASSIFIER_INPUT_DEFAULTS`)."""
        if not isinstance(settings, Mapping):
            raise HemwslInputError(f"settings must be a mapping of setting names to values, got {settings!r}")
        values = {}
        for key in INPUT_SETTING_KEYS:
            value = settings.get(key)
            missing = key not in settings if key == "spatial_size" else value is None
            values[key] = CLASSIFIER_INPUT_DEFAULTS[key] if missing else value
        return cls(**values)

    @classmethod
    def resolve(cls, inputs: Any) -> InputSettings:
        """``inputs`` itself, or the defaults for ``None``; any other type is one line naming the argument (what
        every function taking ``inputs=`` checks first)."""
        if inputs is None:
            return cls()
        if not isinstance(inputs, cls):
            raise HemwslInputError(f"inputs must be an InputSettings (hemwsl.data.settings), got {type(inputs).__name__}")
        return inputs

    def as_kwargs(self) -> dict[str, Any]:
        """The five keyword arguments (``windows``, ``num_slices``, ``spatial_size``, ``skull_strip``,
        ``window_on_device``) of the functions that still take them (e.g. ``SliceDataset``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
