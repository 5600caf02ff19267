"""hemwsl: weakly supervised localisation of intracranial hemorrhage on non-contrast head CT.

Built on MONAI, PyTorch and pytorch-grad-cam. Heavy modules are imported lazily by the CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
