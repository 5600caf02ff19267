"""hemwsl: weakly supervised localisation of intracranial hemorrhage on non-contrast head CT.

Built on MONAI, PyTorch and pytorch-grad-cam. Heavy modules are imported lazily by the CLI.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]


def _running_a_bundle() -> bool:
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return getattr(spec, "name", "") == "monai.bundle.__main__"


if _running_a_bundle():  # `python -m monai.bundle run` on a hemwsl bundle: the named problem ends the output
    from hemwsl.errors import install_bundle_excepthook

    install_bundle_excepthook()
